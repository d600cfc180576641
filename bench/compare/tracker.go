package compare

import (
	"slices"
	"sync"
	"time"
)

// tracker records what every node has seen, from the events each implementation
// delivers: the peers it lists alive, and the first time it saw each peer join or die.
// Times come from the implementation's own event path (our node's Event.At, stamped in
// its loop; memberlist's delegate callback), so a slow reader does not skew them.
type tracker struct {
	mu       sync.Mutex
	alive    map[string]map[string]bool      // observer -> peers it lists alive
	fullAt   map[string]time.Time            // observer -> when it first listed want peers
	want     int                             // peers each observer must list for fullAt
	joinedAt map[string]map[string]time.Time // peer -> observer -> first join seen
	deadAt   map[string]map[string]time.Time // peer -> observer -> first death seen
}

func newTracker() *tracker {
	return &tracker{
		alive:    map[string]map[string]bool{},
		fullAt:   map[string]time.Time{},
		joinedAt: map[string]map[string]time.Time{},
		deadAt:   map[string]map[string]time.Time{},
	}
}

// expect sets how many peers an observer must list alive to count as converged.
func (t *tracker) expect(peers int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.want = peers
}

func (t *tracker) up(observer, peer string, at time.Time) {
	if observer == peer {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	set := t.alive[observer]
	if set == nil {
		set = map[string]bool{}
		t.alive[observer] = set
	}
	set[peer] = true
	first(t.joinedAt, peer, observer, at)
	if t.want > 0 && len(set) >= t.want {
		if _, ok := t.fullAt[observer]; !ok {
			t.fullAt[observer] = at
		}
	}
}

func (t *tracker) down(observer, peer string, at time.Time) {
	if observer == peer {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.alive[observer], peer)
	first(t.deadAt, peer, observer, at)
}

func first(m map[string]map[string]time.Time, peer, observer string, at time.Time) {
	byObs := m[peer]
	if byObs == nil {
		byObs = map[string]time.Time{}
		m[peer] = byObs
	}
	if _, ok := byObs[observer]; !ok {
		byObs[observer] = at
	}
}

// converged returns the times at which the given observers first listed every peer.
func (t *tracker) converged(observers []string) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return pick(t.fullAt, observers)
}

// joined returns when each of observers first saw peer join (or come back alive).
func (t *tracker) joined(peer string, observers []string) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return pick(t.joinedAt[peer], observers)
}

// died returns when each of observers first saw peer dead.
func (t *tracker) died(peer string, observers []string) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return pick(t.deadAt[peer], observers)
}

func pick(m map[string]time.Time, observers []string) []time.Time {
	var out []time.Time
	for _, o := range observers {
		if at, ok := m[o]; ok {
			out = append(out, at)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// waitFor polls get until it reports all observers or timeout passes; polling reads
// only the tracker, never the nodes, so it does not disturb what is measured.
func waitFor(get func() []time.Time, all int, timeout time.Duration) []time.Time {
	end := time.Now().Add(timeout)
	for {
		ts := get()
		if len(ts) >= all || time.Now().After(end) {
			return ts
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// quantiles gives, for each fraction q, the delay from t0 until ceil(q*all) observers
// had seen the fact, or -1 if that many never did.
func quantiles(t0 time.Time, seen []time.Time, all int, qs ...float64) []float64 {
	out := make([]float64, len(qs))
	for i, q := range qs {
		k := int(float64(all)*q + 0.999999)
		k = max(k, 1)
		if k > len(seen) {
			out[i] = -1
			continue
		}
		out[i] = max(seen[k-1].Sub(t0).Seconds(), 0)
	}
	return out
}
