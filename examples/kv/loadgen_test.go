package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/shard"
)

// A phase that comes back (a scenario's second fault) goes on accumulating in
// the first one's figures, so the report has one row per phase name, in the
// order each first ran.
func TestSetPhaseResumesAPhaseByName(t *testing.T) {
	g := &loadgen{}
	g.setPhase("steady")
	first := g.phase.Load()
	g.setPhase("fault")
	g.setPhase("steady")
	if g.phase.Load() != first {
		t.Fatal("steady again is a new phase, want the first one resumed")
	}
	first.mu.Lock()
	first.ok = 3
	first.mu.Unlock()
	g.setPhase("fault")
	var names []string
	for _, p := range g.report() {
		names = append(names, p.Name)
		if p.Name == "steady" && p.OK != 3 {
			t.Errorf("steady has %d ok, want the 3 recorded", p.OK)
		}
	}
	if got := strings.Join(names, ","); got != "steady,fault" {
		t.Errorf("phases %s, want steady,fault", got)
	}
}

// Certificates come as a set: a partial one is refused, not half applied.
func TestTLSFlagsAllOrNone(t *testing.T) {
	if src, err := (tlsFlags{}).source(); src != nil || err != nil {
		t.Errorf("no files: %v, %v; want no TLS", src, err)
	}
	for _, f := range []tlsFlags{{ca: "ca.pem"}, {cert: "c.pem", key: "k.pem"}, {ca: "ca.pem", key: "k.pem"}} {
		if _, err := f.source(); err == nil || !strings.Contains(err.Error(), "go together") {
			t.Errorf("%+v: %v, want the all-or-none error", f, err)
		}
	}
	if _, err := (tlsFlags{ca: "/nonexistent/ca.pem", cert: "/nonexistent/c.pem", key: "/nonexistent/k.pem"}).source(); err == nil {
		t.Error("missing files accepted")
	}
}

// A paused owner (SIGSTOP) still completes TCP handshakes and never answers. Once
// one attempt to it timed out, the load sends it nothing until the map moves,
// fails the operations it owns at once instead of waiting out a timeout each,
// and keeps sending to the other endpoints; after a map change one attempt goes
// through again.
func TestStalledOwnerIsNotWaitedOnAgain(t *testing.T) {
	paused, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: the kernel's backlog answers the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer paused.Close()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer healthy.Close()
	stalledEP := "http://" + paused.Addr().String()
	m := new(shard.Map)
	g := &loadgen{httpc: &http.Client{Timeout: 100 * time.Millisecond}, route: func(key string) (string, *shard.Map) {
		if key == "on-paused" {
			return stalledEP, m
		}
		return healthy.URL, m
	}}
	op := func(key string) (int, error) {
		return g.do(key, "", time.Now().Add(5*time.Second), nil, &opTrace{}, true)
	}
	if n, err := op("on-paused"); n != 1 || !errors.Is(err, errStalled) {
		t.Fatalf("first operation on the paused owner: %d attempts, %v; want one timed-out attempt, then shed", n, err)
	}
	if n, err := op("on-paused"); n != 0 || !errors.Is(err, errStalled) {
		t.Fatalf("second operation on the paused owner: %d attempts, %v; want none sent, shed", n, err)
	}
	if n, err := op("elsewhere"); n != 1 || err != nil {
		t.Fatalf("operation on a healthy owner: %d attempts, %v; want sent and answered", n, err)
	}
	m = new(shard.Map) // the map moved: the paused endpoint may own other shards now, or none
	if n, _ := op("on-paused"); n != 1 {
		t.Fatalf("after a map change: %d attempts to the paused owner, want one again", n)
	}
}

// An endpoint is stalled from its timeout until stallBackoff has passed or the
// map changes, whichever comes first.
func TestStalledUntilBackoffOrMapChange(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m1, m2 := new(shard.Map), new(shard.Map)
	for _, tc := range []struct {
		name  string
		after time.Duration
		m     *shard.Map
		want  bool
	}{
		{"just after", 0, m1, true},
		{"before the bound", stallBackoff - time.Millisecond, m1, true},
		{"at the bound", stallBackoff, m1, false},
		{"map moved", time.Millisecond, m2, false},
	} {
		var s stalled
		s.mark("http://kv1", m1, t0)
		if got := s.is("http://kv1", tc.m, t0.Add(tc.after)); got != tc.want {
			t.Errorf("%s: stalled %v, want %v", tc.name, got, tc.want)
		}
		if s.is("http://kv2", m1, t0) {
			t.Errorf("%s: an endpoint never marked is stalled", tc.name)
		}
	}
}
