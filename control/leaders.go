package control

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ErrLeadershipOff is what a LeaderSource returns when the node takes no part in
// leader election (no voter list configured); the route answers 404.
var ErrLeadershipOff = errors.New("control: leadership is not configured on this node")

// LeaderSource is implemented by a Source whose node takes part in leader election.
// It is optional: a Source without it serves no /control/v1/leaders route (404).
type LeaderSource interface {
	// Leaders returns the leadership view, or ErrLeadershipOff.
	Leaders() (Leaders, error)
}

// Leaders is the JSON reply of GET /control/v1/leaders.
type Leaders struct {
	// Version is "EPOCH.N": the serving process's epoch (as in peer versions) and
	// the number of leadership events it has observed.
	Version string `json:"version"`
	// Leader is the lease the serving node knows of; null when none stands.
	Leader *Lease `json:"leader"`
	// Voters is the voter set in force as the serving node knows it, sorted.
	Voters []string `json:"voters"`
	// VoterStatus is each voter's membership status in the serving node's view,
	// in Voters order: liveness, and since when (the last change the node saw).
	VoterStatus []VoterStatus `json:"voter_status"`
	// Local describes the serving node.
	Local LocalLeadership `json:"local"`
}

// VoterStatus is one voter as the serving node's membership sees it.
type VoterStatus struct {
	Name   string    `json:"name"`
	Status string    `json:"status"` // alive, suspect, dead, left, or unknown (never seen)
	Since  time.Time `json:"since"`  // when Status last changed, serving node's clock; zero if unknown
}

// Lease is one standing lease.
type Lease struct {
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"` // the fencing token
	// ValidUntil is when the serving node stops believing in the lease unless it
	// is renewed: the holder's own conservative deadline on the holder, the voter's
	// (later) hold on a voter. Renewals move it forward about once a second.
	ValidUntil time.Time `json:"valid_until"`
	IsLocal    bool      `json:"is_local"` // the serving node holds it
}

// LocalLeadership is the serving node's own part.
type LocalLeadership struct {
	Name      string `json:"name"`
	IsVoter   bool   `json:"is_voter"`
	IsLeader  bool   `json:"is_leader"`
	EpochSeen uint64 `json:"epoch_seen"` // highest epoch this node has seen
}

// leaders serves GET /control/v1/leaders. The ETag covers the whole body, so it
// changes at every renewal too (valid_until moves); a poller saves the body, not
// the round trip, between renewals.
func (h *handler) leaders(w http.ResponseWriter, r *http.Request) {
	ls, ok := h.src.(LeaderSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeLeadershipOff, ErrLeadershipOff.Error())
		return
	}
	l, err := ls.Leaders()
	if err != nil {
		if errors.Is(err, ErrLeadershipOff) {
			writeError(w, http.StatusNotFound, CodeLeadershipOff, err.Error())
		} else {
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
		}
		return
	}
	if l.Voters == nil {
		l.Voters = []string{}
	}
	if l.VoterStatus == nil {
		l.VoterStatus = []VoterStatus{}
	}
	writeTagged(w, r, l.Version, l)
}

// GetLeaders fetches GET /control/v1/leaders.
func (c *Client) GetLeaders(ctx context.Context) (Leaders, error) {
	var l Leaders
	err := c.get(ctx, "/control/v1/leaders", &l)
	return l, err
}
