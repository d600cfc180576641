package shard

import (
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/wire"

	"fmt"
	"slices"
	"time"
)

// OwnerStats counts what the Owner did; monotonically increasing.
type OwnerStats struct {
	Malformed   uint64 // leader messages dropped as malformed (or for another node)
	Implausible uint64 // leader messages dropped: epoch or map version jumped beyond wire.MaxJump
	StaleEpoch  uint64 // leader messages rejected: epoch below the highest seen
	StaleGrants uint64 // grants ignored: answering an old or unknown renewal
	Renewals    uint64 // Renew messages sent
	MapRequests uint64 // MapRequest messages sent
	BadMaps     uint64 // received maps that failed DecodeMap (counted in Malformed too)
	Acquired    uint64 // shards started serving
	Lost        uint64 // shards stopped serving (released or expired)
}

// sentRing is how many recent renewals an Owner remembers the send time of; a
// grant answering an older one is ignored, which only costs a renewal.
const sentRing = 16

type sentRec struct {
	seq uint64
	at  time.Time
}

// Owner is the member side of shard ownership: it renews its leases with the
// leader, serves a shard only while its lease is valid by its own clock, releases
// on request, and keeps the latest map. Every node runs one, the leader included.
// Not safe for concurrent use.
type Owner struct {
	cfg  Config
	self string
	boot uint64

	highest     uint64 // fencing: highest leader epoch seen
	leader      string
	leaderEpoch uint64

	seq     uint64
	sent    [sentRing]sentRec
	applied uint64 // Seq of the last grant applied
	held    map[uint32]time.Time

	m        *Map
	mapAsked time.Time // when the outstanding map request left, zero if none
	want     [2]uint64 // (epoch, version) of the newest map announced to us
	lastSent time.Time
	renewDue time.Time
	prompt   bool
	// confirm: the pending prompt renewal confirms a newly acquired shard and
	// leaves at once; renewedAt: the newest map known when the last renewal
	// left. Together they bound the renewals that skip promptGap (promptAt).
	confirm   bool
	renewedAt [2]uint64

	out   Ready
	stats OwnerStats
}

// NewOwner returns the Owner of node self. boot identifies this process: it must
// differ from that of every earlier process of the same node (a random 64-bit
// draw; not the clock, which can step back), so the leader never confuses a
// restarted owner with its previous life.
func NewOwner(cfg Config, self string, boot uint64) (*Owner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if self == "" {
		return nil, fmt.Errorf("%w: self: empty name", ErrInvalidConfig)
	}
	return &Owner{cfg: cfg, self: self, boot: boot, held: map[uint32]time.Time{}}, nil
}

// SetLeader tells the Owner who leads at epoch (from the leader lease); an
// Announce tells it too. Stale epochs are ignored.
func (o *Owner) SetLeader(now time.Time, leader string, epoch uint64) {
	if epoch >= o.highest && leader != "" {
		o.highest = epoch
		o.adoptLeader(leader, epoch)
	}
	o.settle(now)
}

// Step feeds a message from the leader (Announce, MapState, Grant, Release);
// other types are ignored. Malformed messages and stale epochs are counted and
// dropped.
func (o *Owner) Step(now time.Time, msg Message) {
	switch msg := msg.(type) {
	case *Announce:
		if msg.Leader == "" {
			o.stats.Malformed++
		} else if o.plausibleVersion(msg.Epoch, msg.Version) && o.fence(now, msg.Epoch, msg.Leader) {
			o.adoptLeader(msg.Leader, msg.Epoch)
			o.learnVersion(now, msg.Epoch, msg.Version, msg.Checksum)
		}
	case *MapState:
		if o.plausibleVersion(msg.Epoch, msg.Version) && o.fence(now, msg.Epoch, o.leader) {
			o.stepMap(now, msg)
		}
	case *Grant:
		if msg.Node != o.self || msg.Boot != o.boot || msg.Duration <= 0 ||
			!validShardList(msg.Shards, o.cfg.Shards) || !validShardList(msg.Confirm, o.cfg.Shards) {
			o.stats.Malformed++
		} else if o.plausibleVersion(msg.Epoch, msg.Version) && o.fence(now, msg.Epoch, o.leader) {
			o.stepGrant(now, msg)
			o.learnVersion(now, msg.Epoch, msg.Version, msg.Checksum)
		}
	case *Release:
		if msg.Node != o.self || !validShardList(msg.Shards, o.cfg.Shards) {
			o.stats.Malformed++
		} else if o.fence(now, msg.Epoch, o.leader) {
			for _, s := range msg.Shards {
				o.drop(now, s, EventReleased)
			}
			o.prompt = true // tell the leader at once
		}
	default:
		return
	}
	o.settle(now)
}

// Tick advances timers to now: lapsed leases end, renewals leave.
func (o *Owner) Tick(now time.Time) { o.settle(now) }

// Serving reports whether this node may serve shard at now (its local clock):
// it holds a lease on it that has not lapsed. Check it when the work happens.
func (o *Owner) Serving(now time.Time, shard uint32) bool {
	exp, ok := o.held[shard]
	return ok && now.Before(exp)
}

// Held returns the shards served at now, ascending.
func (o *Owner) Held(now time.Time) []uint32 {
	out := make([]uint32, 0, len(o.held))
	for s, exp := range o.held {
		if now.Before(exp) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Map is the latest map received, nil before the first.
func (o *Owner) Map() *Map { return o.m }

// Boot is the id of this owner process, as its renewals carry it.
func (o *Owner) Boot() uint64 { return o.boot }

// Leader is the leader renewals go to and its epoch ("" and 0 if unknown).
func (o *Owner) Leader() (string, uint64) { return o.leader, o.leaderEpoch }

// HighestEpoch is the highest leader epoch seen (the fence).
func (o *Owner) HighestEpoch() uint64 { return o.highest }

// Stats returns the counters.
func (o *Owner) Stats() OwnerStats { return o.stats }

// Ready returns and clears the pending outputs.
func (o *Owner) Ready() Ready {
	r := o.out
	o.out = Ready{}
	return r
}

// NextDeadline is when Tick must next be called; zero if never.
func (o *Owner) NextDeadline() time.Time {
	var d time.Time
	at := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	for _, exp := range o.held {
		at(exp)
	}
	if o.leader != "" {
		at(o.renewDue)
		if o.unanswered() {
			at(o.lastSent.Add(o.cfg.RetryInterval))
		}
		if o.behind() {
			at(o.mapAsked.Add(o.cfg.RetryInterval))
		}
		if o.prompt {
			at(o.promptAt())
		}
	}
	return d
}

// fence rejects and counts a leader message whose epoch is below the highest
// seen (it comes from a deposed leader), or more than wire.MaxJump above it (one
// forged epoch near 2^64-1 would fence out every real leader, and our renewals
// carrying it would fence the leader too), and raises the highest otherwise.
func (o *Owner) fence(now time.Time, epoch uint64, from string) bool {
	if !wire.Plausible(o.highest, epoch) {
		o.stats.Implausible++
		return false
	}
	if epoch < o.highest {
		o.stats.StaleEpoch++
		o.emit(Event{Kind: EventStaleEpoch, From: from, Epoch: epoch, At: now})
		return false
	}
	o.highest = epoch
	return true
}

// plausibleVersion refuses and counts a map version more than wire.MaxJump above
// ours of that epoch (versions count from 1 in each leader's term): a forged
// version near 2^64-1 would make every real map of the term look older than it.
func (o *Owner) plausibleVersion(epoch, version uint64) bool {
	var known uint64
	if o.m != nil && o.m.epoch == epoch {
		known = o.m.version
	}
	if wire.Plausible(known, version) {
		return true
	}
	o.stats.Implausible++
	return false
}

// adoptLeader switches renewals to a newer leader and re-confirms at once what
// this node serves.
func (o *Owner) adoptLeader(leader string, epoch uint64) {
	if epoch > o.leaderEpoch || o.leader == "" {
		o.leader, o.leaderEpoch = leader, epoch
		o.prompt = true
	}
}

// learnVersion compares an announced map with ours and asks for it on mismatch.
// It does not renew: the leader nudges the owners that gain shards (an empty
// Release), so a map change costs a message per member, not a renewal. It
// remembers the newest version announced, so settle asks again while we are
// behind it: after RetryInterval if a request went unanswered, at once if the
// map that answered it was already superseded.
func (o *Owner) learnVersion(now time.Time, epoch, version, checksum uint64) {
	if o.m != nil && o.m.epoch == epoch && o.m.version == version && o.m.checksum == checksum {
		return
	}
	if o.m != nil && (o.m.epoch > epoch || (o.m.epoch == epoch && o.m.version > version)) {
		return // ours is newer: the announcement crossed it
	}
	if newer([2]uint64{epoch, version}, o.want) {
		o.want = [2]uint64{epoch, version}
	}
	o.askMap(now)
}

// behind reports whether a newer map version than ours was announced.
func (o *Owner) behind() bool {
	if o.m == nil {
		return o.want != [2]uint64{}
	}
	return newer(o.want, [2]uint64{o.m.epoch, o.m.version})
}

// askMap requests the map unless a request is outstanding for less than
// RetryInterval: one map in flight per member at a time.
func (o *Owner) askMap(now time.Time) {
	if o.leader == "" || (!o.mapAsked.IsZero() && now.Before(o.mapAsked.Add(o.cfg.RetryInterval))) {
		return
	}
	o.mapAsked = now
	o.stats.MapRequests++
	var have [2]uint64
	if o.m != nil {
		have = [2]uint64{o.m.epoch, o.m.version}
	}
	o.send(&MapRequest{Node: o.self, Epoch: have[0], Version: have[1]})
}

func (o *Owner) stepMap(now time.Time, ms *MapState) {
	m, err := DecodeMap(ms, o.m)
	if err != nil {
		o.stats.Malformed++
		o.stats.BadMaps++
		return
	}
	if !m.Newer(o.m) {
		return
	}
	o.m = m
	o.mapAsked = time.Time{}
	o.emit(Event{Kind: EventMapChanged, Epoch: m.epoch, Version: m.version, At: now})
}

// stepGrant applies a grant answering renewal g.Seq: the lease counts from when
// that renewal was sent (docs/shards.md, "Safety"). Grants apply in Seq order
// only; an older one arriving late is ignored, which is what lets the leader
// infer a release from a later renewal.
func (o *Owner) stepGrant(now time.Time, g *Grant) {
	sent, ok := o.sentAt(g.Seq)
	if !ok || g.Seq <= o.applied {
		o.stats.StaleGrants++
		return
	}
	o.applied = g.Seq
	exp := lease.HolderDeadline(sent, min(g.Duration, o.cfg.LeaseDuration), o.cfg.MaxDrift, o.cfg.Margin)
	added := false
	for _, s := range g.Shards {
		if o.Serving(now, s) {
			o.held[s] = later(o.held[s], exp)
		} else if now.Before(exp) {
			o.held[s] = exp
			o.stats.Acquired++
			added = true
			o.emit(Event{Kind: EventAcquired, Shard: s, Epoch: g.Epoch, Version: g.Version, At: now})
		}
	}
	for _, s := range g.Confirm {
		// Extend only: a new leader re-confirms what we serve, nothing more.
		if o.Serving(now, s) {
			o.held[s] = later(o.held[s], exp)
		}
	}
	dropped := false
	for _, s := range o.Held(now) {
		_, inShards := slices.BinarySearch(g.Shards, s)
		_, inConfirm := slices.BinarySearch(g.Confirm, s)
		if !inShards && !inConfirm {
			o.drop(now, s, EventReleased)
			dropped = true
		}
	}
	// Confirm an acquisition at once so the leader finishes the move; report a
	// drop at once too, as after a Release: a grant that crossed the Release
	// (answering a renewal sent before it) gives the released shard back, and
	// the next grant's omission is then the only release the leader can learn
	// of, from the renewal after it. Each is bounded by the shards acquired.
	if added || dropped {
		o.prompt, o.confirm = true, true
	}
}

func (o *Owner) sentAt(seq uint64) (time.Time, bool) {
	r := o.sent[seq%sentRing]
	return r.at, r.seq == seq && seq != 0
}

func (o *Owner) drop(now time.Time, s uint32, kind EventKind) {
	exp, ok := o.held[s]
	if !ok {
		return
	}
	delete(o.held, s)
	if now.Before(exp) || kind == EventExpired {
		o.stats.Lost++
		o.emit(Event{Kind: kind, Shard: s, Epoch: o.leaderEpoch, At: now})
	}
}

// settle expires lapsed leases and sends a renewal when one is due: every
// RenewInterval, RetryInterval after an unanswered one, or promptly on events.
func (o *Owner) settle(now time.Time) {
	for _, s := range o.expired(now) {
		o.drop(now, s, EventExpired)
	}
	if o.leader == "" {
		return
	}
	if o.behind() {
		o.askMap(now)
	}
	due := !now.Before(o.renewDue) || (o.prompt && !now.Before(o.promptAt())) ||
		(o.unanswered() && !now.Before(o.lastSent.Add(o.cfg.RetryInterval)))
	if !due {
		return
	}
	o.seq++
	o.sent[o.seq%sentRing] = sentRec{o.seq, now}
	o.lastSent, o.renewDue, o.prompt, o.confirm = now, now.Add(o.cfg.RenewInterval), false, false
	o.renewedAt = o.known()
	o.stats.Renewals++
	o.send(&Renew{Epoch: o.highest, Node: o.self, Boot: o.boot, Seq: o.seq, Applied: o.applied, Held: o.Held(now)})
}

// promptAt is when a pending prompt renewal leaves: promptGap after the last
// renewal, or at once (a handover then costs round trips, not two gaps: the old
// owner's release and the new owner's renewal for its grant) when it confirms a
// newly acquired shard or when the owner knows of a map of the current leader's
// term newer than at its last renewal. Both stay bounded: an acquisition needs a
// fresh in-order grant answering our own renewal, and map versions only advance
// when the leader changes its map (a replayed Release or Announce advances
// nothing), so the extra renewals are at most one per acquiring grant and one
// per map version.
func (o *Owner) promptAt() time.Time {
	if k := o.known(); o.confirm || (k[0] == o.leaderEpoch && newer(k, o.renewedAt)) {
		return o.lastSent
	}
	return o.lastSent.Add(o.cfg.promptGap())
}

// known is the newest (epoch, version) of a map held or announced.
func (o *Owner) known() [2]uint64 {
	if o.m != nil && newer([2]uint64{o.m.epoch, o.m.version}, o.want) {
		return [2]uint64{o.m.epoch, o.m.version}
	}
	return o.want
}

func newer(a, b [2]uint64) bool { return a[0] > b[0] || (a[0] == b[0] && a[1] > b[1]) }

// unanswered reports whether the last renewal sent got no Grant yet: the owner
// then renews again after RetryInterval, so after a partition heals it learns the
// leader's map version (and its grants) within RetryInterval plus a round trip
// rather than at its next periodic renewal.
func (o *Owner) unanswered() bool { return o.seq > o.applied }

func (o *Owner) expired(now time.Time) []uint32 {
	var out []uint32
	for s, exp := range o.held {
		if !now.Before(exp) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func (o *Owner) send(m Message) {
	o.out.Messages = append(o.out.Messages, Envelope{To: o.leader, Msg: m})
}

func (o *Owner) emit(e Event) { o.out.Events = append(o.out.Events, e) }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
