package stack

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Peer metadata: the host owns the crdt.Store and is its only caller. swim carries
// the bytes (deltas by gossip, snapshots in push-pulls) and never looks inside.
//
//   - A local SetMeta/DeleteMeta gossips its one-key delta with swim.BroadcastMeta,
//     queue key node+"\x00"+key, so newer news of a key replaces older news.
//   - A received delta is applied; if it changed our state we gossip it on, which
//     is what spreads it by infection (swim pushes it eagerly to EagerFanout peers).
//   - Push-pulls carry the whole store. The encoded snapshot is built lazily, only
//     when a push-pull leaves and something changed since the last one: building
//     it is O(cluster metadata), far too dear to redo on every received delta.
//   - A member that swim declared dead or left and whose tombstone it then
//     collected (TombstoneTTL later, unless it came back) has its map removed.

// ErrMetaGossip means a metadata write was stored but its delta could not be
// queued for gossip (it does not fit a packet). Peers still get it by push-pull.
var ErrMetaGossip = errors.New("stack: metadata delta not gossiped")

// Defaults of the metadata fields of Config.
const (
	DefaultMetaGCHorizon  = 5 * time.Minute
	DefaultMetaGCInterval = 10 * time.Second
)

// metaPacketOverhead is what a packet spends around one MetaDelta's crdt payload
// (packet header, checksum, message type and length, msgpack wrapper), with margin:
// a split delta piece of MTU-metaPacketOverhead bytes always fits.
const metaPacketOverhead = 96

// MetaEvent is a change of the metadata as this host sees it: one key of one
// node's map (Node == crdt.Cluster for the cluster map) got a new value or lost it.
// Changes of every node's map are reported, our own writes included. Maps removed
// because swim forgot their node produce no events.
type MetaEvent struct {
	Node    string
	Key     string
	Value   []byte // the new value; nil when Deleted. Owned by the receiver.
	Deleted bool
	Version crdt.Version // the write's version: the same on every node
	At      time.Time    // when this host observed it
}

// MetaStats are cumulative counters of the metadata layer.
type MetaStats struct {
	DeltasIn     uint64 // deltas received by gossip
	SnapshotsIn  uint64 // snapshots received in push-pulls
	Rejected     uint64 // deltas or snapshots dropped: malformed or over the limits
	Implausible  uint64 // of those, dropped for a version jump beyond crdt.MaxVersionJump
	Rebroadcasts uint64 // received deltas gossiped on because they changed our state
	Reissues     uint64 // our map re-issued under a new incarnation (a previous life was seen)
	GossipErrors uint64 // deltas that could not be queued for gossip
	Removed      uint64 // maps of forgotten members removed
	Collected    uint64 // tombstones forgotten by GC
	SnapshotsOut uint64 // snapshots encoded for push-pulls (rebuilt only after changes)
	// With signed metadata (PROTOCOL.md section 13): map deltas refused because a
	// cell or head to apply was unsigned, not signed by its map's writer
	// (Forged), signed by a key we lack (UnknownSigner; UnknownHolder counts the
	// checks of cluster-map cells whose epoch's holder we did not know), or past
	// a packet's verification budget.
	Unsigned, Forged, UnknownSigner, UnknownHolder, OverBudget uint64
	// ReissuesLimited: deltas of our own map dropped unread, with signed
	// metadata, because we re-issued it less than a GossipInterval before.
	ReissuesLimited uint64
}

// metaState is the host's metadata layer.
type metaState struct {
	store     *crdt.Store
	snap      []byte // encoded snapshot, valid unless dirty
	dirty     bool
	gone      map[string]time.Time // dead or left members: when swim forgets them
	nextGC    time.Time
	events    []MetaEvent
	stats     MetaStats
	pieceSize int
	// auth is the store's Authority with signed metadata, nil without.
	auth     *metaAuth
	forged   []MetaForgery  // for Ready.MetaForged
	pending  []pendingDelta // keepPending
	retrying bool           // retryPending runs
	// quietUntil: with signed metadata, deltas of our own map are dropped
	// before it (reissueLimited).
	quietUntil time.Time
}

// budget and setBudget read and set the verification budget (no-ops without
// signed metadata); a push-pull's snapshot is not bounded by the packets'.
func (ms *metaState) budget() int {
	if ms.auth == nil {
		return 0
	}
	b := ms.auth.budget
	ms.auth.budget = -1
	return b
}

func (ms *metaState) setBudget(b int) {
	if ms.auth != nil {
		ms.auth.budget = b
	}
}

// startMetaBatch gives the payloads of one received packet their verification
// budget.
func (ms *metaState) startMetaBatch() { ms.setBudget(maxMetaVerifiesPerPacket) }

func (c *Config) metaDefaults() {
	if c.Meta == (crdt.Limits{}) {
		c.Meta = crdt.DefaultLimits()
	}
	if c.MetaGCHorizon == 0 {
		c.MetaGCHorizon = DefaultMetaGCHorizon
	}
	if c.MetaGCInterval == 0 {
		c.MetaGCInterval = DefaultMetaGCInterval
	}
}

// Validate checks the host's own fields (swim checks its Config itself).
func (c Config) Validate() error {
	switch {
	case c.MaxFrame < 0:
		return fmt.Errorf("stack: MaxFrame %d is negative", c.MaxFrame)
	case c.MetaGCHorizon < 0:
		return fmt.Errorf("stack: MetaGCHorizon %v is negative", c.MetaGCHorizon)
	case c.MetaGCInterval < 0:
		return fmt.Errorf("stack: MetaGCInterval %v is negative", c.MetaGCInterval)
	}
	if err := c.validateLease(); err != nil {
		return err
	}
	if err := c.validateShard(); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	if c.Meta != (crdt.Limits{}) {
		if err := c.Meta.Validate(); err != nil {
			return fmt.Errorf("stack: Meta: %w", err)
		}
	}
	return nil
}

func newMetaState(cfg Config, now time.Time) (*metaState, error) {
	st, err := crdt.NewStore(cfg.Swim.Name, cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("stack: metadata store: %w", err)
	}
	mtu := cfg.Swim.MTU
	if mtu == 0 {
		mtu = wire.DefaultMTU
	}
	return &metaState{store: st, dirty: true, gone: map[string]time.Time{},
		nextGC: now.Add(cfg.MetaGCInterval), pieceSize: mtu - metaPacketOverhead}, nil
}

// Meta is the metadata store, for reads (Get, NodeMap, Digest). Write through
// SetMeta and DeleteMeta: a write made on the store directly is not gossiped.
func (h *Stack) Meta() *crdt.Store { return h.meta.store }

// MetaStats returns the metadata layer's counters.
func (h *Stack) MetaStats() MetaStats { return h.meta.stats }

// SetMeta sets key = value in this node's metadata and gossips it. The crdt limit
// errors (crdt.ErrKeyTooLong, ErrValueTooLarge, ErrTooManyKeys, ErrMapTooLarge,
// ErrEmptyKey) come back unchanged and change nothing.
func (h *Stack) SetMeta(now time.Time, key string, value []byte) error {
	defer h.process(now)
	d, err := h.meta.store.Set(key, value)
	if err != nil {
		return err
	}
	return h.localMeta(now, d, key, value, false)
}

// DeleteMeta deletes key from this node's metadata and gossips the deletion;
// crdt.ErrNotFound if it has no value.
func (h *Stack) DeleteMeta(now time.Time, key string) error {
	defer h.process(now)
	d, err := h.meta.store.Delete(key)
	if err != nil {
		return err
	}
	return h.localMeta(now, d, key, nil, true)
}

func (h *Stack) localMeta(now time.Time, d crdt.Delta, key string, value []byte, deleted bool) error {
	ms := h.meta
	ms.dirty = true
	var v crdt.Version
	if len(d.Entries) == 1 {
		v = d.Entries[0].Version
	}
	ms.events = append(ms.events, MetaEvent{Node: ms.store.Self(), Key: key, Value: slices.Clone(value),
		Deleted: deleted, Version: v, At: now})
	if err := h.gossipDelta(now, d); err != nil {
		return fmt.Errorf("%w: %w", ErrMetaGossip, err)
	}
	return nil
}

// gossipDelta queues d, split into packet-sized pieces if needed.
func (h *Stack) gossipDelta(now time.Time, d crdt.Delta) error {
	var first error
	for _, p := range d.Split(h.meta.pieceSize) {
		if err := h.swim.BroadcastMeta(now, metaKey(&p), crdt.AppendDelta(nil, p)); err != nil {
			h.meta.stats.GossipErrors++
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// metaKey is the broadcast-queue key of a delta: one-key deltas replace older
// news of the same key; others (split pieces, re-issues) are never replaced, as a
// lost piece would break the chain receivers use to stay complete.
func metaKey(d *crdt.Delta) string {
	if len(d.Entries) != 1 {
		return ""
	}
	return d.Node + "\x00" + d.Entries[0].Key
}

// announceMeta gossips our whole map, so members we join learn our metadata by
// gossip rather than only by later push-pulls.
func (h *Stack) announceMeta(now time.Time) {
	d, ok := h.meta.store.DeltaSince(h.meta.store.Self(), crdt.Version{})
	if ok && len(d.Entries) > 0 {
		h.gossipDelta(now, d)
	}
}

// receiveMeta merges what swim delivered in Ready.Meta. With signed metadata a
// gossip packet's payloads share one verification budget: startMetaBatch resets
// it before each packet's batch.
func (h *Stack) receiveMeta(now time.Time, p swim.Payload) {
	ms := h.meta
	lim := ms.store.Limits()
	var a crdt.Applied
	var d crdt.Delta
	var err error
	if ms.auth != nil {
		ms.auth.unknownSigner = false
	}
	if p.Snapshot {
		ms.stats.SnapshotsIn++
		var s crdt.Snapshot
		if s, err = crdt.DecodeSnapshot(p.Data, lim); err == nil {
			if n := len(s.Maps); h.reissueLimited(now) {
				s.Maps = slices.DeleteFunc(s.Maps, func(d crdt.Delta) bool { return d.Node == ms.store.Self() })
				ms.stats.ReissuesLimited += uint64(n - len(s.Maps))
			}
			budget := ms.budget()
			a, err = ms.store.Merge(s)
			ms.setBudget(budget)
		}
	} else {
		ms.stats.DeltasIn++
		if d, err = crdt.DecodeDelta(p.Data, lim); err == nil {
			if d.Node == ms.store.Self() && h.reissueLimited(now) {
				ms.stats.ReissuesLimited++
				return
			}
			a, err = ms.store.Apply(d)
		}
	}
	unknown := ms.auth != nil && ms.auth.unknownSigner
	h.afterApply(now, a, err, p.From, &d, p.Data)
	if unknown {
		h.swim.SyncCerts(now, p.From)
	}
	if p.Snapshot && len(ms.pending) > 0 {
		h.retryPending(now) // the push-pull may have brought the certificates
	}
}

// reissueLimited reports whether deltas of our own map are dropped at now: with
// signed metadata, one signed by a key we lack is taken as a previous life of
// ours and re-issues our whole map, every cell signed again, so without a bound
// any member could make us do that once per packet it sends, each under a new
// incarnation. One re-issue a GossipInterval is enough for an honest previous
// life: once re-issued above it, its copies are no longer news to us.
func (h *Stack) reissueLimited(now time.Time) bool {
	return h.meta.auth != nil && now.Before(h.meta.quietUntil)
}

// afterApply accounts for a merged delta or snapshot: errors and refusals
// counted, changes turned into events, a re-issue gossiped, and a gossip delta
// (d, with its bytes raw; both nil for a snapshot) that changed our state
// gossiped on.
func (h *Stack) afterApply(now time.Time, a crdt.Applied, err error, from string, d *crdt.Delta, raw []byte) {
	ms := h.meta
	if raw == nil {
		d = nil
	}
	h.refusedMeta(a.Refused, from, d)
	if err != nil {
		ms.stats.Rejected++
		if errors.Is(err, crdt.ErrImplausible) {
			ms.stats.Implausible++
		}
		return
	}
	// Completeness (Have) may have moved even without a visible change.
	ms.dirty = true
	accepted := false
	for _, c := range a.Changes {
		ms.events = append(ms.events, MetaEvent{Node: c.Node, Key: c.Key, Value: slices.Clone(c.Value),
			Deleted: c.Deleted, Version: c.Version, At: now})
		accepted = accepted || c.Key == AcceptedKey
	}
	if a.Reissue != nil {
		ms.stats.Reissues++
		h.gossipDelta(now, *a.Reissue)
		if ms.auth != nil {
			ms.quietUntil = now.Add(h.cfg.Swim.GossipInterval)
		}
	}
	if raw != nil && len(a.Changes) > 0 {
		ms.stats.Rebroadcasts++
		if err := h.swim.BroadcastMeta(now, metaKey(d), raw); err != nil {
			ms.stats.GossipErrors++
		}
	}
	if accepted && len(ms.pending) > 0 {
		h.retryPending(now) // a holder may be confirmed now
	}
}

// refusedMeta counts what the signature checks refused, reports forgeries, and
// keeps a gossip delta whose signer could not be checked yet (d: the delta, nil
// for a snapshot).
func (h *Stack) refusedMeta(rs []crdt.Refusal, from string, d *crdt.Delta) {
	ms := h.meta
	for _, r := range rs {
		switch r.Reason {
		case crdt.ReasonUnsigned:
			ms.stats.Unsigned++
		case crdt.ReasonUnknownSigner:
			ms.stats.UnknownSigner++
			if d != nil {
				h.keepPending(*d, from)
			}
		case crdt.ReasonOverBudget:
			ms.stats.OverBudget++
		case crdt.ReasonForged:
			ms.stats.Forged++
			writer := r.Map
			if writer == crdt.Cluster {
				writer = h.holderOf(r.Version.Epoch)
			}
			if len(ms.forged) < swim.MaxRefusedPerReady {
				ms.forged = append(ms.forged, MetaForgery{Map: r.Map, Key: r.Key, Writer: writer, From: from, Version: r.Version})
			}
		}
	}
}

// snapshot is the encoded store for a push-pull, rebuilt only after a change.
// Maps that hold nothing (no entries, all versions zero) are left out: merging one
// changes nothing but to create an empty map, and a store holds one for every
// member that ever sent its own, so without this a cluster that uses no metadata
// sent 8 B per member in every push-pull (about 530 B of a compressed 128-member
// exchange direction of 2,220 B).
func (h *Stack) snapshot() []byte {
	ms := h.meta
	if ms.dirty {
		snap := ms.store.Snapshot()
		snap.Maps = slices.DeleteFunc(snap.Maps, emptyMap)
		ms.snap = crdt.AppendSnapshot(ms.snap[:0], snap)
		ms.dirty = false
		ms.stats.SnapshotsOut++
	}
	return ms.snap
}

func emptyMap(d crdt.Delta) bool {
	return len(d.Entries) == 0 && d.Since.IsZero() && d.Have.IsZero() && d.Floor.IsZero()
}

// trackMembers notes which members swim will forget, and when.
func (h *Stack) trackMembers(evs []swim.Event) {
	self := h.meta.store.Self()
	for _, e := range evs {
		if e.Member.Name == self {
			continue
		}
		switch e.Kind {
		case swim.EventDead, swim.EventLeft:
			h.meta.gone[e.Member.Name] = e.At.Add(h.cfg.Swim.TombstoneTTL)
		default:
			delete(h.meta.gone, e.Member.Name)
		}
	}
}

// tickMeta removes the maps of members swim has forgotten and collects old
// tombstones, at most every MetaGCInterval.
func (h *Stack) tickMeta(now time.Time) {
	ms := h.meta
	if now.Before(ms.nextGC) {
		return
	}
	ms.nextGC = now.Add(h.cfg.MetaGCInterval)
	var forget []string
	for name, at := range ms.gone {
		if !now.Before(at) {
			forget = append(forget, name)
		}
	}
	slices.Sort(forget) // deterministic order for the simulator's traces
	for _, name := range forget {
		delete(ms.gone, name)
		if ms.store.RemoveNode(name) {
			ms.stats.Removed++
			ms.dirty = true
		}
	}
	h.collectDrainMarks(now)
	if n := ms.store.GC(now.UnixNano(), h.cfg.MetaGCHorizon); n > 0 {
		ms.stats.Collected += uint64(n)
		ms.dirty = true
	}
}
