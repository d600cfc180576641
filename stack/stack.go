// Package stack assembles one process's protocol stack (swim, metadata, lease and
// shard) as pure glue, so node and sim drive the same code. Like the machines it
// wraps it is not safe for concurrent use, reads no clock and starts no goroutine.
package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	fed "github.com/omnirelay/mesh/cluster"
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
	// Cluster makes this process keep the descriptors of a federation of clusters
	// (fed.Machine; docs/multi-cluster.md): the lease holder writes its
	// cluster's record, every node merges what gateways relay. Requires Lease.
	// nil: one cluster, Clusters reports none.
	Cluster *fed.Config
}

// Stream asks the driver to open a stream to To, send Data (one wire stream
// frame) and hand the reply frame to StreamReply with ID, or call StreamFailed with
// ID: exactly one of them for every Stream.
type Stream struct {
	ID   uint64 // chosen by the stack, unique within it
	To   string
	Data []byte
}

// openStream is what the stack knows of one outbound stream until its reply or
// failure: a push-pull of swim's (to the address swim asked for) or a shard frame.
type openStream struct {
	to    string
	shard bool
}

// Ready is what the stack produced since the last Advance: reading it changes
// nothing (two calls return the same batch) and Advance acknowledges it. The
// driver handles a Ready in this order, as etcd-io/raft's RawNode asks:
//
//  1. LeaseState, when non-nil, is saved durably (Config.LeaseStorage.Save) and the
//     result reported with Saved(now, LeaseVersion, err) BEFORE anything else. No
//     packet of this batch depends on it: lease packets that may reveal an unsaved
//     state are held inside the stack and appear in a later Ready once Saved
//     confirms the version they depend on. A failed save keeps them held, and the
//     state is offered again by every later Ready until a save works.
//  2. Packets, Streams and Replies may then leave in any order: the network
//     reorders them anyway. Packets never wait for a disk: membership must not
//     stop because a disk did.
//  3. Events, Meta, User, RTTs, Refused, Forged, PacketsForged, MetaForged, LeaseEvents and ShardEvents are published in their own
//     order (each slice is in observation order; Meta follows the Events of the
//     same batch).
//  4. Advance; then, while HasReady, another round (Saved may have released
//     packets).
//
// The slices stay valid until Advance; the driver must not modify them.
type Ready struct {
	Packets []swim.Packet // membership, metadata, shard and (once saved) lease packets
	Streams []Stream
	Events  []swim.Event
	Meta    []MetaEvent    // metadata changes, in the order observed (after Events of the same batch)
	User    []swim.Payload // application messages received by gossip
	RTTs    []swim.RTT     // round trips of direct probes, in the order acks arrived
	Refused []swim.Refusal // member claims refused for their protocol range, for the log (at most swim.MaxRefusedPerReady)
	Forged  []swim.Forgery // self-claims refused for another member's signature, for the audit log (at most swim.MaxRefusedPerReady)
	// PacketsForged are lease and shard packets refused for a signature that is
	// not their sender's or for speaking for another member, for the audit log
	// (at most swim.MaxRefusedPerReady; PacketAuthStats.Forged counts them all).
	PacketsForged []PacketForgery
	// MetaForged are metadata cells refused for a signature that is not their
	// writer's, for the audit log (at most swim.MaxRefusedPerReady;
	// MetaStats.Forged counts them all).
	MetaForged []MetaForgery
	// LeaseState is the newest lease state not yet confirmed saved, nil when all
	// is saved; LeaseVersion names it for Saved.
	LeaseState   *lease.State
	LeaseVersion uint64
	// LeaseEvents are leadership changes (became leader, lost lease, leader
	// changed, voters changed), in observation order.
	LeaseEvents []lease.Event
	// ShardEvents are shard transitions seen by this node, in order: as leader,
	// draining/rebalancing/steady moves; as member, map changes and ownership
	// acquired, released or expired.
	ShardEvents []shard.Event
	// Deadline is when Tick must next be called (NextDeadline); zero: never.
	Deadline time.Time
}

// persistState is persist-before-send: lease packets wait here until the state
// they may reveal is confirmed saved.
type persistState struct {
	newest  uint64       // version of the newest lease state the machine produced
	saved   uint64       // newest version Saved confirmed
	unsaved *lease.State // the state of version newest while saved < newest
	// held are lease packets produced while saved < newest. They are released
	// together once the newest version is saved: a lease state only grows
	// (promises and epochs never go back), so the newest covers every older one.
	held []swim.Packet
}

// Stack is one process's protocol stack.
type Stack struct {
	cfg     Config
	cluster uint32 // wire.ClusterHash(cfg.Swim.ClusterLabel), stamped on every frame
	swim    *swim.Machine
	meta    *metaState
	dec     wire.Decoder
	reg     *wire.Registry // the message ranges of the machines this stack runs
	lease   *leaseState    // nil when Config.Lease is nil
	fence   lease.FenceChecker
	shard   *shardState   // nil when Config.Shard is nil
	clus    *clusterState // nil when Config.Cluster is nil
	persist persistState
	// streams are the outbound streams not yet answered or failed, by id: a
	// failure is charged to the stream it happened on, never to another stream
	// to the same peer.
	streams    map[uint64]openStream
	lastStream uint64
	addrs      directory
	packetSig  wire.PacketSig // reused by signPacket and checkPacket
	// pending piles up outputs until Advance; handed is how much of it the last
	// Ready returned, which is what Advance clears.
	pending Ready
	handed  Ready
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
	h := &Stack{cfg: cfg, cluster: wire.ClusterHash(cfg.Swim.ClusterLabel), swim: m, meta: ms, streams: map[uint64]openStream{}, addrs: directory{}}
	if cfg.Swim.Auth != nil {
		ms.auth = &metaAuth{h: h, auth: cfg.Swim.Auth, budget: -1}
		ms.store.SetAuthority(cfg.Swim.ClusterLabel, ms.auth)
	}
	h.dec.Share(cfg.Swim.Interner) // push-pull states name the same members as packets
	h.dec.Accept(m.Versions())
	protocols := []wire.Protocol{wire.Membership()}
	if cfg.Lease != nil {
		protocols = append(protocols, lease.Messages())
	}
	if cfg.Shard != nil {
		protocols = append(protocols, shard.Messages())
	}
	if h.reg, err = wire.NewRegistry(protocols...); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	h.dec.Use(h.reg) // frames decode by the range of their type
	if cfg.Lease != nil {
		lm, err := lease.New(*cfg.Lease, cfg.LeaseStorage, rng, now)
		if err != nil {
			return nil, err
		}
		h.lease = newLeaseState(cfg, h.cluster, lm)
		h.lease.reader.Accept(m.Versions())
	}
	if cfg.Shard != nil {
		if h.shard, err = newShardState(cfg, h.cluster, rng); err != nil {
			return nil, err
		}
		h.shard.reader.Accept(m.Versions())
	}
	if cfg.Cluster != nil {
		if h.clus, err = newClusterState(cfg, now); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Swim exposes the membership machine for reads (Members, Digest, ...).
func (h *Stack) Swim() *swim.Machine { return h.swim }

// HasFeature reports whether every feature of f is on in this node's view: this
// node and every live member it holds advertise it (PROTOCOL.md section 7).
// Behaviour that needs the whole cluster's support asks this each time it acts.
func (h *Stack) HasFeature(f wire.Features) bool { return h.swim.Features().Has(f) }

// encodeFrame encodes m as a stream frame at the version every member speaks
// (swim.Machine.SendVersion), so a rolling upgrade keeps talking to old nodes.
func (h *Stack) encodeFrame(m wire.Message) ([]byte, error) {
	return h.encodeFrameAt(m, h.swim.SendVersion())
}

func (h *Stack) encodeFrameAt(m wire.Message, v uint8) ([]byte, error) {
	return wire.EncodeFrameVersion(m, v, h.cluster)
}

// resetPacker starts a packet of a lease or shard machine at the version the
// membership machine sends at.
func (h *Stack) resetPacker(p *wire.Packer) {
	p.SetVersion(h.swim.SendVersion())
	p.Reset()
}

// HandlePacket feeds a received datagram to every machine.
func (h *Stack) HandlePacket(now time.Time, from string, data []byte) {
	switch {
	case h.lease != nil && isLeasePacket(data):
		h.handleLeasePacket(now, from, data)
	case h.shard != nil && isShardPacket(data):
		h.handleShardPacket(now, from, data)
	default:
		h.swim.HandlePacket(now, from, data)
	}
	h.process(now)
}

// HandleStream answers a plain stream request frame from from; a nil reply
// means close without one. Malformed frames and frames of another cluster are
// dropped and counted by swim's stats (both as Malformed: swim has no
// foreign-stream counter). peer is the member the stream's TLS certificate
// names ("" without node certificates): a shard frame must speak for it, by
// the sender rules of lease and shard packets (PROTOCOL.md 10.11).
func (h *Stack) HandleStream(now time.Time, from, peer string, req []byte) []byte {
	defer h.process(now)
	msg, ver, ok := h.decodeFrame(req)
	if !ok {
		return nil
	}
	if h.shard != nil && shard.Messages().Owns(msg.Type()) {
		if peer != "" && h.misnamedShard(msg, peer, from) {
			return nil
		}
		return h.handleShardStream(now, from, msg)
	}
	pp, ok := msg.(*wire.PushPull)
	if !ok {
		h.swim.CountMalformed() // a known type that streams do not carry (a Ping, a lease message)
		return nil
	}
	reply := h.swim.HandlePushPull(now, from, pp)
	if reply == nil {
		return nil
	}
	reply.Meta = h.snapshot()
	// Answered at the request's version when that is lower than ours: a node
	// restarted onto an older build (a rollback) is still held at its newer range
	// until its refutation spreads, and this reply is what tells it to refute.
	b, err := h.encodeFrameAt(reply, min(ver, h.swim.SendVersion()))
	if err != nil {
		panic("stack: encoding our own push-pull: " + err.Error())
	}
	return b
}

// StreamReply feeds the plain reply frame of stream id (a Stream of an earlier
// Ready) to the machine that opened it. A malformed or foreign reply is counted as
// HandleStream counts it; on a push-pull it, or a reply of another type, fails the
// push-pull. An id that is not open (answered already) is ignored.
func (h *Stack) StreamReply(now time.Time, id uint64, reply []byte) {
	s, ok := h.streams[id]
	if !ok {
		return
	}
	delete(h.streams, id)
	defer h.process(now)
	msg, _, ok := h.decodeFrame(reply)
	if s.shard {
		if ok && shard.Messages().Owns(msg.Type()) {
			h.stepShard(now, s.to, msg)
		}
		return
	}
	pp, isPP := msg.(*wire.PushPull)
	switch {
	case ok && isPP:
		h.swim.HandlePushPullReply(now, s.to, pp)
		return
	case ok:
		h.swim.CountMalformed() // a reply of another type
	}
	h.swim.PushPullFailed(now, s.to)
}

// stream queues an outbound stream and remembers what it is for.
func (h *Stack) stream(to string, data []byte, shard bool) {
	h.lastStream++
	h.streams[h.lastStream] = openStream{to: to, shard: shard}
	h.pending.Streams = append(h.pending.Streams, Stream{ID: h.lastStream, To: to, Data: data})
}

// decodeFrame decodes a plain frame of our cluster, counting what it drops: a
// frame of another cluster label as foreign, as its packets are, anything else
// (unknown type included) as malformed.
func (h *Stack) decodeFrame(frame []byte) (wire.Message, uint8, bool) {
	hdr, msg, err := wire.DecodeFrame(frame, h.cfg.MaxFrame, &h.dec)
	if err == nil {
		err = hdr.CheckCluster(h.cluster)
	}
	switch {
	case errors.Is(err, wire.ErrCluster):
		h.swim.CountForeign()
		return nil, 0, false
	case err != nil:
		h.swim.CountMalformed()
		return nil, 0, false
	}
	return msg, hdr.Version, true
}

// StreamFailed reports that stream id could not complete. An id that is not open
// is ignored.
func (h *Stack) StreamFailed(now time.Time, id uint64) {
	s, ok := h.streams[id]
	if !ok {
		return
	}
	delete(h.streams, id)
	defer h.process(now)
	if s.shard {
		return // a map fetch or one-way shard frame: the Owner asks again
	}
	h.swim.PushPullFailed(now, s.to)
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
	if h.clus != nil {
		h.tickCluster(now)
	}
	h.process(now)
}

// Join starts joining through seed addresses, and gossips our metadata so the
// cluster learns it without waiting for push-pulls.
func (h *Stack) Join(now time.Time, seeds []string) {
	h.swim.Join(now, seeds)
	h.announceMeta(now)
	h.process(now)
}

// Leave starts a graceful leave; a lease holder first releases its lease, so the
// next leader need not wait for it to expire.
func (h *Stack) Leave(now time.Time) {
	if h.lease != nil && h.lease.m.IsLeader(now) {
		_ = h.lease.m.Release(now) // it leads: cannot fail
	}
	h.swim.Leave(now)
	h.process(now)
}

// Resign re-signs our Alive at a new incarnation after a certificate rotation
// (swim.Machine.Resign), and re-issues our metadata map under a new incarnation
// of the map, every cell signed by the new key: cells signed by the old one
// stop verifying when its certificate expires or is replaced again.
func (h *Stack) Resign(now time.Time) {
	h.swim.Resign(now)
	if h.meta.auth != nil {
		if d, err := h.meta.store.SetIncarnation(h.meta.store.Incarnation() + 1); err == nil {
			h.meta.dirty = true
			_ = h.gossipDelta(now, d) // on failure push-pulls carry it; counted in MetaStats
		}
	}
	h.process(now)
}

// ForceLeave removes a dead member at the operator's request (swim.ForceLeave).
func (h *Stack) ForceLeave(now time.Time, name string, prune bool) error {
	defer h.process(now)
	return h.swim.ForceLeave(now, name, prune)
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
	if h.clus != nil {
		if l := h.clusterDeadline(); !l.IsZero() && (d.IsZero() || l.Before(d)) {
			d = l
		}
	}
	return d
}

// process moves what the machines produced during an input into pending, and does
// the work that follows from it at the same now: received metadata is merged
// (deltas gossiped on produce more swim output, drained in the same pass),
// leadership changes start or stop the shard Controller, and shard messages to
// this node are handed over. Every input method ends with it.
func (h *Stack) process(now time.Time) {
	out := &h.pending
	evFrom, metaFrom, leaseFrom := len(out.Events), len(out.Meta), len(out.LeaseEvents)
	if h.lease != nil {
		h.drainLease(now, out) // first: a new holder's cluster-map write is gossiped below
	}
	h.drainSwim(now, out)
	if h.clus != nil && h.observeCluster(now, h.meta.events) {
		h.drainSwim(now, out) // the descriptor or held record just gossiped
	}
	out.Meta, h.meta.events = append(out.Meta, h.meta.events...), nil
	if room := swim.MaxRefusedPerReady - len(out.MetaForged); room > 0 {
		out.MetaForged = append(out.MetaForged, h.meta.forged[:min(room, len(h.meta.forged))]...)
	}
	h.meta.forged = nil
	if h.lease != nil {
		h.observeClusterLeader(now, out.Meta[metaFrom:])
		out.LeaseEvents = append(out.LeaseEvents, h.lease.events...)
		h.lease.events = nil
	}
	if h.shard != nil {
		h.observeShardInputs(now, out.Events[evFrom:], out.Meta[metaFrom:], out.LeaseEvents[leaseFrom:])
		if len(h.shard.held) > 0 {
			h.retryAnnounces(now) // a holder may be confirmed now
		}
		h.drainShard(now, out)
	}
}

// drainSwim moves swim's outputs into out, merging received metadata (whose
// rebroadcast produces more output, drained in the same call).
func (h *Stack) drainSwim(now time.Time, out *Ready) {
	for {
		r := h.swim.Ready()
		out.Packets = append(out.Packets, r.Packets...)
		out.Events = append(out.Events, r.Events...)
		out.User = append(out.User, r.User...)
		out.RTTs = append(out.RTTs, r.RTTs...)
		if room := swim.MaxRefusedPerReady - len(out.Refused); room > 0 {
			out.Refused = append(out.Refused, r.Refused[:min(room, len(r.Refused))]...)
		}
		if room := swim.MaxRefusedPerReady - len(out.Forged); room > 0 {
			out.Forged = append(out.Forged, r.Forged[:min(room, len(r.Forged))]...)
		}
		h.trackMembers(r.Events)
		h.addrs.track(r.Events)
		for _, s := range r.Streams {
			s.Msg.Meta = h.snapshot()
			b, err := h.encodeFrame(s.Msg)
			if err != nil {
				panic("stack: encoding our own push-pull: " + err.Error())
			}
			h.stream(s.To, b, false)
		}
		if len(r.Meta) == 0 {
			break
		}
		h.meta.startMetaBatch()
		for _, p := range r.Meta {
			h.receiveMeta(now, p)
		}
	}
}

// Ready returns the outputs piled up since the last Advance, in the order rules of
// the Ready type. It changes nothing: calling it twice returns the same batch.
func (h *Stack) Ready() Ready {
	rd := h.pending
	if h.persist.saved < h.persist.newest {
		rd.LeaseState, rd.LeaseVersion = h.persist.unsaved, h.persist.newest
	}
	rd.Deadline = h.NextDeadline()
	h.handed = rd
	return rd
}

// HasReady reports whether Ready holds anything the driver has not been handed:
// an output, or a lease state never offered. A state whose save failed is offered
// again by every Ready but does not count here, so a driver that loops while
// HasReady stops while the disk is failing.
func (h *Stack) HasReady() bool {
	p := &h.pending
	return len(p.Packets)+len(p.Streams)+len(p.Events)+len(p.Meta)+len(p.User)+len(p.RTTs)+len(p.Refused)+len(p.Forged)+
		len(p.PacketsForged)+len(p.MetaForged)+len(p.LeaseEvents)+len(p.ShardEvents) > 0 || h.persist.newest > h.handed.LeaseVersion
}

// Advance acknowledges the last Ready: what it handed out is cleared; what piled
// up since (packets Saved released, outputs of inputs made in between) stays.
func (h *Stack) Advance() {
	p, d := &h.pending, &h.handed
	p.Packets = acknowledge(p.Packets, len(d.Packets))
	p.Streams = acknowledge(p.Streams, len(d.Streams))
	p.Events = acknowledge(p.Events, len(d.Events))
	p.Meta = acknowledge(p.Meta, len(d.Meta))
	p.User = acknowledge(p.User, len(d.User))
	p.RTTs = acknowledge(p.RTTs, len(d.RTTs))
	p.Refused = acknowledge(p.Refused, len(d.Refused))
	p.Forged = acknowledge(p.Forged, len(d.Forged))
	p.PacketsForged = acknowledge(p.PacketsForged, len(d.PacketsForged))
	p.MetaForged = acknowledge(p.MetaForged, len(d.MetaForged))
	p.LeaseEvents = acknowledge(p.LeaseEvents, len(d.LeaseEvents))
	p.ShardEvents = acknowledge(p.ShardEvents, len(d.ShardEvents))
	*d = Ready{LeaseVersion: d.LeaseVersion}
}

// acknowledge drops the first n outputs of s. A fully handed-out slice becomes
// nil rather than being reused: the driver may still hold the batch it was given.
func acknowledge[T any](s []T, n int) []T {
	if n >= len(s) {
		return nil
	}
	return slices.Clone(s[n:])
}

// Saved reports the result of saving the lease state of version (Ready.LeaseState
// and LeaseVersion). Once the newest version is saved, the lease packets held for
// it join the pending packets; on err they stay held and the state is offered
// again. A version the stack never offered is a driver bug and panics.
func (h *Stack) Saved(now time.Time, version uint64, err error) {
	ps := &h.persist
	if version > ps.newest {
		panic(fmt.Sprintf("stack: Saved(%d) for a lease state never offered (newest %d)", version, ps.newest))
	}
	if err != nil || version <= ps.saved {
		return
	}
	ps.saved = version
	if ps.saved == ps.newest {
		ps.unsaved = nil
		h.pending.Packets = append(h.pending.Packets, ps.held...)
		ps.held = nil
	}
}
