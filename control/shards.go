package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/omnirelay/mesh/crdt"
)

// ErrShardsOff is what a ShardSource returns when the node runs no shard routing
// (no shard count configured); the shard routes answer 404.
var ErrShardsOff = errors.New("control: shard routing is not configured on this node")

// ErrNoShardMap is what a ShardSource returns before the node has received its
// first shard map; the shard routes answer 503.
var ErrNoShardMap = errors.New("control: no shard map received yet")

// ErrUnknownNode is what a ShardSource's DrainNode returns for a name that is not
// a member the leader holds alive or suspect; the drain route answers 404.
var ErrUnknownNode = errors.New("control: unknown node")

// ShardStates a shard can be in, as the state filter accepts them.
var ShardStates = []string{"steady", "draining", "rebalancing"}

// ShardSource is implemented by a Source whose node routes shards. It is optional:
// a Source without it serves no /control/v1/shards routes (404).
type ShardSource interface {
	// ShardMap returns the latest map the node holds, or ErrShardsOff / ErrNoShardMap.
	ShardMap() (ShardMap, error)
	// ShardsChanged returns a channel closed at the next map change (watch).
	ShardsChanged() <-chan struct{}
	// LookupShard maps key to its shard and that shard's owner.
	LookupShard(key string) (ShardLookup, error)
	// DrainNode marks node as drained (on) or not, and Rebalance recomputes the
	// placement now. Only the leader can: elsewhere both return a *NotLeaderError.
	// DrainNode returns ErrUnknownNode for a node that is not a live member.
	DrainNode(node string, on bool) error
	Rebalance() error
}

// NotLeaderError is returned by leader-only operations on another node; the route
// answers 409 with the leader's name and, if it published one, its control URL.
type NotLeaderError struct {
	Leader  string // "" when no leader is known
	Control string // the leader's control URL (its metadata key "control"), if known
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "this node is not the leader and no leader is known"
	}
	return "this node is not the leader; the leader is " + e.Leader
}

// Shard is one shard as the serving node's map has it.
type Shard struct {
	ID     uint32 `json:"id"`
	Owner  string `json:"owner"`  // who serves it now; "" when parked without an owner
	State  string `json:"state"`  // steady, draining or rebalancing
	Target string `json:"target"` // where the placement puts it ("" if no node is eligible)
}

// ShardMap is the JSON body of GET /control/v1/shards; a ShardSource returns it
// whole (Shards sorted by ID, NextPageToken empty) and the route filters and pages.
type ShardMap struct {
	// Epoch is the lease epoch (fencing token) of the leader that published the
	// map; Version numbers that leader's maps from 1. Maps order by (epoch, version).
	Epoch    uint64 `json:"epoch"`
	Version  uint64 `json:"version"`
	Checksum string `json:"checksum"` // 16 hex digits, as the leader announces it
	Count    int    `json:"count"`    // the cluster's shard count
	// Leader is the lease holder the serving node knows of ("" if none).
	Leader string `json:"leader"`
	Node   string `json:"node"`  // the serving node
	Owned  int    `json:"owned"` // shards the serving node may serve now
	// Placement is what the target placement was computed from; nil (JSON null)
	// when no node is eligible. With it and the owners and states of every shard a
	// client rebuilds the map (shard.DecodeMap) and checks Checksum.
	Placement     *Placement `json:"placement"`
	Shards        []Shard    `json:"shards"`
	NextPageToken string     `json:"next_page_token"`
}

// Placement is the input of a map's target placement: weighted rendezvous hashing
// of every shard over Nodes, Replicas owners each (rendezvous.BuildTable).
type Placement struct {
	Replicas int             `json:"replicas"`
	Nodes    []PlacementNode `json:"nodes"` // sorted by name
}

// PlacementNode is one eligible node of a Placement and its rendezvous weight.
type PlacementNode struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
}

// ShardReply is the JSON body of GET /control/v1/shards/{id}.
type ShardReply struct {
	Epoch   uint64 `json:"epoch"`
	Version uint64 `json:"version"`
	Leader  string `json:"leader"`
	Shard   Shard  `json:"shard"`
}

// ShardLookup is the JSON body of GET /control/v1/shards/lookup?key=K.
type ShardLookup struct {
	Key     string `json:"key"`
	Shard   uint32 `json:"shard"`
	Owner   string `json:"owner"`
	State   string `json:"state"`
	Leader  string `json:"leader"`
	Epoch   uint64 `json:"epoch"` // of the map (its leader's fencing token)
	Version uint64 `json:"version"`
}

// DrainRequest is the body of POST /control/v1/shards/drain.
type DrainRequest struct {
	Node  string `json:"node"`
	Drain bool   `json:"drain"` // false undoes a drain
}

// NotLeaderReply is the 409 body of the leader-only routes.
type NotLeaderReply struct {
	Error         ErrorBody `json:"error"`
	Leader        string    `json:"leader"`
	LeaderControl string    `json:"leader_control"`
}

// shardsETag identifies a map: (epoch, version) orders maps and the checksum
// guards against two leaders' maps that share both after an unclean failover.
func shardsETag(m ShardMap) string {
	return fmt.Sprintf(`"%d.%d-%s"`, m.Epoch, m.Version, m.Checksum)
}

// shardSource returns the optional ShardSource, answering 404 when absent.
func (h *handler) shardSource(w http.ResponseWriter) (ShardSource, bool) {
	ss, ok := h.src.(ShardSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeShardsOff, ErrShardsOff.Error())
	}
	return ss, ok
}

// shardFilter is the parsed owner/state query of a shards request.
type shardFilter struct {
	owner string          // "" any
	state map[string]bool // nil any
}

func parseShardFilter(q url.Values) (shardFilter, error) {
	f := shardFilter{owner: q.Get("owner")}
	for _, v := range q["state"] {
		for s := range strings.SplitSeq(v, ",") {
			if !slices.Contains(ShardStates, s) {
				return f, fmt.Errorf("state %q: want one of %s", s, strings.Join(ShardStates, ", "))
			}
			if f.state == nil {
				f.state = map[string]bool{}
			}
			f.state[s] = true
		}
	}
	return f, nil
}

func (f shardFilter) match(s Shard) bool {
	return (f.owner == "" || s.Owner == f.owner) && (f.state == nil || f.state[s.State])
}

// filtered returns m with only the shards f passes.
func (f shardFilter) filtered(m ShardMap) ShardMap {
	out := m
	out.Shards = []Shard{}
	for _, s := range m.Shards {
		if f.match(s) {
			out.Shards = append(out.Shards, s)
		}
	}
	return out
}

// shards serves GET /control/v1/shards: filters owner and state, pages by shard id
// (limit, page_token as for peers), ETag per map, watch=true streams one "map"
// event per new map.
func (h *handler) shards(w http.ResponseWriter, r *http.Request) {
	ss, ok := h.shardSource(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	f, err := parseShardFilter(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadFilter, err.Error())
		return
	}
	if q.Get("watch") == "true" {
		h.watchShards(w, r, ss, f)
		return
	}
	limit := MaxLimit
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > MaxLimit {
			writeError(w, http.StatusBadRequest, CodeBadLimit, fmt.Sprintf("limit %q: want 1..%d", s, MaxLimit))
			return
		}
	}
	after := int64(-1)
	if tok := q.Get("page_token"); tok != "" {
		after, err = strconv.ParseInt(tok, 10, 64)
		if err != nil || after < 0 {
			writeError(w, http.StatusBadRequest, CodeBadPageToken, "page_token is not one this server issued")
			return
		}
	}
	m, err := ss.ShardMap()
	if err != nil {
		sourceError(w, err)
		return
	}
	etag := shardsETag(m)
	if notModified(w, r, etag) {
		return
	}
	out := m
	out.Shards = []Shard{}
	for _, s := range m.Shards {
		if int64(s.ID) <= after || !f.match(s) {
			continue
		}
		if len(out.Shards) == limit {
			out.NextPageToken = strconv.FormatUint(uint64(out.Shards[limit-1].ID), 10)
			break
		}
		out.Shards = append(out.Shards, s)
	}
	writeJSON(w, http.StatusOK, out)
}

// watchShards streams the filtered map as an SSE "map" event (id EPOCH.VERSION)
// now and at each change; a client resuming with the current id gets no repeat.
func (h *handler) watchShards(w http.ResponseWriter, r *http.Request, ss ShardSource, f shardFilter) {
	h.watchViews(w, r, "map", ss.ShardsChanged, func() (string, any, bool, bool) {
		m, err := ss.ShardMap()
		if err != nil {
			return "", nil, true, !errors.Is(err, ErrNoShardMap)
		}
		return fmt.Sprintf("%d.%d", m.Epoch, m.Version), f.filtered(m), false, false
	})
}

// watchViews streams, as SSE events of kind, the view next returns now and at
// every close of changed(), heartbeats in between: an event only when its id
// differs from the one last sent (or the client's Last-Event-ID or since). next
// reports skip when there is nothing to send yet, stop to end the stream.
func (h *handler) watchViews(w http.ResponseWriter, r *http.Request, kind string, changed func() <-chan struct{},
	next func() (id string, data any, skip, stop bool)) {
	release, ok := h.admitWatch(w)
	if !ok {
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	last := r.Header.Get("Last-Event-ID")
	if s := r.URL.Query().Get("since"); s != "" {
		last = s
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	heartbeat := time.NewTicker(h.opts.Heartbeat)
	defer heartbeat.Stop()
	for {
		ch := changed()
		id, data, skip, stop := next()
		if stop {
			return
		}
		if !skip && id != last {
			if !h.event(w, id, kind, data) {
				return
			}
			last = id
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-ch:
		case <-heartbeat.C:
			if !h.heartbeat(w) {
				return
			}
		}
	}
}

// shard serves GET /control/v1/shards/{id}.
func (h *handler) shard(w http.ResponseWriter, r *http.Request) {
	ss, ok := h.shardSource(w)
	if !ok {
		return
	}
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 32)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadShard, fmt.Sprintf("shard %q: want a shard number", r.PathValue("id")))
		return
	}
	m, err := ss.ShardMap()
	if err != nil {
		sourceError(w, err)
		return
	}
	i, found := slices.BinarySearchFunc(m.Shards, uint32(id), func(s Shard, id uint32) int { return int(int64(s.ID) - int64(id)) })
	if !found {
		writeError(w, http.StatusNotFound, CodeUnknownShard, fmt.Sprintf("shard %d: the cluster has %d shards (0..%d)", id, m.Count, m.Count-1))
		return
	}
	etag := shardsETag(m)
	if notModified(w, r, etag) {
		return
	}
	writeJSON(w, http.StatusOK, ShardReply{Epoch: m.Epoch, Version: m.Version, Leader: m.Leader, Shard: m.Shards[i]})
}

// lookupShard serves GET /control/v1/shards/lookup?key=K.
func (h *handler) lookupShard(w http.ResponseWriter, r *http.Request) {
	ss, ok := h.shardSource(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	if !q.Has("key") {
		writeError(w, http.StatusBadRequest, CodeBadKey, "key is required")
		return
	}
	l, err := ss.LookupShard(q.Get("key"))
	if err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// drainShards serves POST /control/v1/shards/drain (leader only).
func (h *handler) drainShards(w http.ResponseWriter, r *http.Request) {
	ss, ok := h.shardSource(w)
	if !ok {
		return
	}
	req, err := decodeDrain(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if err := ss.DrainNode(req.Node, req.Drain); err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

// decodeDrain reads a drain body: exactly one JSON object with both fields (a
// missing "drain" must not read as false, which would lift a drain).
func decodeDrain(body io.Reader) (DrainRequest, error) {
	var req struct {
		Node  *string `json:"node"`
		Drain *bool   `json:"drain"`
	}
	const want = `{"node": NAME, "drain": true|false}`
	if err := readBody(body, &req, false, want); err != nil {
		return DrainRequest{}, err
	}
	switch {
	case req.Node == nil || *req.Node == "":
		return DrainRequest{}, fmt.Errorf(`want %s: "node" is required`, want)
	case len(*req.Node) > crdt.DefaultLimits().MaxNameBytes: // no member can have a longer name
		return DrainRequest{}, fmt.Errorf(`"node": %d bytes, more than %d`, len(*req.Node), crdt.DefaultLimits().MaxNameBytes)
	case req.Drain == nil:
		return DrainRequest{}, fmt.Errorf(`want %s: "drain" is required (false lifts a drain)`, want)
	}
	return DrainRequest{Node: *req.Node, Drain: *req.Drain}, nil
}

// decodeOne decodes exactly one JSON object of at most limit bytes into v,
// refusing unknown fields and anything after it.
func decodeOne(body io.Reader, limit int64, v any) error {
	dec := json.NewDecoder(io.LimitReader(body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

// rebalanceShards serves POST /control/v1/shards/rebalance (leader only).
func (h *handler) rebalanceShards(w http.ResponseWriter, _ *http.Request) {
	ss, ok := h.shardSource(w)
	if !ok {
		return
	}
	if err := ss.Rebalance(); err != nil {
		sourceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Rebalanced bool `json:"rebalanced"`
	}{true})
}

// ---- client ----

// ShardListOptions filters GET /control/v1/shards.
type ShardListOptions struct {
	Owner string
	State []string // any of ShardStates; empty means all
}

// ListShards fetches every page of the shard map.
func (c *Client) ListShards(ctx context.Context, o ShardListOptions) (ShardMap, error) {
	q := url.Values{}
	if o.Owner != "" {
		q.Set("owner", o.Owner)
	}
	if len(o.State) > 0 {
		q.Set("state", strings.Join(o.State, ","))
	}
	var all ShardMap
	for {
		var page ShardMap
		if err := c.get(ctx, "/control/v1/shards?"+q.Encode(), &page); err != nil {
			return ShardMap{}, err
		}
		shards := append(all.Shards, page.Shards...)
		all, all.Shards = page, shards
		if page.NextPageToken == "" {
			return all, nil
		}
		q.Set("page_token", page.NextPageToken)
	}
}

// GetShard fetches one shard.
func (c *Client) GetShard(ctx context.Context, id uint32) (ShardReply, error) {
	var r ShardReply
	err := c.get(ctx, "/control/v1/shards/"+strconv.FormatUint(uint64(id), 10), &r)
	return r, err
}

// LookupShard asks which shard key maps to and who owns it.
func (c *Client) LookupShard(ctx context.Context, key string) (ShardLookup, error) {
	var l ShardLookup
	err := c.get(ctx, "/control/v1/shards/lookup?key="+url.QueryEscape(key), &l)
	return l, err
}

// DrainNode posts a drain (or, with on false, its undo) of node. A non-leader
// answers with a *NotLeaderError: the caller may retry at its Control URL.
func (c *Client) DrainNode(ctx context.Context, node string, on bool) error {
	return c.post(ctx, "/control/v1/shards/drain", DrainRequest{Node: node, Drain: on})
}

// Rebalance asks the leader to recompute the placement now (*NotLeaderError as
// DrainNode).
func (c *Client) Rebalance(ctx context.Context) error {
	return c.post(ctx, "/control/v1/shards/rebalance", struct{}{})
}

func (c *Client) post(ctx context.Context, path string, body any) error {
	return c.send(ctx, http.MethodPost, path, body, nil)
}

// postReply posts body and decodes a 200 answer into into, unless it is nil.
func (c *Client) postReply(ctx context.Context, path string, body any, into any) error {
	return c.send(ctx, http.MethodPost, path, body, into)
}

// send makes a request with a JSON body (none when body is nil) and decodes a 200
// answer into into (unless nil). A 409 not_leader is a *NotLeaderError.
func (c *Client) send(ctx context.Context, method, path string, body, into any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		if into == nil {
			return nil
		}
		return json.Unmarshal(rb, into)
	}
	if resp.StatusCode == http.StatusConflict {
		var nl NotLeaderReply
		if json.Unmarshal(rb, &nl) == nil && nl.Error.Code == CodeNotLeader {
			return &NotLeaderError{Leader: nl.Leader, Control: nl.LeaderControl}
		}
	}
	var er ErrorReply
	if json.Unmarshal(rb, &er) != nil || er.Error.Code == "" {
		er.Error = ErrorBody{Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(rb))}
	}
	return &APIError{Status: resp.StatusCode, Body: er.Error}
}
