package lease

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// A tiny discrete-event network of lease machines for this package's tests: virtual
// real time, one local clock per node running at its own rate (drift), per-link
// partitions, random loss and latency, crashes (storage survives), restarts and
// pauses. After every event it checks the two safety invariants: at most one node
// believes it holds a valid lease, and each newly observed (holder, epoch) has a
// higher epoch than every earlier one. The real simulator lives in sim/.

// origin is where every local clock starts (local clocks are offset per node).
var origin = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type tnode struct {
	name   string
	cfg    Config
	store  *MemoryStorage
	m      *Machine // nil while crashed
	rng    *rand.Rand
	paused bool
	// The local clock reads anchorLocal + rate*(t - anchorReal) at real time t.
	rate        float64
	anchorReal  time.Duration
	anchorLocal time.Duration
	backlog     []Message // delivered while paused
	wake        time.Duration
}

type hevent struct {
	at   time.Duration
	seq  uint64
	node int
	msg  Message // delivery; nil: timer (if at == node.wake) or action
	fn   func()
}

type hqueue []hevent

func (q hqueue) Len() int { return len(q) }
func (q hqueue) Less(i, j int) bool {
	return q[i].at < q[j].at || (q[i].at == q[j].at && q[i].seq < q[j].seq)
}
func (q hqueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *hqueue) Push(x any)   { *q = append(*q, x.(hevent)) }
func (q *hqueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// acquisition is a (holder, epoch) the checker saw for the first time.
type acquisition struct {
	holder string
	epoch  uint64
	at     time.Duration // real time
	sent   uint64        // messages sent so far
}

type cluster struct {
	now    time.Duration // real virtual time since start
	nodes  []*tnode
	byName map[string]int
	q      hqueue
	seq    uint64
	rng    *rand.Rand
	down   map[[2]int]bool // directed links that drop everything
	loss   float64
	latMin time.Duration
	latMax time.Duration

	sent      uint64 // messages handed to the network
	violation error  // first safety violation seen
	acquired  []acquisition
	trace     []string // optional event trace (determinism test)
	traceOn   bool
	tap       func(from int, env Envelope) // optional: sees every message sent (an eavesdropper)
}

// newCluster builds n voters named n0..n{n-1}; tweak edits each node's Config.
func newCluster(n int, seed uint64, tweak func(*Config)) *cluster {
	c := &cluster{
		byName: map[string]int{},
		rng:    rand.New(rand.NewPCG(seed, 0x1ea5e)),
		down:   map[[2]int]bool{},
		latMin: 500 * time.Microsecond,
		latMax: 2 * time.Millisecond,
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("n%d", i))
	}
	for i, name := range names {
		cfg := DefaultConfig(name, names)
		if tweak != nil {
			tweak(&cfg)
		}
		nd := &tnode{
			name: name, cfg: cfg, store: &MemoryStorage{},
			rng:  rand.New(rand.NewPCG(seed, uint64(i)+1)),
			rate: 1, anchorLocal: time.Duration(i) * 17 * time.Hour, // unrelated offsets
		}
		c.byName[name] = i
		c.nodes = append(c.nodes, nd)
	}
	for i := range c.nodes {
		c.start(i)
	}
	return c
}

func (c *cluster) local(i int) time.Time {
	nd := c.nodes[i]
	return origin.Add(nd.anchorLocal + time.Duration(float64(c.now-nd.anchorReal)*nd.rate))
}

// realAt is the first real instant at which node i's clock reads at least t.
func (c *cluster) realAt(i int, t time.Time) time.Duration {
	nd := c.nodes[i]
	d := t.Sub(origin) - nd.anchorLocal
	r := nd.anchorReal + time.Duration(math.Ceil(float64(d)/nd.rate))
	for c.localAt(i, r).Before(t) { // float rounding
		r++
	}
	return max(r, c.now)
}

func (c *cluster) localAt(i int, r time.Duration) time.Time {
	nd := c.nodes[i]
	return origin.Add(nd.anchorLocal + time.Duration(float64(r-nd.anchorReal)*nd.rate))
}

// setRate changes node i's clock rate from now on, keeping its reading continuous.
func (c *cluster) setRate(i int, rate float64) {
	nd := c.nodes[i]
	nd.anchorLocal = c.local(i).Sub(origin)
	nd.anchorReal = c.now
	nd.rate = rate
	if nd.m != nil {
		c.rearm(i)
	}
}

func (c *cluster) push(e hevent) {
	c.seq++
	e.seq = c.seq
	heap.Push(&c.q, e)
}

// at schedules fn at real time t.
func (c *cluster) at(t time.Duration, fn func()) { c.push(hevent{at: t, node: -1, fn: fn}) }

func (c *cluster) start(i int) {
	nd := c.nodes[i]
	m, err := New(nd.cfg, nd.store, nd.rng, c.local(i))
	if err != nil {
		panic(err)
	}
	nd.m, nd.paused, nd.backlog = m, false, nil
	c.after(i)
}

func (c *cluster) crash(i int) {
	nd := c.nodes[i]
	nd.m, nd.paused, nd.backlog = nil, false, nil
	c.note("crash %s", nd.name)
}

func (c *cluster) restart(i int) {
	if c.nodes[i].m == nil {
		c.note("restart %s", c.nodes[i].name)
		c.start(i)
	}
}

func (c *cluster) pause(i int) {
	if c.nodes[i].m != nil {
		c.nodes[i].paused = true
	}
}

func (c *cluster) resume(i int) {
	nd := c.nodes[i]
	if nd.m == nil || !nd.paused {
		return
	}
	nd.paused = false
	backlog := nd.backlog
	nd.backlog = nil
	for _, msg := range backlog {
		nd.m.Step(c.local(i), msg)
	}
	nd.m.Tick(c.local(i))
	c.after(i)
}

// isolate cuts every link between the nodes of a and the rest, both ways.
func (c *cluster) isolate(a ...int) {
	in := map[int]bool{}
	for _, i := range a {
		in[i] = true
	}
	for i := range c.nodes {
		for j := range c.nodes {
			if in[i] != in[j] {
				c.down[[2]int{i, j}] = true
			}
		}
	}
}

func (c *cluster) heal() { clear(c.down) }

// after drains node i's Ready (saving State before sending, as Ready requires),
// rearms its timer and checks the invariants.
func (c *cluster) after(i int) {
	nd := c.nodes[i]
	rd := nd.m.Ready()
	if rd.State != nil {
		if err := nd.store.Save(*rd.State); err != nil {
			panic(err)
		}
	}
	for _, env := range rd.Messages {
		c.sent++
		if c.tap != nil {
			c.tap(i, env)
		}
		j, ok := c.byName[env.To]
		if !ok || c.down[[2]int{i, j}] || (c.loss > 0 && c.rng.Float64() < c.loss) {
			continue
		}
		lat := c.latMin + time.Duration(c.rng.Int64N(int64(c.latMax-c.latMin)+1))
		c.push(hevent{at: c.now + lat, node: j, msg: env.Msg})
	}
	for _, e := range rd.Events {
		c.note("%s event %d holder=%s epoch=%d", nd.name, e.Kind, e.Holder, e.Epoch)
	}
	c.rearm(i)
}

func (c *cluster) rearm(i int) {
	nd := c.nodes[i]
	d := nd.m.NextDeadline()
	if d.IsZero() {
		nd.wake = -1
		return
	}
	nd.wake = c.realAt(i, d)
	c.push(hevent{at: nd.wake, node: i})
}

func (c *cluster) note(format string, args ...any) {
	if c.traceOn {
		c.trace = append(c.trace, fmt.Sprintf("%d ", c.now)+fmt.Sprintf(format, args...))
	}
}

// run processes events up to real time until.
func (c *cluster) run(until time.Duration) {
	same := 0
	for len(c.q) > 0 && c.q[0].at <= until {
		e := heap.Pop(&c.q).(hevent)
		if e.at == c.now {
			if same++; same > 100000 {
				panic(fmt.Sprintf("livelock: %d events at %v", same, c.now))
			}
		} else {
			same = 0
		}
		c.now = e.at
		switch {
		case e.fn != nil:
			e.fn()
		case e.msg != nil:
			nd := c.nodes[e.node]
			if nd.m == nil {
				break
			}
			if nd.paused {
				nd.backlog = append(nd.backlog, e.msg)
				break
			}
			nd.m.Step(c.local(e.node), e.msg)
			c.after(e.node)
		default:
			nd := c.nodes[e.node]
			if nd.m == nil || nd.paused || e.at != nd.wake {
				break
			}
			nd.m.Tick(c.local(e.node))
			c.after(e.node)
		}
		c.check()
	}
	c.now = until
	c.check()
}

// check verifies the safety invariants at the current instant. Beliefs only become
// true at events and only lapse with time, so checking at every event suffices.
func (c *cluster) check() {
	var holders []int
	for i, nd := range c.nodes {
		if nd.m != nil && nd.m.IsLeader(c.local(i)) {
			holders = append(holders, i)
		}
	}
	if len(holders) > 1 && c.violation == nil {
		c.violation = fmt.Errorf("at %v: %d nodes believe they hold a valid lease", c.now, len(holders))
	}
	for _, i := range holders {
		nd := c.nodes[i]
		e, _ := nd.m.Fence(c.local(i))
		if n := len(c.acquired); n > 0 && c.acquired[n-1].holder == nd.name && c.acquired[n-1].epoch == e {
			continue
		}
		if n := len(c.acquired); n > 0 && e <= c.acquired[n-1].epoch && c.violation == nil {
			c.violation = fmt.Errorf("at %v: %s holds epoch %d after %s held epoch %d", c.now, nd.name, e, c.acquired[n-1].holder, c.acquired[n-1].epoch)
		}
		c.acquired = append(c.acquired, acquisition{holder: nd.name, epoch: e, at: c.now, sent: c.sent})
	}
}

// leader returns the index of the node holding a valid lease now, or -1.
func (c *cluster) leader() int {
	for i, nd := range c.nodes {
		if nd.m != nil && nd.m.IsLeader(c.local(i)) {
			return i
		}
	}
	return -1
}
