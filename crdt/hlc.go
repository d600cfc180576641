package crdt

import (
	"cmp"
	"fmt"
	"math"
	"time"
)

// Timestamp is a hybrid logical clock reading (Kulkarni, Demirbas et al., "Logical
// Physical Clocks", 2014): Wall is the largest physical time, in nanoseconds since
// the Unix epoch, that the clock has seen locally or in a message, and Logical
// orders events that share Wall. Timestamps compare by Wall, then Logical; if event
// a happened before event b, a's timestamp is less than b's.
type Timestamp struct {
	Wall    int64
	Logical uint32
}

// Compare returns -1, 0 or +1 as t is before, equal to, or after o.
func (t Timestamp) Compare(o Timestamp) int {
	if c := cmp.Compare(t.Wall, o.Wall); c != 0 {
		return c
	}
	return cmp.Compare(t.Logical, o.Logical)
}

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t == Timestamp{} }

// String formats t as "wall.logical".
func (t Timestamp) String() string { return fmt.Sprintf("%d.%d", t.Wall, t.Logical) }

// ClockConfig configures a Clock.
type ClockConfig struct {
	// MaxDrift is how far ahead of local physical time a remote timestamp may be.
	// Default 500ms. Raising it tolerates worse-synchronised clocks but lets a
	// runaway clock drag every Wall further from real time (up to MaxDrift per
	// hop); lowering it rejects more messages from slightly skewed peers.
	MaxDrift time.Duration
}

// DefaultClockConfig returns the documented defaults.
func DefaultClockConfig() ClockConfig { return ClockConfig{MaxDrift: 500 * time.Millisecond} }

// Validate reports a field out of range.
func (c ClockConfig) Validate() error {
	if c.MaxDrift <= 0 {
		return fmt.Errorf("crdt: ClockConfig.MaxDrift must be positive, got %v", c.MaxDrift)
	}
	return nil
}

// Clock is a hybrid logical clock. It never reads the time: each call takes the
// local physical time, so node passes its wall clock and sim its virtual one.
//
// Beyond the drift bound: a remote timestamp more than MaxDrift ahead of the local
// physical time is refused by Update with ErrClockDrift and leaves the clock as it
// was, so one peer with a runaway clock cannot drag the cluster's timestamps into
// its future; the caller counts it and decides what to do with the rest of the
// message. A local physical clock that steps back is absorbed: Wall stays where it
// was and Logical counts on until physical time catches up.
//
// Logical is 32 bits; should it saturate (only forged input at one Wall gets
// there), the clock moves Wall one nanosecond on instead of wrapping, which keeps
// timestamps increasing.
type Clock struct {
	maxDrift int64
	last     Timestamp
}

// NewClock returns a clock at the zero timestamp.
func NewClock(cfg ClockConfig) (*Clock, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Clock{maxDrift: int64(cfg.MaxDrift)}, nil
}

// Last returns the latest timestamp the clock issued.
func (c *Clock) Last() Timestamp { return c.last }

// Now timestamps a local or send event at physical time pt.
func (c *Clock) Now(pt int64) Timestamp {
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt}
	} else {
		c.last = bump(c.last.Wall, c.last.Logical)
	}
	return c.last
}

// Update timestamps the receipt, at physical time pt, of a message stamped remote.
// It returns ErrClockDrift, and changes nothing, when remote is more than MaxDrift
// ahead of pt.
func (c *Clock) Update(remote Timestamp, pt int64) (Timestamp, error) {
	if ahead(remote.Wall, pt, c.maxDrift) {
		return c.last, fmt.Errorf("%w: remote %v, local physical %d, max drift %v",
			ErrClockDrift, remote, pt, time.Duration(c.maxDrift))
	}
	l := max(c.last.Wall, remote.Wall, pt)
	switch {
	case l == c.last.Wall && l == remote.Wall:
		c.last = bump(l, max(c.last.Logical, remote.Logical))
	case l == c.last.Wall:
		c.last = bump(l, c.last.Logical)
	case l == remote.Wall:
		c.last = bump(l, remote.Logical)
	default:
		c.last = Timestamp{Wall: l}
	}
	return c.last, nil
}

// bump is the timestamp after (wall, logical).
func bump(wall int64, logical uint32) Timestamp {
	if logical == math.MaxUint32 {
		if wall == math.MaxInt64 {
			return Timestamp{Wall: wall, Logical: logical} // the end of time: stand still
		}
		return Timestamp{Wall: wall + 1}
	}
	return Timestamp{Wall: wall, Logical: logical + 1}
}

// ahead reports whether remote > pt + maxDrift, without overflow.
func ahead(remote, pt, maxDrift int64) bool {
	if pt > math.MaxInt64-maxDrift {
		return false
	}
	return remote > pt+maxDrift
}
