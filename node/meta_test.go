package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/crdt"
)

// peersVia asks n's control API for its peers with query q and returns their names
// and metadata.
func peersVia(t *testing.T, n *Node, q string) map[string]map[string]string {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/control/v1/peers"+q, nil))
	if rec.Code != 200 {
		t.Fatalf("peers%s: %d %s", q, rec.Code, rec.Body)
	}
	var reply struct{ Peers []control.Peer }
	if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, p := range reply.Peers {
		out[p.Name] = p.Meta
	}
	return out
}

// Metadata set on one node reaches the others by gossip, shows in their control
// API's peers (meta, role and meta filters) and arrives as "meta" events.
func TestMetaSpreadsToPeersAndControlAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfg := memConfig(t, mn, "n0", "10.0.0.1:7946")
		cfg.Meta = map[string]string{RolesKey: "api,web", "zone": "a"}
		nodes := []*Node{startMem(t, cfg)}
		for i := 1; i < 4; i++ {
			nodes = append(nodes, startMem(t, memConfig(t, mn, fmt.Sprintf("n%d", i), fmt.Sprintf("10.0.0.%d:7946", i+1), "10.0.0.1:7946")))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		waitFor(t, 10*time.Second, "initial metadata everywhere", func() bool {
			for _, n := range nodes[1:] {
				if n.Meta("n0")["zone"] != "a" {
					return false
				}
			}
			return true
		})
		sub := nodes[3].Subscribe()
		defer sub.Close()
		if err := nodes[1].SetMeta("zone", "b"); err != nil {
			t.Fatal(err)
		}
		if err := nodes[1].SetMeta(RolesKey, "db"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Second, "n1's update everywhere", func() bool {
			for _, n := range nodes {
				if m := n.Meta("n1"); m["zone"] != "b" || m[RolesKey] != "db" {
					return false
				}
			}
			return true
		})
		got := map[string]string{}
		for len(got) < 2 {
			select {
			case ev := <-sub.C:
				if ev.Kind == EventMeta && ev.Member.Name == "n1" {
					got[ev.Meta.Key] = ev.Meta.Value
					if KindName(ev.Kind) != "meta" || len(ev.ID) != 16 {
						t.Fatalf("event %+v", ev)
					}
				}
			case <-time.After(time.Second):
				t.Fatalf("meta events: got %v", got)
			}
		}
		if got["zone"] != "b" || got[RolesKey] != "db" {
			t.Fatalf("meta events %v", got)
		}

		all := peersVia(t, nodes[2], "")
		if all["n1"]["zone"] != "b" || all["n0"][RolesKey] != "api,web" || all["n3"] == nil {
			t.Fatalf("peers meta %v", all)
		}
		for q, want := range map[string][]string{
			"?role=web":             {"n0"},
			"?role=db":              {"n1"},
			"?meta=zone:b":          {"n1"},
			"?role=api&meta=zone:a": {"n0"},
			"?role=nope":            {},
		} {
			names := slices.Sorted(func(yield func(string) bool) {
				for name := range peersVia(t, nodes[2], q) {
					if !yield(name) {
						return
					}
				}
			})
			if !slices.Equal(names, want) && !(len(names) == 0 && len(want) == 0) {
				t.Errorf("peers%s = %v, want %v", q, names, want)
			}
		}

		if err := nodes[1].DeleteMeta("zone"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Second, "deletion everywhere", func() bool {
			for _, n := range nodes {
				if _, ok := n.Meta("n1")["zone"]; ok {
					return false
				}
			}
			return true
		})
		var digests []string
		for _, n := range nodes {
			digests = append(digests, metricLine(t, n, "omnirelay_meta_digest "))
		}
		if digests[0] == "" || digests[0] == "omnirelay_meta_digest 0" || len(slices.Compact(slices.Clone(digests))) != 1 {
			t.Fatalf("meta digests %q", digests)
		}
		if changes := metricLine(t, nodes[3], "omnirelay_meta_changes_total "); changes == "omnirelay_meta_changes_total 0" || changes == "" {
			t.Fatalf("changes metric %q", changes)
		}
		if err := nodes[1].DeleteMeta("zone"); !errors.Is(err, crdt.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		if err := nodes[1].SetMeta("k", strings.Repeat("v", 2000)); !errors.Is(err, crdt.ErrValueTooLarge) {
			t.Fatalf("oversized value: %v", err)
		}
	})
}

// metricLine is the line of n's /metrics that starts with prefix, or "".
func metricLine(t *testing.T, n *Node, prefix string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

func TestConfigMetaValidated(t *testing.T) {
	cfg := Config{Name: "a", Bind: "127.0.0.1:0", Meta: map[string]string{strings.Repeat("k", 200): "v"}}
	err := cfg.Validate()
	if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, crdt.ErrKeyTooLong) || !strings.Contains(err.Error(), "Meta[") {
		t.Fatalf("Validate: %v", err)
	}
}
