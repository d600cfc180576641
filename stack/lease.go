package stack

import (
	"fmt"
	"slices"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Leadership glue: the host owns the lease.Machine and is its only caller.
//
//   - Lease messages travel in packets of their own (one message each, wire types
//     32..63), addressed by node name; the name is resolved through the stack's
//     one address directory (Stack.addrs: the address swim last saw, dead or not,
//     until a graceful leave). A message to a name with no address is dropped and
//     counted (LeaseHostStats.Unroutable); one to a dead voter is harmless (it is
//     one of 3 or 5) and reaches it the moment it is back.
//   - A received packet whose first message is a lease type is the lease's alone;
//     swim never sees it (it would skip every message in it anyway).
//   - Non-voters get no lease messages (holders broadcast only to voters), so the
//     holder also publishes itself in the cluster metadata map, key LeaderKey,
//     written under its epoch (crdt.Store.SetCluster): the crdt fences that map by
//     epoch, so a deposed holder's late write cannot overwrite a newer holder's.
//     A non-voter reports that holder while swim sees it alive; it cannot know the
//     deadline, so validUntil is zero.
//   - Fencing: the highest epoch seen in lease events and in the cluster map feeds
//     a lease.FenceChecker; CheckFence rejects and counts lower epochs.

// LeaderKey is the cluster-map key under which the lease holder publishes its name.
const LeaderKey = "lease.leader"

// LeaseHostStats counts what the host's lease glue dropped.
type LeaseHostStats struct {
	Unroutable uint64 // outgoing lease messages to a name with no live address
	Oversized  uint64 // outgoing lease messages too large for one packet (absurdly long voter names)
	Malformed  uint64 // received lease packets or messages that did not decode
	Foreign    uint64 // received lease packets of another cluster
	Fenced     uint64 // CheckFence rejections (stale epochs)
	Auth       PacketAuthStats
}

type leaseState struct {
	m      *lease.Machine
	self   string
	packer *wire.Packer
	reader wire.PacketReader
	stats  LeaseHostStats
	// published is the epoch we last wrote LeaderKey under.
	published uint64
	// clusterHolder is the holder named in the cluster map, as last reported.
	clusterHolder string
	clusterEpoch  uint64
	mapEpoch      uint64 // the cluster map's epoch when LeaderKey was last read
	// holders are the holders of recent epochs this node learned from its lease
	// machine, newest first: who may sign the cluster map (metaauth.go).
	holders []epochHolder
	events  []lease.Event // host-made events (non-voters learning the holder)
}

// validateLease checks the lease fields of Config (lease.Config checks itself).
func (c Config) validateLease() error {
	switch {
	case c.Lease == nil:
		return nil
	case c.LeaseStorage == nil:
		return fmt.Errorf("stack: LeaseStorage is nil while Lease is set")
	case c.Lease.Self != c.Swim.Name:
		return fmt.Errorf("stack: Lease.Self %q differs from Swim.Name %q", c.Lease.Self, c.Swim.Name)
	}
	return nil
}

func newLeaseState(cfg Config, cluster uint32, m *lease.Machine) *leaseState {
	return &leaseState{
		m:      m,
		self:   cfg.Swim.Name,
		packer: wire.NewPacker(cfg.Swim.MTU, cluster),
	}
}

// isLeasePacket reports whether a plain packet carries lease messages: the type of
// its first message is in the lease range. It reads one byte; the full checks
// happen when the packet is read.
func isLeasePacket(data []byte) bool {
	if len(data) <= wire.HeaderSize {
		return false
	}
	return lease.Messages().Owns(wire.MsgType(data[wire.HeaderSize]))
}

// handleLeasePacket steps the machine with every lease message of a packet;
// with Auth, only with those its sender signed and speaks for (packetauth.go).
func (h *Stack) handleLeasePacket(now time.Time, from string, data []byte) {
	ls := h.lease
	hdr, err := ls.reader.Reset(data)
	if err != nil {
		ls.stats.Malformed++
		return
	}
	if hdr.CheckCluster(h.cluster) != nil {
		ls.stats.Foreign++
		return
	}
	sender, end, ok := h.checkPacket(now, from, data, &ls.reader, &ls.stats.Auth, &ls.stats.Malformed)
	if !ok {
		return
	}
	for ls.reader.Pos() < end && ls.reader.Next() {
		t := ls.reader.Type()
		if !lease.Messages().Owns(t) {
			continue
		}
		wm := h.reg.New(t)
		if wm == nil {
			continue // a lease type of a newer version: skipped, as PROTOCOL.md says
		}
		if err := h.dec.Decode(ls.reader.Body(), wm); err != nil {
			ls.stats.Malformed++
			continue
		}
		if sender != "" && h.misnamedLease(wm, sender, from) {
			return // the rest of a packet that speaks for another member is not read either
		}
		ls.m.Step(now, wm) // Step checks the fields
	}
	if ls.reader.Err() != nil {
		ls.stats.Malformed++
	}
}

// drainLease moves the machine's outputs into out: a new state to persist, events
// as they are, messages encoded into packets (held while a state is unsaved). A holder that just won publishes itself.
func (h *Stack) drainLease(now time.Time, out *Ready) {
	ls := h.lease
	r := ls.m.Ready()
	ps := &h.persist
	if r.State != nil {
		ps.newest++
		ps.unsaved = r.State
	}
	for _, e := range r.Events {
		switch e.Kind {
		case lease.EventBecameLeader:
			h.fence.ObserveEpoch(e.Epoch)
			h.noteHolder(now, lease.Event{Holder: ls.self, Epoch: e.Epoch})
			h.publishLeader(now, e.Epoch)
		case lease.EventLeaderChanged:
			h.fence.ObserveEpoch(e.Epoch)
			h.noteHolder(now, e)
		}
	}
	out.LeaseEvents = append(out.LeaseEvents, r.Events...)
	for _, env := range r.Messages {
		addr, ok := h.addrs.lookup(env.To)
		if !ok {
			ls.stats.Unroutable++
			continue
		}
		h.resetPacker(ls.packer)
		if !ls.packer.Add(env.Msg) || !h.signPacket(ls.packer, env.To, &ls.stats.Auth) {
			ls.stats.Oversized++
			continue
		}
		p := swim.Packet{To: addr, Data: slices.Clone(ls.packer.Bytes())}
		if ps.saved < ps.newest {
			ps.held = append(ps.held, p) // may reveal the unsaved state
		} else {
			out.Packets = append(out.Packets, p)
		}
	}
}

// publishLeader writes our name under epoch in the cluster map, for non-voters.
// An epoch the map has already moved past is refused by the crdt (ErrFenced): a
// newer holder published since, and nothing needs doing.
func (h *Stack) publishLeader(now time.Time, epoch uint64) {
	ls := h.lease
	if epoch <= ls.published {
		return
	}
	d, err := h.meta.store.SetCluster(epoch, LeaderKey, []byte(ls.self))
	if err != nil {
		return
	}
	ls.published = epoch
	h.meta.dirty = true
	for _, e := range d.Entries {
		if e.Key == LeaderKey {
			h.meta.events = append(h.meta.events, MetaEvent{Node: crdt.Cluster, Key: LeaderKey,
				Value: []byte(ls.self), Version: e.Version, At: now})
		}
	}
	_ = h.gossipDelta(now, d) // on failure push-pulls carry it; counted in MetaStats
}

// observeClusterLeader follows LeaderKey in the cluster map: it raises the fence
// and, on a node that is not a voter, reports the holder as EventLeaderChanged. It
// reads the key's cell, not only the events: a holder re-elected at a higher epoch
// rewrites the same value, which changes the cell's version but is no change of
// value, so no event carries it (non-voters went on naming the old epoch, seen in
// the chaos suite after 5 minutes of loss). The cell is read only when an event
// names the key or the map's epoch moved, not on every flush.
func (h *Stack) observeClusterLeader(now time.Time, evs []MetaEvent) {
	ls := h.lease
	mapEpoch := h.meta.store.ClusterEpoch()
	if mapEpoch == ls.mapEpoch && !slices.ContainsFunc(evs, func(e MetaEvent) bool {
		return e.Node == crdt.Cluster && e.Key == LeaderKey
	}) {
		return
	}
	ls.mapEpoch = mapEpoch
	e, ok := h.meta.store.Lookup(crdt.Cluster, LeaderKey)
	if !ok || e.Deleted {
		return
	}
	epoch := e.Version.Epoch
	h.fence.ObserveEpoch(epoch)
	holder := string(e.Value)
	if holder == ls.clusterHolder && epoch == ls.clusterEpoch {
		return
	}
	ls.clusterHolder, ls.clusterEpoch = holder, epoch
	if !ls.voter() {
		ls.events = append(ls.events, lease.Event{Kind: lease.EventLeaderChanged, Holder: holder, Epoch: epoch, At: now})
	}
}

// voter reports whether this node votes in the voter set in force.
func (ls *leaseState) voter() bool {
	mb := ls.m.Membership()
	return slices.Contains(mb.Voters, ls.self) || slices.Contains(mb.Joint, ls.self)
}

// Leader reports the lease holder this node knows of at now. A voter knows it from
// the lease it holds or accepted (validUntil: its own deadline, or its voter-side
// expiry), so a voter that names a leader is part of its lease. A non-voter knows it
// from the cluster map while swim sees the holder alive; validUntil is then zero
// (unknown). ok is false when none is known, and always when Lease is nil.
func (h *Stack) Leader(now time.Time) (holder string, epoch uint64, validUntil time.Time, ok bool) {
	ls := h.lease
	if ls == nil {
		return "", 0, time.Time{}, false
	}
	if holder, epoch, validUntil, ok = ls.m.Leader(now); ok || ls.voter() {
		return holder, epoch, validUntil, ok
	}
	if ls.clusterHolder == "" || ls.clusterHolder == ls.self {
		return "", 0, time.Time{}, false
	}
	if !h.addrs.live(ls.clusterHolder) {
		return "", 0, time.Time{}, false
	}
	return ls.clusterHolder, ls.clusterEpoch, time.Time{}, true
}

// IsLeader reports whether this node holds a valid lease at now.
func (h *Stack) IsLeader(now time.Time) bool { return h.lease != nil && h.lease.m.IsLeader(now) }

// Fence returns the fencing token (the lease epoch) while this node holds a valid
// lease at now; lease.ErrNotLeader otherwise, and always when Lease is nil.
func (h *Stack) Fence(now time.Time) (uint64, error) {
	if h.lease == nil {
		return 0, lease.ErrNotLeader
	}
	return h.lease.m.Fence(now)
}

// LeaseStats returns the machine's counters; zero when Lease is nil.
func (h *Stack) LeaseStats() lease.Stats {
	if h.lease == nil {
		return lease.Stats{}
	}
	return h.lease.m.Stats()
}

// LeaseHostStats returns the host's lease glue counters.
func (h *Stack) LeaseHostStats() LeaseHostStats {
	var st LeaseHostStats
	if h.lease != nil {
		st = h.lease.stats
	}
	st.Fenced = h.fence.Rejected()
	return st
}

// ChangeVoters moves the cluster to a new voter set through this node, which must
// hold a valid lease (lease.ErrNotLeader otherwise, and when Lease is nil).
func (h *Stack) ChangeVoters(now time.Time, voters []string) error {
	if h.lease == nil {
		return lease.ErrNotLeader
	}
	defer h.process(now)
	return h.lease.m.ChangeVoters(now, voters)
}

// StepDown releases this node's lease now, so another voter wins the next
// election (this one waits a LeaseDuration before it stands again);
// lease.ErrNotLeader unless it holds a valid lease.
func (h *Stack) StepDown(now time.Time) error {
	if h.lease == nil {
		return lease.ErrNotLeader
	}
	defer h.process(now)
	return h.lease.m.Release(now)
}

// CheckFence accepts a leader-issued message carrying epoch, or rejects and counts
// it (LeaseHostStats.Fenced) with lease.ErrStaleEpoch when a higher epoch has been
// seen: in a lease event, in the cluster map, or in an earlier CheckFence. Without
// Lease only the epochs checked before count.
func (h *Stack) CheckFence(epoch uint64) error { return h.fence.CheckFence(epoch) }
