package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeSource is an in-memory Source whose history keeps the last `keep` changes.
type fakeSource struct {
	mu      sync.Mutex
	epoch   string
	n       uint64
	peers   map[string]Peer
	history []Change
	keep    int
	changed chan struct{}
	ready   error
}

func newFake(names ...string) *fakeSource {
	f := &fakeSource{epoch: "e1", peers: map[string]Peer{}, keep: 100, changed: make(chan struct{})}
	for _, n := range names {
		f.apply("join", Peer{Name: n, Address: "10.0.0.1:7946", Status: "alive", Incarnation: 1, Meta: map[string]string{}})
	}
	return f
}

func (f *fakeSource) apply(kind string, p Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.peers[p.Name] = p
	f.history = append(f.history, Change{N: f.n, ID: fmt.Sprint("id", f.n), Kind: kind, Peer: p})
	if len(f.history) > f.keep {
		f.history = f.history[len(f.history)-f.keep:]
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeSource) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Snapshot{Version: Version{f.epoch, f.n}}
	for _, p := range f.peers {
		s.Peers = append(s.Peers, p)
	}
	slices.SortFunc(s.Peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return s
}

func (f *fakeSource) ChangesSince(n uint64) ([]Change, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n == f.n {
		return nil, true
	}
	if len(f.history) == 0 || f.history[0].N > n+1 {
		return nil, false
	}
	return slices.Clone(f.history[n+1-f.history[0].N:]), true
}

func (f *fakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeSource) Health() []Check { return []Check{{Name: "loop", State: CheckOK}} }

func (f *fakeSource) Readiness() []Check {
	if f.ready != nil {
		return []Check{{Name: "joined", State: CheckFail, Detail: f.ready.Error()}}
	}
	return []Check{{Name: "joined", State: CheckOK}}
}

func get(t *testing.T, h http.Handler, url string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %q: %v", rec.Body.String(), err)
	}
	return v
}

func names(ps []Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestListFiltersByStatus(t *testing.T) {
	f := newFake("a", "b", "c", "d")
	f.apply("suspect", Peer{Name: "b", Status: "suspect", Incarnation: 1})
	f.apply("dead", Peer{Name: "c", Status: "dead", Incarnation: 1})
	h := NewHandler(f, Options{})
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"a", "b", "c", "d"}},
		{"?status=alive", []string{"a", "d"}},
		{"?status=suspect,dead", []string{"b", "c"}},
		{"?status=suspect&status=alive", []string{"a", "b", "d"}},
		{"?role=api", nil},            // metadata is empty: role filters match nothing
		{"?meta=zone:eu-west-1", nil}, // likewise
	} {
		rec := get(t, h, "/control/v1/peers"+tc.query)
		if rec.Code != 200 {
			t.Fatalf("%s: code %d", tc.query, rec.Code)
		}
		got := decode[PeerList](t, rec)
		if !slices.Equal(names(got.Peers), tc.want) {
			t.Errorf("%s: got %v, want %v", tc.query, names(got.Peers), tc.want)
		}
		if got.Version != "e1.6" {
			t.Errorf("%s: version %q, want e1.6", tc.query, got.Version)
		}
	}
}

func TestBadQueriesAre400WithCode(t *testing.T) {
	h := NewHandler(newFake("a"), Options{})
	for q, code := range map[string]string{
		"?status=zombie":  "bad_filter",
		"?meta=novalue":   "bad_filter",
		"?limit=0":        "bad_limit",
		"?limit=1001":     "bad_limit",
		"?limit=x":        "bad_limit",
		"?page_token=***": "bad_page_token",
	} {
		rec := get(t, h, "/control/v1/peers"+q)
		if rec.Code != 400 {
			t.Errorf("%s: code %d, want 400", q, rec.Code)
			continue
		}
		if e := decode[ErrorReply](t, rec); e.Error.Code != code {
			t.Errorf("%s: error code %q, want %q", q, e.Error.Code, code)
		}
	}
}

func TestPaginationVisitsEveryPeerOnce(t *testing.T) {
	var all []string
	for i := range 25 {
		all = append(all, fmt.Sprintf("n%02d", i))
	}
	h := NewHandler(newFake(all...), Options{})
	var seen []string
	tok, pages := "", 0
	for {
		rec := get(t, h, "/control/v1/peers?limit=7&page_token="+tok)
		l := decode[PeerList](t, rec)
		if len(l.Peers) > 7 {
			t.Fatalf("page of %d peers, limit 7", len(l.Peers))
		}
		seen = append(seen, names(l.Peers)...)
		pages++
		if tok = l.NextPageToken; tok == "" {
			break
		}
	}
	if !slices.Equal(seen, all) || pages != 4 {
		t.Fatalf("pages=%d seen=%v", pages, seen)
	}
}

func TestETagAnswers304UntilMembershipChanges(t *testing.T) {
	f := newFake("a")
	h := NewHandler(f, Options{})
	rec := get(t, h, "/control/v1/peers")
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if rec := get(t, h, "/control/v1/peers", "If-None-Match", etag); rec.Code != 304 {
		t.Fatalf("same version: code %d, want 304", rec.Code)
	}
	if rec := get(t, h, "/control/v1/peers/a", "If-None-Match", `"x", W/`+etag); rec.Code != 304 {
		t.Fatalf("get with weak tag in list: code %d, want 304", rec.Code)
	}
	f.apply("suspect", Peer{Name: "a", Status: "suspect"})
	rec = get(t, h, "/control/v1/peers", "If-None-Match", etag)
	if rec.Code != 200 || rec.Header().Get("ETag") == etag {
		t.Fatalf("after change: code %d etag %s (old %s)", rec.Code, rec.Header().Get("ETag"), etag)
	}
}

func TestGetPeer(t *testing.T) {
	h := NewHandler(newFake("a", "b"), Options{})
	rec := get(t, h, "/control/v1/peers/b")
	if p := decode[PeerReply](t, rec); rec.Code != 200 || p.Peer.Name != "b" || p.Peer.Status != "alive" {
		t.Fatalf("code %d body %s", rec.Code, rec.Body)
	}
	rec = get(t, h, "/control/v1/peers/zz")
	if e := decode[ErrorReply](t, rec); rec.Code != 404 || e.Error.Code != "unknown_peer" {
		t.Fatalf("code %d body %s", rec.Code, rec.Body)
	}
}

func TestProbesAndMetrics(t *testing.T) {
	f := newFake("a")
	f.ready = errors.New("joining: no seed answered yet")
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "m 1\n") })
	h := NewHandler(f, Options{Metrics: metrics})
	if rec := get(t, h, "/healthz"); rec.Code != 200 {
		t.Errorf("healthz %d", rec.Code)
	}
	rec := get(t, h, "/readyz")
	if p := decode[ProbeReply](t, rec); rec.Code != 503 || p.Status != CheckFail || len(p.Checks) != 1 ||
		p.Checks[0].Name != "joined" || !strings.Contains(p.Checks[0].Detail, "no seed") {
		t.Errorf("readyz %d %q", rec.Code, rec.Body)
	}
	if rec := get(t, h, "/metrics"); rec.Body.String() != "m 1\n" {
		t.Errorf("metrics %q", rec.Body)
	}
	if rec := get(t, NewHandler(f, Options{}), "/metrics"); rec.Code != 404 {
		t.Errorf("metrics without handler: %d", rec.Code)
	}
}

type sse struct{ id, event, data string }

// readEvents reads SSE events (skipping comments) from a watch stream.
func readEvents(t *testing.T, sc *bufio.Scanner, n int) []sse {
	t.Helper()
	var out []sse
	var cur sse
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
			}
			cur = sse{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d of %d events: %v", len(out), n, sc.Err())
	}
	return out
}

func openWatch(t *testing.T, url string, lastID string) *bufio.Scanner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	return bufio.NewScanner(resp.Body)
}

func TestWatchStreamsSnapshotThenChangesAndResumes(t *testing.T) {
	f := newFake("a", "b")
	srv := httptest.NewServer(NewHandler(f, Options{}))
	t.Cleanup(srv.Close) // after the watch streams' own cleanups

	sc := openWatch(t, srv.URL+"/control/v1/peers?watch=true&status=suspect,dead", "")
	ev := readEvents(t, sc, 1)[0]
	if ev.event != "snapshot" || ev.id != "e1.2" {
		t.Fatalf("first event %+v", ev)
	}
	var snap WatchSnapshot
	json.Unmarshal([]byte(ev.data), &snap)
	if len(snap.Peers) != 0 { // nobody is suspect or dead yet
		t.Fatalf("filtered snapshot has %v", names(snap.Peers))
	}
	f.apply("update", Peer{Name: "a", Status: "alive", Incarnation: 2}) // filtered out
	f.apply("suspect", Peer{Name: "b", Status: "suspect", Incarnation: 1})
	ev = readEvents(t, sc, 1)[0]
	var c Change
	json.Unmarshal([]byte(ev.data), &c)
	if ev.event != "suspect" || ev.id != "e1.4" || c.Peer.Name != "b" || c.ID != "id4" {
		t.Fatalf("change event %+v", ev)
	}

	// Resuming from e1.2 replays exactly the changes after it, no snapshot.
	sc2 := openWatch(t, srv.URL+"/control/v1/peers?watch=true", "e1.2")
	evs := readEvents(t, sc2, 2)
	if evs[0].id != "e1.3" || evs[0].event != "update" || evs[1].id != "e1.4" {
		t.Fatalf("resumed events %+v", evs)
	}
	// A version of another epoch (a previous run of the node) gets a fresh snapshot.
	sc3 := openWatch(t, srv.URL+"/control/v1/peers?watch=true", "old.3")
	if ev := readEvents(t, sc3, 1)[0]; ev.event != "snapshot" || ev.id != "e1.4" {
		t.Fatalf("foreign epoch: %+v", ev)
	}
}

func TestWatchTooFarBehindGetsSnapshot(t *testing.T) {
	f := newFake("a")
	f.keep = 2
	for i := range 5 {
		f.apply("update", Peer{Name: "a", Status: "alive", Incarnation: uint64(i + 2)})
	}
	srv := httptest.NewServer(NewHandler(f, Options{}))
	t.Cleanup(srv.Close) // after the watch streams' own cleanups
	sc := openWatch(t, srv.URL+"/control/v1/peers?watch=true", "e1.1")
	if ev := readEvents(t, sc, 1)[0]; ev.event != "snapshot" || ev.id != "e1.6" {
		t.Fatalf("got %+v, want a snapshot at e1.6", ev)
	}
}

func TestClientFollowsPages(t *testing.T) {
	var all []string
	for i := range 12 {
		all = append(all, fmt.Sprintf("n%02d", i))
	}
	f := newFake(all...)
	f.apply("dead", Peer{Name: "n03", Status: "dead"})
	srv := httptest.NewServer(NewHandler(f, Options{}))
	t.Cleanup(srv.Close) // after the watch streams' own cleanups
	c := &Client{Base: srv.URL}
	ps, ver, err := c.ListPeers(context.Background(), ListOptions{Limit: 5, Status: []string{"alive"}})
	if err != nil || len(ps) != 11 || ver != "e1.13" || slices.Contains(names(ps), "n03") {
		t.Fatalf("ListPeers: %v %v %v", names(ps), ver, err)
	}
	if _, err := c.GetPeer(context.Background(), "nope"); err == nil {
		t.Fatal("GetPeer of unknown peer succeeded")
	} else if ae := (*APIError)(nil); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("GetPeer error %v", err)
	}
}

// Paths and methods no route serves answer in the JSON error envelope too, with the
// mux's status and Allow header.
func TestUnroutedRequestsAnswerTheErrorEnvelope(t *testing.T) {
	srv := httptest.NewServer(NewHandler(newFake("a"), Options{}))
	defer srv.Close()
	for _, tc := range []struct {
		method, path, code, allow string
		status                    int
	}{
		{"GET", "/control/v1/nope", CodeNotFound, "", 404},
		{"GET", "/", CodeNotFound, "", 404},
		{"DELETE", "/control/v1/peers", CodeMethodNotAllowed, "GET, HEAD", 405},
		{"POST", "/healthz", CodeMethodNotAllowed, "GET, HEAD", 405},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var er ErrorReply
		err = json.NewDecoder(resp.Body).Decode(&er)
		resp.Body.Close()
		if resp.StatusCode != tc.status || err != nil || er.Error.Code != tc.code || er.Error.Message == "" ||
			resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %s allow %q, body %+v (%v)", tc.method, tc.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), er, err)
		}
	}
}
