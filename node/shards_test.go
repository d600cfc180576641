package node

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
)

const testShards = 64

// shardCluster starts 5 nodes (n0..n2 voters) with shard routing on; they close
// when the test ends.
func shardCluster(t *testing.T) []*Node {
	mn := NewMemNetwork()
	nodes := make([]*Node, 5)
	for i := range nodes {
		cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
		cfg.Shards = testShards
		cfg.Meta = map[string]string{ControlMetaKey: fmt.Sprintf("http://n%d.example:7070", i)}
		nodes[i] = startMem(t, cfg)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	return nodes
}

// partitioned reports whether the nodes' OwnedShards are disjoint and cover every
// shard, and whether every node's map names the owner that actually serves it.
func partitioned(nodes []*Node) error {
	owner := map[uint32]string{}
	for _, n := range nodes {
		for _, s := range n.OwnedShards() {
			if o, dup := owner[s]; dup {
				return fmt.Errorf("shard %d served by %s and %s", s, o, n.Name())
			}
			owner[s] = n.Name()
		}
	}
	if len(owner) != testShards {
		return fmt.Errorf("%d of %d shards served", len(owner), testShards)
	}
	for _, n := range nodes {
		for s := range uint32(testShards) {
			if o, ok := n.Owner(s); !ok || o != owner[s] {
				return fmt.Errorf("%s: Owner(%d) = %q, %v; %s serves it", n.Name(), s, o, ok, owner[s])
			}
		}
	}
	return nil
}

// TestShardsPartitionAndDrain: 5 nodes, 3 voters: a leader publishes a map whose
// shards the nodes' OwnedShards partition; ShardFor and Owner agree on every node;
// draining a node moves all its shards off (its watch reports each loss), the
// drain is refused by a non-leader with the leader's control URL, and undoing it
// brings shards back.
func TestShardsPartitionAndDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := shardCluster(t)
		leader := shardLeader(t, nodes)
		holder := leader.Name()
		for _, key := range []string{"", "a", "user-42", strings.Repeat("x", 300)} {
			want, ok := nodes[0].ShardFor([]byte(key))
			if !ok {
				t.Fatal("ShardFor: no map on n0")
			}
			wo, _ := nodes[0].Owner(want)
			for _, n := range nodes[1:] {
				got, ok := n.ShardFor([]byte(key))
				o, _ := n.Owner(got)
				if !ok || got != want || o != wo {
					t.Fatalf("%s: key %q → shard %d owner %s; n0: %d %s", n.Name(), key, got, o, want, wo)
				}
			}
		}
		// The victim is a non-leader with shards.
		var victim, other *Node
		for _, n := range nodes {
			if n != leader && len(n.OwnedShards()) > 0 {
				if victim == nil {
					victim = n
				} else if other == nil {
					other = n
				}
			}
		}
		w, err := victim.WatchShards()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		had := victim.OwnedShards()

		// A non-leader refuses with the leader's name and control URL.
		var nl *control.NotLeaderError
		if err := (controlSource{other}).DrainNode(victim.Name(), true); !errors.As(err, &nl) ||
			nl.Leader != holder || nl.Control != "http://"+holder+".example:7070" {
			t.Fatalf("drain on a non-leader: %v (%+v)", err, nl)
		}
		if err := other.DrainShards(victim.Name(), true); !errors.Is(err, lease.ErrNotLeader) {
			t.Fatalf("DrainShards on a non-leader: %v", err)
		}
		if err := leader.DrainShards(victim.Name(), true); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, 60*time.Second, "the drained node serves nothing and every shard is served", func() bool {
			return len(victim.OwnedShards()) == 0 && partitioned(nodes) == nil
		})
		t.Logf("drain of %d shards of %d: %v (virtual time)", len(had), testShards, took)
		lost := map[uint32]bool{}
	drainWatch:
		for {
			select {
			case c := <-w.C:
				if c.Gained {
					t.Fatalf("drained node gained shard %d", c.Shard)
				}
				if c.Epoch == 0 {
					t.Fatalf("loss of shard %d carries no epoch", c.Shard)
				}
				lost[c.Shard] = true
			default:
				break drainWatch
			}
		}
		for _, s := range had {
			if !lost[s] {
				t.Fatalf("watch did not report losing shard %d (lost %v)", s, lost)
			}
		}
		m, err := (controlSource{other}).ShardMap()
		if err != nil {
			t.Fatal(err)
		}
		// The placement a client rebuilds the map from is the table of the map.
		table := other.ShardMap().Table()
		var eligible []control.PlacementNode
		for _, nd := range table.Nodes() {
			eligible = append(eligible, control.PlacementNode{Name: nd.Name, Weight: nd.Weight})
		}
		if m.Placement == nil || m.Placement.Replicas != table.Replicas() || !slices.Equal(m.Placement.Nodes, eligible) {
			t.Fatalf("placement %+v, the map's table has %d replicas over %v", m.Placement, table.Replicas(), eligible)
		}
		for _, s := range m.Shards {
			if s.Owner == victim.Name() || s.Target == victim.Name() {
				t.Fatalf("after the drain, %s sees shard %+v", other.Name(), s)
			}
		}
		if err := leader.DrainShards(victim.Name(), false); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 60*time.Second, "the undrained node serves shards again", func() bool {
			return len(victim.OwnedShards()) > 0 && partitioned(nodes) == nil
		})
		if c := <-w.C; !c.Gained || c.Epoch == 0 {
			t.Fatalf("first change after the undo: %+v", c)
		}
	})
}

// TestShardMetricsAndRoutes: the shard metrics appear on every node and the control
// routes serve the node's map.
func TestShardMetricsAndRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := shardCluster(t)
		holder := shardLeader(t, nodes).Name()
		for _, n := range nodes {
			rec := httptest.NewRecorder()
			n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			body := rec.Body.String()
			want := []string{"omnirelay_shards_owned " + fmt.Sprint(len(n.OwnedShards())), "omnirelay_shard_map_version ",
				`omnirelay_implausible_total{layer="swim"} 0`, `omnirelay_implausible_total{layer="lease"} 0`, `omnirelay_implausible_total{layer="shard"} 0`, `omnirelay_implausible_total{layer="meta"} 0`}
			if n.Name() == holder {
				want = append(want, "omnirelay_shards_parked 0", "omnirelay_shard_parked_max_age_seconds 0", "omnirelay_shard_moves_total{")
			}
			for _, w := range want {
				if !strings.Contains(body, w) {
					t.Fatalf("%s: /metrics lacks %q", n.Name(), w)
				}
			}
			rec = httptest.NewRecorder()
			n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/control/v1/shards/lookup?key=user-42", nil))
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"leader":"`+holder+`"`) {
				t.Fatalf("%s: lookup: %d %s", n.Name(), rec.Code, rec.Body)
			}
		}
	})
}

func TestShardConfigValidate(t *testing.T) {
	mn := NewMemNetwork()
	cfg := memConfig(t, mn, "a", "10.0.0.1:7946")
	cfg.Shards = 16
	cfg.Keys = [][]byte{testKey}
	if err := cfg.withDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "Shards") {
		t.Fatalf("shards without voters: %v", err)
	}
	cfg.Voters = []string{"b", "c", "d"}
	cfg.ShardTune = func(c *shard.Config) { c.MaxMoves = 0 }
	if err := cfg.withDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "MaxMoves") {
		t.Fatalf("bad tune: %v", err)
	}
	cfg.ShardTune = nil
	if err := cfg.withDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Shards = -1
	if err := cfg.withDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "Shards") {
		t.Fatalf("negative shards: %v", err)
	}
}

// metricValue reads an unlabelled sample from n's /metrics; false if absent.
func metricValue(t *testing.T, n *Node, name string) (float64, bool) {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("%s: %q: %v", n.Name(), line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// shardLeader waits until the nodes partition the shards and returns the leader
// they agree on.
func shardLeader(t *testing.T, nodes []*Node) *Node {
	t.Helper()
	waitFor(t, 30*time.Second, "every shard served by exactly one node, maps agree", func() bool { return partitioned(nodes) == nil })
	holder, _ := agreed(nodes)
	for _, n := range nodes {
		if n.Name() == holder {
			return n
		}
	}
	t.Fatal("no agreed leader")
	return nil
}

// TestShardsUnownedMetricSeesDrainedCluster: draining every node leaves the
// shards that were moving with nowhere to go, unserved, while
// omnirelay_shards_parked reads 0 (they were not forced off a failed owner). The
// leader's omnirelay_shards_unowned counts them, and reads 0 again once the
// drains are lifted. Every node exports omnirelay_shard_stale_epoch_total.
func TestShardsUnownedMetricSeesDrainedCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := shardCluster(t)
		leader := shardLeader(t, nodes)
		for _, n := range nodes {
			if _, ok := metricValue(t, n, "omnirelay_shard_stale_epoch_total"); !ok {
				t.Fatalf("%s: no omnirelay_shard_stale_epoch_total", n.Name())
			}
			if _, ok := metricValue(t, n, "omnirelay_shards_unowned"); ok != (n == leader) {
				t.Fatalf("%s: omnirelay_shards_unowned exported %v, leader is %s", n.Name(), ok, leader.Name())
			}
		}
		waitFor(t, 30*time.Second, "every shard steady in the leader's map", func() bool {
			m := leader.ShardMap()
			for s := range uint32(testShards) {
				if m.State(s) != shard.StateSteady {
					return false
				}
			}
			return true
		})
		if v, _ := metricValue(t, leader, "omnirelay_shards_unowned"); v != 0 {
			t.Fatalf("settled cluster: omnirelay_shards_unowned %v", v)
		}
		// The first drain starts moving shards; the others land before its
		// release does, so the moving shards lose their target. The first is
		// not the leader: the leader's own release is handed over within the
		// drain's step (its renewal leaves at once on the new map), so its
		// shards would reach their new owners before the other drains land.
		// Another node's release needs a packet, which leaves after the step.
		order := slices.DeleteFunc(slices.Clone(nodes), func(n *Node) bool { return n == leader })
		order = append(order, leader)
		var err error
		leader.do(func() {
			now := leader.clock.Now()
			err = errors.Join(leader.stack.DrainNode(now, order[0].Name(), true), leader.stack.Rebalance(now))
			for _, n := range order[1:] {
				err = errors.Join(err, leader.stack.DrainNode(now, n.Name(), true))
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		unserved := map[uint32]bool{}
		for s := range uint32(testShards) {
			unserved[s] = true
		}
		for _, n := range nodes {
			for _, s := range n.OwnedShards() {
				delete(unserved, s)
			}
		}
		if len(unserved) == 0 {
			t.Fatal("every node drained and every shard still served: the scenario no longer shows the outage")
		}
		v, _ := metricValue(t, leader, "omnirelay_shards_unowned")
		parked, _ := metricValue(t, leader, "omnirelay_shards_parked")
		t.Logf("all drained for 1 min: %d shards unserved, omnirelay_shards_unowned %v, omnirelay_shards_parked %v", len(unserved), v, parked)
		if int(v) != len(unserved) {
			t.Fatalf("omnirelay_shards_unowned %v, %d shards served by nobody", v, len(unserved))
		}
		for _, n := range nodes {
			if err := leader.DrainShards(n.Name(), false); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 60*time.Second, "drains lifted: every shard served and the gauge at 0", func() bool {
			v, _ := metricValue(t, leader, "omnirelay_shards_unowned")
			return partitioned(nodes) == nil && v == 0
		})
	})
}

// TestShardsDrainOnlyMembers: a drain of a made-up name is refused with 404
// unknown_node in the error envelope and writes nothing, so 63 of them (which
// used to fill the 64-key cluster map) leave room for a real drain.
func TestShardsDrainOnlyMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := shardCluster(t)
		leader := shardLeader(t, nodes)
		post := func(name string) (int, string) {
			rec := httptest.NewRecorder()
			body := fmt.Sprintf(`{"node": %q, "drain": true}`, name)
			leader.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/control/v1/shards/drain", strings.NewReader(body)))
			return rec.Code, rec.Body.String()
		}
		for i := range 63 {
			name := fmt.Sprintf("made-up-%02d", i)
			if code, body := post(name); code != 404 || !strings.Contains(body, `"code":"unknown_node"`) || !strings.Contains(body, name) {
				t.Fatalf("drain of %s: %d %s", name, code, body)
			}
		}
		if err := leader.DrainShards("made-up-00", true); !errors.Is(err, ErrUnknownNode) {
			t.Fatalf("DrainShards of a made-up name: %v", err)
		}
		var victim *Node
		for _, n := range nodes {
			if n != leader {
				victim = n
				break
			}
		}
		if code, body := post(victim.Name()); code != 200 {
			t.Fatalf("real drain after 63 made-up ones: %d %s", code, body)
		}
		waitFor(t, 60*time.Second, "the drained node serves nothing", func() bool {
			return len(victim.OwnedShards()) == 0 && partitioned(nodes) == nil
		})
	})
}
