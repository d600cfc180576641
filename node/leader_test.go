package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
)

// syncBuffer is an audit log the test reads while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// records decodes the audit log, failing on any line that is not a JSON object.
func (s *syncBuffer) records(t *testing.T) []auditRecord {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []auditRecord
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var r auditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

var leaderVoters = []string{"n0", "n1", "n2"}

// testKey is the packet key of the leadership and shard tests: leadership
// without keys needs Config.Insecure, and the tests cover the secure path.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// leaderConfig is node i of the leadership tests: n0..n2 voters, others not.
func leaderConfig(t *testing.T, mn *MemNetwork, i int, dataDir string, audit *syncBuffer) Config {
	var join []string
	if i > 0 {
		join = []string{"10.0.0.0:7946"}
	}
	cfg := memConfig(t, mn, fmt.Sprintf("n%d", i), fmt.Sprintf("10.0.0.%d:7946", i), join...)
	cfg.Voters = leaderVoters
	cfg.Keys = [][]byte{testKey}
	cfg.Voter = i < len(leaderVoters)
	if cfg.Voter {
		cfg.DataDir = dataDir
	}
	if audit != nil {
		cfg.AuditLog = audit
	}
	return cfg
}

// agreed returns the holder and epoch every node reports, or "" while they differ
// or none stands.
func agreed(nodes []*Node) (string, uint64) {
	first := nodes[0].Leader()
	for _, n := range nodes[1:] {
		if li := n.Leader(); li.Holder != first.Holder || li.Epoch != first.Epoch {
			return "", 0
		}
	}
	return first.Holder, first.Epoch
}

// TestLeaderElectionFencingAndFailover: 3 voters and 2 non-voters on the in-memory
// network in virtual time elect exactly one leader, whom every node reports at the
// same epoch; only it can Fence; followers reject lower epochs; killing it yields a
// new leader at a higher epoch within 5 s; a restarted voter keeps its promise.
func TestLeaderElectionFencingAndFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		dirs := make([]string, 5)
		audits := make([]*syncBuffer, 5)
		nodes := make([]*Node, 5)
		for i := range nodes {
			dirs[i], audits[i] = t.TempDir(), &syncBuffer{}
			nodes[i] = startMem(t, leaderConfig(t, mn, i, dirs[i], audits[i]))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		var holder string
		var epoch uint64
		waitFor(t, 10*time.Second, "all five agree on one leader", func() bool {
			holder, epoch = agreed(nodes)
			return holder != ""
		})
		leaderIdx := -1
		for i, n := range nodes {
			tok, err := n.Fence()
			switch {
			case err == nil:
				if leaderIdx >= 0 {
					t.Fatalf("both %s and %s can Fence", nodes[leaderIdx].Name(), n.Name())
				}
				leaderIdx = i
				if tok != epoch || n.Name() != holder {
					t.Fatalf("%s fences with %d; everyone reports %s at %d", n.Name(), tok, holder, epoch)
				}
			case !errors.Is(err, lease.ErrNotLeader):
				t.Fatalf("%s: Fence: %v, want ErrNotLeader", n.Name(), err)
			}
		}
		if leaderIdx < 0 || leaderIdx >= len(leaderVoters) {
			t.Fatalf("leader index %d: want one of the voters", leaderIdx)
		}
		if got := metricLine(t, nodes[leaderIdx], "omnirelay_is_leader "); got != "omnirelay_is_leader 1" {
			t.Errorf("leader exports %q", got)
		}
		follower := nodes[(leaderIdx+1)%5]
		if got := metricLine(t, follower, "omnirelay_is_leader "); got != "omnirelay_is_leader 0" {
			t.Errorf("follower exports %q", got)
		}

		// Fencing on a follower: the current epoch passes, a lower one is refused and counted.
		if err := follower.CheckFence(epoch); err != nil {
			t.Fatalf("CheckFence(current %d): %v", epoch, err)
		}
		if err := follower.CheckFence(epoch - 1); !errors.Is(err, lease.ErrStaleEpoch) {
			t.Fatalf("CheckFence(%d) after %d: %v, want ErrStaleEpoch", epoch-1, epoch, err)
		}
		if got := metricLine(t, follower, "omnirelay_stale_epoch_rejections_total "); got != "omnirelay_stale_epoch_rejections_total 1" {
			t.Errorf("after one stale request: %q", got)
		}

		// Kill the leader: the survivors elect a new one at a higher epoch within 5 s.
		oldLeader := nodes[leaderIdx]
		promised, err := (&FileLeaseStorage{path: dirs[leaderIdx] + "/" + leaseStateFile}).Load()
		if err != nil || promised.Promised < epoch {
			t.Fatalf("leader's saved state %+v, %v: want a promise >= %d", promised, err, epoch)
		}
		oldLeader.Close()
		survivors := append(append([]*Node{}, nodes[:leaderIdx]...), nodes[leaderIdx+1:]...)
		var newHolder string
		var newEpoch uint64
		took := waitFor(t, 5*time.Second, "a new leader agreed by every survivor", func() bool {
			newHolder, newEpoch = agreed(survivors)
			return newHolder != "" && newHolder != holder
		})
		t.Logf("failover took %v (virtual); %s@%d -> %s@%d", took, holder, epoch, newHolder, newEpoch)
		if newEpoch <= epoch {
			t.Fatalf("new leader %s at epoch %d, not above %d", newHolder, newEpoch, epoch)
		}
		if err := follower.CheckFence(epoch); follower.Name() != newHolder && !errors.Is(err, lease.ErrStaleEpoch) {
			t.Errorf("the deposed leader's epoch %d after the failover: %v, want ErrStaleEpoch", epoch, err)
		}
		for _, n := range survivors {
			if got := metricLine(t, n, "omnirelay_leader_changes_total "); got != "omnirelay_leader_changes_total 2" {
				t.Errorf("%s: %q, want 2 (the first leader and its successor)", n.Name(), got)
			}
		}

		// Audit: a survivor logged both leaders under ids every node shares.
		ids := map[string]bool{}
		for _, r := range audits[(leaderIdx+1)%5].records(t) {
			if r.Event == "leader_changed" || r.Event == "became_leader" {
				ids[fmt.Sprint(r.Holder, "@", r.Epoch)] = true
			}
		}
		for _, want := range []string{fmt.Sprint(holder, "@", epoch), fmt.Sprint(newHolder, "@", newEpoch)} {
			if !ids[want] {
				t.Errorf("audit log of %s lacks leader %s (has %v)", follower.Name(), want, ids)
			}
		}
		if !strings.Contains(fmt.Sprint(audits[leaderIdx].records(t)), "became_leader") {
			t.Errorf("the first leader's audit log lacks became_leader")
		}

		// Restart the old leader on its data dir: its promise is never lowered, and
		// it rejoins following the new leader.
		nodes[leaderIdx] = startMem(t, leaderConfig(t, mn, leaderIdx, dirs[leaderIdx], audits[leaderIdx]))
		waitFor(t, 10*time.Second, "restarted voter follows the new leader", func() bool {
			h, _ := agreed(nodes)
			return h != ""
		})
		after, err := (&FileLeaseStorage{path: dirs[leaderIdx] + "/" + leaseStateFile}).Load()
		if err != nil || after.Promised < promised.Promised {
			t.Fatalf("restarted voter's state %+v, %v: promise lowered from %d", after, err, promised.Promised)
		}
	})
}

// failingStorage refuses every save, as a full or broken disk would.
type failingStorage struct{ lease.MemoryStorage }

func (*failingStorage) Save(lease.State) error { return errors.New("disk full") }

// TestLeaseSaveFailureDropsPackets: a voter whose saves fail sends none of the
// lease packets of those batches, so its promises and campaigns never leave; the
// two healthy voters elect one of themselves, the failures are counted, and its
// membership carries on.
func TestLeaseSaveFailureDropsPackets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		nodes := make([]*Node, 3)
		for i := range nodes {
			cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
			if i == 0 {
				cfg.DataDir, cfg.LeaseStorage = "", &failingStorage{}
			}
			nodes[i] = startMem(t, cfg)
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		waitFor(t, 10*time.Second, "n1 and n2 agree on a leader", func() bool {
			h, _ := agreed(nodes[1:])
			return h != ""
		})
		// Give n0 time to campaign (it would, seeing the others' lease lapse or not).
		time.Sleep(5 * time.Second)
		if h, _ := agreed(nodes[1:]); h == "n0" || h == "" {
			t.Fatalf("leader %q: want n1 or n2", h)
		}
		if _, err := nodes[0].Fence(); !errors.Is(err, lease.ErrNotLeader) {
			t.Fatalf("n0 Fence: %v, want ErrNotLeader", err)
		}
		line := metricLine(t, nodes[0], "omnirelay_lease_state_save_failures_total ")
		if line == "" || line == "omnirelay_lease_state_save_failures_total 0" {
			t.Fatalf("n0 save failures: %q, want > 0", line)
		}
		// Only its lease packets were held back: its membership packets kept
		// flowing, so the others still see it alive.
		for _, n := range nodes[1:] {
			for _, m := range n.Members() {
				if m.Name == "n0" && m.Status != swim.StatusAlive {
					t.Fatalf("%s sees n0 %s, want alive", n.Local().Name, m.Status)
				}
			}
		}
	})
}

func TestConfigLeadershipValidated(t *testing.T) {
	base := Config{Name: "a", Bind: "127.0.0.1:0", Keys: [][]byte{testKey}}
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		substr string
	}{
		{"voter without voters", func(c *Config) { c.Voter = true; c.DataDir = "/tmp/x" }, "Voters is empty"},
		{"voter not listed", func(c *Config) { c.Voter, c.DataDir, c.Voters = true, "/tmp/x", []string{"b", "c", "d"} }, "not in Voters"},
		{"listed but not voter", func(c *Config) { c.Voters = []string{"a", "b", "c"} }, "Voter is not set"},
		{"voter without data dir", func(c *Config) { c.Voter, c.Voters = true, []string{"a", "b", "c"} }, "DataDir"},
		{"duplicate voter", func(c *Config) { c.Voters = []string{"b", "b", "c"} }, "twice"},
	} {
		c := base
		tc.mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.substr) {
			t.Errorf("%s: %v, want ErrInvalidConfig mentioning %q", tc.name, err, tc.substr)
		}
	}
	ok := base
	ok.Voters, ok.Voter, ok.DataDir = []string{"a", "b", "c"}, true, t.TempDir()
	if err := ok.Validate(); err != nil {
		t.Errorf("valid voter config: %v", err)
	}
}
