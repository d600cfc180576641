// Package control is the operator control plane of an OmniRelay Mesh agent: an
// http.Handler serving /control/v1/... as JSON (filters, pagination, ETags, a
// Server-Sent Events watch stream), /healthz, /readyz and /metrics, and the same
// routes as the gRPC service omnirelay.control.v1.ControlService (grpc.go).
//
// It reads membership through the small Source interface, which node implements, so
// control never imports node and can be tested against a fake. docs/api.md documents
// every route and field.
package control

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Peer is one member as the serving node sees it. It is also the JSON shape of a
// peer in every response.
type Peer struct {
	Name        string            `json:"name"`
	Address     string            `json:"address"`
	Status      string            `json:"status"` // alive, suspect, dead or left
	Incarnation uint64            `json:"incarnation"`
	Meta        map[string]string `json:"meta"`  // the peer's metadata as the serving node knows it
	Since       time.Time         `json:"since"` // when Status last changed, in the serving node's clock
	Local       bool              `json:"local"` // the serving node itself
}

// Statuses a Peer can have, in the order the filter documentation lists them.
var Statuses = []string{"alive", "suspect", "dead", "left"}

// Version identifies one state of the serving node's membership view. N grows by one
// per change; Epoch is random per node process, so versions of two runs of the same
// node never compare equal.
type Version struct {
	Epoch string
	N     uint64
}

// String is the form used in JSON "version" fields, ETags and SSE ids: "EPOCH.N".
func (v Version) String() string { return v.Epoch + "." + strconv.FormatUint(v.N, 10) }

// ParseVersion parses the form String produces.
func ParseVersion(s string) (Version, error) {
	epoch, n, ok := strings.Cut(s, ".")
	if !ok || epoch == "" {
		return Version{}, fmt.Errorf("version %q: want EPOCH.N", s)
	}
	u, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return Version{}, fmt.Errorf("version %q: %w", s, err)
	}
	return Version{Epoch: epoch, N: u}, nil
}

// Snapshot is the whole membership view at one version.
type Snapshot struct {
	Version Version
	Peers   []Peer // sorted by Name
}

// Change is one membership event, as the watch stream carries it.
type Change struct {
	N    uint64    `json:"-"`    // version reached by this change (same epoch as the Source)
	ID   string    `json:"id"`   // correlation id of the event, as in the node's logs
	Kind string    `json:"kind"` // join, update, suspect, alive, dead, left or meta
	Peer Peer      `json:"peer"` // the member after the change
	At   time.Time `json:"at"`   // when the serving node observed it
	// Meta is the metadata key that changed, for kind "meta" only.
	Meta *MetaChange `json:"meta,omitempty"`
}

// MetaChange is one metadata key of a peer set or deleted.
type MetaChange struct {
	Key     string `json:"key"`
	Value   string `json:"value,omitempty"` // the new value; absent when deleted
	Deleted bool   `json:"deleted,omitempty"`
}

// Source is what the handler reads. Implementations are safe for concurrent use.
type Source interface {
	// Snapshot returns the current view.
	Snapshot() Snapshot
	// ChangesSince returns the changes after version n of the current epoch, oldest
	// first, and false if its bounded history no longer reaches back to n+1.
	ChangesSince(n uint64) ([]Change, bool)
	// Changed returns a channel closed at the next change. Fetch it before
	// ChangesSince so no change slips between the two calls.
	Changed() <-chan struct{}
	// Health lists the checks of GET /healthz: conditions a restart cures (the
	// node's event loop answers). Each is evaluated when called.
	Health() []Check
	// Readiness lists the checks of GET /readyz: whether this node can do its job
	// now (loop answering, joined, and the voter, leadership and shard conditions
	// docs/api.md lists).
	Readiness() []Check
}

// States of a Check.
const (
	CheckOK   = "ok"
	CheckFail = "fail"
)

// Check is one named condition of /healthz or /readyz.
type Check struct {
	Name   string `json:"name"`
	State  string `json:"state"`  // CheckOK or CheckFail
	Detail string `json:"detail"` // what was measured, or why it fails
}

// ProbeReply is the JSON body of /healthz and /readyz: status "ok" (HTTP 200) when
// every check is ok, else "fail" (HTTP 503).
type ProbeReply struct {
	Status string  `json:"status"`
	Checks []Check `json:"checks"`
}
