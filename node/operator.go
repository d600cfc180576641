package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
)

// ForceLeave removes a dead member at an operator's request: this node records it
// as left and gossips the Leave to the members that still hold it alive or suspect
// (those that hold it dead keep that). With prune its tombstone is also dropped
// from this node's view now, not TombstoneTTL later, so this node stops trying to
// reconnect to it; other nodes keep theirs until then. A live member is refused
// (swim.ErrMemberLive: it would refute at once; stop it, or let it leave itself),
// as are unknown names and this node (swim.ErrUnknownMember).
func (n *Node) ForceLeave(name string, prune bool) error {
	var err error
	if !n.do(func() { err = n.stack.ForceLeave(n.clock.Now(), name, prune) }) {
		return ErrClosed
	}
	if err != nil {
		return fmt.Errorf("node: force-leave %s: %w", name, err)
	}
	n.log.Info("member forced out", "member", name, "prune", prune)
	return nil
}

// StepDown hands leadership over: the leader releases its lease now and waits one
// lease duration before it stands again, so another voter wins the election that
// follows. An error wrapping lease.ErrNotLeader unless this node leads.
func (n *Node) StepDown() error {
	if n.lead == nil {
		return ErrNoLeadership
	}
	var err error
	if !n.do(func() { err = n.stack.StepDown(n.clock.Now()) }) {
		return ErrClosed
	}
	if err != nil {
		return fmt.Errorf("node: %s: step down: %w", n.cfg.Name, err)
	}
	n.log.Info("stepped down as leader")
	return nil
}

// Left is closed once a Leave has completed (through the Go API or the control
// API's POST /control/v1/leave): the agent exits then.
func (n *Node) Left() <-chan struct{} { return n.left }

// ---- control source ----

// Status implements control.OperatorSource.
func (c controlSource) Status() (control.NodeStatus, error) {
	n := c.n
	b := BuildInfo()
	st := control.NodeStatus{Name: n.cfg.Name, Address: n.addr, Version: b.Version,
		Protocol: Build{ProtocolMin: n.versions.Min, ProtocolMax: n.versions.Max}.Protocol()} // what this node speaks, a test build's preview range included
	var owned []uint32
	var leader string
	var epoch uint64
	var isLeader bool
	if !n.do(func() {
		sw := n.stack.Swim()
		self := sw.Local()
		st.Status, st.Incarnation, st.Health = self.Status.String(), self.Incarnation, sw.LocalHealth()
		st.Sending, st.Features = sw.SendVersion(), sw.Features().String()
		for _, m := range sw.Members() {
			if m.Name == n.cfg.Name {
				continue
			}
			switch m.Status {
			case swim.StatusAlive:
				st.Members.Alive++
			case swim.StatusSuspect:
				st.Members.Suspect++
			case swim.StatusDead:
				st.Members.Dead++
			case swim.StatusLeft:
				st.Members.Left++
			}
		}
		if n.lead != nil {
			now := n.clock.Now()
			leader, epoch, _, _ = n.stack.Leader(now)
			isLeader = n.stack.IsLeader(now)
		}
		if n.shards != nil {
			owned = n.stack.OwnedShards(n.clock.Now())
		}
	}) {
		return st, ErrClosed
	}
	n.mu.Lock()
	st.Joined = n.joined || len(n.cfg.Join) == 0
	n.mu.Unlock()
	st.Leader, st.Epoch, st.IsLeader = leader, epoch, isLeader
	st.IsVoter = n.cfg.Voter
	st.Shards, st.Owned = n.cfg.Shards, len(owned)
	st.Warnings = n.warnings()
	return st, nil
}

// SetMeta implements control.OperatorSource.
func (c controlSource) SetMeta(key, value string) error { return c.n.SetMeta(key, value) }

// DeleteMeta implements control.OperatorSource.
func (c controlSource) DeleteMeta(key string) error { return c.n.DeleteMeta(key) }

// Join implements control.OperatorSource.
func (c controlSource) Join(ctx context.Context, seeds []string) error {
	for _, s := range seeds {
		if err := checkHostPort(s); err != nil {
			return &control.CodeError{Status: http.StatusBadRequest, Code: control.CodeBadRequest, Err: fmt.Errorf("seed %q: %v", s, err)}
		}
	}
	return c.n.Join(ctx, seeds...)
}

// Leave implements control.OperatorSource.
func (c controlSource) Leave(ctx context.Context) error { return c.n.Leave(ctx) }

// ForceLeave implements control.OperatorSource.
func (c controlSource) ForceLeave(name string, prune bool) error {
	err := c.n.ForceLeave(name, prune)
	switch {
	case errors.Is(err, swim.ErrUnknownMember):
		return &control.CodeError{Status: http.StatusNotFound, Code: control.CodeUnknownPeer, Err: err}
	case errors.Is(err, swim.ErrMemberLive):
		return &control.CodeError{Status: http.StatusConflict, Code: control.CodeMemberLive, Err: err}
	}
	return err
}

// StepDown implements control.LeaderAdmin.
func (c controlSource) StepDown() error {
	if c.n.lead == nil {
		return control.ErrLeadershipOff
	}
	return c.leaderOnly(c.n.StepDown())
}

// ChangeVoters implements control.LeaderAdmin: the target set is the set in force
// with add added and remove removed.
func (c controlSource) ChangeVoters(add, remove []string) ([]string, error) {
	l := c.n.lead
	if l == nil {
		return nil, control.ErrLeadershipOff
	}
	l.mu.Lock()
	voters := slices.Clone(l.voters)
	l.mu.Unlock()
	for _, v := range add {
		if slices.Contains(voters, v) {
			return nil, badVoters(fmt.Errorf("%q is already a voter", v))
		}
		voters = append(voters, v)
	}
	for _, v := range remove {
		i := slices.Index(voters, v)
		if i < 0 {
			return nil, badVoters(fmt.Errorf("%q is not a voter", v))
		}
		voters = slices.Delete(voters, i, i+1)
	}
	slices.Sort(voters)
	if len(voters)%2 == 0 {
		return nil, badVoters(fmt.Errorf("the change leads to %d voters %v: use an odd number, 3 or 5 (add or remove two at once)", len(voters), voters))
	}
	err := c.n.ChangeVoters(voters)
	switch {
	case errors.Is(err, lease.ErrInvalidVoters):
		return nil, badVoters(err)
	case errors.Is(err, lease.ErrChangeInProgress):
		return nil, &control.CodeError{Status: http.StatusConflict, Code: control.CodeChangeInProgress, Err: err}
	}
	return voters, c.leaderOnly(err)
}

func badVoters(err error) error {
	return &control.CodeError{Status: http.StatusBadRequest, Code: control.CodeBadVoters, Err: err}
}
