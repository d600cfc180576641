package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/wire"
)

// Shards in the simulator. Every node runs a host with lease and shard on (the
// leader scenario's stack plus Config.Shard); the lease holder drives the shard
// Controller.
//
// The safety check is exact in the way the leader check is: a node's belief that it
// may serve a shard (stack.Serving on its own clock) only turns true or is extended
// while it handles an input, and turns false only by time passing. So checking,
// after every input of a node, each shard it serves against every other running
// node's belief on that node's own clock sees every instant two beliefs overlap.
//
// The synthetic workload is a client outside the cluster (it reaches every node,
// partitions aside) that issues keyed messages at a fixed rate. For each attempt
// it reads the map of a random running member, sends the message to the shard's
// owner there, and the owner processes it only if Serving holds on its own clock
// when the message arrives (a paused owner handles it when it wakes). A rejected
// attempt, or one whose owner crashed, is retried at the next client step; one
// left unanswered (a paused owner) is retried after clientTimeout, while the first
// attempt stays queued; the node drops it unprocessed once it waited nodeDeadline
// (a request deadline, on the node's clock). An owner processes a message id once
// (it de-duplicates its own repeats); the same id processed by two different nodes
// is a duplicate delivery, and an id never processed by the end is lost. Without
// the deadline, a paused owner that wakes, loses and regains a shard would process
// an attempt the client already had served elsewhere: an at-least-once client, not
// an ownership fault, which is what this run measures.

// Workload constants.
const (
	clientStep    = 10 * time.Millisecond  // the client's loop; also the one-way delay to a node
	clientRate    = 200                    // messages issued per second
	clientTimeout = 300 * time.Millisecond // unanswered attempts are retried after this
	// nodeDeadline: a node drops an attempt that waited this long in its queue (a
	// request deadline), so an attempt the client gave up on is never processed
	// after its retry; the gap to clientTimeout covers the delay and drift.
	nodeDeadline = clientTimeout - 3*clientStep
)

// shardHost is the shard side of internal/stack.Stack.
type shardHost interface {
	ShardMap() *shard.Map
	Serving(now time.Time, s uint32) bool
	OwnedShards(now time.Time) []uint32
	DrainNode(now time.Time, node string, on bool) error
	ShardStats() (shard.OwnerStats, shard.ControllerStats)
}

// shardStack is a lease stack with shards on; its outputs feed the shard watch.
type shardStack struct {
	*leaseStack
	watch *shardWatch
}

func (st *shardStack) Ready() stack.Ready {
	r := st.leaseStack.Ready()
	st.watch.observe(st, r)
	return r
}

// shardWatch is the ground-truth checker of a shard run.
type shardWatch struct {
	s          *Sim
	violations int // instants at which two nodes believed they served one shard
	first      string
	events     int // shard events seen, all nodes
}

func (w *shardWatch) observe(st *shardStack, r stack.Ready) {
	if w.s == nil {
		return
	}
	w.events += len(r.ShardEvents)
	i, ok := w.s.byName[st.name]
	if !ok || !w.s.nodes[i].up {
		return
	}
	held := st.OwnedShards(w.s.localTime(w.s.nodes[i]))
	if len(held) == 0 {
		return
	}
	for j, n := range w.s.nodes {
		if int32(j) == i || !n.up {
			continue
		}
		sh, ok := n.stack.(shardHost)
		if !ok {
			continue
		}
		t := w.s.localTime(n)
		for _, s := range held {
			if sh.Serving(t, s) {
				w.violations++
				if w.first == "" {
					w.first = fmt.Sprintf("at %v: %s and %s both serve shard %d", time.Duration(w.s.now), st.name, n.name, s)
				}
			}
		}
	}
}

// shardFactory returns a factory of production stacks with leadership and shards
// on, and the watches to attach once the Sim exists.
func shardFactory(profile string, lifeguard, signed bool, voters []string, lc lease.Config, sc shard.Config) (StackFactory, *leaseWatch, *shardWatch) {
	lw := &leaseWatch{storages: map[string]*lease.MemoryStorage{}}
	sw := &shardWatch{}
	in := wire.NewInterner(1 << 16)
	return func(name, addr string, rng *rand.Rand, now time.Time) (Stack, error) {
		swc, err := SwimConfig(profile, name, addr, lifeguard)
		if err != nil {
			return nil, err
		}
		swc.Interner = in
		if signed {
			swc.Auth = simAuthority.Node(name)
		}
		l := lc
		l.Self, l.Voters = name, slices.Clone(voters)
		st := lw.storages[name]
		if st == nil {
			st = &lease.MemoryStorage{}
			lw.storages[name] = st
		}
		s := sc
		h, err := stack.New(stack.Config{Swim: swc, Lease: &l, LeaseStorage: st, Shard: &s}, rng, now)
		if err != nil {
			return nil, err
		}
		ls := &leaseStack{hostStack: hostStack{h}, name: name, storage: st, watch: lw}
		return &shardStack{leaseStack: ls, watch: sw}, nil
	}, lw, sw
}

// fillShard applies the shard defaults of Options and checks them.
func (o *Options) fillShard() error {
	if o.Shard.Shards == 0 {
		o.Shard = shard.DefaultConfig()
	}
	if err := o.Shard.Validate(); err != nil {
		return fmt.Errorf("%w: Shard: %w", ErrConfig, err)
	}
	return nil
}

// shardOf is node i's shard side, nil if it is down or has none.
func (s *Sim) shardOf(i int) shardHost {
	n := s.nodes[i]
	if !n.up {
		return nil
	}
	sh, _ := n.stack.(shardHost)
	return sh
}

// --- the client ---

type attempt struct {
	id     int
	node   int32
	gen    uint32
	arrive int64
	sent   int64
}

type shardClient struct {
	r         *runner
	rng       *rand.Rand
	next      int              // next message id
	keys      [][]byte         // per id
	doneBy    map[int][]string // id → distinct nodes that processed it
	pending   []int            // ids waiting for (re)sending
	inflight  []attempt
	lastTry   map[int]int64 // id → when its latest attempt left
	processed []int64       // virtual time of each first processing
	carry     float64
	issuing   bool
	retries   []int64 // virtual time of each retry (rejected, reset or timed out)
}

func newShardClient(r *runner) *shardClient {
	return &shardClient{r: r, rng: Stream(r.o.Seed, "shard-client"), doneBy: map[int][]string{}, lastTry: map[int]int64{}, issuing: true}
}

// run drives the cluster and the client for d.
func (c *shardClient) run(d time.Duration) {
	s := c.r.s
	end := s.now + int64(d)
	for s.now < end {
		s.RunFor(clientStep)
		c.step()
	}
}

// runUntil drives the cluster and the client until cond holds or max passed.
func (c *shardClient) runUntil(max time.Duration, cond func() bool) bool {
	s := c.r.s
	end := s.now + int64(max)
	for s.now < end {
		if cond() {
			return true
		}
		s.RunFor(clientStep)
		c.step()
	}
	return cond()
}

func (c *shardClient) step() {
	s := c.r.s
	if c.issuing {
		c.carry += clientRate * clientStep.Seconds()
		for ; c.carry >= 1; c.carry-- {
			key := make([]byte, 8)
			for i := range key {
				key[i] = byte(c.rng.Uint32())
			}
			c.keys = append(c.keys, key)
			c.pending = append(c.pending, c.next)
			c.next++
		}
	}
	// Deliver what arrived.
	keep := c.inflight[:0]
	for _, a := range c.inflight {
		n := s.nodes[a.node]
		if a.arrive > s.now {
			keep = append(keep, a)
			continue
		}
		if !n.up || n.gen != a.gen {
			c.retry(a.id) // connection reset: the process is gone with its queue
			continue
		}
		if n.paused > s.now {
			keep = append(keep, a) // handled when it wakes
			if s.now-a.sent >= int64(clientTimeout) && c.lastTry[a.id] == a.sent && !c.done(a.id) {
				c.retry(a.id)
			}
			continue
		}
		if time.Duration(n.local(s.now)-n.local(a.arrive)) >= nodeDeadline {
			// Past its deadline on the node's clock: dropped unprocessed, as the
			// client has retried (or is about to) elsewhere.
			if c.lastTry[a.id] == a.sent && !c.done(a.id) {
				c.retry(a.id)
			}
			continue
		}
		sh := s.shardOf(int(a.node))
		m := sh.ShardMap()
		sent := false
		if m != nil {
			sd := m.ShardFor(c.keys[a.id])
			if sh.Serving(s.localTime(n), sd) {
				c.process(a.id, n.name)
				sent = true
			}
		}
		if !sent && c.lastTry[a.id] == a.sent && !c.done(a.id) {
			c.retry(a.id) // rejected
		}
	}
	c.inflight = keep
	// Send what waits.
	live := s.LiveNodes()
	if len(live) == 0 {
		return
	}
	wait := c.pending[:0]
	for _, id := range c.pending {
		if c.done(id) {
			continue
		}
		reader := s.shardOf(live[c.rng.IntN(len(live))])
		var m *shard.Map
		if reader != nil {
			m = reader.ShardMap()
		}
		if m == nil {
			wait = append(wait, id)
			continue
		}
		owner := m.Owner(m.ShardFor(c.keys[id]))
		j, ok := s.byName[owner]
		if owner == "" || !ok {
			wait = append(wait, id)
			continue
		}
		c.lastTry[id] = s.now
		c.inflight = append(c.inflight, attempt{id: id, node: j, gen: s.nodes[j].gen, arrive: s.now + int64(clientStep), sent: s.now})
	}
	c.pending = wait
}

func (c *shardClient) done(id int) bool { return len(c.doneBy[id]) > 0 }

func (c *shardClient) retry(id int) {
	c.retries = append(c.retries, c.r.s.now)
	if !slices.Contains(c.pending, id) {
		c.pending = append(c.pending, id)
	}
}

func (c *shardClient) process(id int, node string) {
	by := c.doneBy[id]
	if slices.Contains(by, node) {
		return // the owner de-duplicates its own repeats
	}
	if len(by) == 0 {
		c.processed = append(c.processed, c.r.s.now)
	}
	c.doneBy[id] = append(by, node)
}

// rate is the messages first processed per second within [from, to).
func (c *shardClient) rate(from, to int64) float64 {
	if to <= from {
		return 0
	}
	return float64(c.count(c.processed, from, to)) / time.Duration(to-from).Seconds()
}

// count is how many of times fall within [from, to).
func (c *shardClient) count(times []int64, from, to int64) int {
	n := 0
	for _, t := range times {
		if t >= from && t < to {
			n++
		}
	}
	return n
}

// finish stops issuing, lets retries complete (at most max), and records
// duplicate and lost messages.
func (c *shardClient) finish(max time.Duration) {
	c.issuing = false
	c.runUntil(max, func() bool { return len(c.pending) == 0 && len(c.inflight) == 0 })
	dup, lost := 0, 0
	for id := 0; id < c.next; id++ {
		switch len(c.doneBy[id]) {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	c.r.res.DuplicateDeliveries = intp(dup)
	c.r.res.LostMessages = intp(lost)
	c.r.res.ClientMessages = intp(c.next)
}

// --- scenario helpers ---

// leaderShardMap is the map of the node holding the lease, nil if none.
func (r *runner) leaderShardMap() (*shard.Map, int) {
	ls, _ := r.s.Leaders()
	if len(ls) != 1 {
		return nil, -1
	}
	i := int(r.s.byName[ls[0]])
	sh := r.s.shardOf(i)
	if sh == nil {
		return nil, -1
	}
	return sh.ShardMap(), i
}

// shardsSteady reports whether the leader's map has every shard steady on its
// target and every shard served by its owner right now.
func (r *runner) shardsSteady() bool {
	m, _ := r.leaderShardMap()
	if m == nil {
		return false
	}
	for sd := uint32(0); sd < uint32(m.Shards()); sd++ {
		o := m.Owner(sd)
		if o == "" || m.State(sd) != shard.StateSteady || o != m.Target(sd) {
			return false
		}
		j, ok := r.s.byName[o]
		if !ok {
			return false
		}
		sh := r.s.shardOf(int(j))
		if sh == nil || !sh.Serving(r.s.localTime(r.s.nodes[j]), sd) {
			return false
		}
	}
	return true
}

// owners snapshots the leader map's owner per shard.
func (r *runner) owners() []string {
	m, _ := r.leaderShardMap()
	if m == nil {
		return nil
	}
	out := make([]string, m.Shards())
	for sd := range out {
		out[sd] = m.Owner(uint32(sd))
	}
	return out
}

func movedFraction(a, b []string) float64 {
	if len(a) == 0 || len(a) != len(b) {
		return -1
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return float64(n) / float64(len(a))
}

// mapsAgree reports whether every running node holds a map of the same epoch and
// version.
func (r *runner) mapsAgree() bool {
	var e, v uint64
	first := true
	for _, i := range r.s.LiveNodes() {
		sh := r.s.shardOf(i)
		if sh == nil {
			continue
		}
		m := sh.ShardMap()
		if m == nil {
			return false
		}
		if first {
			e, v, first = m.Epoch(), m.Version(), false
		} else if m.Epoch() != e || m.Version() != v {
			return false
		}
	}
	return !first
}

// servedBy reports whether every shard of list is served by a running node other
// than not.
func (r *runner) servedBy(list []uint32, not string) bool {
	for _, sd := range list {
		ok := false
		for _, i := range r.s.LiveNodes() {
			if r.s.Name(i) == not {
				continue
			}
			if sh := r.s.shardOf(i); sh != nil && sh.Serving(r.s.localTime(r.s.nodes[i]), sd) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// settleShards waits for a leader and a steady map, then drifts every clock.
func (r *runner) settleShards(c *shardClient) error {
	if _, err := r.leaderIndex(30 * time.Second); err != nil {
		return err
	}
	if !c.runUntil(60*time.Second, r.shardsSteady) {
		return fmt.Errorf("sim: shards not steady 60 s after the leader was elected")
	}
	r.driftAll()
	return nil
}

// pickNonLeader picks a random running node that does not hold the lease.
func (r *runner) pickNonLeader() int {
	ls, _ := r.s.Leaders()
	var cand []int
	for _, i := range r.s.LiveNodes() {
		if !slices.Contains(ls, r.s.Name(i)) {
			cand = append(cand, i)
		}
	}
	return cand[r.rng.IntN(len(cand))]
}

func (r *runner) finishShards(c *shardClient) {
	c.finish(30 * time.Second)
	r.s.RunUntilTrue(r.o.Duration, 100*time.Millisecond, r.s.Converged) // membership settles too
	r.res.ShardViolations = intp(r.shards.violations)
	if r.res.FirstViolation == "" {
		r.res.FirstViolation = r.shards.first
	}
	r.res.ShardEvents = intp(r.shards.events)
	var stale uint64
	for _, i := range r.s.LiveNodes() {
		if sh := r.s.shardOf(i); sh != nil {
			os, _ := sh.ShardStats()
			stale += os.StaleEpoch
		}
	}
	r.res.StaleEpochRejected = &stale
	lv, _ := r.s.LeaseViolations()
	r.res.SafetyViolations = intp(lv)
}

// --- scenarios ---

func runReshardJoin(r *runner) error {
	s := r.s
	c := newShardClient(r)
	if err := r.settleShards(c); err != nil {
		return err
	}
	c.run(2 * time.Second)
	before := r.owners()
	seeds := r.seeds(-1, 3)
	i, err := s.AddNode()
	if err != nil {
		return err
	}
	s.Join(i, seeds)
	t0 := s.now
	c.runUntil(r.o.Duration, func() bool {
		m, _ := r.leaderShardMap()
		return m != nil && len(m.ShardsOf(s.Name(i))) > 0 && r.shardsSteady()
	})
	r.res.ReshardMs = ms(time.Duration(s.now - t0))
	r.res.MovedFraction = floatp(movedFraction(before, r.owners()))
	c.run(2 * time.Second)
	r.finishShards(c)
	return nil
}

func runReshardCrash(r *runner) error {
	s := r.s
	c := newShardClient(r)
	if err := r.settleShards(c); err != nil {
		return err
	}
	c.run(2 * time.Second)
	before := r.owners()
	v := r.pickNonLeader()
	m, _ := r.leaderShardMap()
	lost := m.ShardsOf(s.Name(v))
	s.RunFor(time.Duration(r.rng.Int64N(int64(time.Second)))) // a random point of the renewal cycle
	t0 := s.now
	s.Crash(v)
	if c.runUntil(r.o.Duration, func() bool { return r.servedBy(lost, s.Name(v)) }) {
		r.res.ReassignMs = ms(time.Duration(s.now - t0))
	}
	c.runUntil(r.o.Duration, r.shardsSteady)
	r.res.MovedFraction = floatp(movedFraction(before, r.owners()))
	// A partition of one more node (not the leader), healed after 5 s: how long
	// until every member holds the same map version.
	p := r.pickNonLeader()
	s.Partition([]int{p})
	c.run(5 * time.Second)
	s.Heal()
	t1 := s.now
	if c.runUntil(r.o.Duration, r.mapsAgree) {
		r.res.MapConvergence = ms(time.Duration(s.now - t1))
	}
	c.runUntil(r.o.Duration, r.shardsSteady)
	r.finishShards(c)
	return nil
}

func runDrain(r *runner) error {
	s := r.s
	c := newShardClient(r)
	if err := r.settleShards(c); err != nil {
		return err
	}
	const window = 5 * time.Second
	// Attempts issued before the shards were first granted are still being
	// retried when they settle: let that backlog clear so "before" is the
	// offered rate.
	c.run(window)
	tb := s.now
	c.run(window)
	before := r.owners()
	v := r.pickNonLeader()
	_, l := r.leaderShardMap()
	if l < 0 {
		return fmt.Errorf("sim: no leader at drain")
	}
	td := s.now
	if err := s.shardOf(l).DrainNode(s.localTime(s.nodes[l]), s.Name(v), true); err != nil {
		return err
	}
	s.afterInput(int32(l), s.now)
	c.runUntil(r.o.Duration, func() bool {
		m, _ := r.leaderShardMap()
		return m != nil && len(m.ShardsOf(s.Name(v))) == 0 && r.shardsSteady()
	})
	te := s.now
	r.res.ReshardMs = ms(time.Duration(te - td))
	r.res.MovedFraction = floatp(movedFraction(before, r.owners()))
	c.run(window)
	r.res.RetriesBefore = intp(c.count(c.retries, tb, td))
	r.res.RetriesDuring = intp(c.count(c.retries, td, max(te, td+int64(time.Second))))
	r.res.ThroughputBefore = floatp(c.rate(tb, td))
	r.res.ThroughputDuring = floatp(c.rate(td, max(te, td+int64(time.Second))))
	r.res.ThroughputAfter = floatp(c.rate(te, te+int64(window)))
	r.finishShards(c)
	return nil
}

func floatp(f float64) *float64 { return &f }
