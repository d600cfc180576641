package swim

import (
	"math"
	"time"
)

// The protocol's arithmetic, kept out of the timer code so each formula has a table
// test of its own.

// RetransmitLimit is how many times a broadcast is sent in a cluster of n live
// members: mult * ceil(log10(n+1)). With n+1 members a fact reaches everyone with
// high probability after O(log n) rounds of infection (SWIM §4.1).
func RetransmitLimit(mult, n int) int {
	if n < 0 {
		n = 0
	}
	return mult * int(math.Ceil(math.Log10(float64(n+1))))
}

// SuspicionMinTimeout is the shortest a suspicion lasts in a cluster of n live
// members: mult * max(1, log10(n)) * interval. It grows with log n because a
// refutation needs about log n gossip rounds to reach everyone.
func SuspicionMinTimeout(mult, n int, interval time.Duration) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	return time.Duration(float64(mult) * scale * float64(interval))
}

// SuspicionConfirmations is K of Lifeguard's suspicion formula: the number of
// independent confirmations that drive a suspicion to its minimum timeout,
// SuspicionMult - 2, and at most n - 2 (the suspect and the first suspecter cannot
// confirm). Zero means there is nothing to wait for: the timeout is the minimum.
func SuspicionConfirmations(mult, n int) int {
	return max(0, min(mult-2, n-2))
}

// SuspicionTimeout is Local Health Aware Suspicion (Lifeguard §IV-B): the total
// timeout of a suspicion that has c independent confirmations out of the k
// expected, between lo and hi:
//
//	timeout = max(lo, hi - (hi - lo) * log(c+1) / log(k+1))
//
// It starts at hi (c = 0), falls fast for the first confirmations and reaches lo
// at c = k. The logarithm makes the first confirmations count most: they are the
// strongest evidence that the suspect, not the suspecter, is at fault. k < 1
// returns lo. The result is truncated to the millisecond, so timers in different
// implementations agree.
func SuspicionTimeout(c, k int, lo, hi time.Duration) time.Duration {
	if k < 1 || hi <= lo {
		return lo
	}
	c = max(0, min(c, k))
	frac := math.Log(float64(c)+1) / math.Log(float64(k)+1)
	raw := float64(hi) - frac*float64(hi-lo)
	d := time.Duration(raw).Truncate(time.Millisecond)
	return max(d, lo)
}

// ScaleByHealth multiplies a probe interval or timeout by the Local Health
// Multiplier: d * (health + 1), health being the score 0 (healthy) to max-1
// (Lifeguard §IV-A). A node that misses acks is probably the slow one, and waiting
// longer stops it from accusing healthy members.
func ScaleByHealth(d time.Duration, health int) time.Duration {
	return d * time.Duration(health+1)
}

// ApplyHealthDelta adds delta to a health score and clamps it to [0, maxMult-1].
func ApplyHealthDelta(health, delta, maxMult int) int {
	return max(0, min(health+delta, maxMult-1))
}

// PushPullScale is the push-pull (and reconnect) period in a cluster of n live
// members: base up to 32 members, then one more base per doubling, so the
// cluster-wide rate of full-state exchanges grows like n/log n rather than n:
//
//	n <= 32: base;   n > 32: base * (ceil(log2(n) - log2(32)) + 1)
func PushPullScale(base time.Duration, n int) time.Duration {
	const threshold = 32
	if n <= threshold {
		return base
	}
	mult := math.Ceil(math.Log2(float64(n))-math.Log2(threshold)) + 1
	return time.Duration(mult) * base
}

// EagerBurst is how many eager pushes (EagerFanout packets each) a node may send
// back to back; beyond it, one every GossipInterval (EagerPace).
const EagerBurst = 4

// EagerPace decides whether an eager push may go at now, given next, the time the
// node's eager budget is next fully earned (zero at start): at most burst pushes at
// once, then one per interval, a virtual-scheduling token bucket. It returns the
// new value of next when the push is allowed, and next unchanged when not. A fact
// learned by a push that is not allowed stays queued for the gossip tick. Without
// the bound, every input that taught a node anything sent EagerFanout packets: in a
// formation of N nodes each node learns new facts from nearly every packet it gets,
// and 128 loopback nodes sent 0.2-1 M packets to form (13-20 k without eager push).
func EagerPace(next, now time.Time, interval time.Duration, burst int) (bool, time.Time) {
	if next.After(now.Add(time.Duration(max(burst, 1)-1) * interval)) {
		return false, next
	}
	if next.Before(now) {
		next = now
	}
	return true, next.Add(interval)
}

// GossipDrain is how long a fact learned now keeps being gossiped by one node:
// its RetransmitLimit(mult, n) transmissions, gossipNodes a tick, one tick every
// interval (eager push spends them sooner). A member that the cluster did not
// know yet while a fact was being gossiped can only get it by push-pull once
// that time is over: the delay of a joiner's settle push-pull.
func GossipDrain(mult, n, gossipNodes int, interval time.Duration) time.Duration {
	ticks := (RetransmitLimit(mult, n) + gossipNodes - 1) / max(gossipNodes, 1)
	return time.Duration(max(ticks, 1)) * interval
}
