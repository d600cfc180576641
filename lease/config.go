package lease

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns; the message
// names the offending field.
var ErrInvalidConfig = errors.New("lease: invalid config")

// Config configures a Machine. Build one with DefaultConfig and adjust; zero values
// are not defaults. Every voter of a cluster must run with the same LeaseDuration and
// MaxDrift: the safety argument (docs/lease.md) compares the holder's deadline with
// the voters' hold, and both are computed from these two values.
type Config struct {
	// Self is this node's unique name; it is the address messages to it are sent
	// to. Required.
	Self string
	// Voters is the bootstrap voter set (nodes with the `voter` role, 3 or 5): used
	// until a voter-set change is persisted (State.Membership). Required, unique,
	// non-empty names, and the same list on every node: two different bootstrap
	// lists could form quorums that do not intersect. A node added later is started
	// with the same list and learns the current set from the leader. Non-voters run
	// a Machine too but never campaign.
	Voters []string

	// LeaseDuration is the length of every lease a holder asks for, measured on the
	// holder's clock from the moment it sends the proposal, and the longest lease a
	// voter grants. Default 3 s. Raising it makes failover slower (failover is about
	// LeaseDuration - RenewInterval plus backoff) but tolerates longer network
	// stalls before a healthy leader loses its lease; lowering it does the opposite
	// and costs nothing per message, only more renewals per lease.
	LeaseDuration time.Duration
	// RenewInterval is the time between two renewals by the holder. Default 1 s:
	// a holder gets about LeaseDuration*(1-MaxDrift)/RenewInterval - 1 = 1.9 spare
	// attempts before its lease lapses. Must be below HolderValidity. Lowering it
	// makes a lease survive more lost renewals and costs 2*(voters-1) messages per
	// interval; raising it toward LeaseDuration leaves no room for a lost round.
	RenewInterval time.Duration
	// MaxDrift is the bound ρ on how fast or slow any node's local clock runs
	// relative to real time (0.01 = ±1 %, i.e. ±10 ms per second of elapsed time).
	// Default 0.01, two orders of magnitude above what NTP-disciplined or even free
	// running quartz clocks drift (≤ 100 ppm), so a misbehaving clock is covered.
	// Raising it shortens the holder's usable lease and lengthens the voters' hold
	// (LeaseDuration*(1±ρ)); if real drift exceeds it, two leaders can overlap.
	// Must be in [0, 0.5).
	MaxDrift float64
	// Margin is subtracted from the holder's deadline on its own clock, so it stops
	// acting that much earlier than the drift bound alone requires: it absorbs the
	// time between the holder checking its lease and its action taking effect.
	// Default 100 ms. Fencing tokens, not Margin, are what protect external
	// resources from a holder that pauses after checking.
	Margin time.Duration
	// BackoffMin and BackoffMax bound the random delay, drawn uniformly from the
	// injected *rand.Rand, before a voter that sees no lease starts an election
	// and after a failed attempt. Defaults 100 ms and 300 ms: the spread (200 ms)
	// is two orders of magnitude above a LAN round trip, so two voters rarely
	// collide. Raising them slows failover by about their mean; narrowing the
	// spread makes duelling candidates likelier.
	BackoffMin, BackoffMax time.Duration
	// AttemptTimeout is how long a candidate waits for a quorum of promises, and
	// then of accepts, before giving up and backing off. Default 300 ms, far above a
	// LAN round trip; on a WAN raise it above the slowest voter round trip.
	// Lowering it below a round trip makes every election fail.
	AttemptTimeout time.Duration
}

// DefaultConfig returns the default timing for a LAN cluster (see each field).
func DefaultConfig(self string, voters []string) Config {
	return Config{
		Self:           self,
		Voters:         slices.Clone(voters),
		LeaseDuration:  3 * time.Second,        // failover p99 ≈ 3.3 s, < 5 s target
		RenewInterval:  time.Second,            // two spare renewals per lease
		MaxDrift:       0.01,                   // 100x what real clocks drift
		Margin:         100 * time.Millisecond, // holder stops ≥ 100 ms before voters
		BackoffMin:     100 * time.Millisecond, // ≫ LAN RTT: first candidate usually wins
		BackoffMax:     300 * time.Millisecond,
		AttemptTimeout: 300 * time.Millisecond, // ≫ LAN RTT
	}
}

// Validate reports the first invalid field; it has no side effects.
func (c Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, why) }
	switch {
	case c.Self == "":
		return bad("Self", "is empty")
	case validVoters(c.Voters) != nil:
		return bad("Voters", validVoters(c.Voters).Error())
	case c.LeaseDuration <= 0:
		return bad("LeaseDuration", "must be positive")
	case !(c.MaxDrift >= 0 && c.MaxDrift < 0.5):
		return bad("MaxDrift", "must be in [0, 0.5)")
	case c.Margin < 0:
		return bad("Margin", "must not be negative")
	case HolderValidity(c.LeaseDuration, c.MaxDrift, c.Margin) <= 0:
		return bad("Margin", "leaves no valid lease: LeaseDuration*(1-MaxDrift)-Margin <= 0")
	case c.RenewInterval <= 0:
		return bad("RenewInterval", "must be positive")
	case c.RenewInterval >= HolderValidity(c.LeaseDuration, c.MaxDrift, c.Margin):
		return bad("RenewInterval", "must be below LeaseDuration*(1-MaxDrift)-Margin")
	case c.BackoffMin < 0:
		return bad("BackoffMin", "must not be negative")
	case c.BackoffMax < c.BackoffMin:
		return bad("BackoffMax", "must not be below BackoffMin")
	case c.AttemptTimeout <= 0:
		return bad("AttemptTimeout", "must be positive")
	}
	return nil
}

// validVoters checks a voter set: non-empty, no empty or repeated name.
func validVoters(v []string) error {
	if len(v) == 0 {
		return errors.New("is empty")
	}
	seen := make(map[string]bool, len(v))
	for _, n := range v {
		if n == "" {
			return errors.New("contains an empty name")
		}
		if seen[n] {
			return fmt.Errorf("names %q twice", n)
		}
		seen[n] = true
	}
	return nil
}
