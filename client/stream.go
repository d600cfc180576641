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
	"time"

	"github.com/omnirelay/mesh/control"
)

// errReset ends a peers stream whose agent told it to start over (event reset):
// the same agent is asked again at once, without an id, for a fresh snapshot.
var errReset = errors.New("client: the agent's history no longer reaches our version")

// run follows the agents until Close: one session per agent in turn.
func (c *Client) run(report func(agent int, err error)) {
	failedInRow := 0
	backoff := c.cfg.Backoff
	var s resume
	for i := 0; ; i = (i + 1) % len(c.agents) {
		delivered, err := c.session(c.agents[i], &s)
		if c.ctx.Err() != nil {
			return
		}
		c.stats.failures.Add(1)
		report(i, err)
		c.log.Warn("client: agent stream failed, moving to the next agent", "agent", c.agents[i].String(), "err", err)
		if delivered {
			failedInRow, backoff = 0, c.cfg.Backoff
		}
		failedInRow++
		if failedInRow < len(c.agents) {
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

// resume is what a new stream resumes from: the last event ids seen.
type resume struct {
	peers string // EPOCH.N of the agent the members came from ("" for a snapshot)
}

// session streams peers and shards from agent until one stream fails, and returns
// that failure and whether any event arrived (so the agent was healthy).
func (c *Client) session(agent *url.URL, s *resume) (delivered bool, err error) {
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	var got bool
	errs := make(chan error, 2)
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
	go func() { errs <- c.watchShards(ctx, agent) }()
	err = <-errs
	cancel(err)
	<-errs
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
func (c *Client) watchShards(ctx context.Context, agent *url.URL) error {
	var last string
	if m := c.table.Load().m; m != nil {
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
			if t.m != nil && !m.Newer(t.m) {
				return nil
			}
			return &Table{m: m, members: t.members, sorted: t.sorted, peersVersion: t.peersVersion, agent: agent.String()}
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

// maybeReady releases New once the table has members and a map (or the agent
// said it routes no shards).
func (c *Client) maybeReady() {
	t := c.table.Load()
	if t.peersVersion != "" && (t.m != nil || c.shardsOff.Load()) {
		c.once.Do(func() { close(c.ready) })
	}
}
