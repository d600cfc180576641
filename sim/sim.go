package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/internal/vnet"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// ErrConfig is returned (wrapped, naming the field) for an invalid Config or Options.
var ErrConfig = errors.New("sim: invalid configuration")

// Epoch is virtual time zero: every run starts its clock here, so traces do not
// depend on when they ran.
func Epoch() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// Config configures a Sim.
type Config struct {
	// Seed is the master seed; every random stream is derived from it by name.
	Seed uint64
	// Link is the default link between every pair of nodes. Zero value: DefaultLink().
	Link Link
	// MTU drops datagrams larger than this many bytes. Default wire.DefaultMTU.
	MTU int
	// ProcDelay is the virtual time a node spends on one input (packet, stream, timer):
	// its outputs leave that much later and further inputs queue behind it. Raising it
	// models a slower CPU for all nodes; SetSlow scales it per node. Default 20µs.
	ProcDelay time.Duration
	// StreamTimeout is how long a stream into a partition takes to fail (a TCP
	// connect timeout). Streams to a crashed process fail after one round trip
	// (refused). Default 10s.
	StreamTimeout time.Duration
	// Bandwidth in bytes per second adds transfer time to stream frames. Default
	// 125e6 (1 Gbit/s).
	Bandwidth int64
	// NewStack builds each node instance's stack. Required.
	NewStack StackFactory
}

func (c *Config) fill() error {
	if c.Link == (Link{}) {
		c.Link = DefaultLink()
	}
	if c.MTU == 0 {
		c.MTU = wire.DefaultMTU
	}
	if c.ProcDelay == 0 {
		c.ProcDelay = 20 * time.Microsecond
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = 10 * time.Second
	}
	if c.Bandwidth == 0 {
		c.Bandwidth = 125e6
	}
	switch {
	case c.MTU < 0:
		return fmt.Errorf("%w: MTU %d < 0", ErrConfig, c.MTU)
	case c.ProcDelay < 0:
		return fmt.Errorf("%w: ProcDelay %v < 0", ErrConfig, c.ProcDelay)
	case c.StreamTimeout < 0:
		return fmt.Errorf("%w: StreamTimeout %v < 0", ErrConfig, c.StreamTimeout)
	case c.Bandwidth < 0:
		return fmt.Errorf("%w: Bandwidth %d < 0", ErrConfig, c.Bandwidth)
	case c.NewStack == nil:
		return fmt.Errorf("%w: NewStack is nil", ErrConfig)
	}
	if err := c.Link.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// node is one simulated process slot. A restart keeps the slot (and name) and
// replaces the stack; gen tells events for the old instance from the new.
type node struct {
	name     string
	addr     int32 // address slot
	stack    Stack
	up       bool
	leaving  bool // asked to leave: ground truth no longer counts it as a live member
	gen      uint32
	restarts int
	paused   int64   // virtual time the current pause ends; inputs wait until then
	tickDue  bool    // a timer fell due during the pause: it runs first at the wake
	stall    int64   // virtual time a message-processing stall ends (Stall)
	diskFail int64   // virtual time the node's saves start working again (FailDisk)
	busy     int64   // virtual time the node finishes its current input
	slow     float64 // multiplier on ProcDelay
	drift    float64 // clock rate error: local time runs (1+drift) times virtual time
	lbase    int64   // local time at vbase (ns since Epoch)
	vbase    int64   // virtual time drift was last (re)based at
	tickAt   int64   // time of the tick event that counts; 0 when none is pending
	wakeAt   int64   // time of the pending wake event; 0 when none
	inbox    []event // inputs waiting for the node to be free, oldest at head
	head     int
}

// local is the node's clock reading at virtual time v.
func (n *node) local(v int64) int64 {
	if n.drift == 0 {
		return n.lbase + (v - n.vbase)
	}
	return n.lbase + int64(float64(v-n.vbase)*(1+n.drift))
}

// virtual is the first virtual time at which the node's clock reads at least l.
func (n *node) virtual(l int64) int64 {
	if n.drift == 0 {
		return n.vbase + (l - n.lbase)
	}
	v := n.vbase + int64(float64(l-n.lbase)/(1+n.drift))
	for n.local(v) < l {
		v++
	}
	return v
}

// Sim is a discrete-event simulation of a cluster: virtual time, a seeded network
// model and node faults around real protocol stacks. Not safe for concurrent use.
type Sim struct {
	cfg        Config
	now        int64
	q          vnet.Queue[event]
	nodes      []*node
	addrs      []string         // address slot → "10.a.b.c:7946"
	owner      []int32          // address slot → node index, -1 once retired
	slotOf     map[string]int32 // address → slot
	byName     map[string]int32
	net        *vnet.Model // one endpoint per node index
	actions    []func(*Sim)
	trace      *xxhash.Digest
	buf        [40]byte
	m          Metrics
	observe    func(observer int, ev swim.Event)
	onProgress func()
	epoch      time.Time        // Epoch(), kept to avoid rebuilding it per event
	facts      map[fact]verdict // every suspect and dead fact seen, judged at first sighting
	leases     *leaseWatch      // leadership ground truth; nil without leadership (scenario_leader.go)
}

// New builds an empty simulation at virtual time Epoch.
func New(cfg Config) (*Sim, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Sim{
		cfg:    cfg,
		slotOf: make(map[string]int32),
		byName: make(map[string]int32),
		trace:  xxhash.New(),
		epoch:  Epoch(),
	}
	net, err := vnet.NewModel(cfg.Link, Stream(cfg.Seed, "network"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.net = net
	s.q.Grow(1024)
	return s, nil
}

// Now is the current virtual time.
func (s *Sim) Now() time.Time { return s.epoch.Add(time.Duration(s.now)) }

// Elapsed is the virtual time since Epoch.
func (s *Sim) Elapsed() time.Duration { return time.Duration(s.now) }

// Name is node i's name.
func (s *Sim) Name(i int) string { return s.nodes[i].name }

// Addr is node i's current address.
func (s *Sim) Addr(i int) string { return s.addrs[s.nodes[i].addr] }

// Up reports whether node i's process is running (paused counts as running).
func (s *Sim) Up(i int) bool { return s.nodes[i].up }

// Live reports whether ground truth counts node i as a member: running and not
// leaving.
func (s *Sim) Live(i int) bool { n := s.nodes[i]; return n.up && !n.leaving }

// Stack is node i's current stack (nil when it never started).
func (s *Sim) Stack(i int) Stack { return s.nodes[i].stack }

// LiveNodes lists the indexes of live nodes in order.
func (s *Sim) LiveNodes() []int {
	out := make([]int, 0, len(s.nodes))
	for i, n := range s.nodes {
		if n.up && !n.leaving {
			out = append(out, i)
		}
	}
	return out
}

// Observe installs f, called for every membership event a node emits (after the
// simulator's own ground-truth accounting). One observer at a time.
func (s *Sim) Observe(f func(observer int, ev swim.Event)) { s.observe = f }

// Metrics returns the counters so far.
func (s *Sim) Metrics() Metrics { return s.m }

// TraceHash is xxhash64 over the canonical record of every input delivered so far.
func (s *Sim) TraceHash() uint64 { return s.trace.Sum64() }

func addrOf(slot int) string {
	v := slot + 1 // 10.0.0.0 is not a host
	return fmt.Sprintf("10.%d.%d.%d:7946", (v>>16)&255, (v>>8)&255, v&255)
}

func (s *Sim) newSlot(owner int32) int32 {
	slot := int32(len(s.addrs))
	a := addrOf(len(s.addrs))
	s.addrs = append(s.addrs, a)
	s.owner = append(s.owner, owner)
	s.slotOf[a] = slot
	return slot
}

// nodeName is the name of the node of index i.
func nodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// AddNode starts a new node, alone (call Join to join it), and returns its index.
// Names are "node-00000", "node-00001", ... by index; addresses 10.x.y.z:7946.
func (s *Sim) AddNode() (int, error) {
	i := int32(len(s.nodes))
	n := &node{name: nodeName(int(i)), slow: 1}
	s.nodes = append(s.nodes, n)
	s.net.AddEndpoint()
	s.byName[n.name] = i
	n.addr = s.newSlot(i)
	if err := s.start(i); err != nil {
		return 0, err
	}
	return int(i), nil
}

func (s *Sim) start(i int32) error {
	n := s.nodes[i]
	n.gen++
	n.up, n.leaving = true, false
	n.paused, n.stall, n.busy, n.tickAt, n.wakeAt, n.tickDue = 0, 0, 0, 0, 0, false
	clear(n.inbox)
	n.inbox, n.head = n.inbox[:0], 0
	n.drift, n.lbase, n.vbase = 0, s.now, s.now
	rng := Stream(s.cfg.Seed, fmt.Sprintf("node/%s/%d", n.name, n.restarts))
	st, err := s.cfg.NewStack(n.name, s.addrs[n.addr], rng, s.Now())
	if err != nil {
		n.up = false
		return fmt.Errorf("sim: starting %s: %w", n.name, err)
	}
	n.stack = st
	s.afterInput(i, s.now)
	return nil
}

// Join makes node i join through the given seed addresses now.
func (s *Sim) Join(i int, seeds []string) {
	n := s.nodes[i]
	if !n.up {
		return
	}
	n.stack.Join(s.localTime(n), seeds)
	s.afterInput(int32(i), s.now)
}

// Leave starts node i's graceful leave; ground truth stops counting it at once.
// Call Stop after a grace period to end the process.
func (s *Sim) Leave(i int) {
	n := s.nodes[i]
	if !n.up {
		return
	}
	n.leaving = true
	n.stack.Leave(s.localTime(n))
	s.afterInput(int32(i), s.now)
}

// Crash stops node i at once: pending inputs and timers are dropped, and datagrams
// to its address vanish. Its slot keeps its name for Restart.
func (s *Sim) Crash(i int) {
	n := s.nodes[i]
	n.up = false
	n.gen++
	n.tickAt, n.wakeAt, n.tickDue = 0, 0, false
	clear(n.inbox)
	n.inbox, n.head = n.inbox[:0], 0
}

// Stop ends node i's process after a graceful leave (same as Crash for the network).
func (s *Sim) Stop(i int) { s.Crash(i) }

// Restart starts node i again with fresh state (same name), on a new address when
// newAddr is set, and joins it through seeds.
func (s *Sim) Restart(i int, newAddr bool, seeds []string) error {
	n := s.nodes[i]
	if n.up {
		s.Crash(i)
	}
	n.restarts++
	if newAddr {
		s.owner[n.addr] = -1
		n.addr = s.newSlot(int32(i))
	}
	if err := s.start(int32(i)); err != nil {
		return err
	}
	s.Join(i, seeds)
	return nil
}

// Pause freezes node i for d, like a stop-the-world GC pause: inputs queue, and
// at the wake the timers that fell due run first, then the queued inputs in
// arrival order (a Go runtime runs expired timers before it polls the network).
// Its clock keeps running.
func (s *Sim) Pause(i int, d time.Duration) {
	n := s.nodes[i]
	if end := s.now + int64(d); end > n.paused {
		n.paused = end
	}
}

// Stall stops node i's message processing for d while its timers keep firing on
// time: the Lifeguard paper's slow-message-processing anomaly (a receive loop
// blocked behind a slow handler, while the probe and suspicion timers run). Its
// probes go out and time out, its suspicions expire, and the acks and
// refutations that would have cleared them wait in its inbox until the stall ends.
func (s *Sim) Stall(i int, d time.Duration) {
	n := s.nodes[i]
	if end := s.now + int64(d); end > n.stall {
		n.stall = end
	}
}

// ErrDiskFailed is the error a save returns while FailDisk holds.
var ErrDiskFailed = errors.New("sim: simulated disk failure")

// FailDisk makes node i's saves fail for d (a full or broken disk): the stack is
// told (Saved with ErrDiskFailed), holds the lease packets that depend on the
// unsaved state and offers the state again, until a save works. It outlives a
// restart: the disk is the machine's, not the process's.
func (s *Sim) FailDisk(i int, d time.Duration) {
	n := s.nodes[i]
	if end := s.now + int64(d); end > n.diskFail {
		n.diskFail = end
	}
}

// SetSlow multiplies node i's processing delay by mult (1 is normal).
func (s *Sim) SetSlow(i int, mult float64) { s.nodes[i].slow = mult }

// SetDrift makes node i's clock run at rate 1+drift from now on (drift 0.01: 1%
// fast), continuing from its current reading.
func (s *Sim) SetDrift(i int, drift float64) {
	n := s.nodes[i]
	n.lbase = n.local(s.now)
	n.vbase = s.now
	n.drift = drift
}

// SetDefaultLink replaces the link used between nodes without an override.
func (s *Sim) SetDefaultLink(l Link) error { return configErr(s.net.SetDefault(l)) }

// DefaultLink is the link in force between nodes without an override.
func (s *Sim) DefaultLink() Link { return s.net.Default() }

// SetLink overrides the link from node a to node b (one direction).
func (s *Sim) SetLink(a, b int, l Link) error { return configErr(s.net.SetLink(a, b, l)) }

// configErr marks a refused link as a configuration error of the simulation.
func configErr(err error) error {
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Partition splits the cluster symmetrically: each listed side can talk only
// within itself; nodes not listed form one more side. It replaces any partition
// in force.
func (s *Sim) Partition(sides ...[]int) { s.net.Partition(sides...) }

// PartitionOneWay drops traffic from the nodes in from to the nodes in to, but not
// back. It replaces any partition in force.
func (s *Sim) PartitionOneWay(from, to []int) { s.net.PartitionOneWay(from, to) }

// Heal removes every partition.
func (s *Sim) Heal() { s.net.Heal() }

// At schedules f to run at virtual time now+d, in order with the other events.
func (s *Sim) At(d time.Duration, f func(*Sim)) {
	s.actions = append(s.actions, f)
	s.push(event{at: s.now + int64(d), kind: evAction, node: int32(len(s.actions) - 1)})
}

func (s *Sim) push(e event) { s.q.Push(e.at, e) }

// RunFor advances virtual time by d, firing every event due.
func (s *Sim) RunFor(d time.Duration) { s.RunUntil(s.now + int64(d)) }

// RunUntil fires every event due at or before virtual time t (ns since Epoch).
func (s *Sim) RunUntil(t int64) {
	for s.q.Len() > 0 && s.q.NextAt() <= t {
		_, e := s.q.Pop()
		s.now = e.at
		s.m.Events++
		s.fire(&e)
		if s.onProgress != nil && s.m.Events&0x3fff == 0 {
			s.onProgress()
		}
	}
	if t > s.now {
		s.now = t
	}
}

// RunUntilTrue advances in steps of every until cond holds or max has passed; it
// returns whether cond held and the virtual time it took.
func (s *Sim) RunUntilTrue(max, every time.Duration, cond func() bool) (bool, time.Duration) {
	start := s.now
	for {
		if cond() {
			return true, time.Duration(s.now - start)
		}
		if s.now-start >= int64(max) {
			return false, time.Duration(s.now - start)
		}
		s.RunFor(every)
	}
}

func (s *Sim) localTime(n *node) time.Time { return s.epoch.Add(time.Duration(n.local(s.now))) }

// record folds one delivered input into the trace hash: time, kind, endpoints and
// a hash of the bytes.
func (s *Sim) record(kind evKind, from, to int32, data []byte) {
	var h uint64
	if data != nil {
		h = xxhash.Sum64(data)
	}
	s.recordHash(kind, from, to, h, len(data))
}

// recordHash is record with the bytes already hashed.
func (s *Sim) recordHash(kind evKind, from, to int32, h uint64, n int) {
	b := s.buf[:]
	binary.LittleEndian.PutUint64(b[0:], uint64(s.now))
	b[8] = byte(kind)
	binary.LittleEndian.PutUint32(b[9:], uint32(from))
	binary.LittleEndian.PutUint32(b[13:], uint32(to))
	binary.LittleEndian.PutUint64(b[17:], h)
	binary.LittleEndian.PutUint32(b[25:], uint32(n))
	_, _ = s.trace.Write(b[:29])
}

// blocked is the time node n can take its next input: the end of a pause, of a
// stall or of the input it is working on.
func (n *node) blocked() int64 { return max(n.paused, n.stall, n.busy) }

// degraded reports whether node n is paused, stalled or slow at t: not a healthy
// member in ground truth.
func (n *node) degraded(t int64) bool { return n.paused > t || n.stall > t || n.slow > 1 }

// wait queues input e in node i's inbox when the node cannot take it now (paused,
// busy, or older inputs still queued) and reports whether it did. The inbox is a
// FIFO drained by one wake event at a time, so a backlog of k inputs costs O(k)
// heap operations, and inputs keep their arrival order.
func (s *Sim) wait(i int32, n *node, e *event) bool {
	if n.blocked() <= s.now && n.head == len(n.inbox) {
		return false
	}
	n.inbox = append(n.inbox, *e)
	if n.wakeAt == 0 {
		s.schedWake(i, n, max(n.blocked(), s.now))
	}
	return true
}

func (s *Sim) schedWake(i int32, n *node, t int64) {
	n.wakeAt = t
	s.push(event{at: t, kind: evWake, node: i, gen: n.gen})
}

// drain delivers the oldest queued input of node i if the node is free, and
// schedules the next wake while inputs remain.
func (s *Sim) drain(i int32, n *node) {
	if w := n.blocked(); w > s.now {
		s.schedWake(i, n, w)
		return
	}
	e := n.inbox[n.head]
	n.inbox[n.head] = event{}
	n.head++
	if n.head == len(n.inbox) {
		n.inbox, n.head = n.inbox[:0], 0
	}
	s.deliver(i, n, &e)
	if n.up && n.head < len(n.inbox) && n.wakeAt == 0 {
		s.schedWake(i, n, max(n.blocked(), s.now))
	}
}

func (s *Sim) fire(e *event) {
	switch e.kind {
	case evAction:
		f := s.actions[e.node]
		s.actions[e.node] = nil
		f(s)
	case evTick:
		n := s.nodes[e.node]
		if !n.up || e.gen != n.gen || e.at != n.tickAt {
			return // stale: superseded by an earlier deadline, or the instance is gone
		}
		if n.paused > s.now {
			// Timers of a paused node run at the wake, before its queued inputs. A
			// busy or stalled node's do not wait: its timers run, only its message
			// handling lags.
			n.tickAt, n.tickDue = 0, true
			if n.wakeAt == 0 || n.wakeAt > n.paused {
				s.schedWake(e.node, n, n.paused) // not later: a stall holds inputs, not timers
			}
			return
		}
		s.runTick(e.node, n)
	case evWake:
		n := s.nodes[e.node]
		if !n.up || e.gen != n.gen || e.at != n.wakeAt {
			return
		}
		n.wakeAt = 0
		if n.tickDue {
			if n.paused > s.now {
				s.schedWake(e.node, n, n.paused) // the pause was extended
				return
			}
			n.tickDue = false
			s.runTick(e.node, n)
		}
		if n.up && n.head < len(n.inbox) && n.wakeAt == 0 {
			s.drain(e.node, n)
		}
	case evPacket, evStreamReq:
		i := s.owner[e.to]
		if i < 0 || !s.nodes[i].up {
			if e.kind == evPacket {
				s.m.DroppedDown++
			} else {
				s.refuse(e)
			}
			return
		}
		if n := s.nodes[i]; !s.wait(i, n, e) {
			s.deliver(i, n, e)
		}
	case evStreamReply, evStreamFail:
		n := s.nodes[e.node]
		if !n.up || e.gen != n.gen {
			return
		}
		if !s.wait(e.node, n, e) {
			s.deliver(e.node, n, e)
		}
	}
}

// runTick runs node i's timers if its deadline has come, else re-arms the tick.
func (s *Sim) runTick(i int32, n *node) {
	n.tickAt = 0
	dl := n.stack.NextDeadline()
	if !dl.IsZero() {
		if v := n.virtual(int64(dl.Sub(s.epoch))); v > s.now {
			s.schedTick(i, n, v)
			return
		}
	}
	s.record(evTick, -1, i, nil)
	n.stack.Tick(s.localTime(n))
	s.afterInput(i, s.now)
}

// deliver hands input e to node i, which is up and free.
func (s *Sim) deliver(i int32, n *node, e *event) {
	switch e.kind {
	case evPacket:
		s.record(evPacket, e.from, e.to, e.data)
		n.stack.HandlePacket(s.localTime(n), s.addrs[e.from], e.data)
		s.afterInput(i, s.now)
	case evStreamReq:
		s.serveStream(i, n, e)
	case evStreamReply, evStreamFail:
		if e.gen != n.gen {
			return // queued for an instance that has since restarted
		}
		s.record(e.kind, e.from, n.addr, e.data)
		if e.kind == evStreamReply {
			n.stack.StreamReply(s.localTime(n), e.sid, e.data)
		} else {
			n.stack.StreamFailed(s.localTime(n), e.sid)
		}
		s.afterInput(i, s.now)
	}
}

// refuse fails a stream request whose target process is down: a reset comes back
// after one more one-way delay.
func (s *Sim) refuse(e *event) {
	s.m.StreamsFailed++
	s.push(event{
		at:   s.now + s.delay(s.net.Link(int(e.node), int(e.node))),
		kind: evStreamFail, node: e.node, gen: e.gen, from: e.to, sid: e.sid,
	})
}

// serveStream runs a stream request at its target, node i, and sends the reply
// (or the failure) back to the requester, e.node of generation e.gen.
func (s *Sim) serveStream(i int32, n *node, e *event) {
	req := e.node
	fail := event{kind: evStreamFail, node: req, gen: e.gen, from: e.to, sid: e.sid}
	s.record(evStreamReq, e.from, e.to, e.data)
	reply := n.stack.HandleStream(s.localTime(n), s.addrs[e.from], e.data)
	depart := s.afterInput(i, s.now)
	if reply == nil || !s.net.Reachable(int(i), int(req)) {
		if reply == nil {
			fail.at = depart + s.delay(s.net.Link(int(i), int(req)))
		} else {
			fail.at = depart + int64(s.cfg.StreamTimeout)
		}
		s.m.StreamsFailed++
		s.push(fail)
		return
	}
	s.m.StreamBytes += uint64(len(reply))
	s.push(event{
		at:   depart + s.delay(s.net.Link(int(i), int(req))) + s.transfer(len(reply)),
		kind: evStreamReply, node: req, gen: e.gen, from: e.to, data: reply, sid: e.sid,
	})
}

// delay draws one one-way delay on l, in virtual nanoseconds.
func (s *Sim) delay(l *Link) int64 { return int64(s.net.Delay(l)) }

func (s *Sim) transfer(n int) int64 { return int64(n) * int64(time.Second) / s.cfg.Bandwidth }

// afterInput accounts node i's processing cost for an input handled at t, drains
// its outputs into the network and reschedules its timer. It returns the time the
// outputs leave.
func (s *Sim) afterInput(i int32, t int64) int64 {
	n := s.nodes[i]
	depart := t
	if s.cfg.ProcDelay > 0 {
		cost := int64(float64(s.cfg.ProcDelay) * n.slow)
		depart += cost
		// A timer can run while inputs are queued: its work adds to the backlog.
		n.busy = max(n.busy, t) + cost
	}
	// A second round sends the lease packets a successful save released.
	for round := 0; round < 2 && (round == 0 || n.stack.HasReady()); round++ {
		r := n.stack.Ready()
		if r.LeaseState != nil {
			n.stack.Saved(s.localTime(n), r.LeaseVersion, s.save(n, r))
		}
		for _, p := range r.Packets {
			s.send(i, depart, p.To, p.Data)
		}
		for _, st := range r.Streams {
			s.openStream(i, depart, st)
		}
		for _, ev := range r.Events {
			s.account(i, ev)
		}
		n.stack.Advance()
	}
	if dl := n.stack.NextDeadline(); !dl.IsZero() {
		v := n.virtual(int64(dl.Sub(s.epoch)))
		if v <= s.now {
			v = s.now + 1 // a deadline in the past fires next, after what is queued now
		}
		s.schedTick(i, n, v)
	}
	return depart
}

// save saves r's lease state on node n's disk, which fails while FailDisk holds.
func (s *Sim) save(n *node, r stack.Ready) error {
	if s.now < n.diskFail {
		return ErrDiskFailed
	}
	if d, ok := n.stack.(disk); ok {
		return d.saveLease(*r.LeaseState)
	}
	return nil
}

// disk is a stack whose lease state the simulator keeps across restarts.
type disk interface{ saveLease(lease.State) error }

func (s *Sim) schedTick(i int32, n *node, v int64) {
	if n.tickAt != 0 && n.tickAt <= v {
		return // the pending tick comes first; it re-reads the deadline when it fires
	}
	n.tickAt = v
	s.push(event{at: v, kind: evTick, node: i, gen: n.gen})
}

// send puts one datagram from node i on the network at time depart.
func (s *Sim) send(i int32, depart int64, to string, data []byte) {
	s.m.MessagesSent++
	s.m.BytesSent += uint64(len(data))
	slot, ok := s.slotOf[to]
	if !ok {
		s.m.DroppedUnknown++
		return
	}
	j := s.owner[slot]
	if j < 0 {
		s.m.DroppedDown++
		return
	}
	if len(data) > s.cfg.MTU {
		s.m.DroppedMTU++
		return
	}
	if !s.net.Reachable(int(i), int(j)) {
		s.m.DroppedPartition++
		return
	}
	l := s.net.Link(int(i), int(j))
	if s.net.Lost(l) {
		s.m.DroppedLoss++
		return
	}
	from := s.nodes[i].addr
	s.push(event{at: depart + s.delay(l), kind: evPacket, to: slot, from: from, data: data})
	if s.net.Duplicated(l) {
		s.m.Duplicated++
		dup := append([]byte(nil), data...)
		s.push(event{at: depart + s.delay(l), kind: evPacket, to: slot, from: from, data: dup})
	}
}

// openStream starts a stream from node i: connection setup and request take three
// one-way delays plus transfer time; a crashed target refuses after a round trip,
// a partitioned one times out.
func (s *Sim) openStream(i int32, depart int64, st stack.Stream) {
	to, data := st.To, st.Data
	s.m.StreamsOpened++
	s.m.StreamBytes += uint64(len(data))
	n := s.nodes[i]
	slot, ok := s.slotOf[to]
	fail := event{kind: evStreamFail, node: i, gen: n.gen, from: slot, sid: st.ID}
	if !ok {
		fail.at = depart + int64(s.cfg.StreamTimeout)
		fail.from = -1
		s.m.StreamsFailed++
		s.failUnknown(fail, to)
		return
	}
	j := s.owner[slot]
	switch {
	case j < 0 || !s.nodes[j].up:
		l := s.net.Link(int(i), int(i))
		fail.at = depart + 2*s.delay(l)
	case !s.net.Reachable(int(i), int(j)) || !s.net.Reachable(int(j), int(i)):
		fail.at = depart + int64(s.cfg.StreamTimeout)
	default:
		l := s.net.Link(int(i), int(j))
		at := depart + s.delay(l) + s.delay(l) + s.delay(l) + s.transfer(len(data))
		s.push(event{at: at, kind: evStreamReq, node: i, gen: n.gen, to: slot, from: n.addr, data: data, sid: st.ID})
		return
	}
	s.m.StreamsFailed++
	s.push(fail)
}

// failUnknown handles a stream to an address no node ever had: the slot is made up
// on the spot so the failure names the address the stack asked for.
func (s *Sim) failUnknown(fail event, to string) {
	slot := int32(len(s.addrs))
	s.addrs = append(s.addrs, to)
	s.owner = append(s.owner, -1)
	s.slotOf[to] = slot
	fail.from = slot
	s.push(fail)
}
