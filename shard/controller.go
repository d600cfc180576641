package shard

import (
	"github.com/omnirelay/mesh/lease"

	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/omnirelay/mesh/rendezvous"
	"github.com/omnirelay/mesh/wire"
)

// ErrBadMember is wrapped by SetMembers for an unusable membership snapshot.
var ErrBadMember = errors.New("shard: invalid member")

// ErrStaleEpoch is returned by BecomeLeader for an epoch below one this
// Controller already led or saw: epochs only grow.
var ErrStaleEpoch = errors.New("shard: stale epoch")

// Health is a member's state as the membership layer (swim) reports it.
type Health uint8

const (
	HealthAlive   Health = 0
	HealthSuspect Health = 1
	HealthDead    Health = 2
	HealthLeft    Health = 3
)

// Member is one node of the membership snapshot given to SetMembers.
type Member struct {
	Name     string
	Health   Health
	Weight   float64 // relative capacity, 0 means 1; else in rendezvous [MinWeight, MaxWeight]
	Draining bool    // operator drain: keep serving until moved, receive nothing new
}

// Ready is everything a machine wants done since the last call.
//
// Ordering rules: nothing needs saving (shard state is soft: a new leader rebuilds
// it, see docs/shards.md), and safety never depends on the order or the delivery
// of Messages, so they may leave in any order and be lost. Events are in the
// order the transitions happened, and the machine's Map already reflects them all.
type Ready struct {
	Messages []Envelope
	Events   []Event
}

// ControllerStats counts what the Controller did; monotonically increasing.
type ControllerStats struct {
	Malformed   uint64 // peer messages dropped as malformed
	Implausible uint64 // member messages dropped: epoch more than wire.MaxJump above ours
	StaleRenews uint64 // renewals from an older process or older than one processed
	NotLeading  uint64 // member messages received while not leading
	Grants      uint64 // Grant messages sent
	Releases    uint64 // Release messages sent
	Announces   uint64 // Announce messages sent
	MapsSent    uint64 // full maps sent on request
	Moves       uint64 // shards moved away from a live owner (at most MaxMoves at once)
	ForcedMoves uint64 // shards parked because their owner was not alive (or unknown)
}

// shardRec is the leader's record of one shard.
type shardRec struct {
	state State
	// owner: steady, the holder; draining, the holder being drained ("" once it
	// released or lapsed, or for a new leader's unconfirmed shards); rebalancing,
	// the new owner.
	owner string
	from  string // previous owner, for events
	// hold: on our clock, every grant of this shard we sent has lapsed from here
	// on; never below failoverEnd.
	hold time.Time
	// relSeq: while draining, a renewal from owner with Applied >= relSeq that does
	// not hold the shard proves the release (docs/shards.md, "Release").
	relSeq uint64
	forced bool
	// granted: until when, on our clock, owner may serve under its latest grant
	// of this shard in this term (zero if it has none); Unserved reads it.
	granted time.Time
}

// retiredBoots bounds the replaced owner processes remembered per member: more
// restarts than this while renewals of the oldest are still in flight is beyond
// what a network delays a datagram by.
const retiredBoots = 4

// peer is what the leader knows of one member's owner process.
type peer struct {
	member   Member
	inView   bool     // present in the last membership snapshot
	boot     uint64   // owner process; another one, not retired, resets the counters below
	retired  []uint64 // processes boot replaced, newest last (retiredBoots): their renewals are stale
	lastSeq  uint64   // highest renewal processed
	answered uint64   // highest renewal answered with a Grant
	// heard: when its last renewal arrived (our clock). A member that renews is
	// reachable, whatever the membership says, so it gets announcements too.
	heard time.Time
	owns  map[uint32]struct{}
	// held: its latest renewal, processed but not answered yet because a shard
	// moving here waits for its current owner's release; the Grant leaves once
	// the release is in, or holdMax after heldAt (when the first held renewal
	// arrived), whichever is first (settle).
	held   *Renew
	heldAt time.Time
}

// Controller is the leader side of shard ownership: it computes the map from the
// live members, grants ownership leases in answer to renewals, and moves shards
// through draining and rebalancing. Only the node holding the leader lease drives
// one (BecomeLeader); it is inert otherwise. Not safe for concurrent use.
type Controller struct {
	cfg     Config
	self    string
	leading bool
	fenced  bool
	epoch   uint64
	highest uint64 // highest epoch members reported above ours
	now     time.Time
	// failoverEnd: before it, grants only re-confirm what owners report.
	failoverEnd time.Time

	peers    map[string]*peer
	eligible []rendezvous.Node // sorted by name, weights resolved
	target   *rendezvous.Table // placement over eligible, nil if none

	recs         []shardRec
	stale        bool      // something reconcile reads changed since it last ran
	nextHold     time.Time // earliest hold of a draining shard with an owner, zero if none
	version      uint64
	cur          *Map
	changed      bool
	nextAnnounce time.Time
	release      map[string][]uint32 // Release requests of this step, by node
	pendingGrant []*Grant            // answers of this step, sent with the new map's version
	// awaited counts, by target, the planned moves whose owner has not
	// released yet (reconcile); holding names the peers with a held renewal.
	awaited map[string]int
	holding []string

	out    Ready
	evMark int // events before this index already carry their map version
	stats  ControllerStats
}

// NewController returns an inert Controller for the node named self.
func NewController(cfg Config, self string) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if self == "" {
		return nil, fmt.Errorf("%w: self: empty name", ErrInvalidConfig)
	}
	return &Controller{cfg: cfg, self: self, peers: map[string]*peer{}, release: map[string][]uint32{}, awaited: map[string]int{}}, nil
}

// BecomeLeader starts a term at epoch, the leader lease's fencing token, at now.
// The Controller forgets any previous term: it waits FailoverWait before handing
// out a shard that its owner did not re-confirm (docs/shards.md, "Failover").
// The host must call it only while it holds the leader lease, and StepDown as soon
// as it stops holding it.
func (c *Controller) BecomeLeader(now time.Time, epoch uint64) error {
	if epoch == 0 || epoch <= c.epoch || epoch <= c.highest {
		return fmt.Errorf("%w: %d (led %d, seen %d)", ErrStaleEpoch, epoch, c.epoch, c.highest)
	}
	c.now = now
	c.leading, c.fenced = true, false
	c.epoch = epoch
	c.failoverEnd = now.Add(FailoverWait(c.cfg.LeaseDuration, c.cfg.MaxDrift))
	c.version = 0
	c.recs = make([]shardRec, c.cfg.Shards)
	for s := range c.recs {
		c.recs[s] = shardRec{state: StateDraining, hold: c.failoverEnd, forced: true}
	}
	for name, p := range c.peers {
		if !p.inView {
			delete(c.peers, name)
			continue
		}
		p.boot, p.lastSeq, p.answered, p.owns, p.heard, p.retired = 0, 0, 0, nil, time.Time{}, nil
		p.held = nil
	}
	c.holding = c.holding[:0]
	clear(c.awaited)
	c.changed, c.stale = true, true
	c.nextAnnounce = now
	c.settle(now)
	return nil
}

// StepDown ends the term: the Controller sends nothing more until the next
// BecomeLeader. Messages already in Ready were decided while leading and may
// still be sent.
func (c *Controller) StepDown(now time.Time) {
	c.now = now
	c.leading = false
}

// Leading reports whether the Controller is in a term and not fenced.
func (c *Controller) Leading() bool { return c.leading && !c.fenced }

// Epoch is the epoch of the current (or last) term.
func (c *Controller) Epoch() uint64 { return c.epoch }

// Map is the map of the current (or last) term, nil before the first.
func (c *Controller) Map() *Map { return c.cur }

// Stats returns the counters.
func (c *Controller) Stats() ControllerStats { return c.stats }

// Unserved is how many shards have no serving owner at now, as far as the leader
// can know: the map names no owner, or one that membership does not hold alive or
// suspect, or one whose latest grant of the shard in this term has lapsed (it
// stopped renewing: crashed, cut off, or fenced out by a higher epoch). Drained
// owners count as serving until they release. A Controller that is not leading
// (between terms, or fenced) grants nothing, so every shard counts: the host
// asks only while it holds the leader lease, and then that is an outage. O(S).
func (c *Controller) Unserved(now time.Time) int {
	if !c.Leading() {
		return c.cfg.Shards
	}
	n := 0
	for i := range c.recs {
		r := &c.recs[i]
		p := c.peers[r.owner]
		if r.owner == "" || p == nil || !p.inView || p.member.Health > HealthSuspect || !now.Before(r.granted) {
			n++
		}
	}
	return n
}

// SetMembers replaces the membership snapshot (every known member, with its
// health, weight and drain flag). Errors wrap ErrBadMember and leave the previous
// snapshot in force.
func (c *Controller) SetMembers(now time.Time, members []Member) error {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	var eligible []rendezvous.Node
	for i := range ms {
		m := &ms[i]
		switch {
		case m.Name == "":
			return fmt.Errorf("%w: empty name", ErrBadMember)
		case i > 0 && ms[i-1].Name == m.Name:
			return fmt.Errorf("%w: %q twice", ErrBadMember, m.Name)
		case m.Health > HealthLeft:
			return fmt.Errorf("%w: %q has health %d", ErrBadMember, m.Name, m.Health)
		}
		if m.Weight == 0 {
			m.Weight = 1
		}
		if !(m.Weight >= rendezvous.MinWeight && m.Weight <= rendezvous.MaxWeight) {
			return fmt.Errorf("%w: %q has weight %v", ErrBadMember, m.Name, m.Weight)
		}
		if m.Health == HealthAlive && !m.Draining {
			eligible = append(eligible, rendezvous.Node{Name: m.Name, Weight: m.Weight})
		}
	}
	c.now = now
	for _, p := range c.peers {
		p.inView = false
	}
	for _, m := range ms {
		p := c.peer(m.Name)
		p.member, p.inView = m, true
	}
	for name, p := range c.peers {
		if !p.inView && len(p.owns) == 0 {
			delete(c.peers, name)
		}
	}
	if !slices.Equal(eligible, c.eligible) {
		c.eligible = eligible
		c.target = nil
		if len(eligible) > 0 {
			t, err := rendezvous.BuildTable(eligible, c.cfg.Shards, min(c.cfg.Replicas, len(eligible)))
			if err != nil {
				// Names and weights were checked above and the sizes by Validate.
				panic(fmt.Sprintf("shard: building the target table: %v", err))
			}
			c.target = t
		}
		c.changed = true
	}
	c.stale = true // health and drain flags changed too
	c.settle(now)
	return nil
}

// Step feeds a message from a member (Renew, MapRequest); other types are
// ignored. Malformed messages are counted and dropped.
func (c *Controller) Step(now time.Time, msg Message) {
	c.now = now
	switch msg := msg.(type) {
	case *Renew:
		if msg.Node == "" || msg.Seq == 0 || !validShardList(msg.Held, c.cfg.Shards) {
			c.stats.Malformed++
			return
		}
		if c.observe(now, msg.Epoch) {
			c.stepRenew(now, msg)
		}
	case *MapRequest:
		if msg.Node == "" {
			c.stats.Malformed++
			return
		}
		if c.observe(now, msg.Epoch) && c.cur != nil {
			c.stats.MapsSent++
			c.send(msg.Node, c.cur.Wire())
		}
	default:
		return
	}
	c.settle(now)
}

// Tick advances timers to now.
func (c *Controller) Tick(now time.Time) {
	c.now = now
	c.stale = true // holds may have lapsed, the failover wait may have ended
	c.settle(now)
}

// Ready returns and clears the pending outputs.
func (c *Controller) Ready() Ready {
	r := c.out
	c.out, c.evMark = Ready{}, 0
	return r
}

// NextDeadline is when Tick must next be called; zero if never.
func (c *Controller) NextDeadline() time.Time {
	if !c.Leading() {
		return time.Time{}
	}
	d := c.nextAnnounce
	if c.now.Before(c.failoverEnd) && c.failoverEnd.Before(d) {
		d = c.failoverEnd
	}
	if !c.nextHold.IsZero() && c.nextHold.Before(d) {
		d = c.nextHold
	}
	for _, name := range c.holding {
		if p := c.peers[name]; p != nil && p.held != nil && p.heldAt.Add(c.cfg.holdMax()).Before(d) {
			d = p.heldAt.Add(c.cfg.holdMax())
		}
	}
	return d
}

// observe fences the Controller if a member has seen a higher epoch: a newer
// leader exists, so this one must stop granting. It reports whether to proceed.
func (c *Controller) observe(now time.Time, epoch uint64) bool {
	if !c.Leading() {
		c.stats.NotLeading++
		return false
	}
	if !wire.Plausible(c.epoch, epoch) {
		// One forged epoch near 2^64-1 would fence us and, through c.highest,
		// refuse every later term of ours.
		c.stats.Implausible++
		return false
	}
	if epoch > c.epoch {
		c.highest = max(c.highest, epoch)
		c.fenced = true
		c.emit(Event{Kind: EventFenced, Epoch: epoch, At: now})
		return false
	}
	return true
}

func (c *Controller) peer(name string) *peer {
	p := c.peers[name]
	if p == nil {
		p = &peer{member: Member{Name: name, Health: HealthDead}}
		c.peers[name] = p
	}
	return p
}

// servable reports whether name may be granted shards: a live member. Draining
// members keep what they have until it moves.
func (c *Controller) servable(name string) bool {
	p := c.peers[name]
	return name != "" && p != nil && p.inView && p.member.Health == HealthAlive
}

func (c *Controller) setOwner(s uint32, name string) {
	r := &c.recs[s]
	if r.owner == name {
		return
	}
	if p := c.peers[r.owner]; r.owner != "" && p != nil {
		delete(p.owns, s)
	}
	r.owner, r.granted = name, time.Time{}
	c.stale = true
	if name != "" {
		p := c.peer(name)
		if p.owns == nil {
			p.owns = map[uint32]struct{}{}
		}
		p.owns[s] = struct{}{}
	}
	c.changed = true
}

func (c *Controller) targetOf(s uint32) string {
	if c.target == nil {
		return ""
	}
	return c.target.Primary(s)
}

// stepRenew handles one owner's renewal: it learns what the owner serves, then
// answers with everything granted to it.
func (c *Controller) stepRenew(now time.Time, r *Renew) {
	p := c.peer(r.Node)
	switch {
	case r.Boot == p.boot:
	case slices.Contains(p.retired, r.Boot):
		c.stats.StaleRenews++
		return
	default:
		// Boot ids are random, not ordered (a clock that stepped back must not
		// make a restart look older), so any boot not retired is a new process.
		// A restarted owner process holds nothing and ignores grants made to the
		// old one, so whatever was being released from it is released.
		if p.boot != 0 {
			p.retired = append(p.retired, p.boot)
			if len(p.retired) > retiredBoots {
				p.retired = slices.Delete(p.retired, 0, 1)
			}
			// A new map version for the new process: grants to it then carry
			// a version above any grant to the one it replaces, so (epoch,
			// version) stays an exact fencing token per owner process
			// (Event.Version). A first boot this term replaces nobody.
			if len(p.owns) > 0 {
				c.changed = true
			}
		}
		p.boot, p.lastSeq, p.answered, p.held = r.Boot, 0, 0, nil
		for s := range p.owns {
			c.recs[s].relSeq = 0
		}
	}
	if r.Seq <= p.lastSeq {
		c.stats.StaleRenews++
		return
	}
	p.lastSeq, p.heard = r.Seq, now
	held := func(s uint32) bool { _, ok := slices.BinarySearch(r.Held, s); return ok }
	if now.Before(c.failoverEnd) && c.servable(r.Node) {
		// Re-confirmation: the first live owner to report a shard nobody holds
		// for us keeps it (docs/shards.md, "Failover").
		for _, s := range r.Held {
			if rec := &c.recs[s]; rec.state == StateDraining && rec.owner == "" {
				rec.state, rec.forced = StateSteady, false
				c.setOwner(s, r.Node)
				c.emit(Event{Kind: EventSteady, Shard: s, To: r.Node, Epoch: c.epoch, At: now})
			}
		}
	}
	for _, s := range sortedSet(p.owns) {
		rec := &c.recs[s]
		switch {
		case rec.state == StateDraining && !held(s) && r.Applied >= rec.relSeq:
			c.setOwner(s, "") // released; reconcile hands it on
		case rec.state == StateRebalancing && held(s):
			rec.state = StateSteady
			c.changed, c.stale = true, true
			c.emit(Event{Kind: EventSteady, Shard: s, From: rec.from, To: r.Node, Epoch: c.epoch, At: now})
		}
	}
	c.reconcile(now)
	if c.holdable(p) {
		if p.held == nil {
			p.heldAt = now
			c.holding = append(c.holding, r.Node)
		}
		p.held = r
		return
	}
	p.held = nil
	c.answer(now, p, r)
}

// holdable reports whether p's renewal should wait for a release: a shard is
// on its way to p from an owner that has not let go yet, and nothing was handed
// to p that its last grant did not list. Answering at once would cost the move
// a round trip: the leader would then ask p to renew again (an empty Release)
// once the release is in, and grant the shard in answer to that renewal.
// Holding is safe: p's lease counts from when it sent the renewal, the
// leader's hold from when the Grant leaves, later (docs/shards.md, "Safety").
func (c *Controller) holdable(p *peer) bool {
	if c.awaited[p.member.Name] == 0 || !c.servable(p.member.Name) {
		return false
	}
	for s := range p.owns {
		if r := &c.recs[s]; r.state == StateRebalancing && r.granted.IsZero() {
			return false
		}
	}
	return true
}

// answerHeld answers each held renewal that need not wait any longer.
func (c *Controller) answerHeld(now time.Time) {
	kept := c.holding[:0]
	for _, name := range c.holding {
		p := c.peers[name]
		if p == nil || p.held == nil {
			continue
		}
		if now.Before(p.heldAt.Add(c.cfg.holdMax())) && c.holdable(p) {
			kept = append(kept, name)
			continue
		}
		r := p.held
		p.held = nil
		c.answer(now, p, r)
	}
	c.holding = kept
}

// answer grants p, in answer to its renewal r, everything it owns and may
// serve.
func (c *Controller) answer(now time.Time, p *peer, r *Renew) {
	g := &Grant{Epoch: c.epoch, Node: r.Node, Boot: r.Boot, Seq: r.Seq, Duration: c.cfg.LeaseDuration}
	if c.servable(r.Node) {
		hold := lease.VoterExpiry(now, c.cfg.LeaseDuration, c.cfg.MaxDrift)
		for _, s := range sortedSet(p.owns) {
			rec := &c.recs[s]
			if rec.state == StateDraining {
				continue
			}
			if now.Before(c.failoverEnd) {
				g.Confirm = append(g.Confirm, s)
			} else {
				g.Shards = append(g.Shards, s)
			}
			if hold.After(rec.hold) {
				rec.hold = hold
			}
			rec.granted = hold
		}
	}
	// An owner that is not servable gets an empty grant, so it drops everything
	// at once and its next renewal proves the release.
	p.answered = r.Seq
	c.pendingGrant = append(c.pendingGrant, g)
}

// reconcile moves every shard one step toward the target placement. It costs
// O(S), so it runs only when an input changed something it reads (c.stale):
// a renewal that changes nothing is answered in O(shards of that node).
func (c *Controller) reconcile(now time.Time) {
	if !c.Leading() || !c.stale {
		return
	}
	defer c.findNextHold()
	clear(c.awaited)
	inflight := 0
	for i := range c.recs {
		if r := &c.recs[i]; r.state != StateSteady && !r.forced {
			inflight++
		}
	}
	settled := !now.Before(c.failoverEnd)
	for i := range c.recs {
		s := uint32(i)
		r := &c.recs[i]
		tgt := c.targetOf(s)
		switch r.state {
		case StateSteady, StateRebalancing:
			if !c.servable(r.owner) {
				c.drain(now, s, tgt, true)
			} else if r.state == StateSteady && settled && tgt != "" && tgt != r.owner && inflight < c.cfg.MaxMoves {
				c.drain(now, s, tgt, false)
				inflight++
			}
		case StateDraining:
			if r.owner != "" && r.owner == tgt && c.servable(r.owner) {
				// The target came back to the owner before it let go: keep it.
				r.state = StateSteady
				c.changed = true
				c.emit(Event{Kind: EventSteady, Shard: s, To: r.owner, Epoch: c.epoch, At: now})
				if !r.forced {
					inflight--
				}
			}
		}
		if r.state != StateDraining || !settled || (r.owner != "" && now.Before(r.hold)) {
			if r.state == StateDraining && r.owner != "" && !r.forced && tgt != "" && tgt != r.owner {
				c.awaited[tgt]++
			}
			continue
		}
		// Released, lapsed, or never owned: hand it on if there is anywhere to go.
		if tgt == "" {
			c.setOwner(s, "")
			continue
		}
		r.state = StateRebalancing
		c.setOwner(s, tgt)
		// An empty release asks the new owner to renew now, so it learns of the
		// grant in a round trip instead of at its next periodic renewal; one
		// whose renewal is held gets the grant in this step without it.
		if _, ok := c.release[tgt]; !ok && c.peers[tgt].held == nil {
			c.release[tgt] = nil
		}
		c.emit(Event{Kind: EventRebalancing, Shard: s, From: r.from, To: tgt, Forced: r.forced, Epoch: c.epoch, At: now})
	}
}

// findNextHold caches the earliest hold among draining shards that still have an
// owner: the instant reconcile must run again. Grants never touch draining shards,
// so only reconcile moves it.
func (c *Controller) findNextHold() {
	c.stale = false
	c.nextHold = time.Time{}
	for i := range c.recs {
		r := &c.recs[i]
		if r.state == StateDraining && r.owner != "" && (c.nextHold.IsZero() || r.hold.Before(c.nextHold)) {
			c.nextHold = r.hold
		}
	}
}

// drain stops granting shard s to its owner and starts its move toward tgt.
func (c *Controller) drain(now time.Time, s uint32, tgt string, forced bool) {
	r := &c.recs[s]
	r.state, r.from, r.forced = StateDraining, r.owner, forced
	r.relSeq = 0
	if p := c.peers[r.owner]; p != nil {
		// Every grant that may list s answered a renewal up to here.
		r.relSeq = p.answered
	}
	c.changed = true
	if forced {
		c.stats.ForcedMoves++
	} else {
		c.stats.Moves++
		c.release[r.owner] = append(c.release[r.owner], s)
		// The target renews now too: its renewal waits here for the release
		// (holdable), so the grant leaves as soon as the release is in.
		if _, ok := c.release[tgt]; !ok && tgt != "" {
			c.release[tgt] = nil
		}
	}
	c.emit(Event{Kind: EventDraining, Shard: s, From: r.owner, To: tgt, Forced: forced, Epoch: c.epoch, At: now})
}

// settle runs after every input: reconcile, publish a changed map, send.
func (c *Controller) settle(now time.Time) {
	if !c.Leading() {
		c.pendingGrant = c.pendingGrant[:0]
		clear(c.release)
		for _, name := range c.holding {
			if p := c.peers[name]; p != nil {
				p.held = nil
			}
		}
		c.holding = c.holding[:0]
		return
	}
	c.reconcile(now)
	c.answerHeld(now)
	if c.changed {
		c.changed = false
		c.version++
		owners := make([]string, len(c.recs))
		states := make([]State, len(c.recs))
		for i := range c.recs {
			owners[i], states[i] = c.recs[i].owner, c.recs[i].state
		}
		m, err := NewMap(c.epoch, c.version, c.cfg.Shards, c.target, owners, states)
		if err != nil {
			panic(fmt.Sprintf("shard: controller built a bad map: %v", err)) // internal invariant
		}
		c.cur = m
		c.nextAnnounce = now
	}
	// Events name the first map version that reflects them.
	for i := c.evMark; i < len(c.out.Events); i++ {
		c.out.Events[i].Version = c.version
	}
	c.evMark = len(c.out.Events)
	for _, g := range c.pendingGrant {
		g.Version, g.Checksum = c.cur.version, c.cur.checksum
		c.stats.Grants++
		c.send(g.Node, g)
	}
	c.pendingGrant = c.pendingGrant[:0]
	for _, name := range sortedKeys(c.release) {
		c.stats.Releases++
		c.send(name, &Release{Epoch: c.epoch, Node: name, Shards: sortedUnique(c.release[name])})
	}
	clear(c.release)
	if !now.Before(c.nextAnnounce) {
		c.nextAnnounce = now.Add(c.cfg.AnnounceInterval)
		for _, name := range sortedKeys(c.peers) {
			if p := c.peers[name]; c.reachable(now, p) {
				c.stats.Announces++
				c.send(name, &Announce{Epoch: c.epoch, Leader: c.self, Version: c.cur.version, Checksum: c.cur.checksum})
			}
		}
	}
}

// reachable reports whether p gets announcements: membership holds it alive or
// suspect, or it renewed within the last RenewInterval+RetryInterval. The latter
// covers a member back from a partition that membership has not re-admitted yet:
// it hears of every change at once instead of at its next renewal.
func (c *Controller) reachable(now time.Time, p *peer) bool {
	if p.inView && p.member.Health <= HealthSuspect {
		return true
	}
	return !p.heard.IsZero() && now.Before(p.heard.Add(c.cfg.RenewInterval+c.cfg.RetryInterval))
}

func (c *Controller) send(to string, m Message) {
	c.out.Messages = append(c.out.Messages, Envelope{To: to, Msg: m})
}

func (c *Controller) emit(e Event) {
	c.out.Events = append(c.out.Events, e)
}

// validShardList reports whether l is strictly ascending and below shards.
func validShardList(l []uint32, shards int) bool {
	for i, s := range l {
		if uint64(s) >= uint64(shards) || (i > 0 && l[i-1] >= s) {
			return false
		}
	}
	return true
}

func sortedSet(m map[uint32]struct{}) []uint32 {
	out := make([]uint32, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func sortedUnique(l []uint32) []uint32 {
	slices.Sort(l)
	return slices.Compact(l)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
