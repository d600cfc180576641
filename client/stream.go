package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/omnirelay/mesh/control"
)

// errReset ends a peers stream whose agent told it to start over (event reset):
// the same agent is asked again at once, without an id, for a fresh snapshot.
var errReset = errors.New("client: the agent's history no longer reaches our version")

// run follows the agents until Close: one session per agent in turn.
func (c *Client) run(report func(agent string, err error)) {
	agents := c.agents
	failedInRow := 0
	backoff := c.cfg.Backoff
	var s resume
	for i := 0; ; i = (i + 1) % len(agents) {
		delivered, err := c.session(agents[i], &s)
		if c.ctx.Err() != nil {
			return
		}
		var sw *switchError
		if errors.As(err, &sw) {
			c.log.Info("client: following the active cluster", "cluster", sw.cluster, "version", sw.version, "agents", len(sw.to))
			agents, i, s, failedInRow, backoff = followAgents(sw.to, agents), -1, resume{}, 0, c.cfg.Backoff
			continue
		}
		c.stats.failures.Add(1)
		report(agents[i].String(), err)
		c.log.Warn("client: agent stream failed, moving to the next agent", "agent", agents[i].String(), "err", err)
		if delivered {
			failedInRow, backoff = 0, c.cfg.Backoff
		}
		failedInRow++
		if failedInRow < len(agents) {
			continue // another agent may be up: try it now
		}
		// Every agent failed in a row: wait before the next round.
		wait := time.Duration(float64(backoff) * (0.75 + 0.5*rand.Float64()))
		backoff = min(2*backoff, c.cfg.BackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// followAgents is the agent list after a switch: the new cluster's agents first,
// then the previous ones (a fallback should the new cluster die whole), without
// repeats, at most maxFollowAgents.
func followAgents(to, prev []*url.URL) []*url.URL {
	out := slices.Clone(to)
	for _, u := range prev {
		if len(out) >= maxFollowAgents {
			break
		}
		if !slices.ContainsFunc(out, func(v *url.URL) bool { return v.String() == u.String() }) {
			out = append(out, u)
		}
	}
	return out
}

// switchError ends a session whose agent names another cluster active.
type switchError struct {
	cluster string
	version uint64
	to      []*url.URL
}

func (e *switchError) Error() string {
	return fmt.Sprintf("cluster %s is active at failover version %d", e.cluster, e.version)
}

// resume is what a new stream resumes from: the last event ids seen.
type resume struct {
	peers string // EPOCH.N of the agent the members came from ("" for a snapshot)
}

// session streams peers and shards (and, with FollowActive, the clusters view,
// first) from agent until one stream fails, and returns that failure and whether
// any event arrived (so the agent was healthy).
func (c *Client) session(agent *url.URL, s *resume) (delivered bool, err error) {
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	var got bool
	errs := make(chan error, 3)
	streams := 2
	var self string // the agent's cluster: a map from another cluster is not compared with it
	if c.cfg.FollowActive {
		streams++
		first := make(chan string, 1)
		go func() { errs <- c.watchClusters(ctx, agent, first) }()
		select {
		case self = <-first:
		case err = <-errs:
			return false, err
		}
	}
	go func() {
		for {
			err := c.watchPeers(ctx, agent, s, &got)
			if errors.Is(err, errReset) {
				s.peers = ""
				continue
			}
			errs <- fmt.Errorf("peers watch: %w", err)
			return
		}
	}()
	go func() { errs <- c.watchShards(ctx, agent, self) }()
	err = <-errs
	cancel(err)
	for range streams - 1 {
		<-errs
	}
	return got, err
}

// stream opens a watch at path and calls on for every event until the stream
// ends, the context ends, or IdleTimeout passes without a line.
// settle, if not nil, runs after an event when nothing more is buffered: the end
// of a burst, where a batch of events is published as one table.
func (c *Client) stream(ctx context.Context, agent *url.URL, path, lastID string, on func(ev sseEvent) error, settle func()) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(c.cfg.IdleTimeout, func() {
		cancel(fmt.Errorf("nothing received for %v (IdleTimeout)", c.cfg.IdleTimeout))
	})
	defer idle.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, agent.JoinPath(path).String()+"?watch=true", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	c.stats.connects.Add(1)
	resp, err := c.hc.Do(req)
	if err != nil {
		return cause(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var ev sseEvent
	pending := 0 // events since the last settle
	for {
		line, err := readLine(r, c.cfg.MaxEventBytes)
		if err != nil {
			return cause(ctx, err)
		}
		idle.Reset(c.cfg.IdleTimeout)
		switch {
		case len(line) == 0: // end of an event
			if ev.name != "" || len(ev.data) > 0 {
				if err := on(ev); err != nil {
					return err
				}
				if pending++; settle != nil && (r.Buffered() == 0 || pending >= maxBurst) {
					settle()
					pending = 0
				}
			}
			ev = sseEvent{id: ev.id}
		case line[0] == ':': // comment: heartbeat
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "id":
				ev.id = string(value)
			case "event":
				ev.name = string(value)
			case "data":
				if len(ev.data)+len(value) > c.cfg.MaxEventBytes {
					return fmt.Errorf("an event of more than %d bytes (MaxEventBytes)", c.cfg.MaxEventBytes)
				}
				if ev.data != nil {
					ev.data = append(ev.data, '\n')
				}
				ev.data = append(ev.data, value...)
			}
		}
	}
}

// maxBurst is how many events a stream applies at most before it publishes them,
// so an agent that never pauses still has its changes seen.
const maxBurst = 256

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, name string
	data     []byte
}

// readLine reads one line (without its \n or \r\n) of at most limit bytes.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > limit+2 {
			return nil, fmt.Errorf("a line of more than %d bytes (MaxEventBytes)", limit)
		}
		line = append(line, frag...)
		if err == nil {
			return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")), nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // a watch stream never ends by itself
			}
			return nil, err
		}
	}
}

// cause prefers the reason ctx was cancelled (idle, the other stream failed)
// over the read error it caused.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return err
}

// apiError reads a non-200 answer as a *control.APIError (bounded body).
func apiError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var er control.ErrorReply
	if json.Unmarshal(body, &er) != nil || er.Error.Code == "" {
		er.Error = control.ErrorBody{Code: http.StatusText(resp.StatusCode), Message: string(bytes.TrimSpace(body))}
	}
	return &control.APIError{Status: resp.StatusCode, Body: er.Error}
}

// watchPeers follows GET /control/v1/peers?watch=true, resuming from s.peers. It
// applies events to its own copy of the members and publishes a table at the end
// of each burst, so a storm of n events costs one copy of the list, not n.
func (c *Client) watchPeers(ctx context.Context, agent *url.URL, s *resume, got *bool) error {
	var members map[string]Member // the stream's view, nil until its first snapshot
	if s.peers != "" {
		members = maps.Clone(c.table.Load().members) // resuming: the events continue this view
	}
	dirty := false
	return c.stream(ctx, agent, "/control/v1/peers", s.peers, func(ev sseEvent) error {
		switch ev.name {
		case "snapshot":
			var snap control.WatchSnapshot
			if err := json.Unmarshal(ev.data, &snap); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			members = make(map[string]Member, len(snap.Peers))
			for _, p := range snap.Peers {
				members[p.Name] = p
			}
		case "reset":
			return errReset
		case "join", "update", "suspect", "alive", "dead", "left", "meta":
			if members == nil {
				return fmt.Errorf("event %s before a snapshot", ev.name)
			}
			var ch control.Change
			if err := json.Unmarshal(ev.data, &ch); err != nil {
				return fmt.Errorf("event %s: %w", ev.name, err)
			}
			members[ch.Peer.Name] = ch.Peer
		default:
			return nil // a kind this client does not know: skip it
		}
		if _, err := control.ParseVersion(ev.id); err != nil {
			return fmt.Errorf("event %s: id: %w", ev.name, err)
		}
		s.peers, *got, dirty = ev.id, true, true
		return nil
	}, func() {
		if !dirty {
			return
		}
		dirty = false
		published := maps.Clone(members)
		c.swap(func(old *Table) *Table { return old.withMembers(published, s.peers, agent.String()) })
		c.maybeReady()
	})
}

// watchShards follows GET /control/v1/shards?watch=true, resuming from the held
// map's id, and installs every newer map that decodes and checks. An agent
// without shard routing (404 shards_off) leaves it waiting for the session to end.
func (c *Client) watchShards(ctx context.Context, agent *url.URL, self string) error {
	var last string
	if t := c.table.Load(); t.m != nil && t.mapCluster == self {
		m := t.m
		last = fmt.Sprintf("%d.%d", m.Epoch(), m.Version())
	}
	err := c.stream(ctx, agent, "/control/v1/shards", last, func(ev sseEvent) error {
		if ev.name != "map" {
			return nil
		}
		var sm control.ShardMap
		if err := json.Unmarshal(ev.data, &sm); err != nil {
			c.stats.badMaps.Add(1)
			return fmt.Errorf("%w: %v", ErrBadMap, err)
		}
		old := c.table.Load().m
		if c.table.Load().mapCluster != self {
			old = nil // another cluster's map: its versions do not compare with ours
		}
		if old != nil && !(sm.Epoch > old.Epoch() || (sm.Epoch == old.Epoch() && sm.Version > old.Version())) {
			if sm.Epoch == old.Epoch() && sm.Version == old.Version() && sm.Checksum == fmt.Sprintf("%016x", old.Checksum()) {
				return nil // the map we hold
			}
			c.stats.stale.Add(1) // a lagging agent (or one from a deposed leader): keep ours
			return nil
		}
		m, err := decodeMap(sm, old)
		if err != nil {
			c.stats.badMaps.Add(1)
			c.log.Warn("client: dropped a shard map", "agent", agent.String(), "epoch", sm.Epoch, "version", sm.Version, "err", err)
			return err
		}
		c.stats.maps.Add(1)
		c.swap(func(t *Table) *Table {
			if t.m != nil && t.mapCluster == self && !m.Newer(t.m) {
				return nil
			}
			n := *t
			n.m, n.mapCluster, n.agent = m, self, agent.String()
			return &n
		})
		c.maybeReady()
		return nil
	}, nil)
	var ae *control.APIError
	if errors.As(err, &ae) && ae.Body.Code == control.CodeShardsOff {
		c.shardsOff.Store(true)
		c.maybeReady()
		<-ctx.Done()
		return context.Cause(ctx)
	}
	return fmt.Errorf("shards watch: %w", err)
}

// watchClusters follows GET /control/v1/clusters?watch=true (FollowActive). The
// agent's cluster of its first view goes to first ("" for an agent without
// federation, which leaves the stream waiting for the session to end). A view
// naming another cluster active and reachable ends the session with a
// *switchError to that cluster's agents.
func (c *Client) watchClusters(ctx context.Context, agent *url.URL, first chan<- string) error {
	sent := false
	err := c.stream(ctx, agent, "/control/v1/clusters", "", func(ev sseEvent) error {
		if ev.name != "clusters" {
			return nil
		}
		var v control.Clusters
		if err := json.Unmarshal(ev.data, &v); err != nil {
			return fmt.Errorf("clusters: %w", err)
		}
		if !sent {
			first <- v.Self
			sent = true
		}
		return c.follow(v)
	}, nil)
	var ae *control.APIError
	if errors.As(err, &ae) && ae.Body.Code == control.CodeClustersOff {
		if !sent {
			first <- ""
		}
		<-ctx.Done()
		return context.Cause(ctx)
	}
	return fmt.Errorf("clusters watch: %w", err)
}

// follow records an agent's clusters view in the table, and returns a
// *switchError when it names another cluster active at a version no lower than
// the one followed, with a reachable gateway and at least one usable control URL.
func (c *Client) follow(v control.Clusters) error {
	var version uint64
	for _, d := range v.Clusters {
		if d.ID == v.Active {
			version = d.Version
		}
	}
	held := c.table.Load().cluster
	if v.Active == "" || version < held.Version {
		return nil // no active cluster, or a lagging agent: keep what we follow
	}
	now := Cluster{Self: v.Self, Active: v.Active, Version: version}
	c.swap(func(t *Table) *Table {
		if t.cluster == now {
			return nil
		}
		n := *t
		n.cluster = now
		return &n
	})
	if v.Active == v.Self {
		return nil
	}
	for _, e := range v.Endpoints {
		if e.Cluster != v.Active || !e.Reachable {
			continue
		}
		var to []*url.URL
		for _, a := range e.Control[:min(len(e.Control), maxFollowAgents)] {
			u, err := c.cfg.parseAgent(a)
			if err != nil {
				c.log.Warn("client: skipped a relayed control URL", "cluster", e.Cluster, "err", err)
				continue
			}
			to = append(to, u)
		}
		if len(to) > 0 {
			return &switchError{cluster: v.Active, version: version, to: to}
		}
	}
	return nil
}

// maybeReady releases New once the table has members and a map (or the agent
// said it routes no shards).
func (c *Client) maybeReady() {
	t := c.table.Load()
	if t.peersVersion != "" && (t.m != nil || c.shardsOff.Load()) {
		c.once.Do(func() { close(c.ready) })
	}
}
