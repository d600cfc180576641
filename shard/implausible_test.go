package shard

import (
	"math"
	"testing"
	"time"
)

// One forged leader message at epoch 2^64-1 fenced its receiver against every real
// leader (and its renewals, carrying that epoch, fenced the leader); one member
// message at 2^64-1 fenced the leader and refused its later terms; one Announce at
// map version 2^64-1 left its receiver waiting for a map no leader would send,
// asking for it again every RetryInterval. Each is refused: every shard stays
// served and nobody waits.
func TestForgedShardCountersAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		to   string // node-00 leads
		msg  func(w *world) Message
		got  func(nd *simNode) uint64
	}{
		{"leader epoch to an owner", "node-03", func(w *world) Message {
			return &Announce{Epoch: math.MaxUint64, Leader: "node-04", Version: 1}
		}, func(nd *simNode) uint64 { return nd.owner.stats.Implausible }},
		{"member epoch to the leader", "node-00", func(w *world) Message {
			return &MapRequest{Node: "node-03", Epoch: math.MaxUint64}
		}, func(nd *simNode) uint64 { return nd.ctrl.stats.Implausible }},
		{"map version to an owner", "node-03", func(w *world) Message {
			return &Announce{Epoch: w.epoch, Leader: "node-00", Version: math.MaxUint64}
		}, func(nd *simNode) uint64 { return nd.owner.stats.Implausible }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(testConfig(64), 3, 5)
			w.elect("node-00")
			w.run(10 * time.Second)
			nd := w.nodes[tc.to]
			msg := tc.msg(w)
			w.at(0, func() {
				if _, ok := msg.(*MapRequest); ok {
					nd.ctrl.Step(nd.local(w.net.Now()), msg)
				} else {
					nd.owner.Step(nd.local(w.net.Now()), msg)
				}
				w.flush(nd)
			})
			unserved := 0
			for end := 10 * time.Second; end < 30*time.Second; end += 100 * time.Millisecond {
				w.run(end)
				for _, who := range w.serving() {
					if who == "" {
						unserved++
					}
				}
			}
			asked := nd.owner.stats.MapRequests
			t.Logf("%d of %d shard-samples unserved in the 20 s after the forged message; %s sent %d map requests", unserved, 64*200, tc.to, asked)
			if nd.owner.behind() {
				t.Errorf("%s still waits for a map version no leader will send", tc.to)
			}
			if bad := w.settled(); unserved > 0 || len(bad) > 0 {
				t.Fatalf("%d shard-samples unserved; not settled:\n%s", unserved, joinLines(bad))
			}
			if n := tc.got(nd); n != 1 {
				t.Fatalf("%s counted %d implausible, want 1", tc.to, n)
			}
		})
	}
}
