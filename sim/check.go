package sim

import (
	"errors"
	"fmt"

	"github.com/omnirelay/mesh/swim"
)

// ErrDisagree is returned (wrapped, naming the nodes) when live nodes do not agree
// with ground truth on the membership.
var ErrDisagree = errors.New("sim: membership disagrees with ground truth")

// Converged reports whether every live node has the same Digest and one of them
// (hence, by the digest, all) sees exactly the live nodes as alive, at their
// current addresses, and nobody as suspect. It costs one Digest per live node and
// one Members call, so it can be polled at 10,000 nodes.
func (s *Sim) Converged() bool {
	live := s.LiveNodes()
	if len(live) == 0 {
		return true
	}
	d0 := s.nodes[live[0]].stack.Digest()
	for _, i := range live[1:] {
		if s.nodes[i].stack.Digest() != d0 {
			return false
		}
	}
	return s.checkView(live[0], len(live)) == nil
}

// checkView checks node i's member list against ground truth: every member it
// calls alive or suspect must be alive there (and not suspect), and exactly
// nLive of them must be alive.
func (s *Sim) checkView(i, nLive int) error {
	alive := 0
	for _, m := range s.nodes[i].stack.Members() {
		_, live := s.liveInstance(&m)
		switch {
		case m.Status == swim.StatusAlive && live:
			alive++
		case m.Status == swim.StatusAlive || m.Status == swim.StatusSuspect:
			return fmt.Errorf("%w: %s sees %s@%s as %v", ErrDisagree, s.nodes[i].name, m.Name, m.Addr, m.Status)
		case live:
			return fmt.Errorf("%w: %s sees live %s@%s as %v", ErrDisagree, s.nodes[i].name, m.Name, m.Addr, m.Status)
		}
	}
	if alive != nLive {
		return fmt.Errorf("%w: %s sees %d of %d live nodes alive", ErrDisagree, s.nodes[i].name, alive, nLive)
	}
	return nil
}

// CheckAgreement is the strict invariant, for small clusters (it costs a Members
// call per live node): every live node sees exactly the live nodes alive, nobody
// suspect, and no live node dead or left.
func (s *Sim) CheckAgreement() error {
	live := s.LiveNodes()
	for _, i := range live {
		if err := s.checkView(i, len(live)); err != nil {
			return err
		}
	}
	return nil
}
