package shard

import (
	"testing"
	"time"
)

// unservedNow is the leader's Unserved and the truth (shards no live process
// serves at this real instant).
func (w *world) unservedNow() (leader, truth int) {
	for _, who := range w.serving() {
		if who == "" {
			truth++
		}
	}
	nd := w.nodes[w.leader]
	return nd.ctrl.Unserved(nd.local(w.net.Now())), truth
}

// Draining every node one after the other leaves the shards that were in flight
// with nowhere to go: released, no owner, not forced, so nothing counted them as
// parked. Unserved counts them, and drops to 0 once drains are lifted. Whether
// shards are in flight at the last drain depends on the seed's delays and the
// drains' spacing: a handover takes a few round trips, so 20 ms apart seed 1
// strands 15 (2, 3, 6, 7 and 9 strand some too; 4, 8 and 10 none).
func TestUnservedCountsShardsLeftOwnerlessByDrainingEveryNode(t *testing.T) {
	w := newWorld(testConfig(64), 1, 5)
	w.elect("node-00")
	w.run(10 * time.Second)
	if l, tr := w.unservedNow(); l != 0 || tr != 0 {
		t.Fatalf("settled: Unserved %d, truly unserved %d; want 0, 0", l, tr)
	}
	end := w.net.Now()
	for _, name := range w.names {
		w.setDraining(name, true)
		end += 20 * time.Millisecond
		w.run(end)
	}
	w.run(end + time.Minute)
	l, tr := w.unservedNow()
	if tr == 0 {
		t.Fatal("every node drained in turn and every shard still served: the scenario no longer shows the outage")
	}
	if l != tr {
		t.Fatalf("all drained: Unserved %d, truly unserved %d", l, tr)
	}
	t.Logf("all drained: %d of 64 shards without a serving owner", l)
	for _, name := range w.names {
		w.setDraining(name, false)
	}
	w.run(w.net.Now() + 30*time.Second)
	if l, tr := w.unservedNow(); l != 0 || tr != 0 {
		t.Fatalf("drains lifted: Unserved %d, truly unserved %d; want 0, 0", l, tr)
	}
	w.report(t)
}

// Owners that follow a higher epoch than the leader's (a newer leader they heard
// of, here one that is unreachable) stop renewing with it and drop every shard
// when their leases lapse; the leader's map still names them. Unserved counts
// every shard once their grants have lapsed, and 0 again once a reachable leader
// at a higher epoch takes over. A fenced Controller counts every shard at once.
func TestUnservedCountsShardsOfFencedOutOwners(t *testing.T) {
	w := newWorld(testConfig(64), 8, 5)
	w.elect("node-00")
	w.run(10 * time.Second)
	for _, name := range w.names {
		nd := w.nodes[name]
		nd.owner.SetLeader(nd.local(w.net.Now()), "node-ghost", w.epoch+1)
		w.flush(nd)
	}
	w.run(w.net.Now() + 3*w.cfg.LeaseDuration)
	if l, tr := w.unservedNow(); l != 64 || tr != 64 {
		t.Fatalf("owners fenced out: Unserved %d, truly unserved %d; want 64, 64", l, tr)
	}
	w.epoch++ // the ghost's term: the next leader's is above it
	w.failover(100 * time.Millisecond)
	w.run(w.net.Now() + 30*time.Second)
	if l, tr := w.unservedNow(); l != 0 || tr != 0 {
		t.Fatalf("new leader at the owners' epoch: Unserved %d, truly unserved %d; want 0, 0", l, tr)
	}
	w.report(t)

	nd := w.nodes[w.leader]
	nd.ctrl.Step(nd.local(w.net.Now()), &Renew{Epoch: w.epoch + 1, Node: "node-01", Boot: 1, Seq: 1 << 40})
	if got := nd.ctrl.Unserved(nd.local(w.net.Now())); got != 64 {
		t.Fatalf("fenced Controller: Unserved %d, want 64", got)
	}
}

// A planned move leaves its shard unserved for two one-way delays: the old
// owner's renewal that proves the release, then the Grant answering the new
// owner's renewal, which the leader asked for when the move began and held
// until the release was in. Answered at once, that renewal would get nothing
// and the leader would ask for another after the release: four delays.
func TestPlannedMoveIsUnservedForTwoDelays(t *testing.T) {
	const lat = 5 * time.Millisecond
	w := newWorld(testConfig(64), 1, 5)
	w.setLatency(lat, lat)
	w.elect("node-00")
	w.run(10 * time.Second)
	start := w.net.Now()
	w.setDraining("node-03", true)
	w.run(start + 5*time.Second)
	if bad := w.settled(); len(bad) > 0 {
		t.Fatalf("not settled:\n%s", joinLines(bad))
	}
	released := map[uint32]time.Duration{}
	moves := 0
	for _, g := range w.gains {
		switch {
		case g.at < start:
		case !g.gained:
			released[g.shard] = g.at
		default:
			at, ok := released[g.shard]
			if !ok {
				t.Fatalf("shard %d acquired by %s at %v, never released", g.shard, g.node, g.at)
			}
			moves++
			if gap := g.at - at; gap > 2*lat {
				t.Errorf("shard %d unserved %v from its release to %s's gain, want 2 delays (%v)", g.shard, gap, g.node, 2*lat)
			}
		}
	}
	if moves == 0 {
		t.Fatal("draining node-03 moved nothing")
	}
	w.report(t)
}
