package node

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/swim"
)

// DefaultHealthTimeout is Config.HealthTimeout when zero.
const DefaultHealthTimeout = time.Second

// loopFacts is what a readiness probe reads on the loop, in one visit.
type loopFacts struct {
	saveErr    error // voter: the last lease state save failed with it
	votersUp   int   // voter: voters alive or suspect in this node's view, itself included
	voters     int
	shardMap   bool // shards on: a map is known
	mapEpoch   uint64
	mapVersion uint64
}

// visitLoop runs f on the loop and waits for it at most Config.HealthTimeout. A
// loop that does not take f in time is wedged (a restart is the cure); one that
// has stopped answers ErrClosed. On error f may still run later, so the caller
// must not read what f writes.
func (n *Node) visitLoop(f func()) (time.Duration, error) {
	start := n.clock.Now()
	t := n.clock.NewTimer(n.cfg.HealthTimeout)
	defer t.Stop()
	done := make(chan struct{})
	select {
	case n.cmds <- func() { f(); close(done) }:
	case <-n.loopEnd:
		return 0, ErrClosed
	case <-t.C():
		return 0, fmt.Errorf("the event loop did not answer within %v", n.cfg.HealthTimeout)
	}
	select {
	case <-done:
	case <-t.C():
		return 0, fmt.Errorf("the event loop did not finish a probe within %v", n.cfg.HealthTimeout)
	}
	return n.clock.Now().Sub(start), nil
}

// loopCheck is the "loop" check: the loop took and ran f within the bound.
func (n *Node) loopCheck(f func()) control.Check {
	took, err := n.visitLoop(f)
	if err != nil {
		return control.Check{Name: "loop", State: control.CheckFail, Detail: err.Error()}
	}
	return control.Check{Name: "loop", State: control.CheckOK, Detail: fmt.Sprintf("answered in %v", took)}
}

// Health is /healthz: only what a restart cures, the loop answering. Quorum, disk
// and joining are readiness: restarting a minority partition or a voter with a
// full disk would not help and would make things worse.
func (c controlSource) Health() []control.Check {
	return []control.Check{c.n.loopCheck(func() {})}
}

// Readiness is /readyz: the loop answers, the node has joined and is not leaving,
// and, for a voter, its last lease state save worked and a quorum of voters is
// reachable; with shard routing, a shard map is known. docs/api.md says why each.
func (c controlSource) Readiness() []control.Check {
	n := c.n
	var f loopFacts
	loop := n.loopCheck(func() { f = n.readinessFacts() })
	checks := []control.Check{loop, n.joinedCheck()}
	if loop.State != control.CheckOK {
		return checks // the facts were not read
	}
	if n.cfg.Voter {
		checks = append(checks, leaseStateCheck(f), quorumCheck(f))
	}
	if n.shards != nil {
		ch := control.Check{Name: "shard_map", State: control.CheckOK,
			Detail: fmt.Sprintf("map version %d at epoch %d", f.mapVersion, f.mapEpoch)}
		if !f.shardMap {
			ch.State, ch.Detail = control.CheckFail, "no shard map received yet"
		}
		checks = append(checks, ch)
	}
	return checks
}

// readinessFacts reads the loop-owned state readiness depends on. Loop only.
func (n *Node) readinessFacts() loopFacts {
	var f loopFacts
	if l := n.lead; l != nil && n.cfg.Voter {
		f.saveErr = l.saveErr
		l.mu.Lock()
		voters := slices.Clone(l.voters)
		l.mu.Unlock()
		f.voters = len(voters)
		for _, m := range n.stack.Swim().Members() {
			if _, ok := slices.BinarySearch(voters, m.Name); ok &&
				(m.Status == swim.StatusAlive || m.Status == swim.StatusSuspect) {
				f.votersUp++
			}
		}
	}
	if n.shards != nil {
		if m := n.stack.ShardMap(); m != nil {
			f.shardMap, f.mapEpoch, f.mapVersion = true, m.Epoch(), m.Version()
		}
	}
	return f
}

func (n *Node) joinedCheck() control.Check {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := control.Check{Name: "joined", State: control.CheckFail}
	switch {
	case n.leaving:
		ch.Detail = "leaving the cluster"
	case len(n.cfg.Join) > 0 && !n.joined:
		ch.Detail = fmt.Sprintf("joining: no seed of %s has answered yet", strings.Join(n.cfg.Join, ", "))
	case len(n.cfg.Join) == 0:
		ch.State, ch.Detail = control.CheckOK, "no seeds configured: this node needs no join"
	default:
		ch.State, ch.Detail = control.CheckOK, "a seed answered"
	}
	return ch
}

func leaseStateCheck(f loopFacts) control.Check {
	if f.saveErr != nil {
		return control.Check{Name: "lease_state", State: control.CheckFail,
			Detail: fmt.Sprintf("saving the lease state fails, so this voter sends no lease messages: %v", f.saveErr)}
	}
	return control.Check{Name: "lease_state", State: control.CheckOK, Detail: "the last lease state save succeeded"}
}

func quorumCheck(f loopFacts) control.Check {
	need := f.voters/2 + 1
	ch := control.Check{Name: "quorum", State: control.CheckOK,
		Detail: fmt.Sprintf("%d of %d voters reachable, quorum %d", f.votersUp, f.voters, need)}
	if f.votersUp < need {
		ch.State = control.CheckFail
	}
	return ch
}
