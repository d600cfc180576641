package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// opTrace is one operation as the load generator saw it: every attempt, with
// the client's time and the spans of the instances on its path (timingHeader),
// so that a phase's slowest operations can be attributed.
type opTrace struct {
	Phase    string         `json:"phase"`
	Start    time.Time      `json:"start"`
	Key      string         `json:"key"`
	Shard    int64          `json:"shard"` // in the client's map; -1 without one
	Read     bool           `json:"read,omitempty"`
	Ms       float64        `json:"ms"`
	Failed   bool           `json:"failed,omitempty"`
	Attempts []attemptTrace `json:"attempts"`
}

// attemptTrace is one request sent, or one round without an endpoint to send
// it to (Endpoint "", Code "no_route").
type attemptTrace struct {
	Endpoint  string  `json:"endpoint,omitempty"`
	Hinted    bool    `json:"hinted,omitempty"` // sent where the previous refusal pointed
	Code      string  `json:"code,omitempty"`   // the retryable failure; "" when answered
	Ms        float64 `json:"ms"`
	Spans     []span  `json:"spans,omitempty"`
	BackoffMs float64 `json:"backoff_ms,omitempty"` // slept after it before the next
}

// span is one timingHeader entry: time spent at an instance.
type span struct {
	Name string  `json:"name"`
	At   string  `json:"at"`
	Ms   float64 `json:"ms"`
}

// parseSpans reads timingHeader values; entries it cannot read are skipped (the
// trace is a diagnosis, not a check).
func parseSpans(values []string) []span {
	var out []span
	for _, v := range values {
		for e := range strings.SplitSeq(v, ",") {
			parts := strings.Split(strings.TrimSpace(e), ";")
			sp := span{Name: parts[0]}
			for _, p := range parts[1:] {
				k, val, _ := strings.Cut(p, "=")
				switch k {
				case "desc":
					sp.At = val
				case "dur":
					sp.Ms, _ = strconv.ParseFloat(val, 64)
				}
			}
			if sp.Name != "" {
				out = append(out, sp)
			}
		}
	}
	return out
}

// hops splits an attempt's spans by instance, in path order: each instance's
// entries end with its total.
func hops(spans []span) []map[string]float64 {
	var out []map[string]float64
	cur := map[string]float64{}
	for _, s := range spans {
		cur[s.Name] += s.Ms
		if s.Name == spanTotal {
			out = append(out, cur)
			cur = map[string]float64{}
		}
	}
	return out
}

// Components of Breakdown.Ms, where an operation's time went. client: the load
// generator's side of each attempt (the attempt's time less the first
// instance's total: its HTTP client, the loopback, scheduling; all of it for an
// attempt without an answer); backoff: sleeping between attempts; route, open,
// lock, flock, fsync: the spans of timingHeader summed over instances; store:
// the store call less its flock and fsync (catching up with the log, encoding,
// writing); forward: a forwarded request's round trip less the next
// instance's total; server: the rest of the instances' totals.
var components = []string{"client", "backoff", spanRoute, spanOpen, spanLock, spanFlock, spanFsync, spanStore, "forward", "server"}

// split attributes one operation's time to components.
func (t *opTrace) split() map[string]float64 {
	c := map[string]float64{}
	for _, a := range t.Attempts {
		c["backoff"] += a.BackoffMs
		if a.Endpoint == "" {
			continue
		}
		hs := hops(a.Spans)
		if len(hs) == 0 {
			c["client"] += a.Ms
			continue
		}
		c["client"] += a.Ms - hs[0][spanTotal]
		for i, h := range hs {
			for _, n := range []string{spanRoute, spanOpen, spanLock, spanFlock, spanFsync} {
				c[n] += h[n]
			}
			c[spanStore] += h[spanStore] - h[spanFlock] - h[spanFsync]
			fwd := h[spanFwd]
			if i+1 < len(hs) {
				c["forward"] += fwd - hs[i+1][spanTotal]
			} else {
				c["forward"] += fwd // no answer from the next instance
			}
			c["server"] += h[spanTotal] - h[spanRoute] - h[spanOpen] - h[spanLock] - h[spanStore] - fwd
		}
	}
	return c
}

// Breakdown attributes the time of a set of a phase's operations.
type Breakdown struct {
	Ops    int     `json:"ops"`
	MinMs  float64 `json:"min_ms"` // the fastest of them
	MeanMs float64 `json:"mean_ms"`
	// Ms is the mean time per operation in each component (components).
	Ms map[string]float64 `json:"ms"`
	// Operations with more than one attempt; with an attempt an instance
	// forwarded; that waited 1 ms or more in route (for a shard moving to that
	// instance) or for the shard's log to open.
	Retried   int `json:"retried"`
	Forwarded int `json:"forwarded"`
	Waited    int `json:"waited"`
	Opening   int `json:"opening"`
	// Codes counts the refusals met, by code.
	Codes map[string]uint64 `json:"codes,omitempty"`
}

func breakdown(ts []*opTrace) *Breakdown {
	b := &Breakdown{Ops: len(ts), Ms: map[string]float64{}}
	if len(ts) == 0 {
		return b
	}
	b.MinMs = ts[0].Ms
	for _, t := range ts {
		b.MinMs = min(b.MinMs, t.Ms)
		b.MeanMs += t.Ms
		for k, v := range t.split() {
			b.Ms[k] += v
		}
		sent, fwd, waited, opening := 0, false, false, false
		for _, a := range t.Attempts {
			if a.Endpoint != "" {
				sent++
			}
			if a.Code != "" {
				if b.Codes == nil {
					b.Codes = map[string]uint64{}
				}
				b.Codes[a.Code]++
			}
			for _, s := range a.Spans {
				switch {
				case s.Name == spanFwd:
					fwd = true
				case s.Name == spanRoute && s.Ms >= 1:
					waited = true
				case s.Name == spanOpen && s.Ms >= 1:
					opening = true
				}
			}
		}
		b.Retried += btoi(sent > 1)
		b.Forwarded += btoi(fwd)
		b.Waited += btoi(waited)
		b.Opening += btoi(opening)
	}
	n := float64(len(ts))
	b.MeanMs /= n
	for k := range b.Ms {
		b.Ms[k] /= n
	}
	return b
}

// slowest returns the successful operations at or above the phase's p99 (the
// slowest 1 %, nearest rank), slowest first.
func slowest(ts []*opTrace) []*opTrace {
	var ok []*opTrace
	for _, t := range ts {
		if !t.Failed {
			ok = append(ok, t)
		}
	}
	slices.SortFunc(ok, func(a, b *opTrace) int { return cmp.Compare(b.Ms, a.Ms) })
	n := len(ok) - (int(0.99*float64(len(ok))+0.999999) - 1)
	return ok[:min(max(n, 0), len(ok))]
}

// writeTraces writes every operation's trace as JSON lines to path.
func (g *loadgen) writeTraces(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	g.mu.Lock()
	for _, p := range g.phases {
		p.mu.Lock()
		for _, t := range p.traces {
			if err == nil {
				err = enc.Encode(t)
			}
		}
		p.mu.Unlock()
	}
	g.mu.Unlock()
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
