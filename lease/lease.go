// Package lease elects one leader per cluster with fenced quorum leases, in the
// spirit of PaxosLease (Trencseni, Gazsó, Reinhardt 2012), as a pure, deterministic
// state machine: no goroutines, no sockets, no wall clock, no global randomness.
//
// Every node with the voter role runs a Machine that plays two parts. As a voter
// (PaxosLease's acceptor) it promises epochs and accepts leases, and never grants one
// while another holder's unexpired lease stands by its own clock. As a candidate
// (proposer) it asks the voters to promise a fresh epoch, then proposes a lease for
// itself at that epoch, then renews it at the same epoch while it leads. The epoch is
// the fencing token: at most one candidate gathers a quorum of promises for a given
// epoch, and successive holders' epochs strictly increase. docs/lease.md has the
// safety argument, the clock-drift bound and the deadline arithmetic (deadline.go).
//
// Inputs are Step (a received message) and Tick (time has passed), each with `now`,
// the node's local monotonic clock. Outputs pile up until the host drains them with
// Ready, whose documented order is: save State, then send Messages. The host calls
// Tick at NextDeadline.
package lease

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/omnirelay/mesh/wire"
)

var (
	// ErrNotLeader is returned by operations only a valid lease holder may perform.
	ErrNotLeader = errors.New("lease: not the lease holder")
	// ErrChangeInProgress is returned by ChangeVoters while a change is under way.
	ErrChangeInProgress = errors.New("lease: a voter-set change is in progress")
	// ErrInvalidVoters is wrapped by ChangeVoters for an unusable voter set.
	ErrInvalidVoters = errors.New("lease: invalid voter set")
)

// EventKind says what changed.
type EventKind uint8

const (
	// EventBecameLeader: this node acquired a lease; Epoch is its fencing token.
	EventBecameLeader EventKind = iota + 1
	// EventLostLease: this node stopped holding its lease (expired or released).
	EventLostLease
	// EventLeaderChanged: the lease this node knows of (Leader) changed; Holder ""
	// means none stands.
	EventLeaderChanged
	// EventVotersChanged: a voter-set change led by this node completed, or this
	// node adopted a newer voter set; Voters is the set in force once the change
	// completes (the incoming set while a joint set is in force).
	EventVotersChanged
)

// Event is one change, in the order the machine observed them.
type Event struct {
	Kind   EventKind
	Holder string
	Epoch  uint64
	Voters []string // EventVotersChanged only
	At     time.Time
	// Ended is when the lease ended, EventLostLease only: its deadline when it
	// expired (At may be later, when the machine was ticked late, say after a
	// pause), At when it was released.
	Ended time.Time
}

// Envelope is a message to send to the node named To.
type Envelope struct {
	To  string
	Msg Message
}

// Ready is everything the machine wants done since the last call.
//
// Ordering rule: if State is non-nil the host must save it durably (Storage.Save)
// BEFORE sending any of Messages, and must drop the Messages if the save fails: the
// promises and accepts among them are only true once the State saying so survives a
// crash. Messages may then leave in any order. Events are in observation order.
type Ready struct {
	State    *State
	Messages []Envelope
	Events   []Event
}

// Stats counts what the machine did; monotonically increasing.
type Stats struct {
	Malformed   uint64 // peer messages dropped as malformed
	Implausible uint64 // peer messages dropped for a counter jump beyond wire.MaxJump; elections skipped for want of an epoch
	Campaigns   uint64 // elections this node started
	Promised    uint64 // Prepares this node promised
	Accepted    uint64 // Proposes and Renews this node accepted
	Stale       uint64 // Proposes and Renews dropped as no newer than the last accepted round of their lease (replays, duplicates)
	Rejected    uint64 // requests this node rejected
	// PromisesReleased counts promises this voter dropped because their candidate
	// gave the epoch up (Release).
	PromisesReleased uint64
	LeasesWon        uint64 // times this node became leader
	RoundsLost       uint64 // renewal rounds that did not reach a quorum before the next one
	MessagesOut      uint64 // messages handed to the host
}

type role uint8

const (
	roleFollower role = iota
	roleCandidate
	roleLeader
)

// round is one Propose or Renew broadcast and the answers to it.
type round struct {
	seq        uint64
	sent       time.Time // on our clock: the holder's deadline counts from here
	membership Membership
	acks       map[string]bool
	rejects    map[string]bool
	done       bool
}

// Machine is one node's lease state machine. Not safe for concurrent use.
type Machine struct {
	cfg Config
	rng *rand.Rand
	st  State
	// dirty: st changed since the last Ready and must be saved before sending.
	dirty bool
	// quietUntil: a (re)started voter grants nothing before this instant.
	quietUntil time.Time
	// highest is the highest epoch seen in any message; candidates pick above it.
	highest uint64

	// Voter view: the lease this node accepted last, standing until accExpires,
	// and the newest round (seq) of it accepted.
	accEpoch   uint64
	accHolder  string
	accSeq     uint64
	accExpires time.Time

	// Candidate and leader state.
	role       role
	tick       func(m *Machine, now time.Time)
	epoch      uint64 // epoch being campaigned for, or held
	preparing  bool   // candidate waiting for promises (else for accepts)
	promises   map[string]bool
	prejects   map[string]bool
	rd         round
	seq        uint64    // last round number used
	attemptEnd time.Time // candidate gives up at this instant
	validUntil time.Time // leader: trust the lease strictly before this instant
	renewAt    time.Time // leader: next renewal round
	changing   bool      // leader: a voter-set change it drives is incomplete
	electAt    time.Time // follower: campaign at this instant if no lease stands

	// Last Leader() result reported by EventLeaderChanged.
	seenHolder string
	seenEpoch  uint64

	out   Ready
	stats Stats
}

// New starts a Machine at now with the state saved in storage. rng is the only
// randomness the machine uses. A new machine grants nothing for QuietPeriod.
func New(cfg Config, storage Storage, rng *rand.Rand, now time.Time) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := storage.Load()
	if err != nil {
		return nil, fmt.Errorf("lease: loading state: %w", err)
	}
	if len(st.Membership.Voters) == 0 {
		st.Membership = Membership{Voters: slices.Clone(cfg.Voters)}
	}
	m := &Machine{
		cfg:        cfg,
		rng:        rng,
		st:         cloneState(st),
		quietUntil: now.Add(QuietPeriod(cfg.LeaseDuration, cfg.MaxDrift)),
		highest:    st.Promised,
	}
	m.becomeFollower()
	m.settle(now)
	return m, nil
}

// Step feeds a received message. Malformed messages are counted and dropped.
func (m *Machine) Step(now time.Time, msg Message) {
	if !m.valid(msg) {
		m.stats.Malformed++
		return
	}
	if !m.plausible(msg) {
		m.stats.Implausible++
		return
	}
	switch msg := msg.(type) {
	case *Prepare:
		m.send(msg.Candidate, m.votePrepare(now, msg))
	case *Propose:
		if m.fresh(msg.Epoch, msg.Seq, msg.Holder) {
			m.send(msg.Holder, m.voteAccept(now, msg.Epoch, msg.Seq, msg.Holder, msg.Duration, msg.Membership))
		}
	case *Renew:
		if m.fresh(msg.Epoch, msg.Seq, msg.Holder) {
			m.send(msg.Holder, m.voteAccept(now, msg.Epoch, msg.Seq, msg.Holder, msg.Duration, msg.Membership))
		}
	case *Release:
		m.voteRelease(now, msg)
	case *Promise:
		m.stepPromise(now, msg)
	case *Accept:
		m.stepAccept(now, msg)
	case *Reject:
		m.stepReject(now, msg)
	}
	m.settle(now)
}

// Tick advances timers to now.
func (m *Machine) Tick(now time.Time) {
	m.tick(m, now)
	m.settle(now)
}

// valid checks peer input before anything acts on it.
func (m *Machine) valid(msg Message) bool {
	switch msg := msg.(type) {
	case *Prepare:
		return msg.Epoch > 0 && msg.Candidate != ""
	case *Propose:
		return m.validLease(msg.Epoch, msg.Seq, msg.Holder, msg.Duration, msg.Membership)
	case *Renew:
		return m.validLease(msg.Epoch, msg.Seq, msg.Holder, msg.Duration, msg.Membership)
	case *Release:
		return msg.Epoch > 0 && msg.Holder != ""
	case *Promise:
		return msg.Voter != ""
	case *Accept:
		return msg.Voter != ""
	case *Reject:
		return msg.Voter != "" && (msg.Membership == nil || validMembership(*msg.Membership))
	}
	return false // nil or a foreign type
}

// validLease checks a Propose or Renew. A duration above our own LeaseDuration is
// refused: QuietPeriod only covers leases up to it.
func (m *Machine) validLease(epoch, seq uint64, holder string, d time.Duration, mb Membership) bool {
	return epoch > 0 && seq > 0 && holder != "" && d > 0 && d <= m.cfg.LeaseDuration && validMembership(mb)
}

// plausible refuses a counter that jumps more than wire.MaxJump above what this
// node knows (PROTOCOL.md "Implausible numbers"): honest epochs grow by one per
// election, so one forged Prepare or Reject near 2^64-1 would otherwise leave no
// epoch to campaign for, and a voter would save that promise to disk. A voter set
// is never newer than the epoch of the message carrying it (its creator led at or
// below that epoch, and a voter's set comes from leases it promised), and its Seq
// counts the sets of one leader.
func (m *Machine) plausible(msg Message) bool {
	switch msg := msg.(type) {
	case *Prepare:
		return wire.Plausible(m.highest, msg.Epoch)
	case *Propose:
		return wire.Plausible(m.highest, msg.Epoch) && m.plausibleSet(msg.Membership, msg.Epoch) && m.plausibleSeq(msg.Epoch, msg.Holder, msg.Seq)
	case *Renew:
		return wire.Plausible(m.highest, msg.Epoch) && m.plausibleSet(msg.Membership, msg.Epoch) && m.plausibleSeq(msg.Epoch, msg.Holder, msg.Seq)
	case *Reject:
		return wire.Plausible(m.highest, msg.Highest) && (msg.Membership == nil || m.plausibleSet(*msg.Membership, msg.Highest))
	}
	return true // Promise, Accept and Release are only compared with our own epoch
}

// plausibleSeq bounds a round number by the last round accepted of the same lease
// (0 for another lease): one forged Renew at 2^64-1 would otherwise make every later
// round of the real holder look stale to fresh.
func (m *Machine) plausibleSeq(epoch uint64, holder string, seq uint64) bool {
	known := uint64(0)
	if epoch == m.accEpoch && holder == m.accHolder {
		known = m.accSeq
	}
	return wire.Plausible(known, seq)
}

func (m *Machine) plausibleSet(mb Membership, epoch uint64) bool {
	seq := uint64(0)
	if mb.Epoch == m.st.Membership.Epoch {
		seq = m.st.Membership.Seq
	}
	return mb.Epoch <= epoch && wire.Plausible(seq, mb.Seq)
}

func validMembership(mb Membership) bool {
	return validVoters(mb.Voters) == nil && (mb.Joint == nil || validVoters(mb.Joint) == nil)
}

// --- Voter (acceptor) ---

// standing is the holder of the lease this voter accepted, if it still stands.
func (m *Machine) standing(now time.Time) string {
	if now.Before(m.accExpires) {
		return m.accHolder
	}
	return ""
}

// fresh reports whether a Propose or Renew is newer than the last round this voter
// accepted of the same lease (epoch and holder), and counts it if not. A holder
// numbers the Propose and every Renew of one epoch from one strictly increasing
// counter, so a round no newer than an accepted one is a duplicate or a replay: a
// Renew captured before its holder died, resent, must not extend the dead holder's
// lease and block the election. It is dropped without an answer. A lease of another
// epoch or holder is new here; if it is older than our promise, voteAccept refuses
// it. A holder that restarts campaigns for a higher epoch, so its counter starting
// again from 1 is never taken for a replay. A voter that restarts forgets accSeq
// (it is not saved, to keep renewals off the disk): for QuietPeriod it grants
// nothing, and then a replayed Renew of the standing epoch could extend that lease
// at this voter again. That never makes a second holder (accepting only withholds
// votes from others), and the voters that did not restart still refuse it, so it
// delays an election only if a majority restarted; sealed packets' replay window
// (PROTOCOL.md section 6) stops such replays before they reach the machine.
func (m *Machine) fresh(epoch, seq uint64, holder string) bool {
	if epoch == m.accEpoch && holder == m.accHolder && seq <= m.accSeq {
		m.stats.Stale++
		return false
	}
	return true
}

// votePrepare answers a Prepare: promise unless restarted too recently, asked in an
// older voter set, another holder's lease stands, or a higher (or equal, to someone
// else) epoch was promised.
func (m *Machine) votePrepare(now time.Time, p *Prepare) Message {
	m.highest = max(m.highest, p.Epoch)
	if r := m.refuse(now, p.Epoch, 0, p.Candidate, p.MemberEpoch, p.MemberSeq); r != nil {
		return r
	}
	if !m.mayPromise(p.Epoch, p.Candidate) || m.competing(p.Epoch, p.Candidate) {
		return m.reject(p.Epoch, 0, "", nil)
	}
	m.promise(p.Epoch, p.Candidate)
	m.stats.Promised++
	return &Promise{Epoch: p.Epoch, Voter: m.cfg.Self}
}

// voteAccept answers a Propose or Renew with the same rule as Paxos phase 2 (accept
// unless a higher epoch, or this one to another candidate, was promised), plus the
// lease rules of votePrepare. Accepting starts this voter's hold: VoterHold(d) on
// our clock from now, which is after the holder started its own, shorter timer.
func (m *Machine) voteAccept(now time.Time, epoch, seq uint64, holder string, d time.Duration, mb Membership) Message {
	m.highest = max(m.highest, epoch)
	if r := m.refuse(now, epoch, seq, holder, mb.Epoch, mb.Seq); r != nil {
		return r
	}
	if !m.mayPromise(epoch, holder) {
		return m.reject(epoch, seq, "", nil)
	}
	m.promise(epoch, holder)
	m.adopt(now, mb)
	exp := VoterExpiry(now, d, m.cfg.MaxDrift)
	if m.accEpoch != epoch || m.accHolder != holder {
		m.accEpoch, m.accHolder, m.accSeq, m.accExpires = epoch, holder, seq, exp
	} else if exp.After(m.accExpires) {
		m.accExpires = exp
	}
	m.accSeq = max(m.accSeq, seq)
	m.stats.Accepted++
	return &Accept{Epoch: epoch, Seq: seq, Voter: m.cfg.Self}
}

// refuse returns the Reject for the reasons common to every request, or nil.
func (m *Machine) refuse(now time.Time, epoch, seq uint64, who string, memberEpoch, memberSeq uint64) *Reject {
	if now.Before(m.quietUntil) {
		return m.reject(epoch, seq, "", nil)
	}
	if olderID(memberEpoch, memberSeq, m.st.Membership) {
		mb := cloneMembership(m.st.Membership)
		return m.reject(epoch, seq, "", &mb)
	}
	if h := m.standing(now); h != "" && h != who {
		return m.reject(epoch, seq, h, nil)
	}
	return nil
}

// competing reports whether we campaign for epoch or higher ourselves: we then
// refuse a rival's Prepare as if we had promised ourselves already (refusing is
// always safe), so that two candidates of one epoch do not promise each other and
// both fail. A rival with a higher epoch gets our promise and ends our attempt.
func (m *Machine) competing(epoch uint64, who string) bool {
	return m.role == roleCandidate && m.preparing && who != m.cfg.Self && epoch <= m.epoch
}

func (m *Machine) mayPromise(epoch uint64, who string) bool {
	return epoch > m.st.Promised || (epoch == m.st.Promised && who == m.st.PromisedTo)
}

func (m *Machine) promise(epoch uint64, who string) {
	if epoch != m.st.Promised || who != m.st.PromisedTo {
		m.st.Promised, m.st.PromisedTo = epoch, who
		m.dirty = true
	}
}

func (m *Machine) reject(epoch, seq uint64, holder string, mb *Membership) *Reject {
	m.stats.Rejected++
	return &Reject{Epoch: epoch, Seq: seq, Voter: m.cfg.Self, Highest: m.st.Promised, Holder: holder, Membership: mb}
}

// voteRelease drops the named lease if it is the one this voter holds, and the
// promise of that epoch to that holder: its sender gave the epoch up and never
// proposes at it, so the promise protects nothing and would only make this voter
// refuse a lease of a lower epoch that won meanwhile. The promise falls back to the
// last lease this voter accepted below it (or none), never lower; what keeps two
// leases from overlapping is the standing-lease refusal (refuse), which a released
// promise does not touch.
func (m *Machine) voteRelease(now time.Time, r *Release) {
	if m.accEpoch == r.Epoch && m.accHolder == r.Holder && now.Before(m.accExpires) {
		m.accExpires = now
		if m.role == roleFollower {
			m.electAt = time.Time{} // reschedule from now, not from the old expiry
		}
	}
	if r.Holder != m.cfg.Self && m.st.Promised == r.Epoch && m.st.PromisedTo == r.Holder {
		if m.accEpoch < r.Epoch {
			m.st.Promised, m.st.PromisedTo = m.accEpoch, m.accHolder
		} else {
			m.st.Promised, m.st.PromisedTo = 0, ""
		}
		m.dirty = true
		m.stats.PromisesReleased++
	}
}

// adopt switches to mb if it is newer than our voter set, to be saved before we
// answer. A leader adopting a joint set (from a previous leader's unfinished
// change) finishes that change.
func (m *Machine) adopt(now time.Time, mb Membership) bool {
	if !newer(mb, m.st.Membership) {
		return false
	}
	m.st.Membership = cloneMembership(mb)
	m.dirty = true
	if m.role == roleLeader && mb.Joint != nil {
		m.changing = true
	}
	m.emit(Event{Kind: EventVotersChanged, Voters: m.currentVoters(), At: now})
	return true
}

// currentVoters is the voter set that will be in force once any change completes.
func (m *Machine) currentVoters() []string {
	if m.st.Membership.Joint != nil {
		return slices.Clone(m.st.Membership.Joint)
	}
	return slices.Clone(m.st.Membership.Voters)
}

// --- Candidate and leader (proposer) ---

func (m *Machine) becomeFollower() {
	m.role = roleFollower
	m.tick = (*Machine).tickFollower
	m.preparing = false
	m.changing = false
	m.electAt = time.Time{}
}

// tickFollower campaigns once electAt has come and no lease stands.
func (m *Machine) tickFollower(now time.Time) {
	if !m.electAt.IsZero() && !now.Before(m.electAt) && m.mayCampaign(now) {
		m.campaign(now)
	}
}

func (m *Machine) mayCampaign(now time.Time) bool {
	return isMember(m.st.Membership, m.cfg.Self) && !now.Before(m.quietUntil) && m.standing(now) == ""
}

// campaign starts an election for a fresh epoch above every epoch seen. Our own
// promise is taken only once the others' promises make a quorum with it (see
// maybePropose): a candidate cut off from the rest must not raise its own promise,
// or it would refuse the real leader's renewals once the partition heals.
func (m *Machine) campaign(now time.Time) {
	if max(m.st.Promised, m.highest) == math.MaxUint64 {
		// No epoch is left above every one seen: wrapping to 0 would fence us
		// out, so retry later (only a long run of forged jumps gets here).
		m.stats.Implausible++
		m.electAt = now.Add(backoff(m.rng, m.cfg.BackoffMin, m.cfg.BackoffMax))
		return
	}
	m.role = roleCandidate
	m.tick = (*Machine).tickCandidate
	m.stats.Campaigns++
	m.epoch = max(m.st.Promised, m.highest) + 1
	m.highest = m.epoch
	m.preparing = true
	m.promises = map[string]bool{}
	m.prejects = map[string]bool{}
	m.attemptEnd = now.Add(m.cfg.AttemptTimeout)
	m.bcast(&Prepare{Epoch: m.epoch, Candidate: m.cfg.Self, MemberEpoch: m.st.Membership.Epoch, MemberSeq: m.st.Membership.Seq})
	m.maybePropose(now)
}

func (m *Machine) tickCandidate(now time.Time) {
	if !now.Before(m.attemptEnd) {
		m.failAttempt(now)
	}
}

// failAttempt gives up the current election and retries after a random backoff.
// A candidate that got as far as proposing releases what voters accepted: it never
// acted on the lease, and a partly accepted lease would otherwise block every
// other candidate for a full hold.
func (m *Machine) failAttempt(now time.Time) {
	switch {
	case m.role == roleCandidate && !m.preparing:
		r := &Release{Epoch: m.epoch, Holder: m.cfg.Self}
		m.voteRelease(now, r)
		m.bcast(r)
	case m.role == roleCandidate && len(m.promises) > 0:
		// Voters promised us an epoch we now give up and never propose at (our next
		// campaign picks a higher one): release their promises, or a voter whose
		// promise is above a lease that won meanwhile refuses that leader's renewals
		// for as long as it reigns, and is lost to its quorum.
		m.bcast(&Release{Epoch: m.epoch, Holder: m.cfg.Self})
	}
	m.becomeFollower()
	m.electAt = now.Add(backoff(m.rng, m.cfg.BackoffMin, m.cfg.BackoffMax))
}

func (m *Machine) stepPromise(now time.Time, p *Promise) {
	if m.role != roleCandidate || !m.preparing || p.Epoch != m.epoch {
		return
	}
	m.promises[p.Voter] = true
	m.maybePropose(now)
}

// maybePropose adds our own promise once it completes a quorum, then proposes.
func (m *Machine) maybePropose(now time.Time) {
	mb := m.st.Membership
	if !m.promises[m.cfg.Self] {
		if !hasQuorum(mb, plus(m.promises, m.cfg.Self)) {
			return
		}
		if _, ok := m.votePrepare(now, &Prepare{Epoch: m.epoch, Candidate: m.cfg.Self, MemberEpoch: mb.Epoch, MemberSeq: mb.Seq}).(*Promise); !ok {
			m.failAttempt(now)
			return
		}
		m.promises[m.cfg.Self] = true
	}
	if hasQuorum(mb, m.promises) {
		m.preparing = false
		m.startRound(now, false)
	}
}

// plus returns a copy of set with k added.
func plus(set map[string]bool, k string) map[string]bool {
	out := make(map[string]bool, len(set)+1)
	for v := range set {
		out[v] = true
	}
	out[k] = true
	return out
}

// startRound broadcasts a Propose (candidate) or Renew (leader) and accepts it
// ourselves. Its send instant is where the holder's deadline counts from.
func (m *Machine) startRound(now time.Time, renew bool) {
	if m.rd.seq != 0 && !m.rd.done && m.role == roleLeader {
		m.stats.RoundsLost++
	}
	m.seq++
	mb := cloneMembership(m.st.Membership)
	m.rd = round{seq: m.seq, sent: now, membership: mb, acks: map[string]bool{}, rejects: map[string]bool{}}
	d := m.cfg.LeaseDuration
	var msg Message
	if renew {
		msg = &Renew{Epoch: m.epoch, Seq: m.seq, Holder: m.cfg.Self, Duration: d, Membership: mb}
	} else {
		msg = &Propose{Epoch: m.epoch, Seq: m.seq, Holder: m.cfg.Self, Duration: d, Membership: mb}
	}
	m.bcast(msg)
	switch r := m.voteAccept(now, m.epoch, m.seq, m.cfg.Self, d, mb).(type) {
	case *Accept:
		m.stepAccept(now, r)
	case *Reject:
		m.stepReject(now, r)
	}
}

func (m *Machine) stepAccept(now time.Time, a *Accept) {
	active := m.role == roleLeader || (m.role == roleCandidate && !m.preparing)
	if !active || a.Epoch != m.epoch || a.Seq != m.rd.seq || m.rd.done {
		return
	}
	m.rd.acks[a.Voter] = true
	if hasQuorum(m.rd.membership, m.rd.acks) {
		m.rd.done = true
		m.wonRound(now)
	}
}

// wonRound extends (or starts) our lease to the deadline of the round just won, and
// drives a voter-set change one step.
func (m *Machine) wonRound(now time.Time) {
	deadline := HolderDeadline(m.rd.sent, m.cfg.LeaseDuration, m.cfg.MaxDrift, m.cfg.Margin)
	if !now.Before(deadline) { // answers came too late to be of use
		if m.role == roleCandidate {
			m.failAttempt(now)
		}
		return
	}
	if m.role == roleCandidate {
		m.becomeLeader(now, deadline)
	} else if deadline.After(m.validUntil) {
		m.validUntil = deadline
	}
	mb := m.rd.membership
	if mb.Epoch != m.st.Membership.Epoch || mb.Seq != m.st.Membership.Seq {
		return // our voter set moved on since this round; its own round follows
	}
	if mb.Joint != nil {
		// A quorum of old and new sets has saved the joint set: no quorum of the
		// old set alone can form any more, so the new set may rule alone.
		m.changing = true
		m.st.Membership = Membership{Epoch: m.epoch, Seq: m.nextMemberSeq(), Voters: slices.Clone(mb.Joint)}
		m.dirty = true
		m.startRound(now, true)
		m.renewAt = now.Add(m.cfg.RenewInterval)
		return
	}
	if m.changing {
		m.changing = false
		m.emit(Event{Kind: EventVotersChanged, Voters: slices.Clone(mb.Voters), At: now})
		if !isMember(mb, m.cfg.Self) {
			m.release(now) // removed from the voter set: hand over
		}
	}
}

func (m *Machine) nextMemberSeq() uint64 {
	if m.st.Membership.Epoch == m.epoch {
		return m.st.Membership.Seq + 1
	}
	return 1
}

func (m *Machine) becomeLeader(now, deadline time.Time) {
	m.role = roleLeader
	m.tick = (*Machine).tickLeader
	m.validUntil = deadline
	m.renewAt = m.rd.sent.Add(m.cfg.RenewInterval)
	m.changing = m.rd.membership.Joint != nil
	m.stats.LeasesWon++
	m.emit(Event{Kind: EventBecameLeader, Holder: m.cfg.Self, Epoch: m.epoch, At: now})
}

// tickLeader steps down at the deadline and renews on schedule.
func (m *Machine) tickLeader(now time.Time) {
	if !now.Before(m.validUntil) {
		m.emit(Event{Kind: EventLostLease, Holder: m.cfg.Self, Epoch: m.epoch, At: now, Ended: m.validUntil})
		m.failAttempt(now)
		return
	}
	if !now.Before(m.renewAt) {
		m.startRound(now, true)
		m.renewAt = now.Add(m.cfg.RenewInterval)
	}
}

func (m *Machine) stepReject(now time.Time, r *Reject) {
	m.highest = max(m.highest, r.Highest)
	if r.Membership != nil && m.adopt(now, *r.Membership) && m.role == roleCandidate {
		m.failAttempt(now) // counted in a superseded voter set: start over
		return
	}
	if m.role != roleCandidate || r.Epoch != m.epoch {
		return // a leader keeps renewing: its lease lapses by itself if quorums fail
	}
	if r.Holder != "" {
		// Another holder's lease stands: it will for up to a full hold, and we
		// would only be refused again. Its renewals will reach us if we can hear it.
		m.failAttempt(now)
		m.electAt = m.electAt.Add(VoterHold(m.cfg.LeaseDuration, m.cfg.MaxDrift))
		return
	}
	if m.preparing && r.Seq == 0 {
		m.prejects[r.Voter] = true
		if !quorumPossible(m.st.Membership, m.prejects) {
			m.failAttempt(now)
		}
	} else if !m.preparing && r.Seq == m.rd.seq {
		m.rd.rejects[r.Voter] = true
		if !quorumPossible(m.rd.membership, m.rd.rejects) {
			m.failAttempt(now)
		}
	}
}

// Release gives up a valid lease now: we stop acting first, then tell the voters,
// and let another voter win the next election (we wait one LeaseDuration).
func (m *Machine) Release(now time.Time) error {
	if !m.IsLeader(now) {
		return ErrNotLeader
	}
	m.release(now)
	m.settle(now)
	return nil
}

func (m *Machine) release(now time.Time) {
	m.emit(Event{Kind: EventLostLease, Holder: m.cfg.Self, Epoch: m.epoch, At: now, Ended: now})
	r := &Release{Epoch: m.epoch, Holder: m.cfg.Self}
	m.becomeFollower()
	m.voteRelease(now, r)
	m.bcast(r)
	m.electAt = now.Add(m.cfg.LeaseDuration)
}

// ChangeVoters moves the cluster to a new voter set through this leader: first the
// joint set (every quorum needs a majority of the old AND of the new set), then,
// once a joint quorum has saved it, the new set alone. EventVotersChanged reports
// completion. A leader that is not in the new set releases its lease then.
func (m *Machine) ChangeVoters(now time.Time, voters []string) error {
	if !m.IsLeader(now) {
		return ErrNotLeader
	}
	if m.st.Membership.Joint != nil || m.changing {
		return ErrChangeInProgress
	}
	if err := validVoters(voters); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidVoters, err)
	}
	m.st.Membership = Membership{Epoch: m.epoch, Seq: m.nextMemberSeq(), Voters: slices.Clone(m.st.Membership.Voters), Joint: slices.Clone(voters)}
	m.dirty = true
	m.changing = true
	m.startRound(now, true)
	m.renewAt = now.Add(m.cfg.RenewInterval)
	m.settle(now)
	return nil
}

// --- Queries ---

// Leader reports the lease this node knows of at now: its own while it holds one
// (validUntil is its conservative deadline), else the one it accepted as a voter
// (validUntil is its voter-side expiry, later than the holder's own). ok is false
// when none stands. Non-voters know only what the host tells them elsewhere.
func (m *Machine) Leader(now time.Time) (holder string, epoch uint64, validUntil time.Time, ok bool) {
	if m.IsLeader(now) {
		return m.cfg.Self, m.epoch, m.validUntil, true
	}
	if h := m.standing(now); h != "" && h != m.cfg.Self {
		return h, m.accEpoch, m.accExpires, true
	}
	return "", 0, time.Time{}, false
}

// IsLeader reports whether this node holds a valid lease at now. It reads the
// deadline directly, so it is right even if Tick is late (e.g. after a pause).
func (m *Machine) IsLeader(now time.Time) bool {
	return m.role == roleLeader && now.Before(m.validUntil)
}

// Fence returns the fencing token to attach to writes to external resources, only
// while this node holds a valid lease at now; ErrNotLeader otherwise.
func (m *Machine) Fence(now time.Time) (uint64, error) {
	if !m.IsLeader(now) {
		return 0, ErrNotLeader
	}
	return m.epoch, nil
}

// Membership returns the voter set in force (a copy).
func (m *Machine) Membership() Membership { return cloneMembership(m.st.Membership) }

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// NextDeadline is when Tick must next be called; the zero time means no timer.
func (m *Machine) NextDeadline() time.Time {
	var d time.Time
	add := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	switch m.role {
	case roleFollower:
		add(m.electAt)
	case roleCandidate:
		add(m.attemptEnd)
	case roleLeader:
		add(m.renewAt)
		add(m.validUntil)
	}
	if m.seenHolder != "" && m.seenHolder != m.cfg.Self {
		add(m.accExpires) // to report the lease we accepted lapsing
	}
	return d
}

// Ready drains the outputs accumulated since the last call; see Ready for the order
// in which the host must act on them.
func (m *Machine) Ready() Ready {
	r := m.out
	if m.dirty {
		st := cloneState(m.st)
		r.State = &st
		m.dirty = false
	}
	m.out = Ready{}
	return r
}

// --- Plumbing ---

// settle runs after every input: schedules the next election of a follower and
// reports a change of the known lease.
func (m *Machine) settle(now time.Time) {
	if m.role == roleFollower {
		if !isMember(m.st.Membership, m.cfg.Self) {
			m.electAt = time.Time{}
		} else {
			free := m.quietUntil
			if m.accExpires.After(free) {
				free = m.accExpires
			}
			if m.electAt.Before(free) {
				m.electAt = free.Add(backoff(m.rng, m.cfg.BackoffMin, m.cfg.BackoffMax))
			}
		}
	}
	h, e, _, _ := m.Leader(now)
	if h != m.seenHolder || e != m.seenEpoch {
		m.seenHolder, m.seenEpoch = h, e
		m.emit(Event{Kind: EventLeaderChanged, Holder: h, Epoch: e, At: now})
	}
}

func (m *Machine) emit(e Event) { m.out.Events = append(m.out.Events, e) }

func (m *Machine) send(to string, msg Message) {
	if to == m.cfg.Self {
		return // our own requests are answered in place, never through the network
	}
	m.out.Messages = append(m.out.Messages, Envelope{To: to, Msg: msg})
	m.stats.MessagesOut++
}

func (m *Machine) bcast(msg Message) {
	for _, p := range peers(m.st.Membership, m.cfg.Self) {
		m.send(p, msg)
	}
}
