package sim

import (
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
	"pgregory.net/rapid"
)

// A canary of under 10% of nodes on the preview build (protocol 1..2, ack-health)
// leaves the rest unaffected: nobody is suspected or declared dead, every node
// talks version 1 with the feature off, and the cluster sends about the bytes an
// all-old cluster of the same seed sends (the canaries' Alives and push-pull
// states carry 4 more bytes each, nothing else changes).
func TestCanaryLeavesTheRestUnaffected(t *testing.T) {
	run := func(sc string) *Result {
		res, err := Run(Options{Scenario: sc, Nodes: 60, Seed: 7, Duration: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	base, canary := run("steady"), run("canary")
	if got := *canary.PreviewNodes; got != 3 {
		t.Fatalf("%d canaries of 60 at 5%%, want 3", got)
	}
	if canary.FalseSuspicions != 0 || canary.FalseDeaths != 0 || !canary.Converged {
		t.Errorf("canary: %d false suspicions, %d false deaths, converged %v", canary.FalseSuspicions, canary.FalseDeaths, canary.Converged)
	}
	if *canary.FeatureOnNodes != 0 || *canary.V2Nodes != 0 || *canary.HealthReports != 0 {
		t.Errorf("canary: feature on at %d nodes, %d send version 2, %d health reports; want none while old nodes run",
			*canary.FeatureOnNodes, *canary.V2Nodes, *canary.HealthReports)
	}
	if ratio := float64(canary.BytesSent) / float64(base.BytesSent); ratio < 0.98 || ratio > 1.02 {
		t.Errorf("canary sent %d bytes, all-old %d: ratio %.3f, want within 2%%", canary.BytesSent, base.BytesSent, ratio)
	}
}

// A rolling upgrade of every node onto the preview build: no false deaths, the
// feature never on anywhere while an old node runs (sampled every 10 ms), and on
// everywhere (with every node sending version 2) soon after the last restart.
func TestRollingUpgradeTurnsTheFeatureOnWhenTheLastOldNodeIsGone(t *testing.T) {
	res, err := Run(Options{Scenario: "rolling-upgrade", Nodes: 24, Seed: 5, Duration: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.FalseDeaths != 0 || !res.Converged {
		t.Errorf("%d false deaths, converged %v", res.FalseDeaths, res.Converged)
	}
	if *res.FeatureEarly != 0 {
		t.Errorf("the feature was on at %d node-samples while an old node ran", *res.FeatureEarly)
	}
	if *res.FeatureOnNodes != 24 || *res.V2Nodes != 24 || *res.HealthReports == 0 {
		t.Errorf("after the upgrade: feature on at %d of 24, %d send version 2, %d health reports", *res.FeatureOnNodes, *res.V2Nodes, *res.HealthReports)
	}
	if res.FeatureOnMs == nil || *res.FeatureOnMs > 2000 {
		t.Errorf("feature on everywhere %v ms after the last upgrade, want within 2 s", res.FeatureOnMs)
	}
}

// Random upgrades and rollbacks (a restart onto the other build, same address),
// each followed by a quiet spell until the views converge. The invariant, checked
// after every step: a live node has ack-health on, and sends version 2, exactly
// when every live node runs the preview build. (Between steps views may differ
// for a moment; the rolling-upgrade scenario samples that window.)
func TestPropertyFeatureOnExactlyWhenEveryLiveNodeHasIt(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(3, 7).Draw(rt, "nodes")
		b := builds{}
		s, err := New(Config{Seed: rapid.Uint64().Draw(rt, "seed"), NewStack: hostFactory("lan", true, false, b)})
		if err != nil {
			rt.Fatal(err)
		}
		for i := range n {
			b[nodeName(i)] = rapid.Bool().Draw(rt, "preview")
		}
		if ok, _, err := s.Form(n, 60*time.Second); err != nil || !ok {
			rt.Fatal("formation did not converge: ", err)
		}
		for step := range rapid.IntRange(1, 8).Draw(rt, "steps") {
			i := rapid.IntRange(0, n-1).Draw(rt, "node")
			b[s.Name(i)] = !b[s.Name(i)]
			seed := s.Addr((i + 1) % n)
			if err := s.Restart(i, false, []string{seed}); err != nil {
				rt.Fatal(err)
			}
			if ok, _ := s.RunUntilTrue(30*time.Second, 50*time.Millisecond, s.Converged); !ok {
				rt.Fatalf("step %d: no convergence", step)
			}
			all := true
			for _, j := range s.LiveNodes() {
				all = all && b[s.Name(j)]
			}
			for _, j := range s.LiveNodes() {
				v := s.Stack(j).(versionView)
				if on := v.HasFeature(wire.FeatureAckHealth); on != all || (v.SendVersion() == 2) != all {
					rt.Fatalf("step %d: %s has the feature on %v, sends version %d; every live node on the preview build: %v",
						step, s.Name(j), on, v.SendVersion(), all)
				}
			}
		}
	})
}
