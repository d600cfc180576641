package host

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
)

func testShardConfig() shard.Config {
	c := shard.DefaultConfig()
	c.Shards = 64
	return c
}

// newShardNet is newLeaseNet with Config.Shard set on every host.
func newShardNet(t *testing.T, names []string, voters int) *leaseNet {
	n := &leaseNet{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), hosts: map[string]*Host{},
		storages: map[string]*lease.MemoryStorage{}, events: map[string][]lease.Event{}, down: map[string]bool{}}
	for i, name := range names {
		st := &lease.MemoryStorage{}
		lc := lease.DefaultConfig(name, names[:voters])
		sc := testShardConfig()
		h, err := New(Config{Swim: swim.LANProfile(name, name+":1"), Lease: &lc, LeaseStorage: st, Shard: &sc},
			rand.New(rand.NewPCG(uint64(i+1), 9)), n.now)
		if err != nil {
			t.Fatal(err)
		}
		n.hosts[name+":1"] = h
		n.order = append(n.order, name+":1")
		n.storages[name] = st
		if i > 0 {
			h.Join(n.now, []string{names[0] + ":1"})
		}
	}
	return n
}

// servers lists, per shard, the running hosts that may serve it now.
func (n *leaseNet) servers(shards int) [][]string {
	out := make([][]string, shards)
	for _, addr := range n.order {
		if n.down[addr] {
			continue
		}
		for _, s := range n.hosts[addr].OwnedShards(n.now) {
			out[s] = append(out[s], addr)
		}
	}
	return out
}

func TestHostShardConfigNeedsLease(t *testing.T) {
	sc := testShardConfig()
	_, err := New(Config{Swim: swim.LANProfile("a", "a:1"), Shard: &sc}, rand.New(rand.NewPCG(1, 1)), time.Unix(0, 0))
	if err == nil {
		t.Fatal("Shard without Lease accepted")
	}
	sc.Shards = 0
	lc := lease.DefaultConfig("a", []string{"a"})
	_, err = New(Config{Swim: swim.LANProfile("a", "a:1"), Lease: &lc, LeaseStorage: &lease.MemoryStorage{}, Shard: &sc},
		rand.New(rand.NewPCG(1, 1)), time.Unix(0, 0))
	if !errors.Is(err, shard.ErrInvalidConfig) {
		t.Fatalf("Shards 0: got %v, want ErrInvalidConfig", err)
	}
}

// One node is leader, controller and owner at once: every shard message stays in
// the process. It must publish a map and serve every shard.
func TestHostShardSingleNodeServesAll(t *testing.T) {
	n := newShardNet(t, []string{"a"}, 1)
	h := n.hosts["a:1"]
	if _, ok := h.ShardFor([]byte("k")); ok {
		t.Fatal("ShardFor answered before any map")
	}
	n.run(10 * time.Second)
	if !h.IsLeader(n.now) {
		t.Fatal("single voter did not lead")
	}
	m := h.ShardMap()
	if m == nil {
		t.Fatal("no map")
	}
	if got := h.OwnedShards(n.now); len(got) != 64 {
		t.Fatalf("serves %d shards, want 64", len(got))
	}
	s, ok := h.ShardFor([]byte("some key"))
	if !ok || s != m.ShardFor([]byte("some key")) || !h.Serving(n.now, s) {
		t.Fatalf("ShardFor = %d %v, map says %d; serving %v", s, ok, m.ShardFor([]byte("some key")), h.Serving(n.now, s))
	}
	if o, ok := h.ShardOwner(s); !ok || o != "a" {
		t.Fatalf("ShardOwner(%d) = %q %v", s, o, ok)
	}
	if _, ok := h.ShardOwner(1 << 20); ok {
		t.Fatal("ShardOwner of an out-of-range shard answered")
	}
	os, cs := h.ShardStats()
	if os.Acquired != 64 || cs.Grants == 0 {
		t.Fatalf("stats: owner %+v controller %+v", os, cs)
	}
	// Draining the only node leaves nowhere to move its shards: it keeps serving
	// them (a drain receives nothing new, it is not a stop), but the placement
	// target is empty until the drain is lifted.
	if err := h.DrainNode(n.now, "a", true); err != nil {
		t.Fatal(err)
	}
	n.run(5 * time.Second)
	if m := h.ShardMap(); m.Target(s) != "" || m.Owner(s) != "a" {
		t.Fatalf("drained sole node: target %q owner %q", m.Target(s), m.Owner(s))
	}
	if got := h.OwnedShards(n.now); len(got) != 64 {
		t.Fatalf("drained sole node serves %d shards, want all 64 (nowhere to go)", len(got))
	}
	if err := h.DrainNode(n.now, "a", false); err != nil {
		t.Fatal(err)
	}
	n.run(5 * time.Second)
	if m := h.ShardMap(); m.Target(s) != "a" {
		t.Fatalf("undrained: target %q", m.Target(s))
	}
}

// Four nodes through real packets: every shard is served by exactly one node, the
// maps agree; a non-leader crash moves its shards elsewhere; a drain empties a node;
// a non-leader may not drain.
func TestHostShardClusterCrashAndDrain(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	n := newShardNet(t, names, 3)
	n.run(15 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v", ls)
	}
	leader := n.hosts[ls[0]]
	check := func(when string, down string) {
		t.Helper()
		for s, who := range n.servers(64) {
			if len(who) != 1 || who[0] == down {
				t.Fatalf("%s: shard %d served by %v", when, s, who)
			}
		}
		v := leader.ShardMap().Version()
		for _, addr := range n.order {
			if m := n.hosts[addr].ShardMap(); !n.down[addr] && (m == nil || m.Version() != v) {
				t.Fatalf("%s: %s holds map %v, leader version %d", when, addr, m, v)
			}
		}
	}
	check("formed", "")
	var victim string
	for _, addr := range n.order {
		if addr != ls[0] {
			victim = addr
			break
		}
	}
	if err := n.hosts[victim].DrainNode(n.now, "x", true); !errors.Is(err, lease.ErrNotLeader) {
		t.Fatalf("non-leader DrainNode: %v", err)
	}
	n.down[victim] = true
	n.run(20 * time.Second)
	check("after crash", victim)
	n.down[victim] = false // it comes back with the same state; swim refutes its death
	n.run(20 * time.Second)
	var drained string
	for _, addr := range n.order {
		if addr != ls[0] && addr != victim {
			drained = addr
			break
		}
	}
	name := n.hosts[drained].cfg.Swim.Name
	if err := leader.DrainNode(n.now, name, true); err != nil {
		t.Fatal(err)
	}
	n.run(20 * time.Second)
	if got := n.hosts[drained].OwnedShards(n.now); len(got) != 0 {
		t.Fatalf("drained %s still serves %v", name, got)
	}
	if s := leader.ShardMap().ShardsOf(name); len(s) != 0 {
		t.Fatalf("map still gives %s shards %v", name, s)
	}
	check("after drain", drained)
}
