package lease

import (
	"math"
	"math/rand/v2"
	"time"
)

// Lease timing is pure arithmetic on local clock readings, kept out of the state
// machine so it can be table-tested. The argument (docs/lease.md, "Safety"): every
// clock runs at a rate within [1-ρ, 1+ρ] of real time, ρ = MaxDrift. The holder
// starts its timer when it SENDS a proposal, before any voter can accept it, and
// trusts its lease for d*(1-ρ) - margin of its own time: at most d - margin/(1-ρ) of
// real time. A voter holds the lease for d*(1+ρ) of its own time from when it
// accepted: at least d of real time, from an instant after the send. So the holder
// stops at least margin/(1-ρ) of real time before any voter of its quorum can let
// the lease go, and a new lease needs one of those voters.

// HolderValidity is how long, on its own clock from sending the proposal or renewal,
// a holder may trust a lease of length d: d*(1-ρ) - margin, rounded down. Zero or
// negative means the lease is useless.
func HolderValidity(d time.Duration, drift float64, margin time.Duration) time.Duration {
	return time.Duration(math.Floor(float64(d)*(1-drift))) - margin
}

// HolderDeadline is the instant on the holder's clock at which it stops acting on a
// lease of length d whose proposal (or renewal) it sent at sent.
func HolderDeadline(sent time.Time, d time.Duration, drift float64, margin time.Duration) time.Time {
	return sent.Add(HolderValidity(d, drift, margin))
}

// VoterHold is how long, on its own clock from accepting, a voter keeps a lease of
// length d standing: d*(1+ρ), rounded up, so that at least d of real time passes.
func VoterHold(d time.Duration, drift float64) time.Duration {
	return time.Duration(math.Ceil(float64(d) * (1 + drift)))
}

// VoterExpiry is the instant on the voter's clock at which a lease of length d it
// accepted at accepted stops standing.
func VoterExpiry(accepted time.Time, d time.Duration, drift float64) time.Time {
	return accepted.Add(VoterHold(d, drift))
}

// QuietPeriod is how long a voter grants nothing after it starts: it may have
// accepted a lease of up to maxLease before a crash and forgotten it (accepted
// leases are not persisted), so it waits out the longest hold it could have given.
func QuietPeriod(maxLease time.Duration, drift float64) time.Duration {
	return VoterHold(maxLease, drift)
}

// RealSpan bounds the real time that passes while a clock with drift bound ρ
// measures local: it returns the shortest (local/(1+ρ)) and longest (local/(1-ρ))
// possible real durations. Used by tests and docs to check the argument above.
func RealSpan(local time.Duration, drift float64) (shortest, longest time.Duration) {
	return time.Duration(math.Floor(float64(local) / (1 + drift))),
		time.Duration(math.Ceil(float64(local) / (1 - drift)))
}

// backoff draws a delay uniformly from [lo, hi].
func backoff(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}
