package chaos

import (
	"context"
	"fmt"
	"slices"
	"time"
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
	r.event("%s of %s", undoName, name(leader))
	_, err = r.measure(ctx, "convergence", undoName+" after "+fault, t, convergeTimout, converged(up))
	return err
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
	r.event("heal")
	_, err := r.measure(ctx, "convergence", "heal after "+fault, time.Now(), convergeTimout, converged(nodes))
	return err
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
	t := time.Now()
	for _, i := range pool {
		if !r.c.Running(i) {
			if err := r.c.Start(i, true); err != nil {
				return err
			}
		}
	}
	_, err = r.measure(ctx, "convergence", "end of churn", t, convergeTimout, converged(up))
	return err
}

// pause stops the leader. Resumed, it still believes in its old lease until it
// looks at its clock; the invariants sampled from then show whether it says so.
func pause(ctx context.Context, r *Runner) error {
	r.rep.Params["pause"] = r.opts.Pause.String()
	return r.faultLeader(ctx, "SIGSTOP leader %s", r.opts.Pause,
		func(leader int, _ []int) error { return r.c.Pause(leader) }, "SIGCONT", r.c.Resume)
}
