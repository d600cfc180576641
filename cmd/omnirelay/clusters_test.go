package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
)

func TestClustersListAndGet(t *testing.T) {
	cs := control.Clusters{Self: "eu", Active: "us", Clusters: []cluster.Descriptor{
		{ID: "eu", Region: "eu-west-1", State: cluster.Draining, Handoff: "us", Version: 2, Epoch: 4, Counter: 3},
		{ID: "us", Region: "us-east-1", State: cluster.Active, Version: 3, Priority: 1, Epoch: 5, Counter: 1},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/control/v1/clusters":
			json.NewEncoder(w).Encode(cs)
		case "/control/v1/clusters/us":
			json.NewEncoder(w).Encode(cs.Clusters[1])
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(control.ErrorReply{Error: control.ErrorBody{Code: control.CodeUnknownCluster, Message: "no cluster"}})
		}
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"mesh", "clusters", "list", "--addr", srv.URL}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"eu (self)", "draining to us", "us (active)", "us-east-1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("list printed\n%s\nwithout %q", out.String(), want)
		}
	}
	out.Reset()
	if code := run([]string{"mesh", "clusters", "get", "us", "--addr", srv.URL, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var d cluster.Descriptor
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || d.ID != "us" || d.State != cluster.Active || d.Version != 3 {
		t.Fatalf("get -o json printed %s (%v)", out.String(), err)
	}
	errb.Reset()
	if code := run([]string{"mesh", "clusters", "get", "mars", "--addr", srv.URL}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "unknown_cluster") {
		t.Fatalf("unknown cluster: exit %d, %s", code, errb.String())
	}
}

// TestClustersPromoteAsksTheActiveCluster: a planned promotion asked of an agent
// of a passive cluster goes to the active cluster, at the control URL its
// gateways relay, and follows not_leader to the holder; drain without --to
// hands over to the passive cluster of lowest priority; --force promotes at the
// agent asked.
func TestClustersPromoteAsksTheActiveCluster(t *testing.T) {
	var posts []string
	agent := func(cs *control.Clusters, leader *string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == "/control/v1/clusters" {
				json.NewEncoder(w).Encode(cs)
				return
			}
			var req control.PromoteRequest
			json.NewDecoder(r.Body).Decode(&req)
			if *leader != "" {
				w.WriteHeader(http.StatusConflict)
				json.NewEncoder(w).Encode(control.NotLeaderReply{Error: control.ErrorBody{Code: control.CodeNotLeader, Message: "not the leader"},
					Leader: "us1", LeaderControl: *leader})
				return
			}
			posts = append(posts, cs.Self+" "+r.URL.Path+" "+map[bool]string{true: "force"}[req.Force])
			json.NewEncoder(w).Encode(control.PromoteReply{Cluster: strings.Split(r.URL.Path, "/")[4], Force: req.Force})
		}))
	}
	ds := []cluster.Descriptor{
		{ID: "ap", State: cluster.Passive, Version: 2, Priority: 2},
		{ID: "eu", State: cluster.Passive, Version: 0, Priority: 1},
		{ID: "us", State: cluster.Active, Version: 4},
	}
	none := ""
	us := &control.Clusters{Self: "us", Active: "us", Clusters: ds}
	holder := agent(us, &none)
	defer holder.Close()
	follower := agent(us, &holder.URL)
	defer follower.Close()
	eu := &control.Clusters{Self: "eu", Active: "us", Clusters: ds,
		Endpoints: []control.ClusterEndpoints{{Cluster: "us", Reachable: true, Control: []string{follower.URL}}}}
	euAgent := agent(eu, &none)
	defer euAgent.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"mesh", "clusters", "promote", "eu", "--addr", euAgent.URL}, &out, &errb); code != 0 {
		t.Fatalf("promote eu: exit %d: %s", code, errb.String())
	}
	if code := run([]string{"mesh", "clusters", "drain", "us", "--addr", holder.URL}, &out, &errb); code != 0 {
		t.Fatalf("drain us: exit %d: %s", code, errb.String())
	}
	if code := run([]string{"mesh", "clusters", "promote", "eu", "--force", "--addr", euAgent.URL}, &out, &errb); code != 0 {
		t.Fatalf("promote --force eu: exit %d: %s", code, errb.String())
	}
	want := []string{"us /control/v1/clusters/eu/promote ", "us /control/v1/clusters/eu/promote ", "eu /control/v1/clusters/eu/promote force"}
	if strings.Join(posts, "|") != strings.Join(want, "|") {
		t.Fatalf("promotions asked:\n%q\nwant\n%q", posts, want)
	}
	errb.Reset()
	if code := run([]string{"mesh", "clusters", "drain", "eu", "--addr", holder.URL}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "not the active cluster") {
		t.Fatalf("drain of a passive cluster: exit %d, %s", code, errb.String())
	}
}
