package main

import (
	"strings"
	"testing"
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
