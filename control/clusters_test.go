package control

import (
	"strings"
	"testing"

	"github.com/omnirelay/mesh/cluster"
)

// clusterFake adds cluster descriptors to fakeSource.
type clusterFake struct {
	*fakeSource
	cs  Clusters
	err error
}

func (f *clusterFake) Clusters() (Clusters, error) { return f.cs, f.err }

func twoClusters() Clusters {
	return Clusters{Self: "eu", Active: "us", Clusters: []cluster.Descriptor{
		{ID: "eu", Region: "eu-west-1", State: cluster.Passive, Version: 0, Epoch: 3, Counter: 2},
		{ID: "us", Region: "us-east-1", State: cluster.Active, Version: 3, Priority: 1, Epoch: 5, Counter: 1},
	}}
}

func TestClustersServesDescriptorsWithETag(t *testing.T) {
	f := &clusterFake{fakeSource: newFake("a"), cs: twoClusters()}
	h := NewHandler(f, Options{})
	rec := get(t, h, "/control/v1/clusters")
	if rec.Code != 200 {
		t.Fatalf("code %d: %s", rec.Code, rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"state":"active"`) || !strings.Contains(rec.Body.String(), `"failover_version":3`) {
		t.Fatalf("body %s: want states by name and failover_version", rec.Body)
	}
	got := decode[Clusters](t, rec)
	if got.Active != "us" || len(got.Clusters) != 2 || got.Clusters[1].State != cluster.Active {
		t.Fatalf("got %+v", got)
	}
	etag := rec.Header().Get("ETag")
	if rec := get(t, h, "/control/v1/clusters", "If-None-Match", etag); etag == "" || rec.Code != 304 {
		t.Fatalf("ETag %q, same view: code %d, want 304", etag, rec.Code)
	}
	f.cs.Clusters[0].State = cluster.Active
	f.cs.Clusters[0].Version = 4
	if rec := get(t, h, "/control/v1/clusters", "If-None-Match", etag); rec.Code != 200 {
		t.Fatalf("after a failover: code %d, want 200", rec.Code)
	}

	rec = get(t, h, "/control/v1/clusters/us")
	if d := decode[cluster.Descriptor](t, rec); rec.Code != 200 || d.ID != "us" || d.Region != "us-east-1" {
		t.Fatalf("get us: code %d, %+v", rec.Code, d)
	}
	rec = get(t, h, "/control/v1/clusters/mars")
	if rec.Code != 404 || decode[ErrorReply](t, rec).Error.Code != CodeUnknownCluster {
		t.Fatalf("unknown cluster: code %d %s", rec.Code, rec.Body)
	}
}

func TestClustersOffWithoutAFederation(t *testing.T) {
	for _, src := range []Source{newFake("a"), &clusterFake{fakeSource: newFake("a"), err: ErrClustersOff}} {
		rec := get(t, NewHandler(src, Options{}), "/control/v1/clusters")
		if rec.Code != 404 || decode[ErrorReply](t, rec).Error.Code != CodeClustersOff {
			t.Fatalf("%T: code %d %s", src, rec.Code, rec.Body)
		}
	}
}
