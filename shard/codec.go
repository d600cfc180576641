package shard

import (
	"fmt"
	"slices"

	"github.com/omnirelay/mesh/rendezvous"
)

// Wire returns the map as carried in a MapState message.
func (m *Map) Wire() *MapState {
	ms := &MapState{
		Epoch:    m.epoch,
		Version:  m.version,
		Checksum: m.checksum,
		Shards:   uint32(m.shards),
		Names:    slices.Clone(m.names),
		Owners:   make([]uint32, m.shards),
		States:   make([]uint8, m.shards),
	}
	if m.table != nil {
		ms.Replicas = uint32(m.table.Replicas())
		for _, n := range m.table.Nodes() {
			ms.Nodes = append(ms.Nodes, NodeWeight{Name: n.Name, Weight: n.Weight})
		}
	}
	for s := range m.shards {
		ms.Owners[s] = m.owner[s] + 1 // noOwner+1 wraps to 0
		ms.States[s] = uint8(m.state[s])
	}
	return ms
}

// DecodeMap rebuilds a Map from a MapState received from a peer, checking every
// field and the checksum. Errors wrap ErrBadMap (or a rendezvous error for a bad
// node list); the caller counts and drops the message. prev, if not nil, is the
// map the caller has: its table is reused when the placement inputs (nodes,
// weights, replicas) are unchanged, which is the common case of a move, so only a
// membership change costs a table build.
func DecodeMap(ms *MapState, prev *Map) (*Map, error) {
	s := int(ms.Shards)
	if s < 1 || s > rendezvous.MaxShards || len(ms.Owners) != s || len(ms.States) != s {
		return nil, fmt.Errorf("%w: %d shards, %d owners, %d states", ErrBadMap, s, len(ms.Owners), len(ms.States))
	}
	if len(ms.Nodes) > MaxMapNodes {
		return nil, fmt.Errorf("%w: %d nodes", ErrBadMap, len(ms.Nodes))
	}
	var table *rendezvous.Table
	if prev != nil && sameInputs(prev.table, ms) {
		table = prev.table
	} else if len(ms.Nodes) > 0 {
		nodes := make([]rendezvous.Node, len(ms.Nodes))
		for i, n := range ms.Nodes {
			nodes[i] = rendezvous.Node{Name: n.Name, Weight: n.Weight}
		}
		t, err := rendezvous.BuildTable(nodes, s, int(ms.Replicas))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadMap, err)
		}
		table = t
	} else if ms.Replicas != 0 {
		return nil, fmt.Errorf("%w: replicas without nodes", ErrBadMap)
	}
	owners := make([]string, s)
	for i, o := range ms.Owners {
		if o > uint32(len(ms.Names)) {
			return nil, fmt.Errorf("%w: owner %d of %d names", ErrBadMap, o, len(ms.Names))
		}
		if o > 0 {
			owners[i] = ms.Names[o-1]
		}
	}
	states := make([]State, s)
	for i, st := range ms.States {
		states[i] = State(st)
	}
	m, err := NewMap(ms.Epoch, ms.Version, s, table, owners, states)
	if err != nil {
		return nil, err
	}
	// NewMap derives the name list from the owners; a different list on the wire
	// (unsorted, duplicated, unreferenced or empty names) is not canonical.
	if !slices.Equal(m.names, ms.Names) {
		return nil, fmt.Errorf("%w: owner names not sorted, unique and referenced", ErrBadMap)
	}
	if m.checksum != ms.Checksum {
		return nil, fmt.Errorf("%w: checksum %016x, content hashes to %016x", ErrBadMap, ms.Checksum, m.checksum)
	}
	return m, nil
}

// sameInputs reports whether t was built from exactly ms's nodes, weights, shard
// count and replicas (t's nodes are sorted by name; so are a valid map's).
func sameInputs(t *rendezvous.Table, ms *MapState) bool {
	if t == nil || t.Shards() != int(ms.Shards) || t.Replicas() != int(ms.Replicas) {
		return false
	}
	nodes := t.Nodes()
	if len(nodes) != len(ms.Nodes) {
		return false
	}
	for i, n := range nodes {
		if n.Name != ms.Nodes[i].Name || n.Weight != ms.Nodes[i].Weight {
			return false
		}
	}
	return true
}
