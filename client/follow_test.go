package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"testing"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
)

// view is a clusters view of an agent of self naming active at version, with
// the other cluster's gateways reachable or not and relaying control.
func view(self, active string, version uint64, reachable bool, ctl ...string) control.Clusters {
	v := control.Clusters{Self: self, Active: active,
		Clusters: []cluster.Descriptor{{ID: "a", State: cluster.Passive}, {ID: "b", State: cluster.Passive}}}
	for i := range v.Clusters {
		if v.Clusters[i].ID == active {
			v.Clusters[i].State, v.Clusters[i].Version = cluster.Active, version
		}
	}
	other := "b"
	if self == "b" {
		other = "a"
	}
	v.Endpoints = []control.ClusterEndpoints{{Cluster: other, Reachable: reachable, Control: ctl}}
	return v
}

// The client follows a view only to a reachable cluster with a usable control
// URL, never back to a lower version than it has seen, and records the view it
// follows in the table.
func TestFollowSwitchesOnlyToAReachableNewerCluster(t *testing.T) {
	c := &Client{changed: make(chan struct{}), log: slog.New(slog.DiscardHandler)}
	c.table.Store(&Table{})
	steps := []struct {
		name   string
		tls    bool
		v      control.Clusters
		to     string // the first URL switched to; "" for no switch
		follow Cluster
	}{
		{"own cluster active", false, view("a", "a", 0, true, "http://127.0.0.1:2"), "", Cluster{"a", "a", 0}},
		{"b active but unreachable", false, view("a", "b", 3, false, "http://127.0.0.1:2"), "", Cluster{"a", "b", 3}},
		{"a lagging agent names a at 0", false, view("a", "a", 0, true, "http://127.0.0.1:2"), "", Cluster{"a", "b", 3}},
		{"b reachable, only bad URLs", false, view("a", "b", 3, true, "ftp://x", "127.0.0.1:2"), "", Cluster{"a", "b", 3}},
		{"b reachable over http with TLS set", true, view("a", "b", 3, true, "http://127.0.0.1:2"), "", Cluster{"a", "b", 3}},
		{"b reachable", false, view("a", "b", 3, true, "ftp://x", "http://127.0.0.1:2", "http://127.0.0.1:3"), "http://127.0.0.1:2", Cluster{"a", "b", 3}},
		{"on b", false, view("b", "b", 3, true, "http://127.0.0.1:1"), "", Cluster{"b", "b", 3}},
	}
	for _, s := range steps {
		c.cfg.TLS = nil
		if s.tls {
			c.cfg.TLS = &tls.Config{}
		}
		ch := c.Changed()
		before := c.Table().Cluster()
		err := c.follow(s.v)
		var sw *switchError
		switched := errors.As(err, &sw)
		if switched != (s.to != "") || (switched && sw.to[0].String() != s.to) {
			t.Errorf("%s: follow returned %v, want a switch to %q", s.name, err, s.to)
		}
		if switched && len(sw.to) != 2 {
			t.Errorf("%s: switch to %d agents, want the 2 valid URLs", s.name, len(sw.to))
		}
		if got := c.Table().Cluster(); got != s.follow {
			t.Errorf("%s: table follows %+v, want %+v", s.name, got, s.follow)
		}
		select {
		case <-ch:
			if before == s.follow {
				t.Errorf("%s: Changed fired without a change of cluster", s.name)
			}
		default:
			if before != s.follow {
				t.Errorf("%s: cluster changed without Changed", s.name)
			}
		}
	}
}

// After a switch the new cluster's agents come first, the previous ones after
// them without repeats, and the list is bounded.
func TestFollowAgentsKeepsTheOldAsFallback(t *testing.T) {
	u := func(port int) *url.URL { return &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)} }
	got := followAgents([]*url.URL{u(4), u(5)}, []*url.URL{u(1), u(4), u(2)})
	var s []string
	for _, x := range got {
		s = append(s, x.Host)
	}
	if fmt.Sprint(s) != "[127.0.0.1:4 127.0.0.1:5 127.0.0.1:1 127.0.0.1:2]" {
		t.Errorf("agents after a switch: %v", s)
	}
	var many []*url.URL
	for i := range 2 * maxFollowAgents {
		many = append(many, u(1000+i))
	}
	if n := len(followAgents([]*url.URL{u(1)}, many)); n != maxFollowAgents {
		t.Errorf("%d agents after a switch, want at most %d", n, maxFollowAgents)
	}
}
