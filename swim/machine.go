package swim

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// ErrPayloadTooLarge means a metadata or user payload cannot fit in one packet of
// the configured MTU, so it could never be gossiped.
var ErrPayloadTooLarge = errors.New("swim: payload does not fit in a packet")

// ErrNoRand means New was given a nil *rand.Rand: the machine has no randomness of
// its own to fall back on.
var ErrNoRand = errors.New("swim: nil rng")

// Stats are cumulative counters for metrics, except QueueLen.
type Stats struct {
	ProbesSent         uint64 // direct pings of our own probes
	ProbesFailed       uint64 // probes that ended with no ack, direct or relayed
	IndirectProbesSent uint64 // indirect-ping requests we sent for our failed direct pings
	NacksReceived      uint64 // nacks from intermediaries of our indirect probes
	Suspicions         uint64 // members that turned suspect in our view
	Refutations        uint64 // times we raised our incarnation to refute a claim about us
	Deaths             uint64 // members declared dead in our view (left ones excluded)
	PushPulls          uint64 // push-pull exchanges we started (periodic, join, reconnect, digest)
	PushPullsFailed    uint64 // exchanges we started that the host reported failed
	DigestSyncs        uint64 // push-pulls started because digests kept disagreeing
	FinalProbes        uint64 // last-chance probes of suspects whose suspicion timed out
	Reconnects         uint64 // push-pulls started to a departed member's address or a seed
	BroadcastsSent     uint64 // broadcast messages piggybacked, counted per packet
	BroadcastsDropped  uint64 // broadcasts dropped from a full queue before their limit
	EagerDeferred      uint64 // eager pushes not sent (EagerPace): their facts went with the gossip tick
	Malformed          uint64 // malformed packets, messages or frames, dropped
	Implausible        uint64 // claims refused for an incarnation jump beyond wire.MaxJump (or one we cannot out-bid)
	ForeignPackets     uint64 // packets and stream frames of another cluster label, dropped
	MisdirectedPings   uint64 // pings for another node name (the address was reused)
	MembersRefused     uint64 // new members refused: the table was at MaxMembers with no tombstone to evict
	RepliesDropped     uint64 // answers not sent: the input had used its budget (maxRepliesPerInput)
	IndirectRefused    uint64 // indirect-probe requests for a member we do not know, not run
	NameConflicts      uint64 // current claims that a node at another address is us (NameConflict names it)
	VersionsRefused    uint64 // Alive and NodeState claims refused: their protocol range is invalid or shares no version with ours
	// With Config.Auth (PROTOCOL.md 10.10): self-claims (Alive, Leave, push-pull
	// records) refused for a signature that is not their member's, for none,
	// or for a member whose key we do not know yet; push-pulls started to fetch
	// such keys; our own claims that could not be signed.
	ClaimsForged        uint64
	ClaimsUnsigned      uint64
	ClaimsUnknownSigner uint64
	ClaimsOverBudget    uint64 // not verified: the packet had used its maxVerifiesPerPacket
	CertSyncs           uint64
	SignFailures        uint64
	HealthReports       uint64 // direct acks that carried the responder's local health (FeatureAckHealth)
	PacketsIn           uint64
	PacketsOut          uint64
	BytesIn             uint64
	BytesOut            uint64
	QueueLen            int // broadcasts queued now, all kinds
}

// Payload is a metadata delta or user message received by gossip, or a metadata
// snapshot received in a push-pull (Snapshot). Data is owned by the receiver.
type Payload struct {
	From     string // address it came from
	Data     []byte
	Snapshot bool
}

// member is one entry of the view.
//
// Every node holds one per member, so at 10,000 nodes a simulator process holds 10^8
// of them: the fields are packed into 72 bytes (strings shared through
// Config.Interner; Since kept as an offset from Machine.epoch instead of a 24-byte
// time.Time), and what can be derived (the digest hash, the sorted order) is not
// stored. Member builds the public form.
type member struct {
	Name               string
	Addr               string
	Incarnation        uint64
	since              time.Duration // Member.Since - Machine.epoch
	susp               *suspicion
	gen                uint32 // bumped on every status change and on reuse; stale timers compare it
	probeIdx           int32  // index in Machine.plist; -1 for ourselves
	tombIdx            int32  // index in Machine.tombs; -1 unless dead or left
	Status             Status
	protoMin, protoMax uint8
	features           wire.Features
	health             uint8 // its Local Health Multiplier from its last direct ack (FeatureAckHealth); 0 unknown
	// verified: a packet from Addr proved the member answers there (vouch). Until
	// then Addr gets no streams and, beside probes (ours and those we relay) and
	// eager pushes, at most one packet a ProbeInterval (PROTOCOL.md 10.9). Kept
	// through suspicion, death and refutation; lost only when the address changes.
	verified bool
}

// incarnation is the member's incarnation, 0 for an unknown (nil) member.
func (mem *member) incarnation() uint64 {
	if mem == nil {
		return 0
	}
	return mem.Incarnation
}

// hash is the member's contribution to the digest (live members only).
func (mem *member) hash() uint64 { return MemberHash(mem.Name, mem.Incarnation, mem.Status) }

// suspicion is the state of one suspect member's timer (Lifeguard §IV-B).
type suspicion struct {
	start    time.Time
	k        int
	lo, hi   time.Duration
	from     []string // who suspected or confirmed, the first suspecter included
	deadline time.Time
	checked  bool // a final probe is running or ran since the last (re)start
}

// finalProbe is the last-chance probe of a member whose suspicion timed out.
type finalProbe struct {
	seq      uint32
	target   *member
	gen      uint32 // the target's gen when the probe started
	deadline time.Time
}

// probeState is the probe in flight, if any.
type probeState struct {
	active        bool
	target        *member
	seq           uint32
	sent          time.Time // when the ping left, for Ready.RTTs
	indirectAt    time.Time // direct ack deadline: indirect probes go out
	indirectSent  bool
	end           time.Time // the probe fails if no ack by then
	expectedNacks int
	nacks         int
}

// relay is an indirect probe we run for another node.
type relay struct {
	seq      uint32 // our ping's sequence number
	origSeq  uint32 // the requester's sequence number, echoed back
	replyTo  string
	wantNack bool
	nackAt   time.Time // the nack goes out here, early enough to beat the requester's probe end
	nacked   bool
	deadline time.Time // the entry is dropped here; a later ack is not relayed
}

// maxRelays bounds indirect probes run for others at once, so a flood of requests
// costs bounded memory.
const maxRelays = 256

// challenge is the last packet sent to an unverified address: when, and the last
// Ping sent there (seq, for member name), whose Ack from that address verifies the
// member there.
type challenge struct {
	at   time.Time
	seq  uint32
	name string
}

// maxChallenges bounds Machine.challenges; when it is full the memory is cleared,
// which at worst lets each unverified address one packet early.
const maxChallenges = 1024

// maxRepliesPerInput bounds the packets one received packet or push-pull can make
// us send as answers (acks, relayed probes and acks, refutation Alives, buddy
// suspicions), whatever it carries: without it a 65 KB datagram of 1,900 pings
// drew 1,900 packets. A peer's packet needs at most three (an ack, an Alive
// answering a claim about us, a relayed ack); eager push of what it taught us is
// bounded apart, by EagerFanout.
const maxRepliesPerInput = 4

// Machine is one node's membership state machine. Not safe for concurrent use.
type Machine struct {
	cfg         Config
	rng         *rand.Rand
	clusterHash uint32

	epoch time.Time // the now of New; member.since counts from it
	// Versions and features (versions.go): our range, the version we send at,
	// the features on in our view, and the live members behind both.
	versions     wire.Versions
	sendVersion  uint8
	enabled      wire.Features
	pxCount      [256]int32 // live members other than us by announced ProtoMax
	peersCounted int32      // live members other than us (the sum of pxCount)
	versionCap   uint8      // while handling a packet: its version (capVersion); else 0
	lacking      [64]int32  // live members other than us without feature bit b (bits of Config.Features only)
	self         *member
	members      memberTable
	plist        []*member // probe order, everyone but us; reshuffled each round
	pidx         int
	tombs        []*member // dead and left members; the dead ones are reconnect candidates
	seeds        []string
	live         int // alive and suspect members, us included
	digest       viewDigest
	health       int // local health score, 0..AwarenessMaxMultiplier-1
	leaving      bool
	seq          uint32
	probe        probeState
	relays       []relay
	finals       []finalProbe
	// challenges holds, per unverified address, the last packet sent there
	// (allow): one a ProbeInterval per address however many members claim it.
	challenges map[string]challenge
	proven     bool // the packet being handled proved a member at its source (vouch)
	wantSync   bool // a Digest in it asked for a digest sync, run if proven
	timers     timers
	queues     queues
	eager      []*broadcast // facts learned by the current input, pushed at its end
	eagerOK    bool         // facts of the current input are pushed eagerly
	eagerNext  time.Time    // EagerPace's state: when the eager budget is next full
	curFrom    string       // source address of the packet being handled, else ""
	limited    bool         // an input is being handled: answers spend budget
	budget     int          // answers the input being handled may still send

	nextProbe, nextGossip, nextPushPull, nextReconnect time.Time

	// A join reply is the answerer's view when it answered: members that joined
	// about as we did reach us only by gossip, whose transmissions may all have
	// been spent before the cluster knew us (formation of 128 nodes joining one
	// seed at once on loopback: one node in about four runs missed one, repaired
	// 3-4 s later by a digest sync). So one settle push-pull, with a random member
	// other than the answerer, follows a join once that gossip has drained
	// (GossipDrain). Nothing tells us cheaply that a concurrent join happened (a
	// node that was slow meanwhile learned nothing at all), so it always runs: one
	// more exchange per join.
	joinsOut   []string  // addresses with a join push-pull of ours in flight
	settleAt   time.Time // when the settle push-pull is due; zero: none armed
	settleSeed string    // the address whose join reply armed it (not asked again)

	viewChanged    time.Time // last change of our digest
	mismatchSince  time.Time // first of the current run of disagreeing digests
	lastMismatch   time.Time // last disagreeing digest received
	probesNoDigest int       // probes sent without our digest since the last with it
	echoDigest     bool      // the packet being handled carried a disagreeing digest
	lastDigestSync time.Time

	// conflictAddr is the address of the last claim of our name elsewhere (NameConflict).
	conflictAddr string

	// With Config.Auth: the signature proving each member's record, by name;
	// the source of the input being handled (for Ready.Forged); whether it
	// carried a claim of an unknown signer, and when we last synced for one.
	proofs       map[string]proof
	claimFrom    string
	wantCerts    bool
	verifies     int    // signatures the input may still verify; -1: no bound (push-pulls)
	forgedInput  bool   // the input carried a forgery: the rest of it is not verified
	certSyncTo   string // a certificate sync waiting for its rate limit, else ""
	pending      []pendingAlive
	lastCertSync time.Time

	packer *wire.Packer
	reader wire.PacketReader
	dec    wire.Decoder
	in     struct { // decode targets, reused
		ping  wire.Ping
		iping wire.IndirectPing
		ack   wire.Ack
		nack  wire.Nack
		alive wire.Alive
		susp  wire.Suspect
		dead  wire.Dead
		leave wire.Leave
		user  wire.User
		meta  wire.MetaDelta
		dig   wire.Digest
	}
	peers []*member // scratch for randomPeers

	out   Ready
	stats Stats
}

// New builds a Machine that knows only itself, alive at incarnation 0. rng is its
// only source of randomness; now starts its timers.
func New(cfg Config, rng *rand.Rand, now time.Time) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, ErrNoRand
	}
	m := &Machine{
		cfg:         cfg,
		rng:         rng,
		clusterHash: wire.ClusterHash(cfg.ClusterLabel),
		epoch:       now,
		queues:      newQueues(cfg.QueueLimit),
		packer:      wire.NewPacker(cfg.MTU, wire.ClusterHash(cfg.ClusterLabel)),
		viewChanged: now,
	}
	m.dec.Share(cfg.Interner)
	m.versions = cfg.Versions.OrDefault()
	m.reader.Accept(m.versions)
	m.dec.Accept(m.versions)
	m.self = m.members.add(cfg.Name)
	m.self.Addr, m.self.Status = cfg.Addr, StatusAlive
	m.self.protoMin, m.self.protoMax, m.self.features = m.versions.Min, m.versions.Max, cfg.Features
	m.refreshVersions() // alone: our Min, no features
	m.packer.Reset()
	m.self.probeIdx, m.self.tombIdx = -1, -1
	m.digest.add(m.self.hash())
	m.live = 1
	// Spread timers over the first interval so nodes started together do not probe
	// in lockstep.
	m.nextProbe = now.Add(jitter(rng, cfg.ProbeInterval))
	m.nextGossip = now.Add(jitter(rng, cfg.GossipInterval))
	if cfg.PushPullInterval > 0 {
		m.nextPushPull = now.Add(cfg.PushPullInterval + jitter(rng, cfg.PushPullInterval))
	}
	if cfg.ReconnectInterval > 0 {
		m.nextReconnect = now.Add(cfg.ReconnectInterval + jitter(rng, cfg.ReconnectInterval))
	}
	m.queueFact(m.aliveMsg(m.self), cfg.Name)
	return m, nil
}

// livePeers is the number of alive or suspect members other than us.
func (m *Machine) livePeers() int {
	if m.leaving {
		return m.live
	}
	return m.live - 1
}

func jitter(rng *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(d)))
}

// Ready returns and clears the outputs piled up since the last call.
func (m *Machine) Ready() Ready {
	r := m.out
	m.out = Ready{}
	return r
}

// Members returns the whole view sorted by name, ourselves and tombstones included.
func (m *Machine) Members() []Member {
	s := m.sortedMembers()
	out := make([]Member, len(s))
	for i, mem := range s {
		out[i] = m.public(mem)
	}
	return out
}

// Member returns the named member as the view holds it (ourselves included), in
// O(1): hosts that look up one member need not sort the whole view.
func (m *Machine) Member(name string) (Member, bool) {
	mem := m.members.get(name)
	if mem == nil {
		return Member{}, false
	}
	return m.public(mem), true
}

// sortedMembers sorts the view afresh: caching it would cost a pointer per member
// per node, and every join invalidated the cache during formation anyway.
func (m *Machine) sortedMembers() []*member {
	s := make([]*member, 0, m.members.Len())
	m.members.each(func(mem *member) { s = append(s, mem) })
	slices.SortFunc(s, func(a, b *member) int { return cmp.Compare(a.Name, b.Name) })
	return s
}

// Digest is the order-independent hash of the view (MemberHash), maintained in O(1)
// per change.
func (m *Machine) Digest() wire.Digest { return m.digest.d }

// Local is this node as it sees itself.
func (m *Machine) Local() Member { return m.public(m.self) }

// public is mem as the API shows it.
func (m *Machine) public(mem *member) Member {
	return Member{Name: mem.Name, Addr: mem.Addr, Incarnation: mem.Incarnation, Status: mem.Status, Since: m.epoch.Add(mem.since),
		ProtoMin: mem.protoMin, ProtoMax: mem.protoMax, Features: mem.features, Health: mem.health}
}

// LocalHealth is the Local Health Multiplier's score: 0 when healthy, up to
// AwarenessMaxMultiplier-1; probe interval and timeout are multiplied by score+1.
func (m *Machine) LocalHealth() int { return m.health }

// Stats returns the counters.
func (m *Machine) Stats() Stats {
	s := m.stats
	s.BroadcastsDropped = m.queues.dropped
	s.QueueLen = m.queues.Len()
	return s
}

// CountMalformed counts malformed input the host dropped before it reached us (a
// bad stream frame, or one of a type streams do not carry).
func (m *Machine) CountMalformed() { m.stats.Malformed++ }

// CountForeign counts a stream frame of another cluster label the host dropped,
// as HandlePacket counts such packets.
func (m *Machine) CountForeign() { m.stats.ForeignPackets++ }

// BroadcastMeta gossips an opaque metadata delta (crdt): pushed at once to
// EagerFanout random members, like a new membership fact, and queued for the gossip
// tick. A queued delta with the same non-empty key is replaced. The metadata layer decides what is new: it sees every
// received delta in Ready.Meta and re-broadcasts those that changed its state, which
// is what makes them spread by infection.
func (m *Machine) BroadcastMeta(now time.Time, key string, payload []byte) error {
	return m.broadcastPayload(now, kindMeta, key, &wire.MetaDelta{Payload: payload})
}

// BroadcastUser gossips an opaque application message, delivered to peers in
// Ready.User; pushed eagerly and queued, like BroadcastMeta. Receivers do not re-broadcast it unless the application does.
func (m *Machine) BroadcastUser(now time.Time, payload []byte) error {
	return m.broadcastPayload(now, kindUser, "", &wire.User{Payload: payload})
}

func (m *Machine) broadcastPayload(now time.Time, kind bcastKind, key string, msg wire.Message) error {
	b := &broadcast{kind: kind, key: key, msg: wire.AppendMessage(nil, msg)}
	m.packer.Reset()
	if len(b.msg) > m.packer.Room() {
		return ErrPayloadTooLarge
	}
	m.queues.push(b)
	m.eagerOK = true
	m.eager = append(m.eager, b)
	m.flushEager(now, "")
	return nil
}

// Join starts joining through seed addresses: a push-pull with each. Seeds are also
// remembered as reconnect candidates, so a node that could not reach any keeps
// trying (ReconnectInterval). Calling Join again with the same seeds starts new
// push-pulls: that is how a host retries a join with its own backoff.
func (m *Machine) Join(now time.Time, seeds []string) {
	for _, s := range seeds {
		if s == "" || s == m.cfg.Addr {
			continue
		}
		if !slices.Contains(m.seeds, s) {
			m.seeds = append(m.seeds, s)
		}
		m.startPushPull(s, true)
	}
}

// Leave starts a graceful leave: we mark ourselves left, push the Leave eagerly and
// keep gossiping it; we stop probing and no longer refute anything. The host should
// keep running the machine for a few gossip intervals before shutting down. Leave is
// final: to come back, start a new Machine (it will refute its old self).
func (m *Machine) Leave(now time.Time) {
	if m.leaving {
		return
	}
	m.leaving = true
	m.probe = probeState{}
	m.setState(now, m.self, m.self.Incarnation, StatusLeft)
	m.event(now, EventLeft, m.self)
	m.eagerOK = true
	m.queueFact(&wire.Leave{Node: m.self.Name, Incarnation: m.self.Incarnation, Sig: m.proofOf(m.self)}, m.self.Name)
	m.flushEager(now, "")
}

// NameConflict is the address of the last node claimed alive under our name at
// another address with an incarnation at least ours ("" if none): another node
// uses our name, or a previous run of ours at another address still lives in the
// cluster's view. Stats.NameConflicts counts such claims; we refute each.
func (m *Machine) NameConflict() string { return m.conflictAddr }

// Errors of ForceLeave.
var (
	ErrUnknownMember = errors.New("swim: no such member")
	ErrMemberLive    = errors.New("swim: member is alive or suspect: only a dead member can be forced out (a live one leaves itself)")
)

// ForceLeave is the operator's removal of a dead member: this node records it as
// left, and gossips the Leave, which members still holding it alive or suspect
// take (those holding it dead keep that). With prune its tombstone, a reconnect
// candidate, is also dropped from this node's table now rather than after
// TombstoneTTL; other nodes keep theirs. A live member is refused: it would
// refute the claim at once.
func (m *Machine) ForceLeave(now time.Time, name string, prune bool) error {
	mem := m.members.get(name)
	switch {
	case mem == nil || mem == m.self:
		return fmt.Errorf("%w: %q", ErrUnknownMember, name)
	case isLive(mem.Status):
		return fmt.Errorf("%w: %q is %s", ErrMemberLive, name, mem.Status)
	}
	if mem.Status == StatusDead {
		m.setState(now, mem, mem.Incarnation, StatusLeft)
		m.event(now, EventLeft, mem)
		m.queueFact(&wire.Leave{Node: mem.Name, Incarnation: mem.Incarnation, Sig: m.proofOf(mem)}, mem.Name)
	}
	if prune {
		m.forget(now, mem)
	}
	return nil
}

// NextDeadline is when Tick must next be called; it may be in the past (call Tick
// at once). The zero time means nothing is scheduled (only after Leave, once the
// queue is empty and no tombstone is left): wait for input.
func (m *Machine) NextDeadline() time.Time {
	var d time.Time
	take := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	switch {
	case m.probe.active:
		if !m.probe.indirectSent {
			take(m.probe.indirectAt)
		}
		take(m.probe.end)
	case !m.leaving:
		take(m.nextProbe)
	}
	if m.queues.Len() > 0 && m.livePeers() > 0 {
		take(m.nextGossip) // nothing to gossip, or nobody to gossip to: no wake-ups
	}
	if !m.leaving {
		take(m.nextPushPull)
		take(m.nextReconnect)
		take(m.settleAt)
		if m.certSyncTo != "" || len(m.pending) > 0 {
			take(m.certSyncAt())
		}
	}
	take(m.timers.next())
	for i := range m.relays {
		if r := &m.relays[i]; r.wantNack && !r.nacked {
			take(r.nackAt)
		}
		take(m.relays[i].deadline)
	}
	for i := range m.finals {
		take(m.finals[i].deadline)
	}
	return d
}

// Tick fires every timer due at now, in a fixed order: relayed probes, our probe,
// suspicions and tombstones, gossip, push-pull, reconnect.
func (m *Machine) Tick(now time.Time) {
	m.eagerOK = true
	m.tickRelays(now)
	m.tickFinals(now)
	m.tickProbe(now)
	for {
		e, ok := m.timers.popDue(now)
		if !ok {
			break
		}
		m.fireTimer(now, e)
	}
	if !now.Before(m.nextGossip) && m.queues.Len() > 0 {
		m.nextGossip = now.Add(m.cfg.GossipInterval)
		for _, p := range m.randomPeers(now, m.cfg.GossipNodes, "", nil, allowedAddr) {
			if !m.reach(now, p) {
				continue
			}
			m.queues.fill(m.packer)
			if m.packer.Count() > 0 {
				m.send(p.Addr)
			}
		}
	}
	if !m.leaving && m.cfg.PushPullInterval > 0 && !now.Before(m.nextPushPull) {
		m.nextPushPull = now.Add(PushPullScale(m.cfg.PushPullInterval, m.live))
		if p := m.randomPeers(now, 1, "", nil, verifiedAddr); len(p) == 1 {
			m.startPushPull(p[0].Addr, false)
		}
	}
	if !m.leaving && !m.settleAt.IsZero() && !now.Before(m.settleAt) {
		m.settleAt = time.Time{}
		// Another verified member if there is one, else the seed again: its view
		// has moved on since it answered (it answered the later joiners too).
		if p := m.randomPeers(now, 1, m.settleSeed, nil, verifiedAddr); len(p) == 1 {
			m.startPushPull(p[0].Addr, false)
		} else {
			m.startPushPull(m.settleSeed, false)
		}
	}
	m.tickCertSync(now)
	if !m.leaving && m.cfg.ReconnectInterval > 0 && !now.Before(m.nextReconnect) {
		m.nextReconnect = now.Add(PushPullScale(m.cfg.ReconnectInterval, m.live))
		m.reconnect()
	}
	m.flushEager(now, "")
}

// reconnect push-pulls with a random dead member's address or seed. Two
// partitions that declared each other dead find each other again this way; a node
// that is alone re-joins through it. A member that left is not a candidate: it
// said it was going, and a node that comes back joins by itself, so dialling it
// for its tombstone's lifetime (an hour) only reached a closed port or whatever
// reused it. An address that a live member holds is skipped: that peer is already
// in touch, and in a healthy cluster with seeds configured reconnects then cost
// nothing. The checks scan the tombstones and the view, paid once per (scaled)
// ReconnectInterval.
func (m *Machine) reconnect() {
	dead := 0
	for _, t := range m.tombs {
		if t.Status == StatusDead {
			dead++
		}
	}
	total := dead + len(m.seeds)
	if total == 0 {
		return
	}
	// A tombstone whose address never answered as its member (a fake's, maybe) is
	// drawn again, a bounded number of times: a split soon after formation leaves
	// many members unverified, and skipping the round slowed the sim's heal.
	var addr string
	for tries := 4; tries > 0 && addr == ""; tries-- {
		i := m.rng.IntN(total)
		if i >= dead {
			addr = m.seeds[i-dead]
			continue
		}
		for _, t := range m.tombs {
			if t.Status != StatusDead {
				continue
			}
			if i == 0 {
				if t.verified {
					addr = t.Addr
				}
				break
			}
			i--
		}
	}
	if addr == "" || addr == m.cfg.Addr {
		return
	}
	for _, p := range m.plist {
		if p.Addr == addr && (p.Status == StatusAlive || p.Status == StatusSuspect) {
			return
		}
	}
	m.stats.Reconnects++
	m.startPushPull(addr, m.live == 1)
}

func (m *Machine) fireTimer(now time.Time, e timerEntry) {
	mem := m.members.get(e.name)
	if mem == nil || mem.gen != e.gen {
		return
	}
	switch e.kind {
	case timerSuspicion:
		s := mem.susp
		if mem.Status != StatusSuspect || s == nil || !s.deadline.Equal(e.at) || s.checked {
			return
		}
		// Without FinalProbe, a suspicion that ran to Lifeguard's maximum without a
		// single independent confirmation still gets one: nobody else's probe of
		// the member failed meanwhile, so a refutation we missed is the likelier
		// story, and real crashes are confirmed long before the maximum.
		lonely := s.k > 0 && len(s.from) <= 1
		if (m.cfg.FinalProbe || lonely) && !m.leaving {
			s.checked = true
			m.startFinalProbe(now, mem)
			return
		}
		m.declareDead(now, mem, mem.Incarnation, m.self.Name, false)
	case timerGC:
		if mem.Status == StatusDead || mem.Status == StatusLeft {
			m.forget(now, mem)
		}
	}
}

// startPushPull asks the host to exchange full state with to.
func (m *Machine) startPushPull(to string, join bool) {
	m.stats.PushPulls++
	if join && !slices.Contains(m.joinsOut, to) {
		m.joinsOut = append(m.joinsOut, to) // bounded by the seeds and tombstones
	}
	pp := m.localState(join)
	if m.cfg.Auth != nil {
		pp.CertHave = m.cfg.Auth.Have()
		if join {
			// The seed may not know us yet (in node, mutual TLS tells it; a
			// host without it learns it here).
			pp.Certs = m.cfg.Auth.Missing(nil, []string{m.self.Name})
		}
	}
	m.out.Streams = append(m.out.Streams, Stream{To: to, Msg: pp})
}

// localState is our whole view, sorted by name, tombstones included so they
// spread, each record with its member's signature when we hold one.
func (m *Machine) localState(join bool) *wire.PushPull {
	s := m.sortedMembers()
	pp := &wire.PushPull{Join: join, Nodes: make([]wire.NodeState, len(s))}
	for i, mem := range s {
		pp.Nodes[i] = wire.NodeState{
			Name: mem.Name, Addr: mem.Addr, Incarnation: mem.Incarnation,
			Status: wire.NodeStatus(mem.Status), ProtoMin: mem.protoMin, ProtoMax: mem.protoMax,
			Features: mem.features,
			Sig:      m.proofOf(mem),
		}
	}
	return pp // the host fills pp.Meta when it encodes the frame: snapshots are built lazily
}

// HandlePushPull merges a peer's push-pull request and returns our reply. Facts of a
// joiner's request are pushed eagerly (the cluster learns of the joiner at once);
// those of periodic exchanges are only queued.
func (m *Machine) HandlePushPull(now time.Time, from string, pp *wire.PushPull) *wire.PushPull {
	if pp == nil {
		m.stats.Malformed++
		return nil
	}
	m.eagerOK = pp.Join
	m.limited, m.budget = true, maxRepliesPerInput
	m.merge(now, from, pp)
	m.limited = false
	reply := m.localState(false)
	if m.cfg.Auth != nil {
		names := make([]string, len(reply.Nodes))
		for i := range reply.Nodes {
			names[i] = reply.Nodes[i].Name
		}
		reply.Certs = m.cfg.Auth.Missing(pp.CertHave, names)
	}
	m.flushEager(now, "")
	return reply
}

// HandlePushPullReply merges the reply to a push-pull we started.
func (m *Machine) HandlePushPullReply(now time.Time, from string, pp *wire.PushPull) {
	if pp == nil {
		m.stats.Malformed++
		return
	}
	m.eagerOK = false
	m.curFrom = from // the address we dialed: where a refutation must go
	m.limited, m.budget = true, maxRepliesPerInput
	m.merge(now, from, pp)
	m.limited = false
	m.curFrom = ""
	// The node that answered at the address we dialled (a TCP handshake, which a
	// blind spoofer cannot complete) lists itself there: that member, when the
	// reply names exactly one at the address, is verified.
	var at *wire.NodeState
	for i := range pp.Nodes {
		if ns := &pp.Nodes[i]; ns.Addr == from {
			if at != nil {
				at = nil
				break
			}
			at = ns
		}
	}
	if at != nil {
		m.vouch(m.members.get(at.Name), from)
	}
	m.flushEager(now, "")
	if m.joinAnswered(from) {
		m.settleAt = now.Add(GossipDrain(m.cfg.RetransmitMult, m.live, m.cfg.GossipNodes, m.cfg.GossipInterval))
		m.settleSeed = from
	}
}

// joinAnswered forgets a join push-pull of ours to addr and reports whether there
// was one.
func (m *Machine) joinAnswered(addr string) bool {
	i := slices.Index(m.joinsOut, addr)
	if i < 0 {
		return false
	}
	m.joinsOut = slices.Delete(m.joinsOut, i, i+1)
	return true
}

// PushPullFailed notes that a push-pull we started did not complete: periodic
// exchanges and reconnects try again later, and the host retries a join.
func (m *Machine) PushPullFailed(now time.Time, to string) {
	m.stats.PushPullsFailed++
	m.joinAnswered(to)
}

// merge applies a peer's full state. A remote "dead" for a member we think alive is
// taken as a suspicion, so a member that is in fact alive gets its suspicion
// timeout to refute (a stale or partitioned view cannot kill it outright); "left"
// is taken as it is, since only the member itself says it. A view names no
// suspecter, so its suspicions are anonymous (from ""): they start a suspicion
// but never confirm one (confirm).
func (m *Machine) merge(now time.Time, from string, pp *wire.PushPull) {
	if m.cfg.Auth != nil && len(pp.Certs) > 0 {
		m.cfg.Auth.Learn(pp.Certs) // first: they verify the records below
	}
	m.claimFrom, m.verifies, m.forgedInput = from, -1, false
	defer func() { m.claimFrom, m.wantCerts = "", false }()
	if len(pp.Certs) > 0 && len(m.pending) > 0 {
		defer m.retryPending(now) // after the records: they are as new or older
	}
	if len(pp.Meta) > 0 {
		m.out.Meta = append(m.out.Meta, Payload{From: from, Data: slices.Clone(pp.Meta), Snapshot: true})
	}
	for i := range pp.Nodes {
		ns := &pp.Nodes[i]
		if ns.Name == "" || !m.addrOK(ns.Addr) {
			m.stats.Malformed++
			continue
		}
		switch ns.Status {
		case wire.StatusAlive:
			m.applyAlive(now, ns.Name, ns.Addr, ns.Incarnation, ns.ProtoMin, ns.ProtoMax, ns.Features, ns.Sig)
		case wire.StatusSuspect:
			// Without its member's signature (a suspicion raised the incarnation
			// past the last Alive) the record is only an accusation.
			if len(ns.Sig) > 0 || m.cfg.Auth == nil {
				m.applyAlive(now, ns.Name, ns.Addr, ns.Incarnation, ns.ProtoMin, ns.ProtoMax, ns.Features, ns.Sig)
			}
			m.applySuspect(now, ns.Name, ns.Incarnation, "")
		case wire.StatusDead:
			if ns.Name == m.self.Name {
				m.applyDead(now, ns.Name, ns.Incarnation, from, false, nil)
			} else {
				m.applySuspect(now, ns.Name, ns.Incarnation, "")
			}
		case wire.StatusLeft:
			m.applyDead(now, ns.Name, ns.Incarnation, ns.Name, true, ns.Sig)
		default:
			m.stats.Malformed++
		}
	}
}

// event records a membership change.
func (m *Machine) event(now time.Time, kind EventKind, mem *member) {
	m.out.Events = append(m.out.Events, Event{Kind: kind, Member: m.public(mem), At: now})
}

// reachMode says which members whose address is unverified randomPeers may pick.
type reachMode uint8

const (
	anyAddr      reachMode = iota // eager push: answers to one input, at most EagerFanout (holding it to the allowance slowed metadata just after formation)
	allowedAddr                   // gossip, indirect-probe requests: within the address's allowance
	verifiedAddr                  // streams: none
)

// randomPeers picks up to k distinct random alive or suspect members other than us,
// skipping address exclude, member skip, and members whose address is unverified
// as mode says. It draws at random a bounded number of times, so it costs O(k)
// whatever the cluster size (and may return fewer than k when most of the view is
// dead).
func (m *Machine) randomPeers(now time.Time, k int, exclude string, skip *member, mode reachMode) []*member {
	m.peers = m.peers[:0]
	n := len(m.plist)
	if n == 0 || k <= 0 {
		return m.peers
	}
	for tries := 4*k + 8; tries > 0 && len(m.peers) < k; tries-- {
		p := m.plist[m.rng.IntN(n)]
		if (p.Status != StatusAlive && p.Status != StatusSuspect) || p == skip ||
			(exclude != "" && p.Addr == exclude) || slices.ContainsFunc(m.peers, func(q *member) bool { return q.Addr == p.Addr }) ||
			!p.verified && (mode == verifiedAddr || mode == allowedAddr && !m.mayAllow(now, p.Addr)) {
			continue
		}
		m.peers = append(m.peers, p)
	}
	return m.peers
}

// mayAnswer reports whether the input being handled may send one more answer,
// spending one of its budget; outside an input (timers) it always may. Callers ask
// before building the packet.
func (m *Machine) mayAnswer() bool {
	if !m.limited {
		return true
	}
	if m.budget == 0 {
		m.stats.RepliesDropped++
		return false
	}
	m.budget--
	return true
}

// vouch records that a message from address from proved mem answers there: mem's
// own Ping, IndirectPing or Alive sent from its held address, or an Ack from it
// to a Ping we sent it (the sequence number is the challenge). Its address is
// verified from then on (PROTOCOL.md 10.9, "Verified addresses").
func (m *Machine) vouch(mem *member, from string) {
	if mem == nil || mem == m.self || mem.Addr != from || from == "" {
		return
	}
	mem.verified = true
	m.proven = true
}

// mayAllow says whether allow would let a packet go to unverified address addr.
func (m *Machine) mayAllow(now time.Time, addr string) bool {
	c, ok := m.challenges[addr]
	return !ok || now.Sub(c.at) >= m.cfg.ProbeInterval
}

// challenge records Ping seq for member name as the challenge of unverified address
// addr, leaving its allowance as it is.
func (m *Machine) challenge(addr, name string, seq uint32) {
	if m.challenges == nil || len(m.challenges) >= maxChallenges {
		m.challenges = make(map[string]challenge)
	}
	c := m.challenges[addr]
	c.seq, c.name = seq, name
	m.challenges[addr] = c
}

// allow spends the allowance of unverified address addr: one packet a ProbeInterval,
// our probes included (force: they go anyway and take the allowance). A packet
// that carries a Ping (seq, for member name; seq 0 for none) records it as the
// address's challenge.
func (m *Machine) allow(now time.Time, addr, name string, seq uint32, force bool) bool {
	if !force && !m.mayAllow(now, addr) {
		return false
	}
	if seq != 0 {
		m.challenge(addr, name, seq)
	} else if m.challenges == nil || len(m.challenges) >= maxChallenges {
		m.challenges = make(map[string]challenge)
	}
	c := m.challenges[addr]
	c.at = now
	m.challenges[addr] = c
	return true
}

// reach starts an unsolicited packet to mem (gossip, an indirect-probe request, a
// buddy notice) in m.packer and says whether it may go: always to a verified
// member, else within allow. Nothing is added to the packet: a member that answers
// is verified by our probes and its own.
func (m *Machine) reach(now time.Time, mem *member) bool {
	m.packer.Reset()
	return mem.verified || m.allow(now, mem.Addr, mem.Name, 0, false)
}

// addrOK says whether an address read from a message passes Config.CheckAddr;
// empty addresses are left to the caller.
func (m *Machine) addrOK(addr string) bool {
	return addr == "" || m.cfg.CheckAddr == nil || m.cfg.CheckAddr(addr) == nil
}

// send finishes the packet in m.packer and queues it for to, counting the
// broadcasts it carries as sent once.
func (m *Machine) send(to string) {
	b := m.packer.Bytes()
	data := make([]byte, len(b))
	copy(data, b)
	m.out.Packets = append(m.out.Packets, Packet{To: to, Data: data})
	m.stats.PacketsOut++
	m.stats.BytesOut += uint64(len(data))
	m.stats.BroadcastsSent += uint64(m.queues.commit(RetransmitLimit(m.cfg.RetransmitMult, m.live)))
}

// flushEager pushes the facts learned by the current input to EagerFanout random
// members at once (one packet each, topped up with queued gossip), skipping the
// address they came from, when EagerPace allows a push now. Facts that do not fit,
// or that the pace holds back, stay queued for the gossip tick.
func (m *Machine) flushEager(now time.Time, exclude string) {
	if len(m.eager) == 0 {
		return
	}
	var ok bool
	if m.cfg.EagerFanout > 0 {
		if ok, m.eagerNext = EagerPace(m.eagerNext, now, m.cfg.GossipInterval, EagerBurst); !ok {
			m.stats.EagerDeferred++
		}
	}
	if ok {
		for _, p := range m.randomPeers(now, m.cfg.EagerFanout, exclude, nil, anyAddr) {
			m.packer.Reset()
			for _, b := range m.eager {
				m.queues.add(m.packer, b)
			}
			if m.packer.Count() == 0 {
				break
			}
			m.queues.fill(m.packer)
			m.send(p.Addr)
		}
	}
	clear(m.eager)
	m.eager = m.eager[:0]
}

// queueFact queues a membership broadcast keyed by the member it is about, replacing
// older news of that member, and marks it for eager push if the current input allows.
func (m *Machine) queueFact(msg wire.Message, node string) {
	b := &broadcast{kind: kindMembership, key: node, msg: wire.AppendMessage(nil, msg)}
	m.queues.push(b)
	if m.eagerOK {
		m.eager = append(m.eager, b)
	}
}

func (m *Machine) aliveMsg(mem *member) *wire.Alive {
	return &wire.Alive{
		Node: mem.Name, Addr: mem.Addr, Incarnation: mem.Incarnation,
		ProtoMin: mem.protoMin, ProtoMax: mem.protoMax, Features: mem.features, Sig: m.proofOf(mem),
	}
}
