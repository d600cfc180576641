package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/wire"
)

// Leadership in the simulator. Every node runs a host with lease.Config set; the
// first Options.Voters nodes (node-00000, ...) are the voters, the same bootstrap
// list on every node. Each node name keeps one lease.MemoryStorage for the whole
// run, so a restarted voter finds its promises again. The simulator saves Ready's
// LeaseState to it and reports the result with Saved before it sends a packet of
// that Ready (stack.Ready's order rule; FailDisk makes saves fail), and the run's
// leaseWatch checks safety.
//
// The safety check is exact, not sampled: whether a node believes it holds a valid
// lease (IsLeader on its own clock) can only turn true, or be extended, while it
// handles an input, and only turns false by time passing. So checking every node's
// belief, each on its own local clock, whenever a node that believes it leads has
// just handled an input sees every instant two beliefs overlap.

// ErrNoLease means a node's stack takes no part in leadership.
var ErrNoLease = errors.New("sim: stack has no lease machine")

// DefaultVoters is the number of voters when Options.Voters is zero.
const DefaultVoters = 3

// leaseHost is the leadership side of internal/stack.Stack.
type leaseHost interface {
	IsLeader(now time.Time) bool
	Fence(now time.Time) (uint64, error)
	Leader(now time.Time) (string, uint64, time.Time, bool)
	LeaseStats() lease.Stats
	ChangeVoters(now time.Time, voters []string) error
}

// leaseStack is a host stack whose lease state is saved in storage before its
// packets leave, and whose outputs the watch inspects.
type leaseStack struct {
	hostStack
	name    string
	storage *lease.MemoryStorage
	watch   *leaseWatch
}

// Ready lets the watch see each batch: the simulator reads it once per round.
func (l *leaseStack) Ready() stack.Ready {
	r := l.Stack.Ready()
	l.watch.observe(l, r)
	return r
}

// saveLease keeps the state in the storage that outlives restarts of this name.
func (l *leaseStack) saveLease(st lease.State) error { return l.storage.Save(st) }

// LeaderHolding is one lease won, as the watch saw it.
type LeaderHolding struct {
	Holder string
	Epoch  uint64
	At     time.Duration // virtual time since Epoch()
}

// leaseWatch is the ground-truth checker of one run.
type leaseWatch struct {
	s          *Sim
	storages   map[string]*lease.MemoryStorage
	holdings   []LeaderHolding // every EventBecameLeader, in order
	violations int             // instants at which two nodes believed they led, and epochs that did not increase
	first      string          // description of the first violation
	leaseMsgs  uint64          // lease packets sent
}

func (w *leaseWatch) violate(format string, args ...any) {
	w.violations++
	if w.first == "" {
		w.first = fmt.Sprintf("at %v: ", time.Duration(w.s.now)) + fmt.Sprintf(format, args...)
	}
}

func (w *leaseWatch) observe(l *leaseStack, r stack.Ready) {
	if w.s == nil {
		return // the stack is being built inside New; nothing runs before the sim exists
	}
	for _, p := range r.Packets {
		if isLeaseData(p.Data) {
			w.leaseMsgs++
		}
	}
	for _, e := range r.LeaseEvents {
		if e.Kind != lease.EventBecameLeader {
			continue
		}
		if k := len(w.holdings); k > 0 && e.Epoch <= w.maxEpoch() {
			w.violate("%s won epoch %d, not above %d", l.name, e.Epoch, w.maxEpoch())
		}
		w.holdings = append(w.holdings, LeaderHolding{Holder: l.name, Epoch: e.Epoch, At: time.Duration(w.s.now)})
	}
	i, ok := w.s.byName[l.name]
	if !ok || !l.IsLeader(w.s.localTime(w.s.nodes[i])) {
		return
	}
	if ls := w.leaders(); len(ls) > 1 {
		w.violate("%v all believe they hold a valid lease", ls)
	}
}

func (w *leaseWatch) maxEpoch() uint64 {
	var m uint64
	for _, h := range w.holdings {
		m = max(m, h.Epoch)
	}
	return m
}

// leaders lists the running nodes that believe, on their own clocks, that they
// hold a valid lease now.
func (w *leaseWatch) leaders() []string {
	var out []string
	for _, n := range w.s.nodes {
		if !n.up {
			continue
		}
		if lh, ok := n.stack.(leaseHost); ok && lh.IsLeader(w.s.localTime(n)) {
			out = append(out, n.name)
		}
	}
	return out
}

// isLeaseData reports whether a packet's first message is a lease message.
func isLeaseData(b []byte) bool {
	if len(b) <= wire.HeaderSize {
		return false
	}
	return lease.Messages().Owns(wire.MsgType(b[wire.HeaderSize]))
}

// VoterNames are the names of the first v nodes, the bootstrap voters.
func VoterNames(v int) []string {
	out := make([]string, v)
	for i := range out {
		out[i] = nodeName(i)
	}
	return out
}

// leaseFactory returns a factory of production stacks with leadership on (voters
// names the bootstrap voters, cfg gives the timing; Self and Voters are filled in
// per node) and the watch that checks them, to attach to the Sim with watchLeases
// once it exists. signed runs them under a simulated authority: self-claims and
// lease packets signed and checked (PROTOCOL.md 10.10, 10.11).
func leaseFactory(profile string, lifeguard, signed bool, voters []string, cfg lease.Config) (StackFactory, *leaseWatch) {
	in := wire.NewInterner(1 << 16)
	w := &leaseWatch{storages: map[string]*lease.MemoryStorage{}}
	return func(name, addr string, rng *rand.Rand, now time.Time) (Stack, error) {
		sc, err := SwimConfig(profile, name, addr, lifeguard)
		if err != nil {
			return nil, err
		}
		sc.Interner = in
		if signed {
			sc.Auth = simAuthority.Node(name)
		}
		lc := cfg
		lc.Self, lc.Voters = name, slices.Clone(voters)
		st := w.storages[name]
		if st == nil {
			st = &lease.MemoryStorage{} // kept across restarts: a voter never forgets a promise
			w.storages[name] = st
		}
		h, err := stack.New(stack.Config{Swim: sc, Lease: &lc, LeaseStorage: st}, rng, now)
		if err != nil {
			return nil, err
		}
		return &leaseStack{hostStack: hostStack{h}, name: name, storage: st, watch: w}, nil
	}, w
}

// watchLeases attaches the watch of a leaseFactory to the Sim it runs in.
func (s *Sim) watchLeases(w *leaseWatch) { w.s = s; s.leases = w }

// Leaders lists the running nodes that believe, each on its own clock, that they
// hold a valid lease now (ErrNoLease if the run has no leadership).
func (s *Sim) Leaders() ([]string, error) {
	if s.leases == nil {
		return nil, ErrNoLease
	}
	return s.leases.leaders(), nil
}

// LeaseViolations is how many times the run broke leadership safety so far: two
// nodes believing they held a valid lease at one instant, or a lease won at an
// epoch not above every earlier one; and the first such break, described.
func (s *Sim) LeaseViolations() (int, string) {
	if s.leases == nil {
		return 0, ""
	}
	return s.leases.violations, s.leases.first
}

// Holdings lists every lease won so far, in order.
func (s *Sim) Holdings() []LeaderHolding {
	if s.leases == nil {
		return nil
	}
	return slices.Clone(s.leases.holdings)
}

// leaseOf is node i's leadership side.
func (s *Sim) leaseOf(i int) (leaseHost, error) {
	n := s.nodes[i]
	if !n.up {
		return nil, fmt.Errorf("sim: node %s is down", n.name)
	}
	lh, ok := n.stack.(leaseHost)
	if !ok {
		return nil, ErrNoLease
	}
	return lh, nil
}

// Fence is node i's fencing token on its own clock now (lease.ErrNotLeader unless
// it holds a valid lease).
func (s *Sim) Fence(i int) (uint64, error) {
	lh, err := s.leaseOf(i)
	if err != nil {
		return 0, err
	}
	return lh.Fence(s.localTime(s.nodes[i]))
}

// ChangeVoters has node i, which must lead, start a voter-set change now.
func (s *Sim) ChangeVoters(i int, voters []string) error {
	lh, err := s.leaseOf(i)
	if err != nil {
		return err
	}
	err = lh.ChangeVoters(s.localTime(s.nodes[i]), voters)
	s.afterInput(int32(i), s.now)
	return err
}

// --- scenarios ---

// leaderIndex waits (at most max) for a node to hold a valid lease and returns it.
func (r *runner) leaderIndex(max time.Duration) (int, error) {
	var ls []string
	ok, _ := r.s.RunUntilTrue(max, 10*time.Millisecond, func() bool {
		ls, _ = r.s.Leaders()
		return len(ls) == 1
	})
	if !ok {
		return 0, fmt.Errorf("sim: no single leader after %v (leaders %v)", max, ls)
	}
	return int(r.s.byName[ls[0]]), nil
}

// driftAll gives every running node a clock drift drawn uniformly within
// ±MaxDrift from the scenario's fault stream.
func (r *runner) driftAll() {
	d := r.o.Lease.MaxDrift
	for i := range r.s.nodes {
		r.s.SetDrift(i, (2*r.rng.Float64()-1)*d)
	}
}

// failover records, from virtual time t0, the first lease won after t0 by a node
// other than old (failover_ms), the leases won since t0 (elections) and the lease
// messages sent until the new lease (election_messages).
func (r *runner) failover(t0 int64, old string, msgs0 uint64, max time.Duration) {
	w := r.s.leases
	k := len(w.holdings)
	var at time.Duration
	var msgs uint64
	ok, _ := r.s.RunUntilTrue(max, 5*time.Millisecond, func() bool {
		for _, h := range w.holdings[k:] {
			if h.Holder != old {
				at, msgs = h.At, w.leaseMsgs-msgs0
				return true
			}
		}
		return false
	})
	if ok {
		r.res.Failover = ms(at - time.Duration(t0))
		m := int(msgs)
		r.res.ElectionMessages = &m
	}
}

func (r *runner) finishLeases(k0 int) {
	v, first := r.s.LeaseViolations()
	r.res.SafetyViolations = intp(v)
	r.res.FirstViolation = first
	r.res.Elections = intp(len(r.s.leases.holdings) - k0)
}

func runLeaderCrash(r *runner) error {
	s := r.s
	l, err := r.leaderIndex(30 * time.Second)
	if err != nil {
		return err
	}
	k0 := len(s.leases.holdings)
	r.driftAll()
	s.RunFor(time.Duration(r.rng.Int64N(int64(time.Second)))) // crash at a random point of the renewal cycle
	t0, m0 := s.now, s.leases.leaseMsgs
	s.Crash(l)
	r.failover(t0, s.Name(l), m0, r.o.Duration)
	s.RunUntil(t0 + int64(r.o.Duration))
	r.finishLeases(k0)
	return nil
}

func runLeaderPartition(r *runner) error {
	s := r.s
	l, err := r.leaderIndex(30 * time.Second)
	if err != nil {
		return err
	}
	k0 := len(s.leases.holdings)
	r.driftAll()
	s.RunFor(time.Duration(r.rng.Int64N(int64(time.Second))))
	t0, m0 := s.now, s.leases.leaseMsgs
	s.Partition([]int{l}) // the leader alone on the minority side
	r.failover(t0, s.Name(l), m0, r.o.Duration)
	s.RunUntil(t0 + int64(r.o.Duration))
	s.Heal()
	s.RunFor(10 * time.Second)
	if ls, _ := s.Leaders(); len(ls) != 1 {
		r.res.EndLeaders = intp(len(ls))
	} else {
		r.res.EndLeaders = intp(1)
	}
	r.finishLeases(k0)
	return nil
}

func runLeaderPause(r *runner) error {
	s := r.s
	l, err := r.leaderIndex(30 * time.Second)
	if err != nil {
		return err
	}
	k0 := len(s.leases.holdings)
	r.driftAll()
	s.RunFor(time.Duration(r.rng.Int64N(int64(time.Second))))
	t0, m0 := s.now, s.leases.leaseMsgs
	pause := 2 * r.o.Lease.LeaseDuration // well past its lease
	s.Pause(l, pause)
	// The instant it wakes, before it handles anything, it still has the role of
	// leader in memory: the classic bug would be to act on it. Fence must refuse
	// because the deadline passed on its own clock.
	s.At(pause, func(s *Sim) {
		_, err := s.Fence(l)
		refused := errors.Is(err, lease.ErrNotLeader)
		r.res.StaleFenceRefused = &refused
	})
	r.failover(t0, s.Name(l), m0, r.o.Duration)
	s.RunUntil(max(s.now, t0+int64(pause)) + int64(r.o.Duration))
	r.finishLeases(k0)
	return nil
}

func runLeaderFlap(r *runner) error {
	s := r.s
	if _, err := r.leaderIndex(30 * time.Second); err != nil {
		return err
	}
	k0 := len(s.leases.holdings)
	r.driftAll()
	end := s.now + int64(r.o.Duration)
	voters := r.o.Voters
	for s.now < end {
		// Every 0.2-2 s the links of one random voter flap: lossy (30-90%), cut off,
		// or healthy again.
		v := r.rng.IntN(voters)
		switch r.rng.IntN(3) {
		case 0:
			l := s.DefaultLink()
			l.Loss = 0.3 + 0.6*r.rng.Float64()
			for j := range s.nodes {
				if j != v {
					_ = s.SetLink(v, j, l)
					_ = s.SetLink(j, v, l)
				}
			}
		case 1:
			s.Partition([]int{v})
		default:
			s.Heal()
			for j := range s.nodes {
				if j != v {
					_ = s.SetLink(v, j, s.DefaultLink())
					_ = s.SetLink(j, v, s.DefaultLink())
				}
			}
		}
		s.RunFor(200*time.Millisecond + time.Duration(r.rng.Int64N(int64(1800*time.Millisecond))))
	}
	s.Heal()
	s.net.ClearLinks()
	s.RunFor(10 * time.Second)
	ls, _ := s.Leaders()
	r.res.EndLeaders = intp(len(ls))
	r.finishLeases(k0)
	return nil
}

// fillLease applies the leadership defaults of Options and checks them.
func (o *Options) fillLease() error {
	if o.Voters == 0 {
		o.Voters = DefaultVoters
	}
	if o.Lease.LeaseDuration == 0 {
		o.Lease = lease.DefaultConfig("", nil)
	}
	if o.Voters < 1 || o.Voters > o.Nodes {
		return fmt.Errorf("%w: Voters %d not in [1, Nodes]", ErrConfig, o.Voters)
	}
	c := o.Lease
	c.Self, c.Voters = "x", VoterNames(o.Voters)
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: Lease: %w", ErrConfig, err)
	}
	return nil
}
