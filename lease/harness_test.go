package lease

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/omnirelay/mesh/internal/vnet"
)

// A tiny discrete-event cluster of lease machines for this package's tests, on the
// shared virtual network (internal/vnet: virtual real time, partitions, random
// loss and latency): one local clock per node running at its own rate (drift),
// crashes (storage survives), restarts and pauses. After every event it checks the two safety invariants: at most one node
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

// acquisition is a (holder, epoch) the checker saw for the first time.
type acquisition struct {
	holder string
	epoch  uint64
	at     time.Duration // real time
	sent   uint64        // messages sent so far
}

type cluster struct {
	net    *vnet.Net[Message] // endpoint i is node i; its clock is real virtual time
	nodes  []*tnode
	byName map[string]int

	sent      uint64 // messages handed to the network
	violation error  // first safety violation seen
	acquired  []acquisition
	trace     []string // optional event trace (determinism test)
	traceOn   bool
	tap       func(from int, env Envelope) // optional: sees every message sent (an eavesdropper)
}

// newCluster builds n voters named n0..n{n-1}; tweak edits each node's Config.
func newCluster(n int, seed uint64, tweak func(*Config)) *cluster {
	net, err := vnet.NewNet[Message](vnet.Uniform(500*time.Microsecond, 2*time.Millisecond), rand.New(rand.NewPCG(seed, 0x1ea5e)))
	if err != nil {
		panic(err)
	}
	c := &cluster{net: net, byName: map[string]int{}}
	net.Deliver = c.deliver
	net.AfterEvent = c.check
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
		c.net.Add(name)
		c.nodes = append(c.nodes, nd)
	}
	for i := range c.nodes {
		c.start(i)
	}
	return c
}

// setLatency makes every one-way delay uniform in [lo, hi], keeping the loss.
func (c *cluster) setLatency(lo, hi time.Duration) {
	l := vnet.Uniform(lo, hi)
	l.Loss = c.net.Default().Loss
	if err := c.net.SetDefault(l); err != nil {
		panic(err)
	}
}

// setLoss makes every link drop a message with probability p.
func (c *cluster) setLoss(p float64) {
	l := c.net.Default()
	l.Loss = p
	if err := c.net.SetDefault(l); err != nil {
		panic(err)
	}
}

func (c *cluster) local(i int) time.Time {
	nd := c.nodes[i]
	return origin.Add(nd.anchorLocal + time.Duration(float64(c.net.Now()-nd.anchorReal)*nd.rate))
}

// realAt is the first real instant at which node i's clock reads at least t.
func (c *cluster) realAt(i int, t time.Time) time.Duration {
	nd := c.nodes[i]
	d := t.Sub(origin) - nd.anchorLocal
	r := nd.anchorReal + time.Duration(math.Ceil(float64(d)/nd.rate))
	for c.localAt(i, r).Before(t) { // float rounding
		r++
	}
	return max(r, c.net.Now())
}

func (c *cluster) localAt(i int, r time.Duration) time.Time {
	nd := c.nodes[i]
	return origin.Add(nd.anchorLocal + time.Duration(float64(r-nd.anchorReal)*nd.rate))
}

// setRate changes node i's clock rate from now on, keeping its reading continuous.
func (c *cluster) setRate(i int, rate float64) {
	nd := c.nodes[i]
	nd.anchorLocal = c.local(i).Sub(origin)
	nd.anchorReal = c.net.Now()
	nd.rate = rate
	if nd.m != nil {
		c.rearm(i)
	}
}

// at schedules fn at real time t.
func (c *cluster) at(t time.Duration, fn func()) { c.net.At(t, fn) }

// inject delivers msg to node to at real time t, past the network: a forged or
// replayed message.
func (c *cluster) inject(t time.Duration, to int, msg Message) { c.net.Inject(t, to, to, msg) }

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
func (c *cluster) isolate(a ...int) { c.net.Isolate(a...) }

func (c *cluster) heal() { c.net.Heal() }

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
		c.net.Send(i, env.To, env.Msg)
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
	wake := c.realAt(i, d)
	nd.wake = wake
	c.net.At(wake, func() {
		if nd.m == nil || nd.paused || wake != nd.wake {
			return // crashed, paused (resume ticks), or superseded by a later rearm
		}
		nd.m.Tick(c.local(i))
		c.after(i)
	})
}

func (c *cluster) note(format string, args ...any) {
	if c.traceOn {
		c.trace = append(c.trace, fmt.Sprintf("%d ", c.net.Now())+fmt.Sprintf(format, args...))
	}
}

// deliver steps node to with a message that arrived; a paused node queues it.
func (c *cluster) deliver(_, to int, msg Message) {
	nd := c.nodes[to]
	switch {
	case nd.m == nil:
	case nd.paused:
		nd.backlog = append(nd.backlog, msg)
	default:
		nd.m.Step(c.local(to), msg)
		c.after(to)
	}
}

// run processes events up to real time until, checking the invariants after each.
func (c *cluster) run(until time.Duration) {
	c.net.Run(until)
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
		c.violation = fmt.Errorf("at %v: %d nodes believe they hold a valid lease", c.net.Now(), len(holders))
	}
	for _, i := range holders {
		nd := c.nodes[i]
		e, _ := nd.m.Fence(c.local(i))
		if n := len(c.acquired); n > 0 && c.acquired[n-1].holder == nd.name && c.acquired[n-1].epoch == e {
			continue
		}
		if n := len(c.acquired); n > 0 && e <= c.acquired[n-1].epoch && c.violation == nil {
			c.violation = fmt.Errorf("at %v: %s holds epoch %d after %s held epoch %d", c.net.Now(), nd.name, e, c.acquired[n-1].holder, c.acquired[n-1].epoch)
		}
		c.acquired = append(c.acquired, acquisition{holder: nd.name, epoch: e, at: c.net.Now(), sent: c.sent})
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
