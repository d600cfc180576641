package control

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestWatchersBeyondTheCapGet503: with MaxWatchers open, one more watch (peers or
// shards) is refused with 503 too_many_watchers and a Retry-After, counted; when a
// watcher leaves, its slot serves the next one.
func TestWatchersBeyondTheCapGet503(t *testing.T) {
	f := newFake("a")
	reg := prometheus.NewRegistry()
	h := NewHandler(f, Options{MaxWatchers: 2, Registerer: reg})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	readEvents(t, openWatch(t, srv.URL+"/control/v1/peers?watch=true", ""), 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/control/v1/peers?watch=true", nil)
	second, err := http.DefaultClient.Do(req)
	if err != nil || second.StatusCode != 200 {
		t.Fatalf("second watcher: %v %v", second, err)
	}

	// Bounded, so an admitted stream fails the test instead of hanging it.
	ctx3, cancel3 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel3()
	req3, _ := http.NewRequestWithContext(ctx3, "GET", srv.URL+"/control/v1/peers?watch=true", nil)
	resp, err := http.DefaultClient.Do(req3)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e ErrorReply
	if err := decodeBody(resp, &e); err != nil || resp.StatusCode != 503 || e.Error.Code != "too_many_watchers" ||
		resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third watcher: %d %+v retry-after %q (%v)", resp.StatusCode, e, resp.Header.Get("Retry-After"), err)
	}
	if got := gathered(t, reg, "omnirelay_control_watchers_refused_total"); got != 1 {
		t.Fatalf("refused watchers counted %v, want 1", got)
	}

	cancel() // the second watcher leaves: its slot is free again
	second.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(srv.URL + "/control/v1/peers?watch=true")
		if err != nil {
			t.Fatal(err)
		}
		code := resp.StatusCode
		resp.Body.Close()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch after a watcher left: %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchOutlivesServerTimeouts: a server with short ReadTimeout and
// WriteTimeout (as the node runs the API) keeps a watch stream open past both,
// because the stream works under its own per-write deadline.
func TestWatchOutlivesServerTimeouts(t *testing.T) {
	f := newFake("a")
	srv := httptest.NewUnstartedServer(NewHandler(f, Options{Heartbeat: 20 * time.Millisecond}))
	srv.Config.ReadTimeout = 250 * time.Millisecond
	srv.Config.WriteTimeout = 250 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	sc := openWatch(t, srv.URL+"/control/v1/peers?watch=true", "")
	readEvents(t, sc, 1)
	time.Sleep(600 * time.Millisecond) // past both server timeouts
	f.apply("suspect", Peer{Name: "a", Status: "suspect", Incarnation: 1})
	if ev := readEvents(t, sc, 1)[0]; ev.event != "suspect" {
		t.Fatalf("event after the server timeouts: %+v", ev)
	}
}

// gathered is the value of the unlabelled counter or gauge name in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}

func decodeBody(resp *http.Response, v any) error {
	b := new(strings.Builder)
	if _, err := io.Copy(b, resp.Body); err != nil {
		return err
	}
	return json.Unmarshal([]byte(b.String()), v)
}
