package rendezvous

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Errors returned by BuildTable, Owners and DiffTables. They are wrapped with the
// offending value; test with errors.Is.
var (
	// ErrNoNodes: the node list is empty.
	ErrNoNodes = errors.New("rendezvous: no nodes")
	// ErrEmptyName: a node has an empty name.
	ErrEmptyName = errors.New("rendezvous: empty node name")
	// ErrDuplicateNode: two nodes share a name.
	ErrDuplicateNode = errors.New("rendezvous: duplicate node name")
	// ErrBadWeight: a weight is NaN, infinite, or outside [MinWeight, MaxWeight].
	ErrBadWeight = errors.New("rendezvous: weight out of range")
	// ErrBadShardCount: the shard count is not in [1, MaxShards].
	ErrBadShardCount = errors.New("rendezvous: shard count out of range")
	// ErrBadReplicas: the replica count is below 1 or above the number of nodes.
	ErrBadReplicas = errors.New("rendezvous: replica count out of range")
	// ErrTooLarge: shards × replicas exceeds MaxOwnerEntries.
	ErrTooLarge = errors.New("rendezvous: table too large")
	// ErrShardCountMismatch: DiffTables was given tables with different shard counts,
	// whose keys map to different shards, so no per-shard comparison exists.
	ErrShardCountMismatch = errors.New("rendezvous: tables have different shard counts")
)

// Size bounds. A Table keeps every owner list in memory, 4 bytes per owner, and a
// build scores every (shard, node) pair, so these keep a bad input from asking for
// gigabytes. Shards are the unit of movement, typically tens to hundreds per node,
// so a million is far above any cluster's need.
const (
	MaxShards       = 1 << 20 // shard count S
	MaxOwnerEntries = 1 << 24 // S × R, 64 MiB of owner numbers
)

// Table is a precomputed placement of S shards on nodes, R owners per shard. It is
// immutable once built, so concurrent readers need no lock.
type Table struct {
	nodes    []Node   // sorted by name; a node's number is its index here
	shards   int      // S
	replicas int      // R
	owners   []uint32 // S·R node numbers, shard-major, primary first
	checksum uint64
}

// BuildTable places shards (numbered 0..shards-1) on nodes with replicas owners
// each. The result depends only on the set of nodes (names and weights), shards and
// replicas, never on the order of nodes. Errors: ErrNoNodes, ErrEmptyName,
// ErrDuplicateNode, ErrBadWeight, ErrBadShardCount, ErrBadReplicas, ErrTooLarge.
//
// Cost: one hash per (shard, node) pair, about 7 ns per pair on a 2-core CI
// machine (1,000 nodes × 10,000 shards in ~66 ms, docs/benchmarks.md); allocation is
// 8 slices, dominated by the S·R·4-byte owner array.
func BuildTable(nodes []Node, shards int, replicas int) (*Table, error) {
	sorted, err := canonicalNodes(nodes)
	if err != nil {
		return nil, err
	}
	if shards < 1 || shards > MaxShards {
		return nil, fmt.Errorf("%w: %d", ErrBadShardCount, shards)
	}
	if err := checkReplicas(replicas, len(sorted)); err != nil {
		return nil, err
	}
	if shards*replicas > MaxOwnerEntries {
		return nil, fmt.Errorf("%w: %d shards × %d replicas", ErrTooLarge, shards, replicas)
	}
	t := &Table{
		nodes:    sorted,
		shards:   shards,
		replicas: replicas,
		owners:   make([]uint32, shards*replicas),
	}
	b := newBuilder(sorted, replicas)
	for s := range shards {
		copy(t.owners[s*replicas:], b.top(uint32(s)))
	}
	t.checksum = t.computeChecksum()
	return t, nil
}

// canonicalNodes validates nodes and returns a copy sorted by name.
func canonicalNodes(nodes []Node) ([]Node, error) {
	if len(nodes) == 0 {
		return nil, ErrNoNodes
	}
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	for i, n := range sorted {
		if n.Name == "" {
			return nil, ErrEmptyName
		}
		if i > 0 && sorted[i-1].Name == n.Name {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateNode, n.Name)
		}
		// Written as a negated range check so that NaN fails it too.
		if !(n.Weight >= MinWeight && n.Weight <= MaxWeight) {
			return nil, fmt.Errorf("%w: node %q has weight %v", ErrBadWeight, n.Name, n.Weight)
		}
	}
	return sorted, nil
}

func checkReplicas(r, n int) error {
	if r < 1 || r > n {
		return fmt.Errorf("%w: %d replicas for %d nodes", ErrBadReplicas, r, n)
	}
	return nil
}

// builder holds the per-node hash state and the top-R scratch of a build.
type builder struct {
	weights   []float64
	hashes    []pairHash
	bestScore []float64
	bestNode  []uint32
}

func newBuilder(sorted []Node, r int) *builder {
	b := &builder{
		weights:   make([]float64, len(sorted)),
		hashes:    make([]pairHash, len(sorted)),
		bestScore: make([]float64, r),
		bestNode:  make([]uint32, r),
	}
	for i, n := range sorted {
		b.weights[i] = n.Weight
		b.hashes[i] = newPairHash(n.Name)
	}
	return b
}

// filterMargin is the relative slack of top's rejection test; see there.
const filterMargin = 1e-9

// top returns the node numbers of the R highest scores for shard, highest first,
// ties to the lower number (the smaller name). The slice is reused by the next call.
func (b *builder) top(shard uint32) []uint32 {
	r := len(b.bestNode)
	for i := range b.bestScore {
		b.bestScore[i] = math.Inf(-1)
	}
	last := math.Inf(-1) // score of the current R-th entry
	// cut is (1+filterMargin)/last, +Inf while fewer than R nodes are held.
	cut := math.Inf(1)
	for i, w := range b.weights {
		u := unitOf(b.hashes[i].sum(shard))
		// Cheap rejection without ln: ln(u) ≤ u-1, so w·cut ≤ 1-u implies
		// score = -w/ln(u) ≤ last/(1+filterMargin) < last. 1-u is exact (see
		// unitOf) and the margin dwarfs the few ulp of rounding in the score and in
		// w·cut, so this skips only nodes the exact comparison below would skip:
		// the result is identical to scoring every node.
		if w*cut <= 1-u {
			continue
		}
		sc := -w / lnUnit(u)
		// Nodes arrive in ascending number, so an equal score loses to the entry
		// already held: only a strictly higher score enters.
		if sc <= last {
			continue
		}
		j := r - 1
		for j > 0 && sc > b.bestScore[j-1] {
			b.bestScore[j] = b.bestScore[j-1]
			b.bestNode[j] = b.bestNode[j-1]
			j--
		}
		b.bestScore[j] = sc
		b.bestNode[j] = uint32(i)
		if last = b.bestScore[r-1]; last > 0 {
			cut = (1 + filterMargin) / last
		}
	}
	return b.bestNode
}

// checksumVersion is the first byte of the checksummed encoding; it changes if the
// encoding or the placement algorithm ever does.
const checksumVersion = 1

// computeChecksum hashes the canonical content: version, S, R, the nodes in name
// order (length-prefixed name, weight bits) and every owner number.
func (t *Table) computeChecksum() uint64 {
	var d xxhash.Digest
	d.Reset()
	var scratch [binary.MaxVarintLen64 + 8]byte
	head := append(scratch[:0], checksumVersion)
	head = binary.AppendUvarint(head, uint64(t.shards))
	head = binary.AppendUvarint(head, uint64(t.replicas))
	head = binary.AppendUvarint(head, uint64(len(t.nodes)))
	_, _ = d.Write(head)
	for _, n := range t.nodes {
		rec := binary.AppendUvarint(scratch[:0], uint64(len(n.Name)))
		_, _ = d.Write(rec)
		_, _ = d.WriteString(n.Name)
		_, _ = d.Write(binary.BigEndian.AppendUint64(scratch[:0], math.Float64bits(n.Weight)))
	}
	var chunk [256]byte
	for i := 0; i < len(t.owners); {
		k := 0
		for ; k+4 <= len(chunk) && i < len(t.owners); i++ {
			binary.BigEndian.PutUint32(chunk[k:], t.owners[i])
			k += 4
		}
		_, _ = d.Write(chunk[:k])
	}
	return d.Sum64()
}

// Checksum is xxhash64 over the table's canonical content (format version, shard
// count, replicas, nodes in name order with their weights, every owner list). Two
// tables with equal checksums are, barring a hash collision, the same placement.
func (t *Table) Checksum() uint64 { return t.checksum }

// Shards returns the shard count S.
func (t *Table) Shards() int { return t.shards }

// Replicas returns the owners per shard R.
func (t *Table) Replicas() int { return t.replicas }

// Nodes returns a copy of the nodes, sorted by name.
func (t *Table) Nodes() []Node { return slices.Clone(t.nodes) }

// Owners returns a new slice with shard's owner names, primary first, or nil if
// shard is not below Shards().
func (t *Table) Owners(shard uint32) []string {
	if uint64(shard) >= uint64(t.shards) {
		return nil
	}
	row := t.owners[int(shard)*t.replicas : (int(shard)+1)*t.replicas]
	out := make([]string, len(row))
	for i, n := range row {
		out[i] = t.nodes[n].Name
	}
	return out
}

// Primary returns shard's first owner, or "" if shard is not below Shards().
func (t *Table) Primary(shard uint32) string {
	if uint64(shard) >= uint64(t.shards) {
		return ""
	}
	return t.nodes[t.owners[int(shard)*t.replicas]].Name
}

// ShardForKey returns the shard of key: xxhash64(key) mod Shards().
func (t *Table) ShardForKey(key []byte) uint32 {
	return uint32(xxhash.Sum64(key) % uint64(t.shards))
}

// ShardForString is ShardForKey for a string key, without converting it.
func (t *Table) ShardForString(key string) uint32 {
	return uint32(xxhash.Sum64String(key) % uint64(t.shards))
}

// Lookup returns the primary owner of key's shard. It does not allocate.
func (t *Table) Lookup(key []byte) string {
	return t.nodes[t.owners[int(t.ShardForKey(key))*t.replicas]].Name
}

// LookupString is Lookup for a string key.
func (t *Table) LookupString(key string) string {
	return t.nodes[t.owners[int(t.ShardForString(key))*t.replicas]].Name
}

// PrimaryCounts returns how many shards each node is primary of; nodes that are
// primary of none are present with 0.
func (t *Table) PrimaryCounts() map[string]int {
	counts := make([]int, len(t.nodes))
	for s := range t.shards {
		counts[t.owners[s*t.replicas]]++
	}
	out := make(map[string]int, len(t.nodes))
	for i, n := range t.nodes {
		out[n.Name] = counts[i]
	}
	return out
}
