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
