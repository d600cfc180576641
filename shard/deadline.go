package shard

import (
	"math"
	"time"
)

// Ownership-lease timing is pure arithmetic on local clock readings, kept out of
// the state machines so it can be table-tested. The argument (docs/shards.md,
// "Safety"): every clock runs at a rate within [1-ρ, 1+ρ] of real time, ρ =
// MaxDrift.
//
//   - The owner starts its timer when it SENDS a renewal, before the leader can
//     answer it, and serves for OwnerValidity = d*(1-ρ) - margin of its own time:
//     at most d - margin/(1-ρ) of real time after the send.
//   - The leader considers the shard held for LeaderHold = d*(1+ρ) of its own time
//     from when it SENDS the grant, which is after it received the renewal: at
//     least d of real time after the owner's send.
//
// So the owner stops at least margin/(1-ρ) of real time before the leader can give
// the shard to anyone else. No clock is compared with another: only durations
// cross the wire, and message delay only makes the owner more conservative.

// OwnerValidity is how long, on its own clock from sending the renewal that earned
// it, an owner may serve under a grant of length d: d*(1-ρ) - margin, rounded
// down. Zero or negative means the grant is useless.
func OwnerValidity(d time.Duration, drift float64, margin time.Duration) time.Duration {
	return time.Duration(math.Floor(float64(d)*(1-drift))) - margin
}

// OwnerExpiry is the instant on the owner's clock from which it no longer serves a
// shard granted for d in answer to a renewal it sent at sent.
func OwnerExpiry(sent time.Time, d time.Duration, drift float64, margin time.Duration) time.Time {
	return sent.Add(OwnerValidity(d, drift, margin))
}

// LeaderHold is how long, on its own clock from sending a grant of length d, the
// leader considers the shard held by the grantee: d*(1+ρ), rounded up, so that at
// least d of real time passes.
func LeaderHold(d time.Duration, drift float64) time.Duration {
	return time.Duration(math.Ceil(float64(d) * (1 + drift)))
}

// LeaderExpiry is the instant on the leader's clock from which a grant of length d
// it sent at granted can no longer be in force.
func LeaderExpiry(granted time.Time, d time.Duration, drift float64) time.Time {
	return granted.Add(LeaderHold(d, drift))
}

// FailoverWait is how long a new leader hands out no shard that its owner did not
// re-confirm: every grant of a previous leader answered a renewal sent before the
// new leader's term began, so it lapses within d of real time after that, which
// LeaderHold(d) on the new leader's clock covers.
func FailoverWait(d time.Duration, drift float64) time.Duration {
	return LeaderHold(d, drift)
}

// RealSpan bounds the real time that passes while a clock with drift bound ρ
// measures local: the shortest (local/(1+ρ)) and longest (local/(1-ρ)) possible
// real durations. Used by tests and docs to check the argument above.
func RealSpan(local time.Duration, drift float64) (shortest, longest time.Duration) {
	return time.Duration(math.Floor(float64(local) / (1 + drift))),
		time.Duration(math.Ceil(float64(local) / (1 - drift)))
}
