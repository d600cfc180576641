package main

import (
	"math"
	"net/http/httptest"
	"testing"
	"time"
)

// A forwarded request's answer carries both instances' spans, the forwarder's
// first; split attributes the attempt's whole time, each part once.
func TestTraceSplitsAForwardedAttempt(t *testing.T) {
	owner := &timing{self: "kv2", start: time.Now()}
	owner.add(spanRoute, 2*time.Millisecond)
	owner.add(spanOpen, 3*time.Millisecond)
	owner.add(spanStore, 5*time.Millisecond)
	owner.add(spanFlock, time.Millisecond)
	owner.add(spanFsync, 3*time.Millisecond)
	rec := httptest.NewRecorder()
	(&timedWriter{ResponseWriter: rec, t: owner}).WriteHeader(200)

	fwd := &timing{self: "kv1", start: time.Now(), next: rec.Header()[timingHeader]}
	fwd.add(spanRoute, 0)
	fwd.add(spanFwd, 20*time.Millisecond)
	rec = httptest.NewRecorder()
	(&timedWriter{ResponseWriter: rec, t: fwd}).WriteHeader(200)

	spans := parseSpans(rec.Header()[timingHeader])
	hs := hops(spans)
	if len(hs) != 2 || spans[0].At != "kv1" || spans[len(spans)-1].At != "kv2" {
		t.Fatalf("spans %+v: want kv1's then kv2's", spans)
	}
	tr := opTrace{Attempts: []attemptTrace{{Endpoint: "http://kv1", Ms: 25, Spans: spans, BackoffMs: 4}}}
	c := tr.split()
	sum := 0.0
	for _, v := range c {
		sum += v
	}
	if math.Abs(sum-29) > 1e-6 {
		t.Errorf("components sum to %v ms, want the attempt's 25 plus the 4 of backoff: %v", sum, c)
	}
	for name, want := range map[string]float64{spanRoute: 2, spanOpen: 3, spanFlock: 1, spanFsync: 3, spanStore: 1, "backoff": 4} {
		if math.Abs(c[name]-want) > 1e-6 {
			t.Errorf("%s %v ms, want %v", name, c[name], want)
		}
	}
	if c["forward"] <= 0 || c["forward"] >= 20 {
		t.Errorf("forward %v ms: want the forwarded round trip less kv2's total", c["forward"])
	}
}

// The slowest 1 % are the operations at or above the nearest-rank p99.
func TestSlowestIsTheTopPercent(t *testing.T) {
	var ts []*opTrace
	for i := range 200 {
		ts = append(ts, &opTrace{Ms: float64(i)})
	}
	ts = append(ts, &opTrace{Ms: 1000, Failed: true})
	s := slowest(ts)
	if len(s) != 3 || s[0].Ms != 199 || s[2].Ms != 197 {
		t.Fatalf("slowest: %d ops from %v: want 199, 198, 197", len(s), s[0].Ms)
	}
}
