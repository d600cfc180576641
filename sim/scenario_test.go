package sim

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

func TestRealStackTraceIsReproducible(t *testing.T) {
	run := func(seed uint64) *Result {
		res, err := Run(Options{Scenario: "churn", Nodes: 20, Seed: seed, Duration: 10 * time.Second, Loss: 0.05})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := run(1), run(1), run(2)
	if a.TraceHash != b.TraceHash || a.Events != b.Events || a.MessagesSent != b.MessagesSent {
		t.Fatalf("seed 1 twice: %s/%d/%d vs %s/%d/%d", a.TraceHash, a.Events, a.MessagesSent, b.TraceHash, b.Events, b.MessagesSent)
	}
	if a.TraceHash == c.TraceHash {
		t.Fatal("seeds 1 and 2 gave the same trace hash")
	}
}

// TestScenariosSmall runs every scenario on a small cluster and checks the figures
// each one promises are there and sane.
func TestScenariosSmall(t *testing.T) {
	for _, sc := range Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			o := Options{Scenario: sc.Name, Nodes: 12, Seed: 3, Duration: 20 * time.Second}
			if sc.Name == "partition-heal" {
				o.Duration = 40 * time.Second
			}
			res, err := Run(o)
			if err != nil {
				t.Fatal(err)
			}
			if !res.FormationConverged || res.MessagesSent == 0 || res.TraceHash == "" {
				t.Fatalf("result %+v", res)
			}
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]any
			if err := json.Unmarshal(b, &fields); err != nil {
				t.Fatal(err)
			}
			for _, f := range sc.Figures {
				if _, ok := fields[f]; !ok {
					t.Errorf("figure %s, which the table promises, is not in the result", f)
				}
			}
			check := func(name string, v *float64) {
				if v == nil || *v <= 0 {
					t.Errorf("%s missing or not positive: %v", name, v)
				}
			}
			switch sc.Name {
			case "join":
				check("join_p50_ms", res.JoinP50)
				check("join_max_ms", res.JoinMax)
				if *res.JoinMax < *res.JoinP50 || *res.Missing != 0 {
					t.Errorf("join max %v < p50 %v or missing %d", *res.JoinMax, *res.JoinP50, *res.Missing)
				}
			case "crash":
				check("detect_p50_ms", res.DetectP50)
				check("suspect_first_ms", res.SuspectFirst)
				if *res.Missing != 0 || *res.SuspectFirst > *res.DetectP50 {
					t.Errorf("missing %d, first suspicion %v after detection %v", *res.Missing, *res.SuspectFirst, *res.DetectP50)
				}
			case "leave":
				check("leave_p50_ms", res.LeaveP50)
				if *res.Missing != 0 {
					t.Errorf("missing %d", *res.Missing)
				}
			case "churn":
				if *res.Crashes+*res.Restarts+*res.Joins != 20 {
					t.Errorf("churn ops %d+%d+%d, want 20", *res.Crashes, *res.Restarts, *res.Joins)
				}
			case "loss":
				if res.DroppedLoss == 0 {
					t.Error("no datagram lost at 10% loss")
				}
			case "pause", "gc-pause":
				if res.Pauses == nil || *res.Pauses == 0 {
					t.Error("nobody paused")
				}
			case "slow":
				if res.Slow == nil || *res.Slow != 1 {
					t.Errorf("slow nodes %v, want 1", res.Slow)
				}
			case "partition-heal":
				check("heal_convergence_ms", res.HealConverged)
				if res.DroppedPartition == 0 {
					t.Error("no datagram dropped by the partition")
				}
			}
			if sc.Name != "loss" && sc.Name != "pause" && !res.ViewsAgree {
				t.Error("views do not agree with ground truth at the end")
			}
		})
	}
}

func heavy(t *testing.T) {
	if os.Getenv("OMNIRELAY_HEAVY") != "1" {
		t.Skip("heavy simulation: set OMNIRELAY_HEAVY=1 to run")
	}
}

// TestHeavyJoin1000 checks the join propagation target: p99 under 500 ms of
// virtual time at 1,000 nodes with the LAN profile.
func TestHeavyJoin1000(t *testing.T) {
	heavy(t)
	res, err := Run(Options{Scenario: "join", Nodes: 1000, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("join 1000: p50 %.1f p99 %.1f max %.1f ms, wall %.1fs", *res.JoinP50, *res.JoinP99, *res.JoinMax, res.WallSeconds)
	if *res.Missing != 0 || *res.JoinP99 >= 500 {
		t.Fatalf("missing %d, p99 %.1f ms (target < 500)", *res.Missing, *res.JoinP99)
	}
}

// TestHeavyLossNoFalseDeaths checks the loss target: no false death at 200 nodes
// under 10% loss for 300 s with Lifeguard on.
func TestHeavyLossNoFalseDeaths(t *testing.T) {
	heavy(t)
	res, err := Run(Options{Scenario: "loss", Nodes: 200, Seed: 1, Loss: 0.1, Duration: 300 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.FalseDeaths != 0 {
		t.Fatalf("%d false death events (%d distinct facts), want 0", res.FalseDeaths, res.FalseDeadFacts)
	}
}

// TestPauseLifeguardCutsFalseDeaths: nodes whose message processing stalls for
// seconds while their timers run declare healthy members dead without Lifeguard
// (their suspicions expire before they read the refutations queued for them);
// Lifeguard's local health and aware suspicion stretch the stalled node's
// timeouts past the stall. Checked at 50 nodes in both profiles.
func TestPauseLifeguardCutsFalseDeaths(t *testing.T) {
	for _, profile := range []string{"lan", "memberlist"} {
		run := func(noLifeguard bool) *Result {
			res, err := Run(Options{Scenario: "pause", Nodes: 50, Seed: 1, Duration: 60 * time.Second, Profile: profile, NoLifeguard: noLifeguard})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		on, off := run(false), run(true)
		if off.FalseDeaths < 10 || 10*on.FalseDeaths > off.FalseDeaths {
			t.Errorf("%s: false deaths %d with Lifeguard, %d without: want at least 10 without and 10x fewer with", profile, on.FalseDeaths, off.FalseDeaths)
		}
	}
}

// TestHeavyPauseLifeguardParts runs the pause scenario (200 nodes, seed 1) with
// each Lifeguard extension alone and logs the false deaths (the figures in
// docs/benchmarks.md). Local health alone and aware suspicion alone must each cut
// them at least 3x against none, all three together at least 10x.
func TestHeavyPauseLifeguardParts(t *testing.T) {
	heavy(t)
	for _, profile := range []string{"lan", "memberlist"} {
		run := func(lg swim.Lifeguard) uint64 {
			in := wire.NewInterner(1 << 22)
			f := HostFactory(func(name, addr string) stack.Config {
				c, _ := SwimConfig(profile, name, addr, false)
				c.Lifeguard, c.Interner = lg, in
				return stack.Config{Swim: c}
			})
			res, err := Run(Options{Scenario: "pause", Nodes: 200, Seed: 1, Profile: profile, NewStack: f})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %+v: false deaths %d (%d at stalled observers), %d facts; false suspicions %d, %d facts",
				profile, lg, res.FalseDeaths, res.FalseDeathsAtDegraded, res.FalseDeadFacts, res.FalseSuspicions, res.FalseSuspectFacts)
			return res.FalseDeaths
		}
		none := run(swim.Lifeguard{})
		lhm := run(swim.Lifeguard{LocalHealth: true})
		las := run(swim.Lifeguard{AwareSuspicion: true})
		run(swim.Lifeguard{Buddy: true})
		all := run(swim.Lifeguard{LocalHealth: true, AwareSuspicion: true, Buddy: true})
		if 3*lhm > none || 3*las > none || 10*all > none {
			t.Errorf("%s: false deaths none %d, local health %d, aware suspicion %d, all %d", profile, none, lhm, las, all)
		}
	}
}

// TestSignedGossipScenarios runs the churn and crash scenarios with signed
// self-claims (PROTOCOL.md 10.10, simulated authority): the cluster forms,
// converges after churn and detects the crash as without signatures.
func TestSignedGossipScenarios(t *testing.T) {
	for _, name := range []string{"join", "crash", "churn"} {
		t.Run(name, func(t *testing.T) {
			res, err := Run(Options{Scenario: name, Nodes: 30, Seed: 5, Duration: 30 * time.Second, SignedGossip: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.FormationConverged || !res.Converged || res.Missing != nil && *res.Missing != 0 {
				t.Fatalf("formed %v, converged %v: %+v", res.FormationConverged, res.Converged, res)
			}
		})
	}
}
