package control

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/cluster"
)

// clusterFake adds cluster descriptors to fakeSource.
type clusterFake struct {
	*fakeSource
	cs         Clusters
	err        error
	promoted   []string
	promoteErr error
}

func (f *clusterFake) Clusters() (Clusters, error)      { return f.cs, f.err }
func (f *clusterFake) ClustersChanged() <-chan struct{} { return nil }
func (f *clusterFake) PromoteCluster(id string, force bool) error {
	f.promoted = append(f.promoted, fmt.Sprintf("%s force=%v", id, force))
	return f.promoteErr
}

func twoClusters() Clusters {
	return Clusters{Self: "eu", Active: "us", Clusters: []cluster.Descriptor{
		{ID: "eu", Region: "eu-west-1", State: cluster.Passive, Version: 0, Epoch: 3, Counter: 2},
		{ID: "us", Region: "us-east-1", State: cluster.Active, Version: 3, Priority: 1, Epoch: 5, Counter: 1},
	}, Endpoints: []ClusterEndpoints{{Cluster: "us", Reachable: true, Control: []string{"http://10.1.0.1:7070"}}}, Version: 7}
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

func TestPromoteClusterRoute(t *testing.T) {
	f := &clusterFake{fakeSource: newFake("a"), cs: twoClusters()}
	h := NewHandler(f, Options{})
	post := func(path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
		return rec
	}
	if rec := post("/control/v1/clusters/us/promote", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"cluster":"us"`) {
		t.Fatalf("promote us: %d %s", rec.Code, rec.Body)
	}
	if rec := post("/control/v1/clusters/eu/promote", `{"force":true}`); rec.Code != 200 {
		t.Fatalf("forced promote eu: %d %s", rec.Code, rec.Body)
	}
	if want := []string{"us force=false", "eu force=true"}; fmt.Sprint(f.promoted) != fmt.Sprint(want) {
		t.Fatalf("promotions %v, want %v", f.promoted, want)
	}
	if rec := post("/control/v1/clusters/mars/promote", ""); rec.Code != 404 || !strings.Contains(rec.Body.String(), CodeUnknownCluster) {
		t.Fatalf("unknown cluster: %d %s", rec.Code, rec.Body)
	}
	if rec := post("/control/v1/clusters/us/promote", `{"forse":true}`); rec.Code != 400 {
		t.Fatalf("bad body: %d %s", rec.Code, rec.Body)
	}
	f.promoteErr = &CodeError{Status: http.StatusConflict, Code: CodeBadTransition, Err: errors.New("not active")}
	if rec := post("/control/v1/clusters/us/promote", ""); rec.Code != 409 || !strings.Contains(rec.Body.String(), CodeBadTransition) {
		t.Fatalf("refused transition: %d %s", rec.Code, rec.Body)
	}
	f.promoteErr = &NotLeaderError{Leader: "b", Control: "http://b:7070"}
	if rec := post("/control/v1/clusters/us/promote", ""); rec.Code != 409 || !strings.Contains(rec.Body.String(), "http://b:7070") {
		t.Fatalf("not the holder: %d %s", rec.Code, rec.Body)
	}
	if len(f.promoted) != 4 {
		t.Fatalf("%d promotions asked, want 4 (the unknown cluster and the bad body reach no source)", len(f.promoted))
	}
}
