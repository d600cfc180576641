package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/omnirelay/mesh/cluster"
)

// ErrClustersOff is what a ClusterSource returns when the node knows of no
// federation (one cluster); the routes answer 404.
var ErrClustersOff = errors.New("control: no multi-cluster federation is configured on this node")

// ClusterSource is implemented by a Source whose node runs the cluster
// descriptors (docs/multi-cluster.md). It is optional: without it
// /control/v1/clusters answers 404 clusters_off.
type ClusterSource interface {
	// Clusters returns the descriptors the serving node holds, or ErrClustersOff.
	Clusters() (Clusters, error)
	// ClustersChanged returns a channel closed at the next change of Clusters
	// (watch).
	ClustersChanged() <-chan struct{}
	// PromoteCluster makes cluster id active: on the active cluster's lease
	// holder for another id, the planned handoff; for the serving node's own
	// cluster with force, the forced promotion. A *NotLeaderError on another
	// node of the cluster; a *CodeError bad_transition when the state does not
	// allow it.
	PromoteCluster(id string, force bool) error
}

// Clusters is the JSON reply of GET /control/v1/clusters.
type Clusters struct {
	// Self is the serving node's cluster.
	Self string `json:"self"`
	// Active is the active cluster of the serving node's view ("" when none):
	// the active descriptor with the highest failover version.
	Active string `json:"active"`
	// Serving is whether the serving node answers as the active registry (it
	// holds its cluster's lease and its cluster is Active).
	Serving bool `json:"serving"`
	// Clusters are the descriptors, sorted by id.
	Clusters []cluster.Descriptor `json:"clusters"`
	// Endpoints are the other clusters as this node's gateways see them in the
	// WAN pool, sorted by cluster id: whether one of their gateways is alive
	// and their control URLs.
	Endpoints []ClusterEndpoints `json:"endpoints"`
	// Version grows with every change of the view (the watch stream's event id).
	Version uint64 `json:"version"`
}

// ClusterEndpoints is how to reach another cluster of the federation.
type ClusterEndpoints struct {
	Cluster   string   `json:"cluster"`
	Reachable bool     `json:"reachable"`
	Control   []string `json:"control"`
}

// PromoteRequest is the body of POST /control/v1/clusters/{id}/promote.
type PromoteRequest struct {
	// Force promotes the serving node's own cluster now (the operator's
	// override), rather than asking the active cluster to hand over.
	Force bool `json:"force"`
}

// PromoteReply answers POST /control/v1/clusters/{id}/promote.
type PromoteReply struct {
	Cluster string `json:"cluster"`
	Force   bool   `json:"force"`
}

// clusters serves GET /control/v1/clusters. The ETag covers the body;
// watch=true streams the view as a "clusters" event (id: its version) now and at
// each change.
func (h *handler) clusters(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("watch") == "true" {
		h.watchClusters(w, r)
		return
	}
	cs, ok := h.clusterView(w)
	if ok {
		writeTagged(w, r, "", cs)
	}
}

// watchClusters streams the view; a client resuming with the current version
// (Last-Event-ID or since) gets no repeat.
func (h *handler) watchClusters(w http.ResponseWriter, r *http.Request) {
	src, ok := h.clusterSource(w)
	if !ok {
		return
	}
	if _, err := src.Clusters(); err != nil {
		h.clusterView(w) // answers the error
		return
	}
	h.watchViews(w, r, "clusters", src.ClustersChanged, func() (string, any, bool, bool) {
		cs, err := src.Clusters()
		if err != nil {
			return "", nil, false, true
		}
		return strconv.FormatUint(cs.Version, 10), withEmpty(cs), false, false
	})
}

// promoteCluster serves POST /control/v1/clusters/{id}/promote (operator).
func (h *handler) promoteCluster(w http.ResponseWriter, r *http.Request) {
	src, ok := h.clusterSource(w)
	if !ok {
		return
	}
	var req PromoteRequest
	if err := readBody(r.Body, &req, true, `{"force": false|true}`); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	cs, err := src.Clusters()
	if err == nil && !slices.ContainsFunc(cs.Clusters, func(d cluster.Descriptor) bool { return d.ID == id }) {
		writeError(w, http.StatusNotFound, CodeUnknownCluster, fmt.Sprintf("no cluster %q in this node's federation", id))
		return
	}
	if err == nil {
		err = src.PromoteCluster(id, req.Force)
	}
	if errors.Is(err, ErrClustersOff) {
		writeError(w, http.StatusNotFound, CodeClustersOff, err.Error())
		return
	}
	if err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PromoteReply{Cluster: id, Force: req.Force})
}

// cluster serves GET /control/v1/clusters/{id}: one descriptor.
func (h *handler) cluster(w http.ResponseWriter, r *http.Request) {
	cs, ok := h.clusterView(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	for _, d := range cs.Clusters {
		if d.ID == id {
			writeTagged(w, r, "", d)
			return
		}
	}
	writeError(w, http.StatusNotFound, CodeUnknownCluster, fmt.Sprintf("no cluster %q in this node's federation", id))
}

func (h *handler) clusterView(w http.ResponseWriter) (Clusters, bool) {
	src, ok := h.clusterSource(w)
	if !ok {
		return Clusters{}, false
	}
	cs, err := src.Clusters()
	switch {
	case errors.Is(err, ErrClustersOff):
		writeError(w, http.StatusNotFound, CodeClustersOff, err.Error())
		return Clusters{}, false
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
		return Clusters{}, false
	}
	return withEmpty(cs), true
}

// clusterSource is the source's ClusterSource; without one it answers 404
// clusters_off.
func (h *handler) clusterSource(w http.ResponseWriter) (ClusterSource, bool) {
	src, ok := h.src.(ClusterSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeClustersOff, ErrClustersOff.Error())
	}
	return src, ok
}

// withEmpty makes cs's nil lists empty, so JSON shows [] rather than null.
func withEmpty(cs Clusters) Clusters {
	if cs.Clusters == nil {
		cs.Clusters = []cluster.Descriptor{}
	}
	if cs.Endpoints == nil {
		cs.Endpoints = []ClusterEndpoints{}
	}
	for i, e := range cs.Endpoints {
		if e.Control == nil {
			cs.Endpoints[i].Control = []string{}
		}
	}
	return cs
}

// GetClusters fetches GET /control/v1/clusters.
func (c *Client) GetClusters(ctx context.Context) (Clusters, error) {
	var cs Clusters
	err := c.get(ctx, "/control/v1/clusters", &cs)
	return cs, err
}

// PromoteCluster asks POST /control/v1/clusters/{id}/promote.
func (c *Client) PromoteCluster(ctx context.Context, id string, force bool) (PromoteReply, error) {
	var rep PromoteReply
	err := c.send(ctx, http.MethodPost, "/control/v1/clusters/"+url.PathEscape(id)+"/promote", PromoteRequest{Force: force}, &rep)
	return rep, err
}

// GetCluster fetches GET /control/v1/clusters/{id}.
func (c *Client) GetCluster(ctx context.Context, id string) (cluster.Descriptor, error) {
	var d cluster.Descriptor
	err := c.get(ctx, "/control/v1/clusters/"+url.PathEscape(id), &d)
	return d, err
}
