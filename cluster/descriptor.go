package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/omnirelay/mesh/wire"
)

// State is what a cluster says of itself.
type State uint8

const (
	// Passive: follows the active cluster; may be promoted.
	Passive State = iota + 1
	// Active: the cluster whose registry is authoritative, for its version.
	Active
	// Draining: was active, hands over to Descriptor.Handoff and no longer
	// answers as active.
	Draining
)

func (s State) String() string {
	switch s {
	case Passive:
		return "passive"
	case Active:
		return "active"
	case Draining:
		return "draining"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ParseState is the inverse of String.
func ParseState(s string) (State, error) {
	for _, st := range []State{Passive, Active, Draining} {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("%w: state %q is not passive, active or draining", ErrInvalidConfig, s)
}

// Descriptor is one cluster's record. Only the cluster's lease holder writes it;
// copies travel between clusters and replace older ones by (Epoch, Counter).
type Descriptor struct {
	ID       string `json:"id"`
	Region   string `json:"region"`
	State    State  `json:"state"`
	Priority int    `json:"priority"` // lower promotes first in an unplanned failover
	// Version is the failover version the cluster last became active with
	// (its initial version, its index, until then). Version mod N is the
	// cluster's index.
	Version uint64 `json:"failover_version"`
	// Handoff names the cluster a Draining cluster hands over to.
	Handoff string `json:"handoff,omitempty"`
	// Epoch is the lease epoch of the holder that wrote the record and Counter
	// counts its writes under that epoch: (Epoch, Counter) orders the records
	// of one cluster. The configured record is (0, 0).
	Epoch   uint64 `json:"epoch"`
	Counter uint64 `json:"counter"`
}

// newer reports whether a is a later record of its cluster than b.
func newer(a, b Descriptor) bool {
	return a.Epoch > b.Epoch || a.Epoch == b.Epoch && a.Counter > b.Counter
}

var (
	// ErrInvalidConfig wraps a Config.Validate failure, naming the field.
	ErrInvalidConfig = errors.New("cluster: invalid config")
	// ErrNotHolder is returned by a write on a node that does not hold its
	// cluster's lease.
	ErrNotHolder = errors.New("cluster: not the cluster's lease holder")
	// ErrBadTransition is returned by Drain or Promote when the cluster's state
	// or the target does not allow it.
	ErrBadTransition = errors.New("cluster: transition not allowed")
	// ErrVersionExhausted is returned when no higher failover version fits in 64 bits.
	ErrVersionExhausted = errors.New("cluster: failover versions exhausted")
)

// NextVersion is the smallest version above seen that belongs to the cluster at
// index i of n: k*n + i > seen. It fails when none fits in a uint64.
func NextVersion(seen uint64, i, n int) (uint64, error) {
	if n <= 0 || i < 0 || i >= n {
		panic(fmt.Sprintf("cluster: NextVersion index %d of %d", i, n))
	}
	N, I := uint64(n), uint64(i)
	v := seen/N*N + I
	if v > seen {
		return v, nil
	}
	if v > math.MaxUint64-N {
		return 0, ErrVersionExhausted
	}
	return v + N, nil
}

// Resolve is the active cluster of a set of descriptors: the Active one with the
// highest version, and false when none is active. Versions are distinct across
// clusters (NextVersion), so the answer is the same whatever the order.
func Resolve(ds []Descriptor) (Descriptor, bool) {
	var best Descriptor
	ok := false
	for _, d := range ds {
		if d.State == Active && (!ok || d.Version > best.Version) {
			best, ok = d, true
		}
	}
	return best, ok
}

// sortByID sorts descriptors by cluster id.
func sortByID(ds []Descriptor) {
	slices.SortFunc(ds, func(a, b Descriptor) int { return cmp.Compare(a.ID, b.ID) })
}

// plausible reports whether d may replace known: the same bound on counter jumps
// as every other counter read from peers (wire.MaxJump), so one record cannot
// exhaust the versions or the epochs.
func plausible(d, known Descriptor) bool {
	return wire.Plausible(known.Version, d.Version) && wire.Plausible(known.Epoch, d.Epoch) &&
		wire.Plausible(known.Counter, d.Counter)
}

// MarshalText writes the state's name, so JSON shows "active", not a number.
func (s State) MarshalText() ([]byte, error) {
	if s < Passive || s > Draining {
		return nil, fmt.Errorf("cluster: cannot encode %v", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (s *State) UnmarshalText(b []byte) error {
	st, err := ParseState(string(b))
	*s = st
	return err
}
