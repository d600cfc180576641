package shard

import (
	"github.com/omnirelay/mesh/lease"

	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func members(names ...string) []Member {
	var ms []Member
	for _, n := range names {
		ms = append(ms, Member{Name: n, Health: HealthAlive})
	}
	return ms
}

func newLeader(t *testing.T, cfg Config, epoch uint64, now time.Time, names ...string) *Controller {
	t.Helper()
	c, err := NewController(cfg, "L")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.BecomeLeader(now, epoch); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMembers(now, members(names...)); err != nil {
		t.Fatal(err)
	}
	c.Ready()
	return c
}

// grantFor steps a renewal and returns the Grant answering it.
func grantFor(t *testing.T, c *Controller, now time.Time, r *Renew) *Grant {
	t.Helper()
	c.Step(now, r)
	for _, e := range c.Ready().Messages {
		if g, ok := e.Msg.(*Grant); ok && e.To == r.Node {
			return g
		}
	}
	t.Fatalf("no grant for %s seq %d", r.Node, r.Seq)
	return nil
}

// A new leader hands out nothing before FailoverWait, except what owners
// re-confirm, and only as extend-only Confirm; the first reporter keeps a shard.
func TestControllerFailoverReconfirmsThenWaits(t *testing.T) {
	cfg := testConfig(4)
	t0 := simBase
	c := newLeader(t, cfg, 2, t0, "a", "b")
	g := grantFor(t, c, t0.Add(time.Second), &Renew{Epoch: 2, Node: "a", Boot: 1, Seq: 1, Held: []uint32{0, 1}})
	if len(g.Shards) != 0 || len(g.Confirm) != 2 {
		t.Fatalf("during the failover wait: Shards %v Confirm %v, want none and [0 1]", g.Shards, g.Confirm)
	}
	g = grantFor(t, c, t0.Add(time.Second), &Renew{Epoch: 2, Node: "b", Boot: 1, Seq: 1, Held: []uint32{1, 2}})
	if len(g.Shards) != 0 || len(g.Confirm) != 1 || g.Confirm[0] != 2 {
		t.Fatalf("second reporter of shard 1: Confirm %v, want [2] only", g.Confirm)
	}
	if c.Map().Owner(3) != "" || c.Map().State(3) != StateDraining {
		t.Fatal("an unreported shard got an owner before the failover wait ended")
	}
	end := t0.Add(FailoverWait(cfg.LeaseDuration, cfg.MaxDrift))
	if dl := c.NextDeadline(); dl.After(end) {
		t.Fatalf("next deadline %v after the end of the wait %v", dl, end)
	}
	c.Tick(end)
	if c.Map().Owner(3) == "" || c.Map().State(3) != StateRebalancing {
		t.Fatalf("after the wait shard 3 is %s on %q, want rebalancing to its target", c.Map().State(3), c.Map().Owner(3))
	}
	g = grantFor(t, c, end.Add(time.Millisecond), &Renew{Epoch: 2, Node: "a", Boot: 1, Seq: 2, Applied: 1, Held: []uint32{0, 1}})
	if len(g.Confirm) != 0 || len(g.Shards) == 0 {
		t.Fatalf("after the wait: Shards %v Confirm %v, want grants, no confirms", g.Shards, g.Confirm)
	}
}

// Renewals older than one processed, or from a process that was replaced, are
// dropped and counted; a new process, whatever its (random) boot id, resets the
// sequence.
func TestControllerDropsStaleRenewals(t *testing.T) {
	t0 := simBase
	c := newLeader(t, testConfig(4), 1, t0, "a")
	grantFor(t, c, t0, &Renew{Epoch: 1, Node: "a", Boot: 1, Seq: 9})
	grantFor(t, c, t0, &Renew{Epoch: 1, Node: "a", Boot: 2, Seq: 5})
	for _, r := range []*Renew{
		{Epoch: 1, Node: "a", Boot: 2, Seq: 5},  // duplicate
		{Epoch: 1, Node: "a", Boot: 2, Seq: 4},  // reordered
		{Epoch: 1, Node: "a", Boot: 1, Seq: 10}, // previous process
	} {
		c.Step(t0, r)
		if n := len(c.Ready().Messages); n != 0 {
			t.Fatalf("stale renewal %+v answered", r)
		}
	}
	if c.Stats().StaleRenews != 3 {
		t.Fatalf("StaleRenews = %d, want 3", c.Stats().StaleRenews)
	}
	grantFor(t, c, t0, &Renew{Epoch: 1, Node: "a", Boot: 3, Seq: 1}) // restarted: accepted
	c.Step(t0, &Renew{Epoch: 1, Node: "a", Boot: 3, Seq: 2, Held: []uint32{9}})
	if c.Stats().Malformed != 1 {
		t.Fatal("a renewal naming a shard out of range was not counted as malformed")
	}
}

// A restarted owner whose boot id is lower than its previous one (boot ids are
// random) is a new process: its renewals are answered, not dropped as stale.
func TestControllerAcceptsRestartWithLowerBoot(t *testing.T) {
	t0 := simBase
	c := newLeader(t, testConfig(4), 1, t0, "a")
	grantFor(t, c, t0, &Renew{Epoch: 1, Node: "a", Boot: 1 << 60, Seq: 7})
	grantFor(t, c, t0, &Renew{Epoch: 1, Node: "a", Boot: 5, Seq: 1}) // restarted
	if c.Stats().StaleRenews != 0 {
		t.Fatalf("StaleRenews = %d, want 0", c.Stats().StaleRenews)
	}
}

// Every owner process a shard is granted to gets a grant of a higher map
// version than the processes before it, a restart of the same name included, so
// (epoch, version) is an exact fencing token per grant (Event.Version).
func TestGrantVersionsOrderOwnerProcesses(t *testing.T) {
	cfg := testConfig(4)
	c, now, seqs := settledLeader(t, cfg)
	held := c.Map().ShardsOf("a")
	if len(held) == 0 {
		t.Fatal("a holds nothing after setup")
	}
	seqs["a"]++
	before := grantFor(t, c, now, &Renew{Epoch: 1, Node: "a", Boot: 1, Seq: seqs["a"], Applied: seqs["a"] - 1, Held: held})
	// a restarts (new boot, holds nothing) and is granted its shards again.
	after := grantFor(t, c, now, &Renew{Epoch: 1, Node: "a", Boot: 2, Seq: 1})
	if !slices.Equal(after.Shards, held) {
		t.Fatalf("restarted a granted %v, want %v", after.Shards, held)
	}
	if after.Version <= before.Version {
		t.Fatalf("grant to the restarted process has map version %d, not above %d of the previous one", after.Version, before.Version)
	}
	// A renewal of the same process changes nothing: no new version.
	again := grantFor(t, c, now, &Renew{Epoch: 1, Node: "a", Boot: 2, Seq: 2, Applied: 1, Held: held})
	if again.Version != after.Version {
		t.Fatalf("a plain renewal moved the map version from %d to %d", after.Version, again.Version)
	}
}

// settledLeader returns a leader past its failover wait whose owners a and b hold
// their target shards, and the time.
func settledLeader(t *testing.T, cfg Config) (*Controller, time.Time, map[string]uint64) {
	t.Helper()
	t0 := simBase
	c := newLeader(t, cfg, 1, t0, "a", "b")
	now := t0.Add(FailoverWait(cfg.LeaseDuration, cfg.MaxDrift))
	c.Tick(now)
	seqs := map[string]uint64{}
	for range 2 {
		for _, n := range []string{"a", "b"} {
			seqs[n]++
			grantFor(t, c, now, &Renew{Epoch: 1, Node: n, Boot: 1, Seq: seqs[n], Applied: seqs[n] - 1, Held: c.Map().ShardsOf(n)})
		}
	}
	for s := range cfg.Shards {
		if c.Map().State(uint32(s)) != StateSteady {
			t.Fatalf("shard %d is %s after setup", s, c.Map().State(uint32(s)))
		}
	}
	return c, now, seqs
}

// A release is proven only by a renewal that does not hold the shard and has
// applied a grant at least as new as the last one that could have listed it.
func TestControllerReleaseNeedsAppliedGrant(t *testing.T) {
	cfg := testConfig(8)
	c, now, seqs := settledLeader(t, cfg)
	held := c.Map().ShardsOf("a")
	if err := c.SetMembers(now, []Member{{Name: "a", Health: HealthAlive, Draining: true}, {Name: "b", Health: HealthAlive}}); err != nil {
		t.Fatal(err)
	}
	var release *Release
	for _, e := range c.Ready().Messages {
		if r, ok := e.Msg.(*Release); ok && e.To == "a" {
			release = r
		}
	}
	if release == nil || len(release.Shards) != len(held) {
		t.Fatalf("release %+v, want all of a's shards %v", release, held)
	}
	s := held[0]
	// A renewal without the shard but with an old Applied proves nothing.
	seqs["a"]++
	g := grantFor(t, c, now, &Renew{Epoch: 1, Node: "a", Boot: 1, Seq: seqs["a"], Applied: 0})
	if len(g.Shards) != 0 {
		t.Fatalf("draining node granted %v", g.Shards)
	}
	if c.Map().State(s) != StateDraining || c.Map().Owner(s) != "a" {
		t.Fatalf("shard %d is %s on %q: release inferred without the grant applied", s, c.Map().State(s), c.Map().Owner(s))
	}
	seqs["a"]++
	grantFor(t, c, now, &Renew{Epoch: 1, Node: "a", Boot: 1, Seq: seqs["a"], Applied: seqs["a"] - 1})
	if c.Map().State(s) != StateRebalancing || c.Map().Owner(s) != "b" {
		t.Fatalf("shard %d is %s on %q after a proven release, want rebalancing to b", s, c.Map().State(s), c.Map().Owner(s))
	}
}

// The shards of a dead owner wait until every grant to it lapsed, then move
// without waiting for a move slot.
func TestControllerParksDeadOwnersShardsUntilTheirLeaseLapses(t *testing.T) {
	cfg := testConfig(8)
	cfg.MaxMoves = 1
	c, now, _ := settledLeader(t, cfg)
	held := c.Map().ShardsOf("a")
	if err := c.SetMembers(now, []Member{{Name: "a", Health: HealthDead}, {Name: "b", Health: HealthAlive}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range held {
		if c.Map().State(s) != StateDraining {
			t.Fatalf("shard %d of the dead node is %s, want draining", s, c.Map().State(s))
		}
	}
	lapse := now.Add(lease.VoterHold(cfg.LeaseDuration, cfg.MaxDrift)) // the last grant was sent at now
	if dl := c.NextDeadline(); dl.After(lapse) {
		t.Fatalf("next deadline %v after the lapse %v", dl, lapse)
	}
	c.Tick(lapse.Add(-1))
	if c.Map().State(held[0]) != StateDraining {
		t.Fatal("a shard moved before the dead owner's lease lapsed")
	}
	c.Tick(lapse)
	for _, s := range held {
		if c.Map().State(s) != StateRebalancing || c.Map().Owner(s) != "b" {
			t.Fatalf("shard %d is %s on %q, want rebalancing to b", s, c.Map().State(s), c.Map().Owner(s))
		}
	}
	var lines []string
	for _, e := range c.Ready().Events {
		lines = append(lines, e.String())
	}
	want := fmt.Sprintf("shard %d rebalancing from a to b (forced)", held[0])
	if !contains(lines, want) {
		t.Fatalf("events %q lack %q", lines, want)
	}
}

// A member that has seen a higher epoch fences a deposed leader.
func TestControllerFencedByHigherEpoch(t *testing.T) {
	t0 := simBase
	c := newLeader(t, testConfig(4), 3, t0, "a")
	c.Step(t0, &Renew{Epoch: 4, Node: "a", Boot: 1, Seq: 1})
	r := c.Ready()
	if c.Leading() || len(r.Messages) != 0 || len(r.Events) != 1 || r.Events[0].Kind != EventFenced {
		t.Fatalf("after a renewal at epoch 4: leading=%v ready=%+v", c.Leading(), r)
	}
	if err := c.BecomeLeader(t0, 4); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("BecomeLeader at an epoch already seen: %v, want ErrStaleEpoch", err)
	}
	if err := c.BecomeLeader(t0, 5); err != nil || !c.Leading() {
		t.Fatalf("BecomeLeader(5): %v", err)
	}
}

func TestControllerSetMembersValidates(t *testing.T) {
	c, err := NewController(testConfig(4), "L")
	if err != nil {
		t.Fatal(err)
	}
	for name, ms := range map[string][]Member{
		"empty name": {{Name: ""}},
		"duplicate":  {{Name: "a"}, {Name: "a"}},
		"health":     {{Name: "a", Health: 9}},
		"weight":     {{Name: "a", Weight: -2}},
	} {
		if err := c.SetMembers(simBase, ms); !errors.Is(err, ErrBadMember) {
			t.Errorf("%s: got %v, want ErrBadMember", name, err)
		}
	}
}

func TestEventString(t *testing.T) {
	for _, c := range []struct {
		e    Event
		want string
	}{
		{Event{Kind: EventDraining, Shard: 12, From: "node-a", To: "node-b"}, "shard 12 draining from node-a to node-b"},
		{Event{Kind: EventRebalancing, Shard: 3, To: "node-b", Forced: true}, "shard 3 rebalancing from (none) to node-b (forced)"},
		{Event{Kind: EventSteady, Shard: 3, To: "node-b"}, "shard 3 steady on node-b"},
		{Event{Kind: EventStaleEpoch, Epoch: 4, From: "L"}, "rejected stale epoch 4 from L"},
	} {
		if got := c.e.String(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// A member that membership holds dead but that renews (back from a partition,
// not yet re-admitted) hears of every map change at once; one that stopped
// renewing does not.
func TestControllerAnnouncesToRenewingDeadMember(t *testing.T) {
	cfg := testConfig(8)
	t0 := simBase
	c := newLeader(t, cfg, 2, t0, "a", "b", "c")
	announced := func(to string) bool {
		for _, e := range c.Ready().Messages {
			if _, ok := e.Msg.(*Announce); ok && e.To == to {
				return true
			}
		}
		return false
	}
	dead := func(at time.Time, names ...string) {
		ms := members("a", "b", "c")
		for i := range ms {
			if slices.Contains(names, ms[i].Name) {
				ms[i].Health = HealthDead
			}
		}
		if err := c.SetMembers(at, ms); err != nil {
			t.Fatal(err)
		}
	}
	t1 := t0.Add(time.Second)
	dead(t1, "c")
	if announced("c") {
		t.Fatal("announced to a dead member that never renewed")
	}
	// c renews (the partition healed): it gets a grant, and the next change is
	// announced to it although membership still holds it dead.
	grantFor(t, c, t1.Add(10*time.Millisecond), &Renew{Epoch: 2, Node: "c", Boot: 1, Seq: 7})
	t2 := t1.Add(20 * time.Millisecond)
	dead(t2, "b", "c")
	if !announced("c") {
		t.Fatal("a renewing member held dead missed the announcement of a change")
	}
	// Silent for longer than RenewInterval+RetryInterval: no longer announced to.
	t3 := t1.Add(10*time.Millisecond + cfg.RenewInterval + cfg.RetryInterval)
	dead(t3, "c") // b is back: a change
	if !announced("b") {
		t.Fatal("the change was not announced at all; the test shows nothing")
	}
	dead(t3.Add(time.Millisecond), "b", "c") // another change
	if announced("c") {
		t.Fatal("announced to a dead member silent for more than RenewInterval+RetryInterval")
	}
}
