package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/omnirelay/mesh/wire"
)

var scenarios = []Scenario{
	{Name: "leader-kill", agents: 5, run: leaderKill,
		Summary: "SIGKILL the leader, restart it once a new leader is seen, repeated --kills times: detection, failover, convergence"},
	{Name: "partition-minority", agents: 5, run: partitionMinority,
		Summary: "cut a voter that does not lead and a non-voter off the rest for --hold: detection, leader kept, convergence after heal"},
	{Name: "partition-leader", agents: 5, run: partitionLeader,
		Summary: "cut the leader off the rest for --hold: detection, failover on the majority side, convergence after heal"},
	{Name: "partition-asymmetric", agents: 5, run: partitionAsymmetric,
		Summary: "drop the leader's packets to every peer while it still hears them, for --hold: failover, convergence after heal"},
	{Name: "loss", agents: 5, run: loss,
		Summary: "drop --loss percent (10) of packets on every link, each way, for --duration (60s; 5m for the release run): false suspicions, leader changes"},
	{Name: "churn", agents: 6, run: churn,
		Summary: "join/leave storm of the non-voters for --duration (20s): a start, SIGTERM (leave) or SIGKILL every second; convergence after"},
	{Name: "pause", agents: 5, run: pause,
		Summary: "SIGSTOP the leader for --pause (8s), then SIGCONT: detection, failover, no second leader after it resumes, convergence"},
	{Name: "rolling-upgrade", agents: 5, run: rollingUpgrade,
		Summary: "restart every agent, non-voters first and the leader last, from the old build (--agent-bin, 1..1) onto the new (--upgrade-bin, preview 1..2 with ack-health): convergence per step, version and feature gating, feature on after the last"},
}

// stable waits until the agents up agree (the precondition of a fault) and returns
// them.
func (r *Runner) stable(ctx context.Context) ([]int, bool, error) {
	up := r.c.Up()
	_, ok, err := r.waitUntil(ctx, convergeTimout, converged(up))
	if err == nil && !ok {
		r.fail("cluster not stable before the fault within %s: %s", convergeTimout, describe(r.last))
	}
	return up, ok, err
}

func without(nodes []int, drop ...int) []int {
	var out []int
	for _, n := range nodes {
		if !slices.Contains(drop, n) {
			out = append(out, n)
		}
	}
	return out
}

func leaderKill(ctx context.Context, r *Runner) error {
	r.rep.Params["kills"] = fmt.Sprint(r.opts.Kills)
	for k := 0; k < r.opts.Kills && !r.failed(); k++ {
		err := r.faultLeader(ctx, fmt.Sprintf("SIGKILL leader %%s (kill %d)", k+1), 0,
			func(leader int, _ []int) error { return r.c.Kill(leader) },
			"restart", func(leader int) error { return r.c.Start(leader, true) })
		if err != nil {
			return err
		}
	}
	return nil
}

// faultLeader applies a fault to the leader, times its detection and the failover
// among the rest, keeps it for hold (from the fault), undoes it and times the
// convergence of every agent from then.
func (r *Runner) faultLeader(ctx context.Context, faultf string, hold time.Duration,
	apply func(leader int, rest []int) error, undoName string, undo func(leader int) error) error {
	up, ok, err := r.stable(ctx)
	if err != nil || !ok {
		return err
	}
	leader, epoch := r.leader(), r.epoch()
	rest := without(up, leader)
	fault := fmt.Sprintf(faultf, name(leader))
	t := time.Now()
	if err := apply(leader, rest); err != nil {
		return err
	}
	r.phase(phaseFault)
	r.event("%s", fault)
	if _, err := r.measure(ctx, "detection", fault, t, detectTimeout, allSee(rest, leader, "suspect", "dead")); err != nil {
		return err
	}
	if _, err := r.measure(ctx, "failover", fault, t, failTimeout, newLeader(rest, []int{leader}, epoch)); err != nil {
		return err
	}
	if err := r.hold(ctx, time.Until(t.Add(hold))); err != nil {
		return err
	}
	t = time.Now()
	if err := undo(leader); err != nil {
		return err
	}
	r.phase(phaseRecovery)
	r.event("%s of %s", undoName, name(leader))
	if _, err = r.measure(ctx, "convergence", undoName+" after "+fault, t, convergeTimout, converged(up)); err != nil {
		return err
	}
	return r.serviceSettled(ctx, undoName+" after "+fault, t)
}

// cut is the rules partitioning side from rest, both ways.
func cut(side, rest []int) []Rule {
	var rules []Rule
	for _, a := range side {
		for _, b := range rest {
			rules = append(rules, Rule{From: a, Peer: b, Out: true, In: true, Loss: 100}, Rule{From: b, Peer: a, Out: true, In: true, Loss: 100})
		}
	}
	return rules
}

// heal removes every fault rule (an undo of faultLeader).
func (r *Runner) heal(int) error { return r.lab.Heal(context.Background()) }

// healAndConverge removes the faults and times convergence of nodes.
func (r *Runner) healAndConverge(ctx context.Context, fault string, nodes []int) error {
	if err := r.lab.Heal(ctx); err != nil {
		return err
	}
	r.phase(phaseRecovery)
	r.event("heal")
	t := time.Now()
	if _, err := r.measure(ctx, "convergence", "heal after "+fault, t, convergeTimout, converged(nodes)); err != nil {
		return err
	}
	return r.serviceSettled(ctx, "heal after "+fault, t)
}

func partitionMinority(ctx context.Context, r *Runner) error {
	r.rep.Params["hold"] = r.opts.Hold.String()
	up, ok, err := r.stable(ctx)
	if err != nil || !ok {
		return err
	}
	leader, epoch := r.leader(), r.epoch()
	voter := 0
	for v := 1; v <= r.opts.Voters; v++ {
		if v != leader {
			voter = v
			break
		}
	}
	minority := []int{voter, r.opts.Agents} // a voter that does not lead and the last agent, a non-voter
	majority := without(up, minority...)
	fault := fmt.Sprintf("partition of %s, %s", name(minority[0]), name(minority[1]))
	t := time.Now()
	if err := r.lab.Apply(ctx, cut(minority, majority)...); err != nil {
		return err
	}
	r.phase(phaseFault)
	r.event("%s from the rest", fault)
	both := func(rd Round) bool {
		return allSee(majority, minority[0], "suspect", "dead")(rd) && allSee(majority, minority[1], "suspect", "dead")(rd)
	}
	if _, err := r.measure(ctx, "detection", fault, t, detectTimeout, both); err != nil {
		return err
	}
	if err := r.hold(ctx, time.Until(t.Add(r.opts.Hold))); err != nil {
		return err
	}
	// The majority holds the leader and a quorum of voters: the lease must not move.
	if h, e := r.leader(), r.epoch(); h != leader || e != epoch {
		r.rep.Params["leader_moved"] = fmt.Sprintf("%s/%d -> %s/%d", name(leader), epoch, name(h), e)
	}
	return r.healAndConverge(ctx, fault, up)
}

func partitionLeader(ctx context.Context, r *Runner) error {
	r.rep.Params["hold"] = r.opts.Hold.String()
	return r.faultLeader(ctx, "partition of leader %s", r.opts.Hold,
		func(leader int, rest []int) error { return r.lab.Apply(ctx, cut([]int{leader}, rest)...) }, "heal", r.heal)
}

func partitionAsymmetric(ctx context.Context, r *Runner) error {
	r.rep.Params["hold"] = r.opts.Hold.String()
	return r.faultLeader(ctx, "asymmetric partition: %s cannot send to its peers but hears them", r.opts.Hold,
		func(leader int, rest []int) error {
			var rules []Rule
			for _, p := range rest {
				rules = append(rules, Rule{From: leader, Peer: p, Out: true, Loss: 100})
			}
			return r.lab.Apply(ctx, rules...)
		}, "heal", r.heal)
}

func loss(ctx context.Context, r *Runner) error {
	r.rep.Params["loss_percent"] = fmt.Sprint(r.opts.Loss)
	r.rep.Params["duration"] = r.opts.Duration.String()
	up, ok, err := r.stable(ctx)
	if err != nil || !ok {
		return err
	}
	var rules []Rule
	for _, a := range up {
		for _, b := range up {
			if a != b {
				rules = append(rules, Rule{From: a, Peer: b, Out: true, Loss: r.opts.Loss})
			}
		}
	}
	fault := fmt.Sprintf("%d%% loss on every link", r.opts.Loss)
	if err := r.lab.Apply(ctx, rules...); err != nil {
		return err
	}
	r.phase(phaseFault)
	r.event("%s for %s", fault, r.opts.Duration)
	r.counting = true
	if err := r.hold(ctx, r.opts.Duration); err != nil {
		return err
	}
	r.counting = false
	r.event("%d false suspicions, %d leases seen", r.rep.FalseSuspicions, len(r.leases))
	return r.healAndConverge(ctx, fault, up)
}

func churn(ctx context.Context, r *Runner) error {
	r.rep.Params["duration"] = r.opts.Duration.String()
	up, ok, err := r.stable(ctx)
	if err != nil || !ok {
		return err
	}
	var pool []int
	for i := r.opts.Voters + 1; i <= r.opts.Agents; i++ {
		pool = append(pool, i)
	}
	if len(pool) == 0 {
		return fmt.Errorf("chaos: churn needs non-voters: --agents %d with %d voters", r.opts.Agents, r.opts.Voters)
	}
	steps := 0
	r.phase(phaseFault)
	end := time.Now().Add(r.opts.Duration)
	for time.Now().Before(end) && !r.failed() {
		i := pool[r.rng.IntN(len(pool))]
		switch {
		case !r.c.Running(i):
			err = r.c.Start(i, true)
		case r.rng.IntN(2) == 0:
			err = r.c.Leave(i)
		default:
			err = r.c.Kill(i)
		}
		if err != nil {
			return err
		}
		steps++
		if err := r.hold(ctx, time.Second); err != nil {
			return err
		}
	}
	r.rep.Params["steps"] = fmt.Sprint(steps)
	r.phase(phaseRecovery)
	t := time.Now()
	for _, i := range pool {
		if !r.c.Running(i) {
			if err := r.c.Start(i, true); err != nil {
				return err
			}
		}
	}
	if _, err = r.measure(ctx, "convergence", "end of churn", t, convergeTimout, converged(up)); err != nil {
		return err
	}
	return r.serviceSettled(ctx, "end of churn", t)
}

// pause stops the leader. Resumed, it still believes in its old lease until it
// looks at its clock; the invariants sampled from then show whether it says so.
func pause(ctx context.Context, r *Runner) error {
	r.rep.Params["pause"] = r.opts.Pause.String()
	return r.faultLeader(ctx, "SIGSTOP leader %s", r.opts.Pause,
		func(leader int, _ []int) error { return r.c.Pause(leader) }, "SIGCONT", r.c.Resume)
}

// upgradeSettle is how long the cluster runs after each step of a rolling
// upgrade has converged, before the next (docs/upgrading.md asks a minute of
// production; here it is a few seconds of load and gating checks).
const upgradeSettle = 3 * time.Second

// rollingUpgrade restarts the agents one by one onto opts.UpgradeBin in the
// order of docs/upgrading.md: non-voters, the voters that do not lead, the
// leader last. Each restart is a graceful leave (SIGTERM) and a start on the
// new build with the same data directory. The gating check runs on every
// round: while an agent on the old build is up, every agent sends at version
// 1 with no feature on. After the last restart every agent must report the
// new range, sending 2 and ack-health on (feature_on).
func rollingUpgrade(ctx context.Context, r *Runner) error {
	r.rep.Params["old_bin"], r.rep.Params["new_bin"] = filepath.Base(r.c.Bin(1)), filepath.Base(r.opts.UpgradeBin)
	r.obs.Status = true
	old := func() []int {
		var o []int
		for _, i := range r.c.Up() {
			if r.c.Bin(i) != r.opts.UpgradeBin {
				o = append(o, i)
			}
		}
		return o
	}
	r.gate = func(round Round) { r.rep.Invariants.CheckGating(round, old(), wire.ProtocolVersion) }
	up, ok, err := r.stable(ctx)
	if err != nil || !ok {
		return err
	}
	oldRange := fmt.Sprintf("%d-%d", wire.MinProtocolVersion, wire.ProtocolVersion)
	for _, v := range sortedViews(r.last) {
		if v.Protocol != oldRange {
			r.fail("%s speaks %s before the upgrade, want the old build's %s (--agent-bin)", name(v.Node), v.Protocol, oldRange)
			return nil
		}
	}
	newRange := fmt.Sprintf("%d-%d", wire.MinProtocolVersion, wire.PreviewVersion)
	featureOn := func(rd Round) bool {
		if !rd.answered(up) {
			return false
		}
		for _, i := range up {
			v := rd.Views[i]
			if v.Protocol != newRange || v.Sending != wire.PreviewVersion || v.Features != wire.FeatureAckHealth.String() {
				return false
			}
		}
		return true
	}
	r.phase(phaseFault)
	for len(old()) > 0 && !r.failed() {
		if _, ok, err := r.stable(ctx); err != nil || !ok {
			return err
		}
		leader, epoch := r.leader(), r.epoch()
		i := nextToUpgrade(old(), r.opts.Voters, leader)
		step := fmt.Sprintf("upgrade of %s", name(i))
		t := time.Now()
		if err := r.c.Leave(i); err != nil {
			return err
		}
		r.c.SetBin(i, r.opts.UpgradeBin)
		if err := r.c.Start(i, true); err != nil {
			return err
		}
		started := time.Now()
		r.event("%s: SIGTERM, started on %s", step, filepath.Base(r.opts.UpgradeBin))
		if i == leader {
			if _, err := r.measure(ctx, "failover", step, t, failTimeout, newLeader(without(up, i), []int{i}, epoch)); err != nil {
				return err
			}
		}
		if len(old()) == 0 {
			// The feature may come on from the last old agent's leave on; every
			// agent has it once the restarted one joined on the new build.
			if _, err := r.measure(ctx, "feature_on", step, started, convergeTimout, featureOn); err != nil {
				return err
			}
		}
		if _, err := r.measure(ctx, "convergence", step, started, convergeTimout, converged(up)); err != nil {
			return err
		}
		if err := r.serviceSettled(ctx, step, started); err != nil {
			return err
		}
		r.phase(phaseFault) // the upgrade goes on
		if err := r.hold(ctx, upgradeSettle); err != nil {
			return err
		}
	}
	r.phase(phaseSteady)
	return nil
}

// nextToUpgrade picks from the agents still on the old build: a non-voter
// first, then a voter that does not lead, the leader last.
func nextToUpgrade(old []int, voters, leader int) int {
	best := old[0]
	rank := func(i int) int {
		switch {
		case i > voters:
			return 0
		case i != leader:
			return 1
		}
		return 2
	}
	for _, i := range old[1:] {
		if rank(i) < rank(best) {
			best = i
		}
	}
	return best
}
