package node

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
)

const testShards = 64

// shardCluster starts 5 nodes (n0..n2 voters) with shard routing on.
func shardCluster(t *testing.T) []*Node {
	mn := NewMemNetwork()
	nodes := make([]*Node, 5)
	for i := range nodes {
		cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
		cfg.Shards = testShards
		cfg.Meta = map[string]string{ControlMetaKey: fmt.Sprintf("http://n%d.example:7070", i)}
		nodes[i] = startMem(t, cfg)
	}
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
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		var err error
		waitFor(t, 30*time.Second, "every shard served by exactly one node, maps agree", func() bool {
			err = partitioned(nodes)
			return err == nil
		})
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
		holder, _ := agreed(nodes)
		var leader *Node
		for _, n := range nodes {
			if n.Name() == holder {
				leader = n
			}
		}
		if leader == nil {
			t.Fatal("no agreed leader")
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
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		waitFor(t, 30*time.Second, "shards partitioned", func() bool { return partitioned(nodes) == nil })
		holder, _ := agreed(nodes)
		for _, n := range nodes {
			rec := httptest.NewRecorder()
			n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			body := rec.Body.String()
			want := []string{"omnirelay_shards_owned " + fmt.Sprint(len(n.OwnedShards())), "omnirelay_shard_map_version "}
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
