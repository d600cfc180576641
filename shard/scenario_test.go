package shard

import (
	"testing"
	"time"
)

func testConfig(shards int) Config {
	cfg := DefaultConfig()
	cfg.Shards = shards
	return cfg
}

func TestBootstrapSettlesOnTargets(t *testing.T) {
	w := newWorld(testConfig(64), 1, 5)
	w.elect("node-00")
	w.run(10 * time.Second)
	w.report(t)
	if bad := w.settled(); len(bad) > 0 {
		t.Fatalf("not settled:\n%s", joinLines(bad))
	}
}

// A new leader serves nothing new before every grant of the old one could have
// lapsed, unless the owners re-confirm: here they do, so no shard stops being
// served across the failover.
func TestFailoverKeepsReconfirmedShardsServed(t *testing.T) {
	w := newWorld(testConfig(64), 2, 5)
	w.elect("node-00")
	w.run(10 * time.Second)
	w.failover(100 * time.Millisecond)
	gaps := 0
	for end := 10 * time.Second; end < 20*time.Second; end += 10 * time.Millisecond {
		w.run(end)
		for _, who := range w.serving() {
			if who == "" {
				gaps++
			}
		}
	}
	w.report(t)
	if gaps > 0 {
		t.Errorf("%d shard-samples unserved across a failover with live owners", gaps)
	}
	if bad := w.settled(); len(bad) > 0 {
		t.Fatalf("not settled:\n%s", joinLines(bad))
	}
}

func TestCrashedOwnersShardsReassignedWithinTwoLeases(t *testing.T) {
	w := newWorld(testConfig(64), 3, 6)
	w.elect("node-00")
	w.run(10 * time.Second)
	w.crash("node-03")
	w.run(25 * time.Second)
	w.report(t)
	lat := w.reassignLatencies()
	if len(lat) != 1 {
		t.Fatalf("want one measured death, got %v", lat)
	}
	if lat[0] < 0 || lat[0] > 2*w.cfg.LeaseDuration {
		t.Fatalf("shards of the dead node served elsewhere after %v, want <= %v", lat[0], 2*w.cfg.LeaseDuration)
	}
	if bad := w.settled(); len(bad) > 0 {
		t.Fatalf("not settled:\n%s", joinLines(bad))
	}
}

func TestDrainMovesEverythingAtMostKAtOnce(t *testing.T) {
	cfg := testConfig(64)
	cfg.MaxMoves = 3
	w := newWorld(cfg, 4, 4)
	w.elect("node-00")
	w.run(10 * time.Second)
	w.setDraining("node-02", true)
	maxInflight := 0
	for end := 10 * time.Second; end < 40*time.Second; end += 5 * time.Millisecond {
		w.run(end)
		m := w.nodes[w.leader].ctrl.Map()
		n := 0
		for s := range 64 {
			if m.State(uint32(s)) != StateSteady {
				n++
			}
		}
		maxInflight = max(maxInflight, n)
	}
	w.report(t)
	if maxInflight > cfg.MaxMoves || maxInflight == 0 {
		t.Errorf("max shards in flight %d, want 1..%d", maxInflight, cfg.MaxMoves)
	}
	m := w.nodes[w.leader].ctrl.Map()
	if got := m.ShardsOf("node-02"); len(got) != 0 {
		t.Errorf("drained node still owns %v", got)
	}
	if bad := w.settled(); len(bad) > 0 {
		t.Fatalf("not settled:\n%s", joinLines(bad))
	}
}

// The synthetic workload across every kind of reshard: keyed messages go to the
// owner as a client sees it, are processed only under a valid ownership lease,
// and rejected ones are retried. None is processed twice and none is lost.
func TestWorkloadExactlyOnceAcrossReshards(t *testing.T) {
	w := newWorld(testConfig(64), 5, 6)
	w.setLatency(time.Millisecond, 20*time.Millisecond)
	w.elect("node-00")
	w.startClients(8, 80, 100*time.Millisecond)
	w.at(4*time.Second, func() { w.addNode("node-06", true) })
	w.at(8*time.Second, func() { w.crash("node-02") })
	w.at(12*time.Second, func() { w.setDraining("node-03", true) })
	w.at(15*time.Second, func() { w.failover(300 * time.Millisecond) })
	w.at(18*time.Second, func() { w.isolate("node-04") })
	w.at(22*time.Second, func() { w.heal("node-04") })
	w.run(60 * time.Second)
	w.report(t)
	if lost := w.clients.lost(); len(lost) > 0 {
		t.Fatalf("%d messages never processed, e.g. %s", len(lost), lost[0])
	}
	if w.clients.rejected == 0 {
		t.Fatal("no message was ever rejected: the reshards did not touch the workload")
	}
	if bad := w.settled(); len(bad) > 0 {
		t.Fatalf("not settled:\n%s", joinLines(bad))
	}
}

// A member cut off while the map changed renews into the void every
// RetryInterval, so its first renewal after the heal fetches the grant (which
// names the leader's version) and then the map: it holds the leader's version
// within RetryInterval plus two round trips, long before membership re-admits
// it (detect = 1 s here) and long before its next periodic renewal would.
func TestCutOffMemberCatchesUpWithinRetryAfterHeal(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		w := newWorld(testConfig(64), 100+seed, 5)
		w.elect("node-00")
		w.run(10 * time.Second)
		// A random phase of the renewal cycle, so the heal is not aligned with it.
		w.run(10*time.Second + time.Duration(w.rng.Int64N(int64(time.Second))))
		cut := w.nodes["node-03"]
		sentBefore := cut.owner.Stats().Renewals
		w.isolate("node-03")
		isolated := 5 * time.Second
		w.run(w.net.Now() + isolated)
		if !stale(cut, w.nodes[w.leader]) {
			t.Fatalf("seed %d: the cut-off member already has the new map; the test shows nothing", seed)
		}
		// Retries are bounded: one per RetryInterval while unanswered.
		if n := cut.owner.Stats().Renewals - sentBefore; n > uint64(isolated/w.cfg.RetryInterval)+1 {
			t.Errorf("seed %d: %d renewals in %v cut off, want <= %d", seed, n, isolated, isolated/w.cfg.RetryInterval+1)
		}
		w.heal("node-03")
		healed := w.net.Now()
		bound := w.cfg.RetryInterval + 4*w.latMax() // retry wait, then renewal, grant, request, map
		for w.net.Now() < healed+w.detect && stale(cut, w.nodes[w.leader]) {
			w.run(w.net.Now() + time.Millisecond)
		}
		if took := w.net.Now() - healed; took > bound {
			t.Errorf("seed %d: the healed member held the leader's map version %v after the heal, want <= %v", seed, took, bound)
		}
		w.report(t)
	}
}

// stale reports whether member's map differs from the leader's current one.
func stale(member, leader *simNode) bool {
	m, l := member.owner.Map(), leader.ctrl.Map()
	return m == nil || m.epoch != l.epoch || m.version != l.version
}
