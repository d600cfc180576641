package rendezvous

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"
)

// genNodes draws 1..maxN nodes with distinct short names over a small alphabet, so
// names that are prefixes of one another (a hash-input encoding hazard) are common,
// and weights that are sometimes all equal.
func genNodes(t *rapid.T, minN, maxN int) []Node {
	names := rapid.SliceOfNDistinct(rapid.StringMatching(`[ab]{1,5}`), minN, maxN, rapid.ID[string]).Draw(t, "names")
	// 0: equal weights; 1: moderate spread; 2: log-uniform over the whole range.
	spread := rapid.IntRange(0, 2).Draw(t, "spread")
	nodes := make([]Node, len(names))
	for i, n := range names {
		w := 1.0
		switch spread {
		case 1:
			w = rapid.Float64Range(0.05, 20).Draw(t, "weight")
		case 2:
			w = math.Pow(10, rapid.Float64Range(-12, 12).Draw(t, "log10weight"))
		}
		nodes[i] = Node{Name: n, Weight: w}
	}
	return nodes
}

// bruteOwners is the reference placement: score every node with the public Score,
// sort all of them (score descending, name ascending on ties) and cut to r.
func bruteOwners(shard uint32, nodes []Node, r int) []string {
	type scored struct {
		name  string
		score float64
	}
	all := make([]scored, len(nodes))
	for i, n := range nodes {
		all[i] = scored{n.Name, Score(shard, n)}
	}
	slices.SortFunc(all, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	out := make([]string, r)
	for i := range out {
		out[i] = all[i].name
	}
	return out
}

// tb is what both *testing.T and *rapid.T offer.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func mustBuild(t tb, nodes []Node, shards, replicas int) *Table {
	t.Helper()
	tab, err := BuildTable(nodes, shards, replicas)
	if err != nil {
		t.Fatalf("BuildTable(%d nodes, %d, %d): %v", len(nodes), shards, replicas, err)
	}
	return tab
}

func equalNodes(n int, prefix string) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("%s-%03d", prefix, i), Weight: 1}
	}
	return nodes
}

func TestLnUnitMatchesMathLog(t *testing.T) {
	check := func(t tb, x float64) {
		t.Helper()
		got, want := lnUnit(x), math.Log(x)
		ulp := math.Abs(math.Nextafter(want, 0) - want)
		if math.Abs(got-want) > 4*ulp {
			t.Fatalf("lnUnit(%v) = %v, math.Log = %v (off by %v ulp)", x, got, want, math.Abs(got-want)/ulp)
		}
	}
	// The ends of the range scoreOf produces, and the reduction's boundaries.
	for _, x := range []float64{
		0.5 / (1 << 52), 1 - 0.5/(1<<52), 0.5, 0.25, math.Sqrt2 / 2, math.Nextafter(math.Sqrt2/2, 1),
		math.Nextafter(math.Sqrt2/2, 0), math.Nextafter(1, 0), 1e-10, 0.1, 0.9,
	} {
		check(t, x)
	}
	rapid.Check(t, func(t *rapid.T) {
		h := rapid.Uint64().Draw(t, "h")
		check(t, (float64(h>>12)+0.5)*(1.0/(1<<52)))
	})
}

func TestScoreIsLogarithmicMethodOverFixedHash(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		name := rapid.StringN(1, 40, -1).Draw(t, "name")
		shard := rapid.Uint32().Draw(t, "shard")
		w := rapid.Float64Range(MinWeight, MaxWeight).Draw(t, "weight")
		// The documented encoding, built independently: name bytes, then the shard
		// as 4 big-endian bytes, hashed with the unseeded xxhash64.
		h := xxhash.Sum64(binary.BigEndian.AppendUint32([]byte(name), shard))
		u := (float64(h>>12) + 0.5) / math.Exp2(52)
		want := -w / math.Log(u)
		got := Score(shard, Node{Name: name, Weight: w})
		if math.Abs(got-want) > 1e-14*want {
			t.Fatalf("Score = %v, want %v", got, want)
		}
		if !(got > 0) || math.IsInf(got, 0) {
			t.Fatalf("score %v not positive and finite", got)
		}
	})
}

func TestBuildTableMatchesBruteForce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 1, 12)
		shards := rapid.IntRange(1, 64).Draw(t, "shards")
		r := rapid.IntRange(1, len(nodes)).Draw(t, "replicas")
		tab := mustBuild(t, nodes, shards, r)
		for s := range uint32(shards) {
			want := bruteOwners(s, nodes, r)
			if got := tab.Owners(s); !slices.Equal(got, want) {
				t.Fatalf("shard %d: table owners %v, brute force %v", s, got, want)
			}
			if got := tab.Primary(s); got != want[0] {
				t.Fatalf("shard %d: primary %q, brute force %q", s, got, want[0])
			}
			got, err := Owners(s, nodes, r)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("shard %d: Owners = %v, %v; brute force %v", s, got, err, want)
			}
		}
	})
}

// Larger node counts than rapid draws, where most nodes are rejected by the
// builder's cheap pre-filter, against the same brute force.
func TestBuildTableMatchesBruteForceManyNodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for _, c := range []struct {
		nodes, shards, r int
		spread           float64 // weights are 10^uniform(-spread, spread)
	}{{300, 60, 1, 0}, {300, 60, 5, 0.5}, {500, 40, 3, 3}, {200, 40, 200, 1}} {
		nodes := make([]Node, c.nodes)
		for i := range nodes {
			nodes[i] = Node{Name: fmt.Sprintf("n%d", rng.Uint32()), Weight: math.Pow(10, c.spread*(2*rng.Float64()-1))}
		}
		tab := mustBuild(t, nodes, c.shards, c.r)
		for s := range uint32(c.shards) {
			if got, want := tab.Owners(s), bruteOwners(s, nodes, c.r); !slices.Equal(got, want) {
				t.Fatalf("%d nodes, shard %d: table %v, brute force %v", c.nodes, s, got, want)
			}
		}
	}
}

func TestTableIgnoresInputOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 1, 12)
		shards := rapid.IntRange(1, 64).Draw(t, "shards")
		r := rapid.IntRange(1, len(nodes)).Draw(t, "replicas")
		a := mustBuild(t, nodes, shards, r)
		b := mustBuild(t, rapid.Permutation(nodes).Draw(t, "permuted"), shards, r)
		if a.Checksum() != b.Checksum() {
			t.Fatalf("checksums differ: %x vs %x", a.Checksum(), b.Checksum())
		}
		for s := range uint32(shards) {
			if !slices.Equal(a.Owners(s), b.Owners(s)) {
				t.Fatalf("shard %d: %v vs %v", s, a.Owners(s), b.Owners(s))
			}
		}
	})
}

func TestChecksumCoversEveryInput(t *testing.T) {
	base := []Node{{"a", 1}, {"b", 2}, {"c", 3}}
	ref := mustBuild(t, base, 100, 2).Checksum()
	variants := map[string]func() *Table{
		"weight": func() *Table {
			return mustBuild(t, []Node{{"a", 1}, {"b", 2}, {"c", math.Nextafter(3, 4)}}, 100, 2)
		},
		"name":     func() *Table { return mustBuild(t, []Node{{"a", 1}, {"b", 2}, {"d", 3}}, 100, 2) },
		"extra":    func() *Table { return mustBuild(t, append(slices.Clone(base), Node{"e", 1}), 100, 2) },
		"shards":   func() *Table { return mustBuild(t, base, 101, 2) },
		"replicas": func() *Table { return mustBuild(t, base, 100, 3) },
	}
	for name, build := range variants {
		if build().Checksum() == ref {
			t.Errorf("changing %s left the checksum at %x", name, ref)
		}
	}
}

func TestBuildTableRejectsBadInput(t *testing.T) {
	ok := []Node{{"a", 1}, {"b", 1}}
	cases := []struct {
		name     string
		nodes    []Node
		shards   int
		replicas int
		want     error
	}{
		{"no nodes", nil, 10, 1, ErrNoNodes},
		{"empty name", []Node{{"", 1}}, 10, 1, ErrEmptyName},
		{"duplicate", []Node{{"a", 1}, {"b", 1}, {"a", 2}}, 10, 1, ErrDuplicateNode},
		{"zero weight", []Node{{"a", 0}}, 10, 1, ErrBadWeight},
		{"negative weight", []Node{{"a", -1}}, 10, 1, ErrBadWeight},
		{"NaN weight", []Node{{"a", math.NaN()}}, 10, 1, ErrBadWeight},
		{"infinite weight", []Node{{"a", math.Inf(1)}}, 10, 1, ErrBadWeight},
		{"huge weight", []Node{{"a", MaxWeight * 2}}, 10, 1, ErrBadWeight},
		{"zero shards", ok, 0, 1, ErrBadShardCount},
		{"negative shards", ok, -5, 1, ErrBadShardCount},
		{"too many shards", ok, MaxShards + 1, 1, ErrBadShardCount},
		{"zero replicas", ok, 10, 0, ErrBadReplicas},
		{"replicas above nodes", ok, 10, 3, ErrBadReplicas},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tab, err := BuildTable(c.nodes, c.shards, c.replicas)
			if !errors.Is(err, c.want) || tab != nil {
				t.Fatalf("BuildTable = %v, %v; want error %v", tab, err, c.want)
			}
		})
	}
	many := equalNodes(32, "n")
	if _, err := BuildTable(many, MaxShards, 32); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized table: err %v, want ErrTooLarge", err)
	}
	if _, err := Owners(0, ok, 3); !errors.Is(err, ErrBadReplicas) {
		t.Fatalf("Owners with too many replicas: err %v", err)
	}
}

func TestLookupUsesDocumentedKeyMapping(t *testing.T) {
	tab := mustBuild(t, equalNodes(7, "n"), 1000, 2)
	rapid.Check(t, func(t *rapid.T) {
		key := rapid.SliceOf(rapid.Byte()).Draw(t, "key")
		want := uint32(xxhash.Sum64(key) % 1000)
		if got := tab.ShardForKey(key); got != want {
			t.Fatalf("ShardForKey = %d, want %d", got, want)
		}
		if got := tab.ShardForString(string(key)); got != want {
			t.Fatalf("ShardForString = %d, want %d", got, want)
		}
		if got := tab.Lookup(key); got != tab.Owners(want)[0] {
			t.Fatalf("Lookup = %q, owners %v", got, tab.Owners(want))
		}
		if got := tab.LookupString(string(key)); got != tab.Owners(want)[0] {
			t.Fatalf("LookupString = %q, owners %v", got, tab.Owners(want))
		}
	})
	key := []byte("user:12345")
	if n := testing.AllocsPerRun(100, func() { _ = tab.Lookup(key) }); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
	if tab.Owners(1000) != nil || tab.Primary(1000) != "" {
		t.Fatal("out-of-range shard answered")
	}
}

func TestPrimaryCounts(t *testing.T) {
	nodes := equalNodes(5, "n")
	tab := mustBuild(t, nodes, 300, 2)
	counts := tab.PrimaryCounts()
	want := map[string]int{}
	for s := range uint32(300) {
		want[tab.Primary(s)]++
	}
	total := 0
	for _, n := range nodes {
		if counts[n.Name] != want[n.Name] {
			t.Fatalf("%s: PrimaryCounts %d, counted %d", n.Name, counts[n.Name], want[n.Name])
		}
		total += counts[n.Name]
	}
	if total != 300 || len(counts) != 5 {
		t.Fatalf("counts %v", counts)
	}
}
