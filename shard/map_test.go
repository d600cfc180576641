package shard

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/omnirelay/mesh/rendezvous"
)

func testTable(t *testing.T, shards int, names ...string) *rendezvous.Table {
	t.Helper()
	var nodes []rendezvous.Node
	for _, n := range names {
		nodes = append(nodes, rendezvous.Node{Name: n, Weight: 1})
	}
	tb, err := rendezvous.BuildTable(nodes, shards, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func testMap(t *testing.T) *Map {
	t.Helper()
	tb := testTable(t, 8, "a", "b", "c")
	owners := make([]string, 8)
	states := make([]State, 8)
	for s := range owners {
		owners[s] = tb.Primary(uint32(s))
	}
	owners[2], states[2] = "", StateDraining
	owners[5], states[5] = "z", StateDraining // a departed owner still being drained
	states[6] = StateRebalancing
	m, err := NewMap(7, 3, 8, tb, owners, states)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMapWireRoundTrip(t *testing.T) {
	m := testMap(t)
	for _, prev := range []*Map{nil, m} {
		got, err := DecodeMap(m.Wire(), prev)
		if err != nil {
			t.Fatal(err)
		}
		if got.Epoch() != 7 || got.Version() != 3 || got.Checksum() != m.Checksum() ||
			!slices.Equal(got.Owners(), m.Owners()) || !slices.Equal(got.States(), m.States()) ||
			got.Table().Checksum() != m.Table().Checksum() {
			t.Fatalf("round trip changed the map: %+v", got.Wire())
		}
	}
	if got := m.Owner(5); got != "z" {
		t.Errorf("Owner(5) = %q, want the drained owner z", got)
	}
	if got := m.ShardsOf("z"); !slices.Equal(got, []uint32{5}) {
		t.Errorf("ShardsOf(z) = %v", got)
	}
}

func TestMapChecksumCoversOwnersAndStates(t *testing.T) {
	m := testMap(t)
	owners, states := m.Owners(), m.States()
	seen := map[uint64]string{m.Checksum(): "base"}
	variants := map[string]func(){
		"state":   func() { states[0] = StateDraining },
		"owner":   func() { owners[1] = "c" },
		"noOwner": func() { owners[3] = "" },
	}
	for name, f := range variants {
		owners, states = m.Owners(), m.States()
		f()
		v, err := NewMap(7, 3, 8, m.Table(), owners, states)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[v.Checksum()]; dup {
			t.Errorf("%s change has the checksum of %s", name, prev)
		}
		seen[v.Checksum()] = name
	}
	// Another placement, same owners and states.
	v, _ := NewMap(7, 3, 8, testTable(t, 8, "a", "b", "d"), m.Owners(), m.States())
	if v.Checksum() == m.Checksum() {
		t.Error("a different table left the checksum unchanged")
	}
}

func TestDecodeMapRejectsMalformed(t *testing.T) {
	m := testMap(t)
	for name, mutate := range map[string]func(*MapState){
		"checksum":       func(ms *MapState) { ms.Checksum++ },
		"shard count":    func(ms *MapState) { ms.Shards = 9 },
		"zero shards":    func(ms *MapState) { ms.Shards, ms.Owners, ms.States = 0, nil, nil },
		"owner index":    func(ms *MapState) { ms.Owners[0] = uint32(len(ms.Names) + 1) },
		"state":          func(ms *MapState) { ms.States[0] = 3 },
		"unsorted names": func(ms *MapState) { ms.Names[0], ms.Names[1] = ms.Names[1], ms.Names[0] },
		"extra name":     func(ms *MapState) { ms.Names = append(ms.Names, "zz") },
		"replicas":       func(ms *MapState) { ms.Replicas = 9 },
		"bad weight":     func(ms *MapState) { ms.Nodes[0].Weight = -1 },
		"too many nodes": func(ms *MapState) { ms.Nodes = make([]NodeWeight, MaxMapNodes+1) },
	} {
		ms := m.Wire()
		mutate(ms)
		if _, err := DecodeMap(ms, nil); !errors.Is(err, ErrBadMap) {
			t.Errorf("%s: got %v, want ErrBadMap", name, err)
		}
	}
}

func TestMapLookupsAgreeWithRendezvousAndDoNotAllocate(t *testing.T) {
	m := testMap(t)
	noTable, err := NewMap(1, 1, 8, nil, make([]string, 8), make([]State, 8))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		key := fmt.Sprintf("key-%d", i)
		s := m.ShardFor([]byte(key))
		if s != m.Table().ShardForKey([]byte(key)) || s != m.ShardForString(key) ||
			s != noTable.ShardFor([]byte(key)) || s != noTable.ShardForString(key) {
			t.Fatalf("key %q: shard mappings disagree", key)
		}
		if m.OwnerOf([]byte(key)) != m.Owner(s) {
			t.Fatalf("OwnerOf(%q) != Owner(ShardFor)", key)
		}
	}
	key := []byte("some-key")
	if n := testing.AllocsPerRun(100, func() { _ = m.Owner(m.ShardFor(key)); _ = m.OwnerOf(key) }); n != 0 {
		t.Errorf("lookups allocate %v times", n)
	}
	if m.Owner(8) != "" || m.Target(8) != "" || m.State(8) != StateDraining {
		t.Error("out-of-range shard has an owner, target or non-draining state")
	}
}

func TestMapNewer(t *testing.T) {
	mk := func(e, v uint64) *Map {
		m, _ := NewMap(e, v, 1, nil, []string{""}, []State{StateDraining})
		return m
	}
	for _, c := range []struct {
		a, b *Map
		want bool
	}{
		{mk(1, 1), nil, true},
		{mk(1, 2), mk(1, 1), true},
		{mk(1, 1), mk(1, 1), false},
		{mk(2, 1), mk(1, 9), true},
		{mk(1, 9), mk(2, 1), false},
	} {
		if got := c.a.Newer(c.b); got != c.want {
			t.Errorf("Newer = %v, want %v", got, c.want)
		}
	}
}

// The wire's shard bound is the placement's, and PROTOCOL.md's 2^20: a change of
// rendezvous.MaxShards would change what the wire accepts.
func TestWireLimitsMatchRendezvous(t *testing.T) {
	if maxShards != 1<<20 {
		t.Fatalf("the wire's shard bound is %d, PROTOCOL.md says 2^20", maxShards)
	}
}
