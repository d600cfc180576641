package node

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/swim"
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

// TestShardMovesAudited: a drain on the leader moves the drained node's shards;
// each move is one shard_move record in the leader's audit log, naming the shard,
// both nodes, the state entered and the leader's epoch, with the same id for the
// same move.
func TestShardMovesAudited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		nodes := make([]*Node, 4)
		audits := make([]*syncBuffer, 4)
		for i := range nodes {
			audits[i] = &syncBuffer{}
			cfg := leaderConfig(t, mn, i, t.TempDir(), audits[i])
			cfg.Shards = testShards
			nodes[i] = startMem(t, cfg)
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		leader := shardLeader(t, nodes)
		var victim *Node
		for _, n := range nodes {
			if n != leader && len(n.OwnedShards()) > 0 {
				victim = n
			}
		}
		owned := len(victim.OwnedShards())
		if err := leader.DrainShards(victim.Name(), true); err != nil {
			t.Fatal(err)
		}
		idx := slices.Index(nodes, leader)
		moves := func(state string) (n int) {
			for _, r := range audits[idx].records(t) {
				if r.Event == "shard_move" && r.From == victim.Name() && r.State == state {
					n++
					if r.Shard == nil || r.To == "" || r.To == victim.Name() || r.Epoch == 0 || len(r.ID) != 16 {
						t.Fatalf("shard_move record %+v", r)
					}
				}
			}
			return n
		}
		// The records are written after the loop hands the events over, and a
		// release can take no virtual time at all (the owner renews at once on
		// the drain's map): wait for them too, not only for the moves.
		waitFor(t, 30*time.Second, "the drained node's shards moved and their moves audited", func() bool {
			return len(victim.OwnedShards()) == 0 && moves("draining") >= owned
		})
		if got := moves("draining"); got != owned {
			t.Fatalf("%d shard_move draining records from %s, want %d (the shards it owned)", got, victim.Name(), owned)
		}
	})
}

// TestKeyringChangesAudited: keyring changes through the control API's source are
// audited with the key's fingerprint (never the key), the caller and the request
// id; a refused one too.
func TestKeyringChangesAudited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		audit := &syncBuffer{}
		cfg := memConfig(t, NewMemNetwork(), "n0", "10.0.0.0:7946")
		cfg.Keys, cfg.AuditLog = [][]byte{testKey}, audit
		n := startMem(t, cfg)
		defer n.Close()
		k2 := make([]byte, 32)
		k2[0] = 7
		by := control.Caller{ID: "00112233aabbccdd", Identity: "spiffe://example.org/mesh/default/operator/olga", Remote: "127.0.0.1:5"}
		src := controlSource{n}
		if err := src.InstallKey(k2, by); err != nil {
			t.Fatal(err)
		}
		if err := src.RemoveKey(testKey, by); !errors.Is(err, control.ErrPrimaryKey) {
			t.Fatalf("removing the primary: %v", err)
		}
		n.Close() // the writer writes out its queue
		want := map[string]string{"key_install": control.KeyFingerprint(k2), "key_remove_refused": control.KeyFingerprint(testKey)}
		for _, r := range audit.records(t) {
			if fp, ok := want[r.Event]; ok {
				if r.Key != fp || r.ID != by.ID || r.Identity != by.Identity || r.Remote != by.Remote {
					t.Errorf("%s record %+v", r.Event, r)
				}
				delete(want, r.Event)
			}
		}
		if len(want) > 0 {
			t.Errorf("not audited: %v\n%s", want, audit)
		}
		if strings.Contains(audit.String(), base64.StdEncoding.EncodeToString(k2)) {
			t.Error("the audit log holds a key")
		}
	})
}

// stuckWriter is a disk that never completes a write.
type stuckWriter struct{ release chan struct{} }

func (w stuckWriter) Write(b []byte) (int, error) {
	<-w.release
	return len(b), nil
}

// TestStuckAuditLogDoesNotStallTheLoop: a node whose audit log never completes a
// write stays alive in its peers' view and closes. Before the writer had its own
// goroutine, the loop blocked in the first audit write (the join) and the peer
// declared the node dead.
func TestStuckAuditLogDoesNotStallTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		stuck := stuckWriter{release: make(chan struct{})}
		defer close(stuck.release)
		cfg := memConfig(t, mn, "n0", "10.0.0.0:7946")
		cfg.AuditLog = stuck
		n0 := startMem(t, cfg)
		n1 := startMem(t, memConfig(t, mn, "n1", "10.0.0.1:7946", "10.0.0.0:7946"))
		defer n1.Close()
		waitFor(t, 10*time.Second, "n1 sees n0", func() bool { s, _ := statusOf(n1, "n0"); return s == swim.StatusAlive })
		time.Sleep(30 * time.Second) // many probe rounds and suspicion timeouts
		synctest.Wait()
		if s, _ := statusOf(n1, "n0"); s != swim.StatusAlive {
			t.Fatalf("n1 holds n0 %v while n0's audit log is stuck, want alive", s)
		}
		n0.Close() // gives up on the stuck writer after auditFlushWait
	})
}
