package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
)

func testShardConfig() shard.Config {
	c := shard.DefaultConfig()
	c.Shards = 64
	return c
}

// newShardNet is newLeaseNet with Config.Shard set on every host; opts adjust
// each host's Config.
func newShardNet(t *testing.T, names []string, voters int, opts ...func(*Config)) *leaseNet {
	n := &leaseNet{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), hosts: map[string]*Stack{},
		storages: map[string]*lease.MemoryStorage{}, events: map[string][]lease.Event{}, down: map[string]bool{}}
	for i, name := range names {
		st := &lease.MemoryStorage{}
		lc := lease.DefaultConfig(name, names[:voters])
		sc := testShardConfig()
		cfg := Config{Swim: swim.LANProfile(name, name+":1"), Lease: &lc, LeaseStorage: st, Shard: &sc}
		for _, o := range opts {
			o(&cfg)
		}
		h, err := New(cfg, rand.New(rand.NewPCG(uint64(i+1), 9)), n.now)
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

// Only members can be drained, and marks of names swim does not know are
// collected: 63 made-up marks (what DrainNode accepted before it checked, filling
// the 64-key cluster map next to the leader's own key) neither block a real drain
// nor outlive the next collection pass, and a drained member that left loses its
// mark once swim forgets it.
func TestHostDrainOnlyMembersAndCollectsDeparted(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	n := newShardNet(t, names, 3, func(c *Config) { c.Swim.TombstoneTTL = 30 * time.Second })
	n.run(15 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v", ls)
	}
	leader := n.hosts[ls[0]]
	store := leader.Meta()
	marked := func(h *Stack, name string) bool {
		_, ok := h.Meta().Get(crdt.Cluster, DrainKeyPrefix+name)
		return ok
	}

	if err := leader.DrainNode(n.now, "ghost", true); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("drain of a made-up name: %v, want ErrUnknownNode", err)
	}
	if marked(leader, "ghost") {
		t.Fatal("refused drain left a mark")
	}
	if err := leader.DrainNode(n.now, "ghost", false); err != nil {
		t.Fatalf("lifting a drain that does not exist: %v", err)
	}

	epoch, err := leader.Fence(n.now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 63 {
		if _, err := store.SetCluster(epoch, fmt.Sprintf("%sfake-%02d", DrainKeyPrefix, i), []byte("1")); err != nil {
			t.Fatalf("planting made-up mark %d: %v", i, err)
		}
	}
	var victim *Stack
	for _, addr := range n.order {
		if addr != ls[0] {
			victim = n.hosts[addr]
			break
		}
	}
	vname := victim.cfg.Swim.Name
	if err := leader.DrainNode(n.now, vname, true); err != nil {
		t.Fatalf("real drain with 63 made-up marks in the map: %v", err)
	}
	if got := leader.ShardHostStats().MarksCollected; got != 63 {
		t.Fatalf("MarksCollected = %d, want 63", got)
	}
	n.run(20 * time.Second)
	for _, addr := range n.order {
		h := n.hosts[addr]
		if marked(h, "fake-00") || !marked(h, vname) {
			t.Fatalf("%s: made-up mark %v, %s's mark %v", addr, marked(h, "fake-00"), vname, marked(h, vname))
		}
	}
	if got := victim.OwnedShards(n.now); len(got) != 0 {
		t.Fatalf("drained %s still serves %v", vname, got)
	}

	// Planted marks of names swim never knew are collected by the periodic pass
	// too, without a drain to trigger it.
	if _, err := store.SetCluster(epoch, DrainKeyPrefix+"ghost", []byte("1")); err != nil {
		t.Fatal(err)
	}
	n.run(2 * DefaultMetaGCInterval)
	if marked(leader, "ghost") {
		t.Fatal("made-up mark survived a collection pass")
	}

	// A drained member that leaves keeps its mark while swim remembers it (a
	// restart for maintenance stays drained), then loses it.
	victim.Leave(n.now)
	n.run(5 * time.Second)
	if !marked(leader, vname) {
		t.Fatal("mark of a member that just left was collected before swim forgot it")
	}
	n.run(30*time.Second + 2*DefaultMetaGCInterval)
	if marked(leader, vname) {
		t.Fatalf("mark of %s, gone for longer than TombstoneTTL, not collected", vname)
	}
}

// The shard boot id comes from the injected rng, not the clock: a process
// restarted with its clock stepped back an hour draws the same id from the same
// seed, and another seed gives another id.
func TestShardBootFromRNG(t *testing.T) {
	boot := func(seed uint64, now time.Time) uint64 {
		lc := lease.DefaultConfig("a", []string{"a"})
		sc := testShardConfig()
		h, err := New(Config{Swim: swim.LANProfile("a", "a:1"), Lease: &lc, LeaseStorage: &lease.MemoryStorage{}, Shard: &sc},
			rand.New(rand.NewPCG(seed, 1)), now)
		if err != nil {
			t.Fatal(err)
		}
		return h.shard.owner.Boot()
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if a, b := boot(1, t0), boot(1, t0.Add(-time.Hour)); a != b {
		t.Fatalf("boot depends on the clock: %d at t0, %d an hour earlier", a, b)
	}
	if a, b := boot(1, t0), boot(2, t0); a == b {
		t.Fatalf("seeds 1 and 2 drew the same boot %d", a)
	}
}
