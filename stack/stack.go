// Package stack assembles one process's protocol stack (swim, metadata, lease and
// shard) as pure glue, so node and sim drive the same code. Like the machines it
// wraps it is not safe for concurrent use, reads no clock and starts no goroutine.
package stack

import (
	"math/rand/v2"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Config configures a Stack.
type Config struct {
	Swim swim.Config
	// MaxFrame bounds stream frames after decompression (bytes).
	MaxFrame int
	// Meta are the metadata limits (per key, value, map, cluster). Zero means
	// crdt.DefaultLimits(). Every node of a cluster must use the same limits: a
	// peer's map over ours is rejected whole.
	Meta crdt.Limits
	// MetaGCHorizon is how long a metadata tombstone (a deleted key) is kept
	// before GC forgets it. Default 5 min. It must exceed the time a write takes
	// to reach every node (gossip plus a few push-pull intervals): raising it costs
	// memory and push-pull bytes per deleted key; lowering it below that time lets
	// a late delta of a removed node recreate its map.
	MetaGCHorizon time.Duration
	// MetaGCInterval is how often the metadata store is garbage-collected and the
	// maps of forgotten members removed. Default 10 s. Lowering it collects sooner
	// at the cost of a pass over every map each time.
	MetaGCInterval time.Duration
	// Lease makes this process take part in leadership (lease.Machine; voters are
	// Lease.Voters). nil: no Machine, Leader reports none and Fence ErrNotLeader.
	// Lease.Self must equal Swim.Name.
	Lease *lease.Config
	// LeaseStorage keeps the voter's promises across restarts; required when Lease
	// is set. node: an atomically replaced fsynced file; sim: memory that survives a
	// simulated restart. The host only loads it; the driver saves Ready.LeaseState.
	LeaseStorage lease.Storage
	// Shard makes this process route keys to shards and take part in shard
	// ownership (a shard.Owner; a shard.Controller while it holds the lease). nil:
	// no shard routing, ShardMap is nil and Serving false. Requires Lease.
	Shard *shard.Config
}

// Stream asks the host driver to send Data (one wire stream frame) to To, and to hand
// the reply frame to HandleStreamReply, or call StreamFailed.
type Stream struct {
	To   string
	Data []byte
}

// Ready is the host's batch of outputs, in the same order rules as swim.Ready.
type Ready struct {
	Packets []swim.Packet // membership, metadata and shard packets
	// LeasePackets carry lease messages. They may reveal LeaseState, so the
	// driver sends them only once the newest state is saved: LeaseState, when
	// non-nil, is saved (LeaseStorage.Save) BEFORE any LeasePackets leave; if the
	// save fails, LeasePackets are dropped and the driver retries the save before
	// it sends any later LeasePackets (a later Ready may repeat a promise without
	// carrying the state again). Packets do not wait: membership must not stop
	// because a disk did.
	LeasePackets []swim.Packet
	Streams      []Stream
	Events       []swim.Event
	Meta         []MetaEvent    // metadata changes, in the order observed (after Events of the same batch)
	User         []swim.Payload // application messages received by gossip
	// LeaseState is the lease state to save before LeasePackets leave; nil when
	// unchanged.
	LeaseState *lease.State
	// LeaseEvents are leadership changes (became leader, lost lease, leader
	// changed, voters changed), in observation order.
	LeaseEvents []lease.Event
	// ShardEvents are shard transitions seen by this node, in order: as leader,
	// draining/rebalancing/steady moves; as member, map changes and ownership
	// acquired, released or expired.
	ShardEvents []shard.Event
}

// Stack is one process's protocol stack.
type Stack struct {
	cfg     Config
	cluster uint32 // wire.ClusterHash(cfg.Swim.ClusterLabel), stamped on every frame
	swim    *swim.Machine
	meta    *metaState
	dec     wire.Decoder
	lease   *leaseState // nil when Config.Lease is nil
	fence   lease.FenceChecker
	shard   *shardState // nil when Config.Shard is nil
}

// New builds a Stack. rng is the only randomness the stack uses.
func New(cfg Config, rng *rand.Rand, now time.Time) (*Stack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	cfg.metaDefaults()
	m, err := swim.New(cfg.Swim, rng, now)
	if err != nil {
		return nil, err
	}
	ms, err := newMetaState(cfg, now)
	if err != nil {
		return nil, err
	}
	h := &Stack{cfg: cfg, cluster: wire.ClusterHash(cfg.Swim.ClusterLabel), swim: m, meta: ms}
	h.dec.Share(cfg.Swim.Interner) // push-pull states name the same members as packets
	if cfg.Lease != nil {
		lm, err := lease.New(*cfg.Lease, cfg.LeaseStorage, rng, now)
		if err != nil {
			return nil, err
		}
		h.lease = newLeaseState(cfg, h.cluster, lm)
	}
	if cfg.Shard != nil {
		if h.shard, err = newShardState(cfg, h.cluster, now); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Swim exposes the membership machine for reads (Members, Digest, ...).
func (h *Stack) Swim() *swim.Machine { return h.swim }

// HandlePacket feeds a received datagram to every machine.
func (h *Stack) HandlePacket(now time.Time, from string, data []byte) {
	h.meta.now = now
	if h.lease != nil && isLeasePacket(data) {
		h.handleLeasePacket(now, data)
		return
	}
	if h.shard != nil && isShardPacket(data) {
		h.handleShardPacket(now, data)
		return
	}
	h.swim.HandlePacket(now, from, data)
}

// HandleStream answers a plain stream request frame; a nil reply means close
// without one. Malformed frames and frames of another cluster are dropped and
// counted by swim's stats (both as Malformed: swim has no foreign-stream counter).
func (h *Stack) HandleStream(now time.Time, from string, req []byte) []byte {
	h.meta.now = now
	msg, ok := h.decodeFrame(req)
	if !ok {
		return nil
	}
	if h.shard != nil && msg.Type() >= wire.RangeShardFirst && msg.Type() < wire.RangeCoreFirst {
		return h.handleShardStream(now, msg)
	}
	pp, ok := msg.(*wire.PushPull)
	if !ok {
		return nil
	}
	reply := h.swim.HandlePushPull(now, from, pp)
	if reply == nil {
		return nil
	}
	reply.Meta = h.snapshot()
	b, err := wire.EncodeFrame(reply, h.cluster)
	if err != nil {
		panic("stack: encoding our own push-pull: " + err.Error())
	}
	return b
}

// HandleStreamReply feeds the plain reply frame to a stream this host asked for. A
// malformed or foreign reply is counted as HandleStream counts it and fails the
// push-pull.
func (h *Stack) HandleStreamReply(now time.Time, from string, reply []byte) {
	h.meta.now = now
	msg, ok := h.decodeFrame(reply)
	if h.shard != nil && (!ok || msg.Type() >= wire.RangeShardFirst && msg.Type() < wire.RangeCoreFirst) && h.shard.shardStreamDone(from) {
		if ok {
			h.stepShard(now, msg)
		}
		return
	}
	if !ok {
		h.swim.PushPullFailed(now, from)
		return
	}
	if pp, ok := msg.(*wire.PushPull); ok {
		h.swim.HandlePushPullReply(now, from, pp)
	}
}

// decodeFrame decodes a plain frame of our cluster, counting what it drops.
func (h *Stack) decodeFrame(frame []byte) (wire.Message, bool) {
	hdr, msg, err := wire.DecodeFrame(frame, h.cfg.MaxFrame, &h.dec)
	if err == nil {
		err = hdr.CheckCluster(h.cluster)
	}
	if err != nil {
		h.swim.CountMalformed()
		return nil, false
	}
	return msg, true
}

// StreamFailed reports that a stream this host asked for could not complete.
func (h *Stack) StreamFailed(now time.Time, to string) {
	if h.shard != nil && h.shard.shardStreamDone(to) {
		return // a map fetch or one-way shard frame: the Owner asks again
	}
	h.swim.PushPullFailed(now, to)
}

// Tick advances timers to now.
func (h *Stack) Tick(now time.Time) {
	h.swim.Tick(now)
	h.tickMeta(now)
	if h.lease != nil {
		h.lease.m.Tick(now)
	}
	if h.shard != nil {
		h.shard.ctl.Tick(now)
		h.shard.owner.Tick(now)
	}
}

// Join starts joining through seed addresses, and gossips our metadata so the
// cluster learns it without waiting for push-pulls.
func (h *Stack) Join(now time.Time, seeds []string) {
	h.meta.now = now
	h.swim.Join(now, seeds)
	h.announceMeta(now)
}

// Leave starts a graceful leave; a lease holder first releases its lease, so the
// next leader need not wait for it to expire.
func (h *Stack) Leave(now time.Time) {
	if h.lease != nil && h.lease.m.IsLeader(now) {
		h.meta.now = now
		_ = h.lease.m.Release(now) // it leads: cannot fail
	}
	h.swim.Leave(now)
}

// NextDeadline is when Tick must next be called.
func (h *Stack) NextDeadline() time.Time {
	d := h.swim.NextDeadline()
	if h.lease != nil {
		if l := h.lease.m.NextDeadline(); !l.IsZero() && (d.IsZero() || l.Before(d)) {
			d = l
		}
	}
	if h.shard != nil {
		for _, l := range [2]time.Time{h.shard.ctl.NextDeadline(), h.shard.owner.NextDeadline()} {
			if !l.IsZero() && (d.IsZero() || l.Before(d)) {
				d = l
			}
		}
	}
	return d
}

// Ready drains the outputs of every machine. Received metadata is merged here;
// deltas it gossips on produce more swim output, drained in the same call.
func (h *Stack) Ready() Ready {
	var out Ready
	if h.lease != nil {
		h.drainLease(h.meta.now, &out) // first: a new holder's cluster-map write is gossiped below
	}
	for {
		r := h.swim.Ready()
		out.Packets = append(out.Packets, r.Packets...)
		out.Events = append(out.Events, r.Events...)
		out.User = append(out.User, r.User...)
		h.trackMembers(r.Events)
		if h.lease != nil {
			h.lease.trackAddrs(r.Events)
		}
		for _, s := range r.Streams {
			s.Msg.Meta = h.snapshot()
			b, err := wire.EncodeFrame(s.Msg, h.cluster)
			if err != nil {
				panic("stack: encoding our own push-pull: " + err.Error())
			}
			out.Streams = append(out.Streams, Stream{To: s.To, Data: b})
		}
		if len(r.Meta) == 0 {
			break
		}
		for _, p := range r.Meta {
			h.receiveMeta(p)
		}
	}
	out.Meta, h.meta.events = h.meta.events, nil
	if h.lease != nil {
		h.observeClusterLeader(h.meta.now, out.Meta)
		out.LeaseEvents = append(out.LeaseEvents, h.lease.events...)
		h.lease.events = nil
	}
	if h.shard != nil {
		h.observeShardInputs(h.meta.now, out.Events, out.Meta, out.LeaseEvents)
		h.drainShard(h.meta.now, &out)
	}
	return out
}
