package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/rendezvous"
)

// ErrBadMap is wrapped by the errors NewMap returns for inconsistent content,
// which from a peer means a malformed map message.
var ErrBadMap = errors.New("shard: malformed shard map")

// State is where a shard is in its move cycle: steady → draining → rebalancing →
// steady.
type State uint8

const (
	// StateSteady: the shard has an owner that the leader keeps granting it to.
	StateSteady State = 0
	// StateDraining: the leader no longer grants the shard to its owner (Map.Owner,
	// possibly "") and waits for the owner to release it or for its lease to lapse.
	// Shards of suspect, dead or departed owners are parked in this state.
	StateDraining State = 1
	// StateRebalancing: the shard is granted to its new owner (Map.Owner), which
	// has not yet confirmed that it serves it.
	StateRebalancing State = 2

	stateCount = 3
)

func (s State) String() string {
	switch s {
	case StateSteady:
		return "steady"
	case StateDraining:
		return "draining"
	case StateRebalancing:
		return "rebalancing"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// noOwner marks a shard without an owner in Map.owner.
const noOwner = ^uint32(0)

// Map is a published shard map: the leader's epoch and the map's version, the
// target placement (a rendezvous table over the eligible nodes), and per shard the
// current owner and State. It is immutable, so concurrent readers need no lock.
//
// Maps are ordered by (Epoch, Version): a leader numbers its maps 1, 2, ... and a
// new leader has a higher epoch.
type Map struct {
	epoch, version uint64
	shards         int
	table          *rendezvous.Table // target placement; nil when no node is eligible
	names          []string          // owner names, sorted, each referenced
	owner          []uint32          // per shard: index into names, or noOwner
	state          []State
	checksum       uint64
}

// NewMap builds a map. owners and states have one entry per shard ("" for no
// owner); table, if not nil, must have the same shard count. Errors wrap ErrBadMap.
func NewMap(epoch, version uint64, shards int, table *rendezvous.Table, owners []string, states []State) (*Map, error) {
	if shards < 1 || shards > rendezvous.MaxShards || len(owners) != shards || len(states) != shards {
		return nil, fmt.Errorf("%w: %d shards, %d owners, %d states", ErrBadMap, shards, len(owners), len(states))
	}
	if table != nil && table.Shards() != shards {
		return nil, fmt.Errorf("%w: table has %d shards, map %d", ErrBadMap, table.Shards(), shards)
	}
	m := &Map{
		epoch:   epoch,
		version: version,
		shards:  shards,
		table:   table,
		owner:   make([]uint32, shards),
		state:   slices.Clone(states),
	}
	for _, st := range states {
		if st >= stateCount {
			return nil, fmt.Errorf("%w: state %d", ErrBadMap, st)
		}
	}
	index := map[string]uint32{}
	for _, o := range owners {
		if _, ok := index[o]; !ok && o != "" {
			index[o] = 0
			m.names = append(m.names, o)
		}
	}
	slices.Sort(m.names)
	for i, n := range m.names {
		index[n] = uint32(i)
	}
	for s, o := range owners {
		if o == "" {
			m.owner[s] = noOwner
		} else {
			m.owner[s] = index[o]
		}
	}
	m.checksum = m.computeChecksum()
	return m, nil
}

// checksumVersion is the first byte hashed by computeChecksum; it changes if the
// hashed encoding ever does.
const checksumVersion = 1

// computeChecksum hashes the content that every member must agree on: shard
// count, the table's checksum (0 without a table), the owner names and, per shard,
// owner number and state. Epoch and version are compared on their own.
func (m *Map) computeChecksum() uint64 {
	var d xxhash.Digest
	d.Reset()
	var tc uint64
	if m.table != nil {
		tc = m.table.Checksum()
	}
	b := []byte{checksumVersion}
	b = binary.AppendUvarint(b, uint64(m.shards))
	b = binary.BigEndian.AppendUint64(b, tc)
	b = binary.AppendUvarint(b, uint64(len(m.names)))
	for _, n := range m.names {
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
	}
	for s := range m.shards {
		b = binary.AppendUvarint(b, uint64(m.owner[s]+1)) // noOwner+1 wraps to 0
		b = append(b, byte(m.state[s]))
		if len(b) > 4096 {
			_, _ = d.Write(b)
			b = b[:0]
		}
	}
	_, _ = d.Write(b)
	return d.Sum64()
}

// Epoch is the fencing token of the leader that published the map.
func (m *Map) Epoch() uint64 { return m.epoch }

// Version numbers the maps of one epoch, from 1, incremented on every change.
func (m *Map) Version() uint64 { return m.version }

// Checksum is xxhash64 over the map's content (placement, owners, states), not
// its epoch or version. Members compare it with announcements to detect a stale
// or corrupt copy.
func (m *Map) Checksum() uint64 { return m.checksum }

// Shards is the shard count S.
func (m *Map) Shards() int { return m.shards }

// Table is the target placement over the eligible nodes, or nil if none is.
func (m *Map) Table() *rendezvous.Table { return m.table }

// ShardFor returns key's shard: xxhash64(key) mod S, the mapping of
// rendezvous.Table.ShardForKey. It does not allocate.
func (m *Map) ShardFor(key []byte) uint32 {
	if m.table != nil {
		return m.table.ShardForKey(key)
	}
	// No eligible node, so no table: the same documented mapping, computed here.
	return uint32(xxhash.Sum64(key) % uint64(m.shards))
}

// ShardForString is ShardFor for a string key, without converting it.
func (m *Map) ShardForString(key string) uint32 {
	if m.table != nil {
		return m.table.ShardForString(key)
	}
	return uint32(xxhash.Sum64String(key) % uint64(m.shards))
}

// Owner returns the node a client should send shard's traffic to: the current
// owner (steady or rebalancing) or the owner being drained, which serves until it
// releases. "" if the shard has no owner or is out of range. It does not allocate.
func (m *Map) Owner(shard uint32) string {
	if uint64(shard) >= uint64(m.shards) || m.owner[shard] == noOwner {
		return ""
	}
	return m.names[m.owner[shard]]
}

// OwnerOf is Owner(ShardFor(key)).
func (m *Map) OwnerOf(key []byte) string { return m.Owner(m.ShardFor(key)) }

// State returns shard's State (StateDraining, with no owner, if out of range).
func (m *Map) State(shard uint32) State {
	if uint64(shard) >= uint64(m.shards) {
		return StateDraining
	}
	return m.state[shard]
}

// Target returns the primary of shard in the target placement: where the shard
// goes once no move is pending. "" without a table or out of range.
func (m *Map) Target(shard uint32) string {
	if m.table == nil {
		return ""
	}
	return m.table.Primary(shard)
}

// Owners returns a new slice with every shard's owner ("" for none).
func (m *Map) Owners() []string {
	out := make([]string, m.shards)
	for s := range out {
		out[s] = m.Owner(uint32(s))
	}
	return out
}

// States returns a new slice with every shard's State.
func (m *Map) States() []State { return slices.Clone(m.state) }

// ShardsOf returns the shards whose Owner is node, ascending.
func (m *Map) ShardsOf(node string) []uint32 {
	i, ok := slices.BinarySearch(m.names, node)
	if !ok {
		return nil
	}
	var out []uint32
	for s, o := range m.owner {
		if o == uint32(i) {
			out = append(out, uint32(s))
		}
	}
	return out
}

// Newer reports whether m supersedes o (o may be nil): a higher epoch, or the same
// epoch and a higher version.
func (m *Map) Newer(o *Map) bool {
	return o == nil || m.epoch > o.epoch || (m.epoch == o.epoch && m.version > o.version)
}
