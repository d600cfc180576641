package lease

import (
	"errors"
	"fmt"
)

// ErrStaleEpoch is returned by FenceChecker.CheckFence for a message carrying an
// epoch below the highest one seen: it comes from a deposed leader.
var ErrStaleEpoch = errors.New("lease: stale fencing token")

// FenceChecker is the follower side of fencing (Kleppmann, "How to do distributed
// locking"): it remembers the highest epoch seen and rejects anything a leader
// issued under a lower one, so a paused or partitioned ex-leader's late messages
// take no effect. Equal epochs pass: one epoch has one holder. The zero value is
// ready. Not safe for concurrent use.
type FenceChecker struct {
	highest  uint64
	rejected uint64
}

// ObserveEpoch raises the highest epoch seen to e (from a lease event, gossip, ...).
func (f *FenceChecker) ObserveEpoch(e uint64) {
	f.highest = max(f.highest, e)
}

// CheckFence accepts a leader-issued message carrying epoch e, raising the highest
// epoch seen, or counts and rejects it with ErrStaleEpoch if e is lower.
func (f *FenceChecker) CheckFence(e uint64) error {
	if e < f.highest {
		f.rejected++
		return fmt.Errorf("%w: epoch %d < %d", ErrStaleEpoch, e, f.highest)
	}
	f.highest = e
	return nil
}

// Highest is the highest epoch seen.
func (f *FenceChecker) Highest() uint64 { return f.highest }

// Rejected counts messages CheckFence rejected.
func (f *FenceChecker) Rejected() uint64 { return f.rejected }
