package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/mesh/client"
	"github.com/omnirelay/mesh/shard"
)

// loadConfig shapes the load.
type loadConfig struct {
	Agents   []string      // control API URLs the client follows
	Workers  int           // concurrent requests at most
	Rate     float64       // operations per second in all; 0: closed loop, each worker back to back
	Keys     int           // keys k00000..; appends pick one at random
	ReadPct  int           // percentage of operations that are reads
	Deadline time.Duration // per operation, retries included
	Attempt  time.Duration // per attempt
	RunID    string        // prefix of request ids, unique per run
	// TLS, for https:// agents and instances: the client's certificate and
	// the cluster's CA. nil: plain HTTP (loopback).
	TLS *tls.Config
}

func (c *loadConfig) defaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Keys <= 0 {
		c.Keys = 256
	}
	if c.Deadline <= 0 {
		c.Deadline = 15 * time.Second
	}
	if c.Attempt <= 0 {
		c.Attempt = 3 * time.Second
	}
	if c.RunID == "" {
		c.RunID = strconv.FormatUint(rand.Uint64(), 36)
	}
}

// phaseStats accumulates one phase, over every span it was the current one.
type phaseStats struct {
	name     string
	mu       sync.Mutex
	since    time.Time       // when its current span began
	active   time.Duration   // its spans before that
	lat      []time.Duration // successful operations, retries included
	ok       uint64
	failed   uint64 // gave up at the deadline or refused for good
	attempts uint64
	causes   map[string]uint64 // retried answers by error code ("transport" for no answer)
	traces   []*opTrace
	inflight atomic.Int64 // operations started in this phase and not done
}

// PhaseReport is one phase in the report.
type PhaseReport struct {
	Name       string  `json:"name"`
	Seconds    float64 `json:"seconds"`
	OK         uint64  `json:"ok"`
	Failed     uint64  `json:"failed"`
	Retries    uint64  `json:"retries"` // attempts beyond the first
	Throughput float64 `json:"ops_per_sec"`
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	// Causes counts the retried attempts by the answer's error code
	// ("transport": no answer, "no_route": the client knew no owner).
	Causes map[string]uint64 `json:"retry_causes,omitempty"`
	// Slowest attributes the time of the phase's slowest 1 % of operations (at
	// or above its p99), All that of all of them (trace.go).
	Slowest *Breakdown `json:"slowest_1pct,omitempty"`
	All     *Breakdown `json:"all,omitempty"`
}

// Verify is the end-of-run check of every acknowledged append.
type Verify struct {
	Acked      int `json:"acked"`      // appends acknowledged to the load generator
	Lost       int `json:"lost"`       // acknowledged but absent
	Duplicated int `json:"duplicated"` // request ids present more than once, acknowledged or not
	Unacked    int `json:"unacked"`    // present though the generator gave up on them (allowed)
	Keys       int `json:"keys"`
}

type loadgen struct {
	cfg   loadConfig
	c     *client.Client
	route func(key string) (endpoint string, m *shard.Map) // from one table of c
	httpc *http.Client
	phase atomic.Pointer[phaseStats]
	stall stalled // endpoints whose last attempt timed out

	mu     sync.Mutex
	phases []*phaseStats
	acked  map[string]string // request id -> key, acknowledged appends
	tried  map[string]string // every append id sent -> key
	seq    atomic.Uint64
}

func newLoadgen(ctx context.Context, cfg loadConfig) (*loadgen, error) {
	cfg.defaults()
	c, err := client.New(ctx, client.Config{Agents: cfg.Agents, TLS: cfg.TLS})
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Workers
	tr.TLSClientConfig = cfg.TLS
	route := func(key string) (string, *shard.Map) {
		t := c.Table()
		ep, _ := t.Endpoint(key, HTTPMetaKey)
		return ep, t.Map()
	}
	return &loadgen{cfg: cfg, c: c, route: route, httpc: &http.Client{Transport: tr, Timeout: cfg.Attempt},
		acked: map[string]string{}, tried: map[string]string{}}, nil
}

func (g *loadgen) close() { g.c.Close() }

// setPhase ends the current phase's span and makes the phase named name
// current: a new one, or one that ran before, which goes on accumulating (a
// scenario's repeated faults add up to one "fault" phase). It returns once the
// operations started in the phase it ended are done (or after 10 s), so that an
// action the caller takes next (a drain, a kill) lands only in the new phase's
// figures.
func (g *loadgen) setPhase(name string) {
	prev := g.phase.Load()
	defer func() {
		for end := time.Now().Add(10 * time.Second); prev != nil && prev.inflight.Load() > 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
	}()
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endSpan(now)
	i := slices.IndexFunc(g.phases, func(p *phaseStats) bool { return p.name == name })
	if i < 0 {
		g.phases = append(g.phases, &phaseStats{name: name, causes: map[string]uint64{}})
		i = len(g.phases) - 1
	}
	p := g.phases[i]
	p.mu.Lock()
	p.since = now
	p.mu.Unlock()
	g.phase.Store(p)
}

// endSpan closes the current phase's span; g.mu held.
func (g *loadgen) endSpan(now time.Time) {
	if cur := g.phase.Load(); cur != nil {
		cur.mu.Lock()
		if !cur.since.IsZero() {
			cur.active += now.Sub(cur.since)
			cur.since = time.Time{}
		}
		cur.mu.Unlock()
	}
}

// run issues load until ctx ends, then waits for the operations in flight.
func (g *loadgen) run(ctx context.Context) {
	var wg sync.WaitGroup
	var tick <-chan time.Time
	if g.cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / g.cfg.Rate))
		defer t.Stop()
		tick = t.C
	}
	for w := range g.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), rand.Uint64()))
			for {
				if tick != nil {
					select {
					case <-ctx.Done():
						return
					case <-tick:
					}
				} else if ctx.Err() != nil {
					return
				}
				g.one(rng)
			}
		}()
	}
	wg.Wait()
	g.mu.Lock()
	g.endSpan(time.Now())
	g.mu.Unlock()
}

// one issues one operation, retrying within the deadline, and records it in the
// phase it started in.
func (g *loadgen) one(rng *rand.Rand) {
	p := g.phase.Load()
	p.inflight.Add(1)
	for q := g.phase.Load(); q != p; q = g.phase.Load() {
		p.inflight.Add(-1) // the phase ended meanwhile: the operation counts in the next
		p = q
		p.inflight.Add(1)
	}
	defer p.inflight.Add(-1)
	key := fmt.Sprintf("k%05d", rng.IntN(g.cfg.Keys))
	read := rng.IntN(100) < g.cfg.ReadPct
	var id string
	if !read {
		id = g.cfg.RunID + "-" + strconv.FormatUint(g.seq.Add(1), 10)
		g.mu.Lock()
		g.tried[id] = key
		g.mu.Unlock()
	}
	start := time.Now()
	tr := &opTrace{Phase: p.name, Start: start, Key: key, Shard: -1, Read: read}
	if m := g.c.Table().Map(); m != nil {
		tr.Shard = int64(m.ShardForString(key))
	}
	attempts, err := g.do(key, id, start.Add(g.cfg.Deadline), nil, tr, true)
	took := time.Since(start)
	tr.Ms, tr.Failed = ms(took), err != nil
	p.mu.Lock()
	p.attempts += uint64(attempts)
	for _, a := range tr.Attempts {
		if a.Code != "" {
			p.causes[a.Code]++
		}
	}
	if err != nil {
		p.failed++
	} else {
		p.ok++
		p.lat = append(p.lat, took)
	}
	p.traces = append(p.traces, tr)
	p.mu.Unlock()
	if err == nil && id != "" {
		g.mu.Lock()
		g.acked[id] = key
		g.mu.Unlock()
	}
}

// errPermanent marks an answer a retry cannot change.
var errPermanent = errors.New("refused")

// errStalled fails an operation of the load at once when its owner's endpoint
// is in back-off (stalled).
var errStalled = errors.New("the owner's endpoint timed out recently: not sent")

// stallBackoff bounds how long an endpoint whose attempt timed out is left
// alone when the shard map does not move meanwhile.
const stallBackoff = time.Second

// stalled tracks endpoints whose last attempt timed out: a SIGSTOPped instance
// accepts connections and never answers, so without it every worker would wait
// out the attempt timeout on it in turn (docs/chaos.md, "paused owner"). An
// endpoint is stalled until stallBackoff has passed or the client holds another
// shard map than at the timeout (its shards may have moved): then one attempt
// goes through again.
type stalled struct {
	mu sync.Mutex
	at map[string]stallMark
}

type stallMark struct {
	until time.Time
	m     *shard.Map // the client's map at the timeout
}

// mark records a timeout of ep at now under map m.
func (s *stalled) mark(ep string, m *shard.Map, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]stallMark{}
	}
	s.at[ep] = stallMark{until: now.Add(stallBackoff), m: m}
}

// is reports whether ep is stalled at now under map m, and forgets it once not.
func (s *stalled) is(ep string, m *shard.Map, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.at[ep]
	if ok && (now.Before(st.until) && st.m == m) {
		return true
	}
	delete(s.at, ep)
	return false
}

// timedOut reports whether err is an attempt that got no answer in time.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// do sends one operation (an append of id when id is set, else a read) to the
// owner the client's table names, retrying with backoff (5 ms doubling to
// 250 ms, jittered) until deadline; a refusal that names the owner's endpoint is
// retried there at once. An attempt that times out stalls its endpoint
// (stalled); with shed set, an operation whose endpoint is stalled fails at
// once with errStalled (the load: its worker goes on with other keys), without
// it the operation waits out the stall by the same backoff (verify). A read's
// values land in *values; each attempt is recorded in tr when it is not nil.
func (g *loadgen) do(key, id string, deadline time.Time, values *[]string, tr *opTrace, shed bool) (attempts int, err error) {
	backoff := 5 * time.Millisecond
	var a attemptTrace // the attempt being made
	record := func() {
		if tr != nil {
			tr.Attempts = append(tr.Attempts, a)
		}
	}
	var hint string
	for {
		a = attemptTrace{Endpoint: hint, Hinted: hint != ""}
		ep, m := g.route(key)
		if a.Endpoint == "" {
			a.Endpoint = ep
		}
		hint = ""
		if a.Endpoint != "" && g.stall.is(a.Endpoint, m, time.Now()) {
			a.Code = "stalled"
			if shed {
				record()
				return attempts, errStalled
			}
			err = errStalled
		} else if a.Endpoint != "" {
			attempts++
			var retryAt string
			sent := time.Now()
			retryAt, a.Code, a.Spans, err = g.attempt(a.Endpoint, key, id, values)
			a.Ms = ms(time.Since(sent))
			if timedOut(err) {
				g.stall.mark(a.Endpoint, m, time.Now())
			}
			if err == nil || errors.Is(err, errPermanent) {
				a.Code = ""
				record()
				return attempts, err
			}
			if retryAt != "" && retryAt != a.Endpoint {
				hint = retryAt
				record()
				continue
			}
		} else {
			err = errors.New("no owner known")
			a.Code = "no_route"
		}
		if time.Now().Add(backoff).After(deadline) {
			record()
			return attempts, fmt.Errorf("deadline: %w", err)
		}
		slept := time.Now()
		time.Sleep(backoff/2 + rand.N(backoff/2+1))
		a.BackoffMs = ms(time.Since(slept))
		record()
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// attempt sends one request to ep; code names a retryable failure, spans are
// the answer's timingHeader entries.
func (g *loadgen) attempt(ep, key, id string, values *[]string) (retryAt, code string, spans []span, err error) {
	u := ep + "/kv/" + url.PathEscape(key)
	var req *http.Request
	if id == "" {
		req, err = http.NewRequest(http.MethodGet, u, nil)
	} else {
		req, err = http.NewRequest(http.MethodPost, u+"?op=append&id="+url.QueryEscape(id), bytes.NewReader([]byte(id)))
	}
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: %v", errPermanent, err)
	}
	resp, err := g.httpc.Do(req)
	if err != nil {
		return "", "transport", nil, err
	}
	defer resp.Body.Close()
	spans = parseSpans(resp.Header[timingHeader])
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", "transport", spans, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		if values != nil {
			var res result
			if err := json.Unmarshal(b, &res); err != nil {
				return "", "transport", spans, err
			}
			*values = res.Values
		}
		return "", "", spans, nil
	case resp.StatusCode == http.StatusServiceUnavailable:
		var e apiError
		_ = json.Unmarshal(b, &e)
		return e.Endpoint, e.Error.Code, spans, fmt.Errorf("%s: %s", e.Error.Code, e.Error.Message)
	}
	return "", "", spans, fmt.Errorf("%w: %s: %s", errPermanent, resp.Status, bytes.TrimSpace(b))
}

// report summarizes every phase.
func (g *loadgen) report() []PhaseReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []PhaseReport
	for _, p := range g.phases {
		p.mu.Lock()
		lat := slices.Clone(p.lat)
		r := PhaseReport{Name: p.name, Seconds: p.active.Seconds(), OK: p.ok, Failed: p.failed}
		if p.attempts > p.ok+p.failed {
			r.Retries = p.attempts - p.ok - p.failed
		}
		if len(p.causes) > 0 {
			r.Causes = maps.Clone(p.causes)
		}
		r.Slowest, r.All = breakdown(slowest(p.traces)), breakdown(p.traces)
		p.mu.Unlock()
		if r.Seconds > 0 {
			r.Throughput = float64(r.OK) / r.Seconds
		}
		slices.Sort(lat)
		r.P50, r.P90, r.P99 = ms(quantile(lat, 0.50)), ms(quantile(lat, 0.90)), ms(quantile(lat, 0.99))
		if len(lat) > 0 {
			r.Max = ms(lat[len(lat)-1])
		}
		out = append(out, r)
	}
	return out
}

// quantile is the nearest-rank q-quantile of sorted; 0 when empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// verify reads every key appended to and checks each acknowledged append is
// present exactly once.
func (g *loadgen) verify() (Verify, error) {
	g.mu.Lock()
	keys := map[string]bool{}
	for _, k := range g.tried {
		keys[k] = true
	}
	acked := len(g.acked)
	g.mu.Unlock()
	v := Verify{Acked: acked, Keys: len(keys)}
	seen := map[string]int{}
	for k := range keys {
		var vals []string
		if _, err := g.do(k, "", time.Now().Add(g.cfg.Deadline), &vals, nil, false); err != nil {
			return v, fmt.Errorf("verify: reading %s: %w", k, err)
		}
		for _, id := range vals {
			seen[id]++
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	tally(&v, g.tried, g.acked, seen)
	return v, nil
}

// tally counts, from how often each request id was found, the acknowledged ids
// missing, the ids present more than once, and those present unacknowledged.
// Only ids this run sent (tried) count: the store keeps earlier runs' values.
func tally(v *Verify, tried, acked map[string]string, seen map[string]int) {
	for id := range acked {
		if seen[id] == 0 {
			v.Lost++
		}
	}
	for id, c := range seen {
		if _, ok := tried[id]; !ok {
			continue
		}
		if c > 1 {
			v.Duplicated++
		}
		if _, ok := acked[id]; !ok {
			v.Unacked++
		}
	}
}
