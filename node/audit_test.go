package node

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestLostLeaseAuditedAtLeaseEnd stalls the leader's loop past its lease (as a
// SIGSTOP or a long GC pause would): the lost_lease audit record carries the time
// the lease ended, not the later time the node noticed.
func TestLostLeaseAuditedAtLeaseEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		nodes := make([]*Node, 3)
		audits := make([]*syncBuffer, 3)
		for i := range nodes {
			audits[i] = &syncBuffer{}
			nodes[i] = startMem(t, leaderConfig(t, mn, i, t.TempDir(), audits[i]))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		var holder string
		waitFor(t, 10*time.Second, "a leader", func() bool { holder, _ = agreed(nodes); return holder != "" })
		var leader *Node
		var idx int
		for i, n := range nodes {
			if n.Name() == holder {
				leader, idx = n, i
			}
		}
		var ended time.Time
		const stall = 10 * time.Second
		leader.do(func() {
			_, _, ended, _ = leader.stack.Leader(leader.clock.Now())
			time.Sleep(stall) // the loop is stalled: no renewal, no tick
		})
		waitFor(t, time.Second, "lost_lease audited", func() bool {
			return strings.Contains(fmt.Sprint(audits[idx].records(t)), "lost_lease")
		})
		for _, r := range audits[idx].records(t) {
			if r.Event == "lost_lease" && !r.Time.Equal(ended) {
				t.Errorf("lost_lease stamped %v, %v after the lease ended at %v", r.Time, r.Time.Sub(ended), ended)
			}
		}
	})
}
