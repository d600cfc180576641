package sim

import (
	"fmt"
	"math"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/shard"
	"pgregory.net/rapid"
)

// newShardRunner forms a cluster of nodes with leadership (3 voters) and shards
// on, and returns a runner and a client over it, the shards steady.
func newShardRunner(t interface{ Fatal(...any) }, seed uint64, nodes int, signed bool, sc shard.Config) (*runner, *shardClient) {
	o := Options{Seed: seed, Nodes: nodes, Shard: sc, Voters: 3, Duration: 30 * time.Second}
	if err := o.fillLease(); err != nil {
		t.Fatal(err)
	}
	factory, lw, sw := shardFactory("lan", true, signed, VoterNames(o.Voters), o.Lease, o.Shard)
	s, err := New(Config{Seed: seed, NewStack: factory})
	if err != nil {
		t.Fatal(err)
	}
	s.watchLeases(lw)
	sw.s = s
	if ok, _, err := s.Form(nodes, 30*time.Second); err != nil || !ok {
		t.Fatal("formation did not converge: ", err)
	}
	r := &runner{s: s, o: o, res: &Result{}, rng: Stream(seed, "shard-property"), shards: sw}
	c := newShardClient(r)
	if err := r.settleShards(c); err != nil {
		t.Fatal(err)
	}
	return r, c
}

func smallShardConfig() shard.Config {
	c := shard.DefaultConfig()
	c.Shards = 64
	return c
}

// Under random crashes, restarts, partitions, pauses, clock drift within the
// bound and leader crashes, while the client workload runs: no two nodes ever
// believe (each on its own clock) that they serve one shard, no message is
// processed by two nodes, and once the faults stop and every node is back, the
// shards settle, every member holds the same map, and no message is lost.
func TestShardSafetyUnderFaults(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := rapid.IntRange(3, 6).Draw(t, "nodes")
		sc := smallShardConfig()
		signed := rapid.Bool().Draw(t, "signed") // PROTOCOL.md 10.11, under a simulated authority
		r, c := newShardRunner(t, rapid.Uint64().Draw(t, "seed"), nodes, signed, sc)
		s := r.s
		steps := rapid.IntRange(1, 8).Draw(t, "steps")
		for k := range steps {
			i := rapid.IntRange(0, nodes-1).Draw(t, fmt.Sprintf("node%d", k))
			switch rapid.IntRange(0, 6).Draw(t, fmt.Sprintf("action%d", k)) {
			case 0:
				s.Crash(i)
			case 1:
				if seeds := liveAddrs(s, i); len(seeds) > 0 && !s.Up(i) {
					if err := s.Restart(i, false, seeds); err != nil {
						t.Fatal(err)
					}
				}
			case 2:
				cut := rapid.IntRange(1, nodes-1).Draw(t, fmt.Sprintf("cut%d", k))
				perm := rapid.Permutation(seq(nodes)).Draw(t, fmt.Sprintf("perm%d", k))
				s.Partition(perm[:cut])
			case 3:
				s.Heal()
			case 4:
				s.Pause(i, time.Duration(rapid.Int64Range(int64(100*time.Millisecond), int64(6*time.Second)).Draw(t, fmt.Sprintf("pause%d", k))))
			case 5:
				s.SetDrift(i, rapid.Float64Range(-sc.MaxDrift, sc.MaxDrift).Draw(t, fmt.Sprintf("drift%d", k)))
			case 6:
				if ls, _ := s.Leaders(); len(ls) == 1 {
					s.Crash(int(s.byName[ls[0]])) // leader failover
				}
			}
			c.run(time.Duration(rapid.Int64Range(int64(50*time.Millisecond), int64(4*time.Second)).Draw(t, fmt.Sprintf("run%d", k))))
		}
		if sw := r.shards; sw.violations != 0 {
			t.Fatalf("%d shard safety violations; first %s", sw.violations, sw.first)
		}
		s.Heal()
		for i := range nodes {
			if !s.Up(i) {
				if err := s.Restart(i, false, liveAddrs(s, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !c.runUntil(90*time.Second, func() bool { return r.shardsSteady() && r.mapsAgree() }) {
			m, l := r.leaderShardMap()
			t.Fatalf("no steady, agreed map 90 s after the faults stopped (leader %d, map %v)", l, m)
		}
		c.finish(30 * time.Second)
		if sw := r.shards; sw.violations != 0 {
			t.Fatalf("%d shard safety violations; first %s", sw.violations, sw.first)
		}
		if v, first := s.LeaseViolations(); v != 0 {
			t.Fatalf("%d lease violations; first %s", v, first)
		}
		if d := *r.res.DuplicateDeliveries; d != 0 {
			t.Fatalf("%d messages processed by two nodes", d)
		}
		if l := *r.res.LostMessages; l != 0 {
			t.Fatalf("%d of %d messages lost", l, *r.res.ClientMessages)
		}
	})
}

// The checker must be able to fail: a clock running far beyond the drift bound
// makes an owner keep serving after the leader gave its shards away.
func TestShardCheckerSeesDriftBeyondBound(t *testing.T) {
	sc := smallShardConfig()
	r, c := newShardRunner(t, 7, 4, false, sc)
	s := r.s
	v := r.pickNonLeader()
	s.SetDrift(v, -0.6) // its clock runs at 40 % speed: its leases last 2.5 times too long
	s.Partition([]int{v})
	c.run(20 * time.Second)
	if r.shards.violations == 0 {
		t.Fatal("no violation seen with drift far beyond the bound")
	}
}

// Over one seed per node count, an unforced reshard (one node joins, or is
// drained) moves about 1/n of the shards. The figure runs (n >= 10, bound
// 1/n + 2%) are heavy.
func TestShardScenariosSmall(t *testing.T) {
	for _, sc := range []string{"reshard-join", "reshard-crash", "drain"} {
		res, err := Run(Options{Scenario: sc, Nodes: 6, Seed: 3, Duration: 30 * time.Second})
		if err != nil {
			t.Fatal(sc, err)
		}
		if *res.ShardViolations != 0 || *res.SafetyViolations != 0 || *res.DuplicateDeliveries != 0 || *res.LostMessages != 0 {
			t.Fatalf("%s: violations %d/%d, duplicates %d, lost %d: %s", sc, *res.ShardViolations, *res.SafetyViolations,
				*res.DuplicateDeliveries, *res.LostMessages, res.FirstViolation)
		}
		if res.MovedFraction == nil || *res.MovedFraction <= 0 || *res.MovedFraction > 1.0/6+0.1 {
			t.Fatalf("%s: moved fraction %v, want about 1/6", sc, res.MovedFraction)
		}
		if sc == "reshard-crash" && (res.ReassignMs == nil || res.MapConvergence == nil) {
			t.Fatalf("%s: reassign %v, map convergence %v", sc, res.ReassignMs, res.MapConvergence)
		}
		if sc == "drain" {
			for _, v := range []*float64{res.ThroughputDuring, res.ThroughputAfter} {
				if *v < 0.8**res.ThroughputBefore || *v > 1.2**res.ThroughputBefore {
					t.Fatalf("drain throughput before %v during %v after %v", *res.ThroughputBefore, *res.ThroughputDuring, *res.ThroughputAfter)
				}
			}
		}
	}
}

// Figures (OMNIRELAY_HEAVY=1): over many seeds, the moved fraction of reshard-join
// and drain at n = 10 and 20 against 1/n + 2%, the p99 of reassign_ms of
// reshard-crash, the map convergence after a heal, and drain throughput.
func TestShardFigures(t *testing.T) {
	if os.Getenv("OMNIRELAY_HEAVY") != "1" {
		t.Skip("figure runs: set OMNIRELAY_HEAVY=1")
	}
	const seeds = 50
	for _, n := range []int{10, 20} {
		for _, name := range []string{"reshard-join", "drain"} {
			var worst, mean, tput float64
			over := 0
			for seed := range uint64(seeds) {
				res, err := Run(Options{Scenario: name, Nodes: n, Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				if *res.ShardViolations != 0 || *res.DuplicateDeliveries != 0 || *res.LostMessages != 0 {
					t.Errorf("%s n=%d seed %d: violations %d duplicates %d lost %d", name, n, seed, *res.ShardViolations, *res.DuplicateDeliveries, *res.LostMessages)
				}
				worst = max(worst, *res.MovedFraction)
				mean += *res.MovedFraction / seeds
				if *res.MovedFraction > 1/float64(n)+0.02 {
					over++
				}
				if name == "drain" {
					for _, v := range []float64{*res.ThroughputDuring, *res.ThroughputAfter} {
						tput = max(tput, math.Abs(v / *res.ThroughputBefore - 1))
					}
				}
			}
			t.Logf("%s n=%d: moved fraction mean %.4f max %.4f over %d seeds (bound 1/n+2%% = %.4f), %d over; drain throughput max change %.1f%%",
				name, n, mean, worst, seeds, 1/float64(n)+0.02, over, 100*tput)
		}
		var reassign, conv []time.Duration
		for seed := range uint64(2 * seeds) {
			res, err := Run(Options{Scenario: "reshard-crash", Nodes: n, Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			if res.ReassignMs != nil {
				reassign = append(reassign, time.Duration(*res.ReassignMs*float64(time.Millisecond)))
			}
			if res.MapConvergence != nil {
				conv = append(conv, time.Duration(*res.MapConvergence*float64(time.Millisecond)))
			}
		}
		slices.Sort(reassign)
		slices.Sort(conv)
		t.Logf("reshard-crash n=%d: reassign p50 %v p99 %v max %v (%d/%d seeds); map convergence after heal p50 %v p99 %v max %v",
			n, pctD(reassign, 50), pctD(reassign, 99), pctD(reassign, 100), len(reassign), 2*seeds, pctD(conv, 50), pctD(conv, 99), pctD(conv, 100))
	}
}

func pctD(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	return d[max(0, min(len(d)-1, i-1))]
}
