package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
)

// TestPeersJSONIsTheAPIAnswer: -o json prints the API's reply, version included, and
// a --meta value holding a comma reaches the API whole.
func TestPeersJSONIsTheAPIAnswer(t *testing.T) {
	var metas [][]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := control.Peer{Name: "a", Status: "alive", Meta: map[string]string{"zones": "x,y"}}
		if r.URL.Path == "/control/v1/peers/a" {
			json.NewEncoder(w).Encode(control.PeerReply{Version: "3.7", Peer: p})
			return
		}
		metas = append(metas, r.URL.Query()["meta"])
		json.NewEncoder(w).Encode(control.PeerList{Version: "3.7", Peers: []control.Peer{p}})
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"mesh", "peers", "list", "--addr", srv.URL, "--meta", "zones:x,y", "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if len(metas) != 1 || !slices.Equal(metas[0], []string{"zones:x,y"}) {
		t.Errorf("the API got meta filters %q, want one zones:x,y", metas)
	}
	var l control.PeerList
	if err := json.Unmarshal(out.Bytes(), &l); err != nil || l.Version != "3.7" || len(l.Peers) != 1 {
		t.Fatalf("list -o json printed %s (%v)", out.String(), err)
	}
	out.Reset()
	if code := run([]string{"mesh", "peers", "get", "a", "--addr", srv.URL, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var g control.PeerReply
	if err := json.Unmarshal(out.Bytes(), &g); err != nil || g.Version != "3.7" || g.Peer.Name != "a" {
		t.Fatalf("get -o json printed %s (%v)", out.String(), err)
	}
}

// TestLeaderValidityNeverNegative: a lease whose deadline the node did not learn
// (zero time) or that has lapsed prints "unknown", not a negative duration.
func TestLeaderValidityNeverNegative(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		until time.Time
		want  string
	}{
		{time.Time{}, "unknown"},
		{now.Add(-time.Second), "unknown"},
		{now.Add(1500 * time.Millisecond), "1.5s"},
	} {
		var out bytes.Buffer
		printLeaders(&out, control.Leaders{Leader: &control.Lease{Holder: "a", Epoch: 2, ValidUntil: tc.until}}, now)
		if !strings.Contains(out.String(), "VALID FOR  "+tc.want+"\n") {
			t.Errorf("valid until %v: printed\n%s", tc.until, out.String())
		}
	}
}
