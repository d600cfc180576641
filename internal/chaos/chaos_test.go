package chaos

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// requireLab skips a test that needs real namespaces, naming what is missing.
func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos: -short")
	}
	if err := Prereqs(); err != nil {
		t.Skip(err)
	}
}

// The release gate's short run: one leader kill among five real agents. It
// asserts the safety invariants and that every step completed; the times are
// reported, never asserted (docs/chaos.md has the targets).
func TestLeaderKillOnRealAgents(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, _ := Lookup("leader-kill")
	rep, err := Run(ctx, s, Options{Kills: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rep.Summaries)
	t.Logf("summaries %s; target misses %v", b, rep.TargetMisses)
	if len(rep.Failures) > 0 {
		t.Fatalf("failures: %s", strings.Join(rep.Failures, "\n"))
	}
	for _, kind := range []string{"detection", "failover", "convergence"} {
		if rep.Summaries[kind].N != 1 {
			t.Errorf("%s measured %d times, want 1", kind, rep.Summaries[kind].N)
		}
	}
	// The load ran through it: figures for the steady state and the fault, and
	// the writes checked (lost or duplicated ones are failures, above).
	l := rep.Load
	if l.Status != "ran" || l.Steady == nil || l.Fault == nil || l.Writes == nil || l.Writes.Acked == 0 || l.Steady.OK == 0 {
		b, _ := json.Marshal(l)
		t.Errorf("load: %s", b)
	}
	assertCleanedUp(t)
}

// Every scenario with short settings: OMNIRELAY_HEAVY=1 (about 6 minutes).
func TestSuiteOnRealAgents(t *testing.T) {
	if os.Getenv("OMNIRELAY_HEAVY") != "1" {
		t.Skip("set OMNIRELAY_HEAVY=1 to run every chaos scenario (about 6 minutes)")
	}
	requireLab(t)
	o := Options{Kills: 2, Hold: 6 * time.Second, Duration: 15 * time.Second, Logf: t.Logf}
	dir := t.TempDir() // every binary built once, not once per scenario
	for _, b := range []struct {
		bin   *string
		build func(context.Context, string) (string, error)
	}{{&o.AgentBin, BuildAgent}, {&o.KVBin, BuildKV}, {&o.UpgradeBin, BuildPreviewAgent}} {
		var err error
		if *b.bin, err = b.build(context.Background(), dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range Scenarios() {
		t.Run(s.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			o := o
			o.Logf = t.Logf
			rep, err := Run(ctx, s, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Failures) > 0 {
				t.Fatalf("failures: %s", strings.Join(rep.Failures, "\n"))
			}
		})
	}
	assertCleanedUp(t)
}

// assertCleanedUp checks that this process's run left no namespace, link or
// directory behind.
func assertCleanedUp(t *testing.T) {
	t.Helper()
	p := runPrefix(os.Getpid())
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), p+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if _, err := os.Stat(os.TempDir() + "/omnirelay-chaos-" + p); err == nil {
		t.Errorf("directory of %s left behind", p)
	}
}

// The invariant checker must see what it is for: these rounds are made up, so
// they test the checker, not the agents.
func TestInvariantsCountViolations(t *testing.T) {
	ok := func(n int, holder string, epoch uint64, leader bool, owned int) *View {
		return &View{Node: n, Peers: map[string]string{}, Holder: holder, Epoch: epoch, IsLeader: leader, Count: 4, Owned: owned}
	}
	cases := []struct {
		name  string
		views []*View
		want  [3]int // same epoch, at once, shard twice
	}{
		{"healthy", []*View{ok(1, "n1", 3, true, 2), ok(2, "n1", 3, false, 2)}, [3]int{}},
		{"two holders of one epoch", []*View{ok(1, "n1", 3, true, 2), ok(2, "n2", 3, false, 2)}, [3]int{1, 0, 0}},
		{"two self-declared leaders", []*View{ok(1, "n1", 3, true, 2), ok(2, "n2", 4, true, 2)}, [3]int{0, 1, 0}},
		{"more served than exist", []*View{ok(1, "n1", 3, true, 3), ok(2, "n1", 3, false, 2)}, [3]int{0, 0, 1}},
		{"unanswered agent ignored", []*View{ok(1, "n1", 3, true, 4), {Node: 2, Err: "timeout", IsLeader: true, Owned: 4}}, [3]int{}},
	}
	for _, c := range cases {
		var inv Invariants
		r := Round{At: time.Now(), Views: map[int]*View{}}
		for _, v := range c.views {
			r.Views[v.Node] = v
		}
		inv.Check(r)
		if got := [3]int{inv.TwoLeadersSameEpoch, inv.TwoLeadersAtOnce, inv.ShardServedTwice}; got != c.want {
			t.Errorf("%s: got %v, want %v (%v)", c.name, got, c.want, inv.Examples)
		}
	}
}

// While an agent on the old build is up, no agent may send above the old
// build's version or have a feature on; once none is, both are allowed.
func TestCheckGatingCountsFeaturesOnEarly(t *testing.T) {
	view := func(n int, sending uint8, features string) *View {
		return &View{Node: n, Sending: sending, Features: features}
	}
	cases := []struct {
		name  string
		views []*View
		old   []int
		want  int
	}{
		{"all old, all off", []*View{view(1, 1, "none"), view(2, 1, "none")}, []int{1, 2}, 0},
		{"mixed, all off", []*View{view(1, 1, "none"), view(2, 1, "none")}, []int{2}, 0},
		{"mixed, a feature on", []*View{view(1, 1, "ack-health"), view(2, 1, "none")}, []int{2}, 1},
		{"mixed, sending 2", []*View{view(1, 2, "none"), view(2, 1, "none")}, []int{2}, 1},
		{"none old, on everywhere", []*View{view(1, 2, "ack-health"), view(2, 2, "ack-health")}, nil, 0},
		{"unanswered view ignored", []*View{view(1, 1, "none"), {Node: 2, Err: "timeout", Sending: 2}}, []int{1}, 0},
	}
	for _, c := range cases {
		var inv Invariants
		r := Round{At: time.Now(), Views: map[int]*View{}}
		for _, v := range c.views {
			r.Views[v.Node] = v
		}
		inv.CheckGating(r, c.old, 1)
		if inv.FeatureEarly != c.want || inv.Violations() != c.want {
			t.Errorf("%s: %d early, %d violations; want %d (%v)", c.name, inv.FeatureEarly, inv.Violations(), c.want, inv.Examples)
		}
	}
}

// docs/upgrading.md's order: non-voters, then voters that do not lead, the
// leader last.
func TestNextToUpgradeOrder(t *testing.T) {
	for _, c := range []struct {
		old            []int
		voters, leader int
		want           int
	}{
		{[]int{1, 2, 3, 4, 5}, 3, 1, 4},
		{[]int{1, 2, 3, 5}, 3, 1, 5},
		{[]int{1, 2, 3}, 3, 1, 2},
		{[]int{1, 3}, 3, 1, 3},
		{[]int{1}, 3, 1, 1},
		{[]int{2, 3}, 3, 3, 2},
	} {
		if got := nextToUpgrade(c.old, c.voters, c.leader); got != c.want {
			t.Errorf("nextToUpgrade(%v, voters %d, leader %d) = %d, want %d", c.old, c.voters, c.leader, got, c.want)
		}
	}
}

func TestStalePrefix(t *testing.T) {
	live := runPrefix(os.Getpid())
	for _, c := range []struct {
		name   string
		prefix string
		stale  bool
	}{
		{live + "-n3", live, false},
		{live + "x12", live, false},
		{"orc7fffff0-hub", "orc7fffff0", true}, // no such pid: above the kernel's pid_max
		{"eth0", "", false},
		{"orc-n1", "", false},
	} {
		p, stale := stalePrefix(c.name)
		if p != c.prefix || stale != c.stale {
			t.Errorf("stalePrefix(%q) = %q, %v; want %q, %v", c.name, p, stale, c.prefix, c.stale)
		}
	}
}
