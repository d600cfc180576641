package shard

import (
	"time"

	"github.com/omnirelay/mesh/lease"
)

// Ownership-lease timing is the leader lease's arithmetic (lease/deadline.go),
// with the owner in the holder's place and the leader in the voters': every clock
// runs at a rate within [1-ρ, 1+ρ] of real time, ρ = MaxDrift (docs/shards.md,
// "Safety").
//
//   - The owner starts its timer when it SENDS a renewal, before the leader can
//     answer it, and serves for lease.HolderValidity = d*(1-ρ) - margin of its own
//     time: at most d - margin/(1-ρ) of real time after the send.
//   - The leader considers the shard held for lease.VoterHold = d*(1+ρ) of its own
//     time from when it SENDS the grant, which is after it received the renewal: at
//     least d of real time after the owner's send.
//
// So the owner stops at least margin/(1-ρ) of real time before the leader can give
// the shard to anyone else. No clock is compared with another: only durations
// cross the wire, and message delay only makes the owner more conservative.

// FailoverWait is how long a new leader hands out no shard that its owner did not
// re-confirm: every grant of a previous leader answered a renewal sent before the
// new leader's term began, so it lapses within d of real time after that, which
// the longest hold, lease.VoterHold(d), on the new leader's clock covers.
func FailoverWait(d time.Duration, drift float64) time.Duration {
	return lease.VoterHold(d, drift)
}
