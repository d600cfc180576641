package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

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
}

// clusters serves GET /control/v1/clusters. The ETag covers the body.
func (h *handler) clusters(w http.ResponseWriter, r *http.Request) {
	cs, ok := h.clusterView(w)
	if ok {
		writeTagged(w, r, "", cs)
	}
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
	src, ok := h.src.(ClusterSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeClustersOff, ErrClustersOff.Error())
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
	if cs.Clusters == nil {
		cs.Clusters = []cluster.Descriptor{}
	}
	return cs, true
}

// GetClusters fetches GET /control/v1/clusters.
func (c *Client) GetClusters(ctx context.Context) (Clusters, error) {
	var cs Clusters
	err := c.get(ctx, "/control/v1/clusters", &cs)
	return cs, err
}

// GetCluster fetches GET /control/v1/clusters/{id}.
func (c *Client) GetCluster(ctx context.Context, id string) (cluster.Descriptor, error) {
	var d cluster.Descriptor
	err := c.get(ctx, "/control/v1/clusters/"+url.PathEscape(id), &d)
	return d, err
}
