package client

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/rendezvous"
	"github.com/omnirelay/mesh/shard"
)

// decodeMap rebuilds the map an agent serves as JSON and checks it as a node
// checks a map from the leader: it turns the body into the wire form and hands
// it to shard.DecodeMap, which bounds every count, rebuilds the rendezvous table
// from the placement (reusing prev's when unchanged) and compares the checksum.
func decodeMap(sm control.ShardMap, prev *shard.Map) (*shard.Map, error) {
	if sm.Count < 1 || sm.Count > rendezvous.MaxShards || len(sm.Shards) != sm.Count {
		return nil, fmt.Errorf("%w: count %d with %d shards (at most %d)", ErrBadMap, sm.Count, len(sm.Shards), rendezvous.MaxShards)
	}
	sum, err := strconv.ParseUint(sm.Checksum, 16, 64)
	if err != nil || len(sm.Checksum) != 16 {
		return nil, fmt.Errorf("%w: checksum %q: want 16 hex digits", ErrBadMap, sm.Checksum)
	}
	ms := &shard.MapState{Epoch: sm.Epoch, Version: sm.Version, Checksum: sum, Shards: uint32(sm.Count),
		Owners: make([]uint32, sm.Count), States: make([]uint8, sm.Count)}
	if p := sm.Placement; p != nil {
		if p.Replicas < 1 || len(p.Nodes) > shard.MaxMapNodes {
			return nil, fmt.Errorf("%w: placement of %d replicas over %d nodes (at most %d)", ErrBadMap, p.Replicas, len(p.Nodes), shard.MaxMapNodes)
		}
		ms.Replicas = uint32(p.Replicas)
		ms.Nodes = make([]shard.NodeWeight, len(p.Nodes))
		for i, n := range p.Nodes {
			ms.Nodes[i] = shard.NodeWeight{Name: n.Name, Weight: n.Weight}
		}
	}
	index := map[string]uint32{}
	for i, s := range sm.Shards {
		if s.ID != uint32(i) {
			return nil, fmt.Errorf("%w: shard %d listed at position %d", ErrBadMap, s.ID, i)
		}
		st, ok := parseState(s.State)
		if !ok {
			return nil, fmt.Errorf("%w: shard %d: state %q", ErrBadMap, s.ID, s.State)
		}
		ms.States[i] = uint8(st)
		if _, seen := index[s.Owner]; s.Owner != "" && !seen {
			index[s.Owner] = 0
			ms.Names = append(ms.Names, s.Owner)
		}
	}
	slices.Sort(ms.Names)
	for i, n := range ms.Names {
		index[n] = uint32(i) + 1 // the wire numbers owners from 1; 0 is none
	}
	for i, s := range sm.Shards {
		if s.Owner != "" {
			ms.Owners[i] = index[s.Owner]
		}
	}
	m, err := shard.DecodeMap(ms, prev)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMap, err)
	}
	return m, nil
}

// parseState is the inverse of shard.State.String for the states a map holds.
func parseState(s string) (shard.State, bool) {
	for _, st := range []shard.State{shard.StateSteady, shard.StateDraining, shard.StateRebalancing} {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}
