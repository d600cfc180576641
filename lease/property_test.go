package lease

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// Random crashes, restarts, pauses, partitions, loss and clock drift within the
// configured bound: at every instant at most one node believes it holds a valid
// lease, successive holders' epochs strictly increase, and once every fault is
// repaired a leader is elected again.
func TestPropertySafeUnderFaultsWithinDriftBound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.SampledFrom([]int{3, 5}).Draw(t, "voters")
		// Sometimes strip the slack that hides bugs: no margin, and candidates that
		// campaign the instant a lease lapses. The argument must hold without them.
		strict := rapid.Bool().Draw(t, "tight")
		c := newCluster(n, rapid.Uint64().Draw(t, "seed"), func(cfg *Config) {
			if strict {
				tight(cfg)
			}
		})
		if strict {
			c.setLatency(10*time.Microsecond, 50*time.Microsecond)
		}
		drift := c.nodes[0].cfg.MaxDrift
		rate := func(label string) float64 { // the bound's edges are where bugs show
			switch rapid.IntRange(0, 2).Draw(t, label+"Kind") {
			case 0:
				return 1 - drift
			case 1:
				return 1 + drift
			}
			return rapid.Float64Range(1-drift, 1+drift).Draw(t, label)
		}
		for i := range c.nodes {
			c.setRate(i, rate("rate"))
		}
		c.setLoss(rapid.Float64Range(0, 0.2).Draw(t, "loss"))
		const faultsEnd = 40 * sec
		for range rapid.IntRange(0, 15).Draw(t, "faults") {
			at := time.Duration(rapid.Int64Range(int64(sec), int64(faultsEnd)).Draw(t, "at"))
			dur := time.Duration(rapid.Int64Range(int64(50*time.Millisecond), int64(8*sec)).Draw(t, "for"))
			node := rapid.IntRange(0, n-1).Draw(t, "node")
			onLeader := rapid.Bool().Draw(t, "onLeader") // aim at whoever leads then
			kind := rapid.IntRange(0, 3).Draw(t, "kind")
			newRate := rate("newRate")
			c.at(at, func() {
				i := node
				if l := c.leader(); onLeader && l >= 0 {
					i = l
				}
				end := min(at+dur, faultsEnd)
				switch kind {
				case 0:
					c.crash(i)
					c.at(end, func() { c.restart(i) })
				case 1:
					c.pause(i)
					c.at(end, func() { c.resume(i) })
				case 2:
					c.isolate(i)
					c.at(end, c.heal)
				case 3:
					c.setRate(i, newRate)
				}
			})
		}
		c.at(faultsEnd, func() {
			c.heal()
			c.setLoss(0)
			for i := range c.nodes {
				c.restart(i)
				c.resume(i)
			}
		})
		c.run(faultsEnd + 20*sec)
		if c.violation != nil {
			t.Fatal(c.violation)
		}
		if c.leader() < 0 {
			t.Fatalf("no leader 20 s after every fault was repaired; acquisitions %v", c.acquired)
		}
	})
}

// The checker above can fail: with clocks drifting far beyond MaxDrift (the holder's
// 30 % slow, the voters' 30 % fast) a partitioned holder still trusts its lease
// when the majority elects a new leader, and the checker reports two holders.
func TestCheckerCatchesDriftBeyondBound(t *testing.T) {
	c := newCluster(3, 11, nil)
	old := stableLeader(t, c, 5*sec)
	for i := range c.nodes {
		if i == old {
			c.setRate(i, 0.7)
		} else {
			c.setRate(i, 1.3)
		}
	}
	c.isolate(old)
	c.run(c.net.Now() + 10*sec)
	if c.violation == nil {
		t.Fatalf("drift of 30 %% against a 1 %% bound went unnoticed; acquisitions %v", c.acquired)
	}
	t.Logf("caught as expected: %v", c.violation)
}
