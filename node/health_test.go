package node

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/swim"
)

// probe asks n's control handler for path (/healthz or /readyz).
func probe(t *testing.T, n *Node, path string) (int, control.ProbeReply) {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	var p control.ProbeReply
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s: %d %q: %v", path, rec.Code, rec.Body, err)
	}
	return rec.Code, p
}

// check is the check named name of p, failing the test if p has none.
func check(t *testing.T, p control.ProbeReply, name string) control.Check {
	t.Helper()
	for _, c := range p.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %q check in %+v", name, p)
	return control.Check{}
}

// startVoters starts the voters n0..n2 on the in-memory network, n0's config
// adjusted by tune0 when set, and waits until n1 and n2 agree on a leader. They
// are closed when the test ends.
func startVoters(t *testing.T, tune0 func(*Config)) []*Node {
	t.Helper()
	mn := NewMemNetwork()
	nodes := make([]*Node, len(leaderVoters))
	for i := range nodes {
		cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
		if i == 0 && tune0 != nil {
			tune0(&cfg)
		}
		nodes[i] = startMem(t, cfg)
		t.Cleanup(func() { nodes[i].Close() })
	}
	waitFor(t, 10*time.Second, "n1 and n2 agree on a leader", func() bool {
		h, _ := agreed(nodes[1:])
		return h != ""
	})
	return nodes
}

// TestHealthzFailsWhenTheLoopIsWedged: a command that never returns blocks the
// event loop; /healthz and /readyz then fail within HealthTimeout naming the
// loop, and pass again once it is free.
func TestHealthzFailsWhenTheLoopIsWedged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := startMem(t, memConfig(t, NewMemNetwork(), "n0", "10.0.0.0:7946"))
		defer n.Close()
		if code, p := probe(t, n, "/healthz"); code != 200 || p.Status != control.CheckOK {
			t.Fatalf("healthy loop: %d %+v", code, p)
		}
		release := make(chan struct{})
		free := sync.OnceFunc(func() { close(release) })
		defer free() // before n.Close, which waits for the loop
		go n.do(func() { <-release })
		synctest.Wait()
		start := time.Now()
		for _, path := range []string{"/healthz", "/readyz"} {
			code, p := probe(t, n, path)
			if c := check(t, p, "loop"); code != 503 || p.Status != control.CheckFail || c.State != control.CheckFail ||
				!strings.Contains(c.Detail, "did not answer within 1s") {
				t.Fatalf("%s with a wedged loop: %d %+v", path, code, p)
			}
		}
		if took := time.Since(start); took > 2*DefaultHealthTimeout {
			t.Fatalf("two probes of a wedged loop took %v (virtual), want ≤ %v", took, 2*DefaultHealthTimeout)
		}
		free()
		if code, p := probe(t, n, "/healthz"); code != 200 {
			t.Fatalf("loop free again: %d %+v", code, p)
		}
	})
}

// TestVoterWhoseLeaseSaveFailsIsNotReady: a voter whose saves fail (a full or
// read-only data dir) stops voting; /readyz says so and why, while /healthz
// passes (a restart would not help); a healthy voter is ready.
func TestVoterWhoseLeaseSaveFailsIsNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := startVoters(t, func(c *Config) { c.DataDir, c.LeaseStorage = "", &failingStorage{} })
		code, p := probe(t, nodes[0], "/readyz")
		if c := check(t, p, "lease_state"); code != 503 || c.State != control.CheckFail || !strings.Contains(c.Detail, "disk full") {
			t.Fatalf("n0 readyz: %d %+v", code, p)
		}
		if code, p := probe(t, nodes[0], "/healthz"); code != 200 {
			t.Fatalf("n0 healthz: %d %+v", code, p)
		}
		if code, p := probe(t, nodes[1], "/readyz"); code != 200 || check(t, p, "quorum").State != control.CheckOK ||
			check(t, p, "lease_state").State != control.CheckOK {
			t.Fatalf("n1 readyz: %d %+v", code, p)
		}
	})
}

// TestVoterWithoutQuorumIsNotReady: a voter that sees the other two voters dead
// is not ready (it can neither lead nor vote a leader in), and stays healthy: a
// minority partition must not restart its nodes.
func TestVoterWithoutQuorumIsNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nodes := startVoters(t, nil)
		if code, p := probe(t, nodes[0], "/readyz"); code != 200 {
			t.Fatalf("n0 readyz with a quorum: %d %+v", code, p)
		}
		nodes[1].Close()
		nodes[2].Close()
		waitFor(t, 30*time.Second, "n0 sees n1 and n2 dead", allSee(nodes[:1], "n1", swim.StatusDead))
		waitFor(t, 30*time.Second, "n0 sees n2 dead", allSee(nodes[:1], "n2", swim.StatusDead))
		code, p := probe(t, nodes[0], "/readyz")
		if c := check(t, p, "quorum"); code != 503 || c.State != control.CheckFail || !strings.Contains(c.Detail, "1 of 3 voters") {
			t.Fatalf("n0 readyz without a quorum: %d %+v", code, p)
		}
		if code, p := probe(t, nodes[0], "/healthz"); code != 200 {
			t.Fatalf("n0 healthz without a quorum: %d %+v", code, p)
		}
	})
}
