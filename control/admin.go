package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/omnirelay/mesh/crdt"
)

// OperatorSource is implemented by a Source whose node takes commands: the status,
// metadata, join, leave and force-leave routes. It is optional: without it those
// routes answer 503 unavailable.
type OperatorSource interface {
	// Status describes the serving node (GET /control/v1/status).
	Status() (NodeStatus, error)
	SetMeta(key, value string) error
	DeleteMeta(key string) error
	// Join contacts the seeds until one answers or ctx ends.
	Join(ctx context.Context, seeds []string) error
	// Leave leaves the cluster gracefully; the agent then exits.
	Leave(ctx context.Context) error
	// ForceLeave removes a dead member (prune: drop its tombstone on this node now).
	ForceLeave(name string, prune bool) error
}

// LeaderAdmin is implemented by a LeaderSource that takes leadership commands.
// Both are leader-only: elsewhere they return a *NotLeaderError.
type LeaderAdmin interface {
	// StepDown releases the lease so another voter leads.
	StepDown() error
	// ChangeVoters adds and removes voters from the set in force, through a joint
	// change, and returns the target set.
	ChangeVoters(add, remove []string) ([]string, error)
}

// CodeError is an error a Source returns to choose the answer: HTTP status and
// error code (one of codes.go).
type CodeError struct {
	Status int
	Code   string
	Err    error
}

func (e *CodeError) Error() string { return e.Err.Error() }
func (e *CodeError) Unwrap() error { return e.Err }

// NodeStatus is the JSON body of GET /control/v1/status: the serving node in one
// object, as `mesh status` prints it.
type NodeStatus struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Version  string `json:"version"`  // the binary's version
	Protocol string `json:"protocol"` // wire protocol versions accepted, "MIN-MAX"
	// Sending is the protocol version this node sends at now: the highest every
	// live member it holds speaks (PROTOCOL.md section 7); Features names the
	// protocol features on in its view ("none", or e.g. "ack-health"). A rolling
	// upgrade watches both (docs/upgrading.md).
	Sending     uint8  `json:"sending"`
	Features    string `json:"features"`
	Status      string `json:"status"` // alive, or left after a leave
	Incarnation uint64 `json:"incarnation"`
	// Health is the Lifeguard local health score: 0 is healthy; each step up
	// stretches this node's probe timeouts (it suspects itself of being slow).
	Health  int  `json:"health"`
	Joined  bool `json:"joined"`
	Members struct {
		Alive   int `json:"alive"`
		Suspect int `json:"suspect"`
		Dead    int `json:"dead"`
		Left    int `json:"left"`
	} `json:"members"`
	// Leader is the lease holder this node knows of ("" none, or leadership off).
	Leader   string `json:"leader"`
	Epoch    uint64 `json:"epoch"`
	IsVoter  bool   `json:"is_voter"`
	IsLeader bool   `json:"is_leader"`
	// Shards is the cluster's shard count (0: shard routing off); Owned those this
	// node serves now.
	Shards int `json:"shards"`
	Owned  int `json:"owned"`
	// Warnings names misconfigurations this node has detected (a peer with
	// another shard count or voter set, ...), empty when none.
	Warnings []string `json:"warnings"`
}

// MetaRequest is the body of PUT /control/v1/meta/{key}.
type MetaRequest struct {
	Value string `json:"value"`
}

// JoinRequest is the body of POST /control/v1/join.
type JoinRequest struct {
	Seeds []string `json:"seeds"`
}

// ForceLeaveRequest is the body of POST /control/v1/peers/{name}/force-leave.
type ForceLeaveRequest struct {
	Prune bool `json:"prune"`
}

// VotersRequest is the body of POST /control/v1/voters: names to add and to
// remove from the voter set in force.
type VotersRequest struct {
	Add    []string `json:"add"`
	Remove []string `json:"remove"`
}

// VotersReply is the answer of POST /control/v1/voters: the set the joint change
// moves to (GET /control/v1/leaders shows when it is in force).
type VotersReply struct {
	Voters []string `json:"voters"`
}

// maxJoinSeeds bounds a join request's seed list.
const maxJoinSeeds = 64

// operator returns the optional OperatorSource, answering 503 when absent.
func (h *handler) operator(w http.ResponseWriter) (OperatorSource, bool) {
	op, ok := h.src.(OperatorSource)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "this node takes no operator commands")
	}
	return op, ok
}

// readBody reads exactly one JSON object of at most 64 KiB into v; an empty body
// reads as {} when emptyOK.
func readBody(body io.Reader, v any, emptyOK bool, want string) error {
	dec := json.NewDecoder(io.LimitReader(body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if err == io.EOF && emptyOK {
			return nil
		}
		return fmt.Errorf("want %s: %v", want, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("want %s: data after the object", want)
	}
	return nil
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	op, ok := h.operator(w)
	if !ok {
		return
	}
	st, err := op.Status()
	if err != nil {
		sourceError(w, err)
		return
	}
	if st.Warnings == nil {
		st.Warnings = []string{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) setMeta(w http.ResponseWriter, r *http.Request) {
	op, ok := h.operator(w)
	if !ok {
		return
	}
	var req struct {
		Value *string `json:"value"`
	}
	const want = `{"value": STRING}`
	if err := readBody(r.Body, &req, false, want); err != nil || req.Value == nil {
		if err == nil {
			err = fmt.Errorf(`want %s: "value" is required`, want)
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	key := r.PathValue("key")
	if err := op.SetMeta(key, *req.Value); err != nil {
		metaError(w, key, err)
		return
	}
	writeJSON(w, http.StatusOK, MetaChange{Key: key, Value: *req.Value})
}

func (h *handler) deleteMeta(w http.ResponseWriter, r *http.Request) {
	op, ok := h.operator(w)
	if !ok {
		return
	}
	key := r.PathValue("key")
	if err := op.DeleteMeta(key); err != nil {
		metaError(w, key, err)
		return
	}
	writeJSON(w, http.StatusOK, MetaChange{Key: key, Deleted: true})
}

// metaError answers a failed metadata write: a limit is the caller's error.
func metaError(w http.ResponseWriter, key string, err error) {
	switch {
	case errors.Is(err, crdt.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeUnknownKey, fmt.Sprintf("metadata key %q has no value on this node", key))
	case errors.Is(err, crdt.ErrEmptyKey), errors.Is(err, crdt.ErrKeyTooLong), errors.Is(err, crdt.ErrValueTooLarge),
		errors.Is(err, crdt.ErrTooManyKeys), errors.Is(err, crdt.ErrMapTooLarge):
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
	default:
		sourceError(w, err)
	}
}

func (h *handler) join(w http.ResponseWriter, r *http.Request) {
	op, ok := h.operator(w)
	if !ok {
		return
	}
	var req JoinRequest
	if err := readBody(r.Body, &req, false, `{"seeds": ["HOST:PORT", ...]}`); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if len(req.Seeds) == 0 || len(req.Seeds) > maxJoinSeeds {
		writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf(`"seeds": want 1..%d addresses, got %d`, maxJoinSeeds, len(req.Seeds)))
		return
	}
	if err := op.Join(r.Context(), req.Seeds); err != nil {
		var ce *CodeError
		if !errors.As(err, &ce) {
			err = &CodeError{Status: http.StatusBadGateway, Code: CodeJoinFailed, Err: err}
		}
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *handler) leave(w http.ResponseWriter, r *http.Request) {
	op, ok := h.operator(w)
	if !ok {
		return
	}
	if err := readBody(r.Body, &struct{}{}, true, "{}"); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if err := op.Leave(r.Context()); err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Left bool `json:"left"`
	}{true})
}

func (h *handler) forceLeave(w http.ResponseWriter, r *http.Request) {
	op, ok := h.operator(w)
	if !ok {
		return
	}
	var req ForceLeaveRequest
	if err := readBody(r.Body, &req, true, `{"prune": BOOL}`); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if err := op.ForceLeave(r.PathValue("name"), req.Prune); err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Name  string `json:"name"`
		Prune bool   `json:"prune"`
	}{r.PathValue("name"), req.Prune})
}

// leaderAdmin returns the optional LeaderAdmin, answering 404 leadership_off.
func (h *handler) leaderAdmin(w http.ResponseWriter) (LeaderAdmin, bool) {
	la, ok := h.src.(LeaderAdmin)
	if !ok {
		writeError(w, http.StatusNotFound, CodeLeadershipOff, ErrLeadershipOff.Error())
	}
	return la, ok
}

func (h *handler) stepDown(w http.ResponseWriter, r *http.Request) {
	la, ok := h.leaderAdmin(w)
	if !ok {
		return
	}
	if err := readBody(r.Body, &struct{}{}, true, "{}"); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if err := la.StepDown(); err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		SteppedDown bool `json:"stepped_down"`
	}{true})
}

func (h *handler) changeVoters(w http.ResponseWriter, r *http.Request) {
	la, ok := h.leaderAdmin(w)
	if !ok {
		return
	}
	var req VotersRequest
	if err := readBody(r.Body, &req, false, `{"add": [NAME, ...], "remove": [NAME, ...]}`); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if n := len(req.Add) + len(req.Remove); n == 0 || n > 8 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf(`"add" and "remove": want 1..8 names in all, got %d`, n))
		return
	}
	voters, err := la.ChangeVoters(req.Add, req.Remove)
	if err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, VotersReply{Voters: voters})
}

// sourceError answers an error of a Source method.
func sourceError(w http.ResponseWriter, err error) {
	var nl *NotLeaderError
	var ce *CodeError
	switch {
	case errors.As(err, &nl):
		writeJSON(w, http.StatusConflict, NotLeaderReply{Error: ErrorBody{Code: CodeNotLeader, Message: nl.Error()},
			Leader: nl.Leader, LeaderControl: nl.Control})
	case errors.As(err, &ce):
		writeError(w, ce.Status, ce.Code, ce.Error())
	case errors.Is(err, ErrLeadershipOff):
		writeError(w, http.StatusNotFound, CodeLeadershipOff, err.Error())
	case errors.Is(err, ErrShardsOff):
		writeError(w, http.StatusNotFound, CodeShardsOff, err.Error())
	case errors.Is(err, ErrNoShardMap):
		writeError(w, http.StatusServiceUnavailable, CodeNoShardMap, err.Error())
	case errors.Is(err, ErrUnknownNode):
		writeError(w, http.StatusNotFound, CodeUnknownNode, err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	}
}

// ---- client ----

// Status fetches GET /control/v1/status.
func (c *Client) Status(ctx context.Context) (NodeStatus, error) {
	var st NodeStatus
	err := c.get(ctx, "/control/v1/status", &st)
	return st, err
}

// SetMeta sets key = value in the agent's own metadata.
func (c *Client) SetMeta(ctx context.Context, key, value string) error {
	return c.send(ctx, http.MethodPut, "/control/v1/meta/"+url.PathEscape(key), MetaRequest{Value: value}, nil)
}

// DeleteMeta deletes key from the agent's own metadata.
func (c *Client) DeleteMeta(ctx context.Context, key string) error {
	return c.send(ctx, http.MethodDelete, "/control/v1/meta/"+url.PathEscape(key), nil, nil)
}

// Join asks the agent to join through seeds.
func (c *Client) Join(ctx context.Context, seeds []string) error {
	return c.send(ctx, http.MethodPost, "/control/v1/join", JoinRequest{Seeds: seeds}, nil)
}

// Leave asks the agent to leave the cluster gracefully (it exits afterwards).
func (c *Client) Leave(ctx context.Context) error {
	return c.send(ctx, http.MethodPost, "/control/v1/leave", struct{}{}, nil)
}

// ForceLeave asks the agent to remove a dead member.
func (c *Client) ForceLeave(ctx context.Context, name string, prune bool) error {
	return c.send(ctx, http.MethodPost, "/control/v1/peers/"+url.PathEscape(name)+"/force-leave", ForceLeaveRequest{Prune: prune}, nil)
}

// StepDown asks the leader to release its lease (*NotLeaderError elsewhere).
func (c *Client) StepDown(ctx context.Context) error {
	return c.send(ctx, http.MethodPost, "/control/v1/leaders/step-down", struct{}{}, nil)
}

// ChangeVoters asks the leader to add and remove voters (*NotLeaderError
// elsewhere) and returns the target set.
func (c *Client) ChangeVoters(ctx context.Context, add, remove []string) ([]string, error) {
	var r VotersReply
	err := c.send(ctx, http.MethodPost, "/control/v1/voters", VotersRequest{Add: add, Remove: remove}, &r)
	return r.Voters, err
}
