package shard

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/omnirelay/mesh/internal/vnet"
	"github.com/omnirelay/mesh/wire"
)

// This file is an in-test cluster of one leader Controller and N Owners in virtual
// real time, on the shared virtual network (internal/vnet). Every node has its own
// clock (offset and a rate within the drift bound), messages are delayed, held up
// and lost at random, nodes crash, restart, are cut off and healed, and leadership fails over to a higher epoch. After every event
// it checks the safety invariant: at that real instant no shard is served by two
// processes. Serving only starts at events and ends as clocks run, so an overlap
// would be visible at the event that starts the second lease.

var simBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type simNode struct {
	name     string
	offset   time.Duration // local = simBase + offset + real*rate
	rate     float64
	owner    *Owner
	ctrl     *Controller
	up       bool
	isolated bool
	boot     uint64
	tickGen  uint64
}

func (n *simNode) local(real time.Duration) time.Time {
	return simBase.Add(n.offset + time.Duration(float64(real)*n.rate))
}

// realOf is the earliest real instant at which n's clock reads at least t.
func (n *simNode) realOf(t time.Time) time.Duration {
	r := time.Duration(math.Ceil(float64(t.Sub(simBase)-n.offset) / n.rate))
	for n.local(r).Before(t) {
		r++
	}
	return r
}

type world struct {
	cfg   Config
	rng   *rand.Rand         // faults, workload and the network's draws
	net   *vnet.Net[Message] // one endpoint per node name, in order of names
	nodes map[string]*simNode
	names []string

	detect time.Duration // membership learns a change this long after it happens
	drift  float64       // clocks run at rates within 1±drift

	leader string // node whose Controller leads, "" during an election
	epoch  uint64
	view   map[string]Member // the membership the leader is told

	violations []string
	faults     []time.Duration // instants of crash, isolation, failover and other churn
	deaths     []death
	clients    *clients
	events     []Event  // controller events, for tests
	gains      []gain   // owners' acquisitions and releases, for tests
	served     []string // scratch of serving
}

// gain is an owner's EventAcquired (or, gained false, EventReleased) at a real
// instant.
type gain struct {
	at     time.Duration
	node   string
	shard  uint32
	gained bool
}

// death is a node's departure as the leader learns it, and when each of its shards
// was first served by another live node afterwards.
type death struct {
	node    string
	known   time.Duration
	shards  map[uint32]time.Duration // -1 until served elsewhere
	pending int                      // shards still -1
}

func newWorld(cfg Config, seed uint64, n int) *world {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	net, err := vnet.NewNet[Message](vnet.Uniform(time.Millisecond, 5*time.Millisecond), rng)
	if err != nil {
		panic(err)
	}
	w := &world{
		cfg:    cfg,
		rng:    rng,
		net:    net,
		nodes:  map[string]*simNode{},
		detect: time.Second,
		drift:  cfg.MaxDrift,
		view:   map[string]Member{},
	}
	net.Deliver = w.deliver
	net.AfterEvent = w.check
	for i := range n {
		w.addNode(fmt.Sprintf("node-%02d", i), false)
	}
	return w
}

func (w *world) addNode(name string, announce bool) *simNode {
	nd := &simNode{
		name:   name,
		offset: time.Duration(w.rng.Int64N(int64(time.Hour))),
		rate:   1 + w.drift*(2*w.rng.Float64()-1),
	}
	w.nodes[name] = nd
	w.names = append(w.names, name)
	w.net.Add(name)
	w.start(nd)
	w.view[name] = Member{Name: name, Health: HealthAlive}
	if announce {
		w.membershipChanged(w.detect)
	}
	return nd
}

// start boots a node's process: a fresh Owner (higher boot) and Controller.
func (w *world) start(nd *simNode) {
	nd.boot++
	var err error
	if nd.owner, err = NewOwner(w.cfg, nd.name, nd.boot); err != nil {
		panic(err)
	}
	if nd.ctrl, err = NewController(w.cfg, nd.name); err != nil {
		panic(err)
	}
	nd.up = true
	if w.leader != "" {
		nd.owner.SetLeader(nd.local(w.net.Now()), w.leader, w.epoch)
	}
	w.flush(nd)
}

// at schedules fn d from now.
func (w *world) at(d time.Duration, fn func()) { w.net.After(d, fn) }

// run processes events until real time end, checking after each.
func (w *world) run(end time.Duration) { w.net.Run(end) }

// setLatency makes message delays uniform in [lo, hi], keeping loss and spikes.
func (w *world) setLatency(lo, hi time.Duration) {
	l := vnet.Uniform(lo, hi)
	d := w.net.Default()
	l.Loss, l.Spike, l.SpikeMax = d.Loss, d.Spike, d.SpikeMax
	w.setLink(l)
}

// setLoss makes every link lose a message with probability p.
func (w *world) setLoss(p float64) { l := w.net.Default(); l.Loss = p; w.setLink(l) }

// setSpikes holds up a message with probability p by up to most more.
func (w *world) setSpikes(p float64, most time.Duration) {
	l := w.net.Default()
	l.Spike, l.SpikeMax = p, most
	w.setLink(l)
}

func (w *world) setLink(l vnet.Link) {
	if err := w.net.SetDefault(l); err != nil {
		panic(err)
	}
}

// latMax is the longest one-way delay without a spike.
func (w *world) latMax() time.Duration { l := w.net.Default(); return l.Latency + l.Jitter - 1 }

// cut recomputes the partitions from the isolated flags: each isolated node alone.
func (w *world) cut() {
	w.net.Heal()
	for i, name := range w.names {
		if w.nodes[name].isolated {
			w.net.Isolate(i)
		}
	}
}

// elect makes name the leader at the next epoch.
func (w *world) elect(name string) {
	nd := w.nodes[name]
	w.epoch++
	w.leader = name
	if err := nd.ctrl.BecomeLeader(nd.local(w.net.Now()), w.epoch); err != nil {
		panic(err)
	}
	w.tellLeader()
}

// failover steps the leader down now and elects another live, reachable node
// after gap (the leader lease guarantees the terms do not overlap).
func (w *world) failover(gap time.Duration) {
	w.faults = append(w.faults, w.net.Now())
	if old := w.nodes[w.leader]; old != nil && old.up {
		old.ctrl.StepDown(old.local(w.net.Now()))
	}
	w.leader = ""
	w.at(gap, func() {
		var cands []string
		for _, name := range w.names {
			if nd := w.nodes[name]; nd.up && !nd.isolated && w.view[name].Health == HealthAlive {
				cands = append(cands, name)
			}
		}
		if len(cands) > 0 && w.leader == "" {
			w.elect(cands[w.rng.IntN(len(cands))])
		}
	})
}

func (w *world) tellLeader() {
	nd := w.nodes[w.leader]
	if nd == nil || !nd.up {
		return
	}
	ms := make([]Member, 0, len(w.view))
	for _, name := range sortedKeys(w.view) {
		ms = append(ms, w.view[name])
	}
	if err := nd.ctrl.SetMembers(nd.local(w.net.Now()), ms); err != nil {
		panic(err)
	}
	w.flush(nd)
}

// membershipChanged tells the leader the current truth after delay.
func (w *world) membershipChanged(delay time.Duration) {
	w.at(delay, w.tellLeader)
}

// setHealth changes a member's health as the leader will learn it after the
// detection delay; a death records which shards must be served elsewhere.
func (w *world) setHealth(name string, h Health) {
	w.at(w.detect, func() {
		m := w.view[name]
		m.Health = h
		w.view[name] = m
		if h != HealthAlive {
			w.recordDeath(name)
		}
		w.tellLeader()
	})
}

func (w *world) recordDeath(name string) {
	d := death{node: name, known: w.net.Now(), shards: map[uint32]time.Duration{}}
	served := w.serving()
	for s := range w.cfg.Shards {
		if served[s] == name || w.ownerInLeaderMap(uint32(s)) == name {
			d.shards[uint32(s)] = -1
			d.pending++
		}
	}
	w.deaths = append(w.deaths, d)
}

func (w *world) ownerInLeaderMap(s uint32) string {
	if nd := w.nodes[w.leader]; nd != nil && nd.ctrl.Map() != nil {
		return nd.ctrl.Map().Owner(s)
	}
	return ""
}

func (w *world) crash(name string) {
	nd := w.nodes[name]
	if !nd.up {
		return
	}
	w.faults = append(w.faults, w.net.Now())
	nd.up = false
	nd.tickGen++
	if name == w.leader {
		w.failover(time.Duration(w.rng.Int64N(int64(2 * time.Second))))
	}
	w.setHealth(name, HealthDead)
}

func (w *world) restart(name string) {
	nd := w.nodes[name]
	if nd.up {
		return
	}
	w.faults = append(w.faults, w.net.Now())
	w.start(nd)
	w.setHealth(name, HealthAlive)
}

func (w *world) isolate(name string) {
	nd := w.nodes[name]
	if nd.isolated || !nd.up {
		return
	}
	w.faults = append(w.faults, w.net.Now())
	nd.isolated = true
	w.cut()
	if name == w.leader {
		w.failover(time.Duration(w.rng.Int64N(int64(2 * time.Second))))
	}
	w.setHealth(name, HealthDead)
}

func (w *world) heal(name string) {
	nd := w.nodes[name]
	if !nd.isolated {
		return
	}
	w.faults = append(w.faults, w.net.Now())
	nd.isolated = false
	w.cut()
	w.setHealth(name, HealthAlive)
}

func (w *world) setDraining(name string, on bool) {
	w.faults = append(w.faults, w.net.Now())
	m := w.view[name]
	m.Draining = on
	w.view[name] = m
	w.membershipChanged(0)
}

// flush sends a node's outputs and schedules its next tick.
func (w *world) flush(nd *simNode) {
	if !nd.up {
		return
	}
	for _, r := range []Ready{nd.ctrl.Ready(), nd.owner.Ready()} {
		for _, e := range r.Messages {
			w.send(nd, e)
		}
		for _, ev := range r.Events {
			if ev.Kind <= EventFenced {
				w.events = append(w.events, ev)
			}
			if ev.Kind == EventAcquired || ev.Kind == EventReleased {
				w.gains = append(w.gains, gain{w.net.Now(), nd.name, ev.Shard, ev.Kind == EventAcquired})
			}
		}
	}
	var next time.Time
	for _, d := range []time.Time{nd.ctrl.NextDeadline(), nd.owner.NextDeadline()} {
		if !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	nd.tickGen++
	if next.IsZero() {
		return
	}
	gen := nd.tickGen
	w.at(nd.realOf(next)-w.net.Now(), func() {
		if nd.tickGen != gen || !nd.up {
			return
		}
		now := nd.local(w.net.Now())
		nd.ctrl.Tick(now)
		nd.owner.Tick(now)
		w.flush(nd)
	})
}

func (w *world) send(from *simNode, e Envelope) {
	i, _ := w.net.Index(from.name)
	// Every message crosses the real codec, as it would the network.
	w.net.Send(i, e.To, viaWire(e.Msg))
}

// deliver steps the machine a message is for, on a running node.
func (w *world) deliver(_, to int, msg Message) {
	nd := w.nodes[w.net.Name(to)]
	if !nd.up {
		return
	}
	now := nd.local(w.net.Now())
	switch msg.(type) {
	case *Renew, *MapRequest:
		nd.ctrl.Step(now, msg)
	default:
		nd.owner.Step(now, msg)
	}
	w.flush(nd)
}

// serving returns, per shard, the one live process serving it now ("" if none),
// recording a violation where several do. It walks each owner's leases, so it
// costs O(shards), not O(shards × nodes).
func (w *world) serving() []string {
	if len(w.served) != w.cfg.Shards {
		w.served = make([]string, w.cfg.Shards)
	}
	clear(w.served)
	for _, name := range w.names {
		nd := w.nodes[name]
		if !nd.up {
			continue
		}
		now := nd.local(w.net.Now())
		for s, exp := range nd.owner.held {
			if !now.Before(exp) {
				continue
			}
			if who := w.served[s]; who != "" {
				w.violate("shard %d served by %s and %s at %v", s, who, name, w.net.Now())
			}
			w.served[s] = name
		}
	}
	return w.served
}

func (w *world) violate(format string, args ...any) {
	if len(w.violations) < 10 {
		w.violations = append(w.violations, fmt.Sprintf(format, args...))
	}
}

// check runs after every event.
func (w *world) check() {
	served := w.serving()
	for i := range w.deaths {
		d := &w.deaths[i]
		if d.pending == 0 {
			continue
		}
		for s, t := range d.shards {
			who := served[s]
			if t < 0 && who != "" && who != d.node && !w.nodes[who].isolated && w.view[who].Health == HealthAlive {
				d.shards[s] = w.net.Now() - d.known
				d.pending--
			}
		}
	}
}

// calm reports whether no fault other than the one at t0 happened in [t0-lead, t1].
func (w *world) calm(t0, t1, lead time.Duration) bool {
	n := 0
	for _, f := range w.faults {
		if f >= t0-lead && f <= t1 {
			n++
		}
	}
	return n <= 1
}

// reassignLatencies returns, for each death followed by a calm window of
// 2 lease intervals, the time until all its shards were served elsewhere (-1 if
// some never were).
func (w *world) reassignLatencies() []time.Duration {
	var out []time.Duration
	window := 2 * w.cfg.LeaseDuration
	for _, d := range w.deaths {
		if !w.calm(d.known-w.detect, d.known+window, w.cfg.LeaseDuration) || d.known+window > w.net.Now() {
			continue
		}
		worst := time.Duration(0)
		for _, t := range d.shards {
			if t < 0 {
				worst = -1
				break
			}
			worst = max(worst, t)
		}
		out = append(out, worst)
	}
	return out
}

// settled reports problems with the final state of a calm, lossless run: every
// shard steady, on its target, and served by exactly that node.
func (w *world) settled() []string {
	var bad []string
	nd := w.nodes[w.leader]
	if nd == nil {
		return []string{"no leader"}
	}
	m := nd.ctrl.Map()
	served := w.serving()
	for s := range w.cfg.Shards {
		sh := uint32(s)
		if who := served[s]; m.State(sh) != StateSteady || m.Owner(sh) != m.Target(sh) || who != m.Owner(sh) {
			bad = append(bad, fmt.Sprintf("shard %d: %s owner %q target %q served by %q", s, m.State(sh), m.Owner(sh), m.Target(sh), who))
		}
	}
	return bad
}

// --- Synthetic workload ---

// clients send keyed messages, one outstanding per key, to the owner as a
// client sees it (some live node's copy of the map); the node processes a message
// only if it serves the key's shard at that instant, and rejects it otherwise.
// Rejected messages are retried. Client links are reliable, so every message must
// be processed exactly once.
type clients struct {
	keys      []string
	perKey    int
	processed map[[2]int]string // (key, seq) -> node
	doubles   []string
	rejected  int
}

func (w *world) startClients(keys, perKey int, think time.Duration) {
	c := &clients{perKey: perKey, processed: map[[2]int]string{}}
	for k := range keys {
		c.keys = append(c.keys, fmt.Sprintf("key-%d", k))
	}
	w.clients = c
	for k := range c.keys {
		w.at(time.Duration(w.rng.Int64N(int64(think))), func() { w.sendClient(k, 0, think) })
	}
}

// clientView is the map of a random live node, as a client would have fetched it.
func (w *world) clientView() *Map {
	var best *Map
	for range 3 {
		nd := w.nodes[w.names[w.rng.IntN(len(w.names))]]
		if m := nd.owner.Map(); nd.up && m != nil && m.Newer(best) {
			best = m
		}
	}
	return best
}

func (w *world) sendClient(k, i int, think time.Duration) {
	c := w.clients
	retry := func() { w.at(20*time.Millisecond, func() { w.sendClient(k, i, think) }) }
	m := w.clientView()
	if m == nil {
		retry()
		return
	}
	s := m.ShardForString(c.keys[k])
	to := m.Owner(s)
	if to == "" {
		retry()
		return
	}
	// Client links are reliable and never held up: the default link's delay only.
	d := w.net.Default()
	lat := w.net.Delay(&vnet.Link{Latency: d.Latency, Jitter: d.Jitter})
	w.at(lat, func() {
		nd := w.nodes[to]
		if !nd.up || nd.isolated || !nd.owner.Serving(nd.local(w.net.Now()), s) {
			c.rejected++
			retry()
			return
		}
		id := [2]int{k, i}
		if prev, ok := c.processed[id]; ok {
			c.doubles = append(c.doubles, fmt.Sprintf("%s/%d by %s and %s", c.keys[k], i, prev, to))
		}
		c.processed[id] = to
		if i+1 < c.perKey {
			w.at(lat+think, func() { w.sendClient(k, i+1, think) })
		}
	})
}

func (c *clients) lost() []string {
	var out []string
	for k := range c.keys {
		for i := range c.perKey {
			if _, ok := c.processed[[2]int{k, i}]; !ok {
				out = append(out, fmt.Sprintf("%s/%d", c.keys[k], i))
			}
		}
	}
	return out
}

// failer is what report needs of *testing.T and *rapid.T.
type failer interface {
	Helper()
	Fatalf(format string, args ...any)
}

// report fails t with the world's violations.
func (w *world) report(t failer) {
	t.Helper()
	if len(w.violations) > 0 {
		t.Fatalf("safety violations:\n%s", joinLines(w.violations))
	}
	if w.clients != nil && len(w.clients.doubles) > 0 {
		t.Fatalf("messages processed twice: %v", w.clients.doubles)
	}
}

func joinLines(l []string) string {
	s := ""
	for _, x := range l {
		s += "  " + x + "\n"
	}
	return s
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)]
}

// viaWire encodes m as a stream frame and decodes it again, so the harness runs
// the protocol over exactly what the wire carries.
func viaWire(m Message) Message {
	f, err := wire.EncodeFrame(m, 0)
	if err != nil {
		panic(err)
	}
	var d wire.Decoder
	d.Use(registry())
	_, out, err := wire.DecodeFrame(f, 0, &d)
	if err != nil {
		panic(fmt.Sprintf("%T does not survive the codec: %v", m, err))
	}
	return out
}
