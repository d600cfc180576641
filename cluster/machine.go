package cluster

import (
	"fmt"
	"slices"
	"time"

	"github.com/omnirelay/mesh/lease"
)

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventPromoted: this cluster became active with Event.Version.
	EventPromoted EventKind = iota + 1
	// EventDraining: this cluster started handing over to Event.Cluster.
	EventDraining
	// EventDemoted: this cluster became passive, having seen Event.Cluster active
	// with a higher version.
	EventDemoted
	// EventDeposed: a record written under a higher epoch of this cluster's lease
	// arrived; this node no longer writes.
	EventDeposed
	// EventActiveChanged: the active cluster of this node's view is now
	// Event.Cluster at Event.Version ("" when none is).
	EventActiveChanged
)

// Event is one change, for logs, metrics and clients.
type Event struct {
	Kind    EventKind
	Cluster string
	Version uint64
	At      time.Time
}

// Ready is what the machine produced since the last Advance. Written records
// are to be published (sent to peer clusters and to the other nodes of this
// one) after they are saved. Sync, when not zero, asks the host to request every
// peer's copy of the descriptors for that epoch (answers go to SyncReply); the
// host repeats the request while Syncing says so, as requests can be lost.
type Ready struct {
	Written []Descriptor
	Events  []Event
	Sync    uint64
}

// Stats are the machine's counters.
type Stats struct {
	Merged      uint64 // records that replaced an older copy
	Malformed   uint64 // records dropped: unknown cluster, bad state, or a version not of the cluster's residue
	Oversized   uint64 // batches dropped whole for holding more records than there are clusters
	Implausible uint64 // records dropped for a counter jump beyond wire.MaxJump
	Promotions  uint64 // this node promoted its cluster
	Refused     uint64 // writes refused: not holder, stale epoch, bad transition
}

// Machine is one node's view of the federation. The node that holds its
// cluster's lease (SetHolder) also applies the failover rules on every input.
type Machine struct {
	cfg    Config
	idx    int
	view   map[string]Descriptor // every cluster, by id; Self always present
	heard  map[string]time.Time  // when a record last came straight from each other cluster
	holder bool
	epoch  uint64
	// pending is an epoch whose quorum read is under way (0: none); synced the
	// peers that answered it; acks the (epoch, counter) of Self's record each
	// peer holds.
	pending uint64
	synced  map[string]bool
	acks    map[string][2]uint64
	since   time.Time // when this node became holder
	drained time.Time // when this holder last turned its cluster draining
	active  string    // the resolved active cluster last reported
	out     Ready
	stats   Stats
}

// New returns the machine of a node of cfg.Self, holding the configured records:
// every cluster Passive at its initial version (its index), Self as cfg.Initial.
func New(cfg Config, now time.Time) (*Machine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, view: map[string]Descriptor{}, heard: map[string]time.Time{},
		synced: map[string]bool{}, acks: map[string][2]uint64{}}
	m.cfg.Clusters, m.cfg.Peers = slices.Clone(cfg.Clusters), slices.Clone(cfg.Peers)
	for i, id := range cfg.Clusters {
		d := Descriptor{ID: id, State: Passive, Version: uint64(i)}
		if id == cfg.Self {
			m.idx = i
			d.Region, d.Priority, d.State = cfg.Region, cfg.Priority, cfg.Initial
		}
		m.view[id] = d
	}
	m.settle(now)
	return m, nil
}

// SetHolder tells the machine this node holds its cluster's lease under epoch
// (the lease's fencing token). An epoch below the one that wrote the cluster's
// descriptor last is refused with lease.ErrStaleEpoch. For a new epoch the node
// first reads the descriptors from a majority of the voters (Ready.Sync,
// SyncReply) and only then writes and applies the rules: a node that was down
// while its cluster changed state does not act on its old copy. Other clusters
// count as heard from when the read completes: a new holder does not promote on
// silence it has not itself waited out.
func (m *Machine) SetHolder(now time.Time, epoch uint64) error {
	if own := m.view[m.cfg.Self]; epoch < own.Epoch {
		m.stats.Refused++
		return fmt.Errorf("%w: cluster %s: epoch %d < %d of the last write of its descriptor", lease.ErrStaleEpoch, m.cfg.Self, epoch, own.Epoch)
	}
	if epoch == m.epoch && (m.holder || m.pending == epoch) {
		return nil
	}
	m.holder, m.epoch, m.pending = false, epoch, epoch
	clear(m.synced)
	m.out.Sync = epoch
	m.maybeHold(now)
	return nil
}

// SyncReply takes peer's copy of the descriptors, answering the read of epoch.
func (m *Machine) SyncReply(now time.Time, peer string, epoch uint64, ds []Descriptor) {
	if !slices.Contains(m.cfg.Peers, peer) {
		m.stats.Malformed++
		return
	}
	m.Merge(now, m.cfg.Self, ds)
	if epoch == m.pending && m.pending != 0 {
		m.synced[peer] = true
		m.maybeHold(now)
	}
}

// Syncing is the epoch whose quorum read is under way, if one is.
func (m *Machine) Syncing() (uint64, bool) { return m.pending, m.pending != 0 }

// Ack records that peer holds Self's record at (epoch, counter).
func (m *Machine) Ack(peer string, epoch, counter uint64) {
	if !slices.Contains(m.cfg.Peers, peer) {
		m.stats.Malformed++
		return
	}
	if a := m.acks[peer]; epoch > a[0] || epoch == a[0] && counter > a[1] {
		m.acks[peer] = [2]uint64{epoch, counter}
	}
}

// quorum is a majority of the voters, this node included.
func (m *Machine) quorum() int { return (len(m.cfg.Peers)+1)/2 + 1 }

// maybeHold completes a quorum read: the node becomes the writer.
func (m *Machine) maybeHold(now time.Time) {
	if m.pending == 0 || 1+len(m.synced) < m.quorum() {
		return
	}
	m.holder, m.pending = true, 0
	m.since = now
	for _, id := range m.cfg.Clusters {
		if id != m.cfg.Self {
			m.heard[id] = now
		}
	}
	if own := m.view[m.cfg.Self]; own.Epoch < m.epoch {
		// Claim the record under the new epoch: it publishes the configured region
		// and priority, and fences any earlier holder.
		m.write(now, func(d *Descriptor) { d.Region, d.Priority = m.cfg.Region, m.cfg.Priority })
	}
	m.settle(now)
}

// durable reports whether a majority of the voters holds Self's current record.
func (m *Machine) durable() bool {
	own, n := m.view[m.cfg.Self], 1
	for _, a := range m.acks {
		if a[0] > own.Epoch || a[0] == own.Epoch && a[1] >= own.Counter {
			n++
		}
	}
	return n >= m.quorum()
}

// Resign tells the machine this node no longer holds the lease.
func (m *Machine) Resign(now time.Time) {
	m.holder, m.pending = false, 0
	m.settle(now)
}

// Holder reports whether this node writes its cluster's descriptor.
func (m *Machine) Holder() bool { return m.holder }

// Merge takes records received from a node of cluster from (Self for the other
// nodes of this cluster, which relay). Each record is checked before it is
// used: unknown clusters, unknown states and versions not of the cluster's
// residue are dropped and counted, as are implausible jumps; a batch longer than
// the federation is dropped whole. A record that comes from its own cluster
// counts as hearing from it.
func (m *Machine) Merge(now time.Time, from string, ds []Descriptor) {
	if len(ds) > len(m.cfg.Clusters) {
		m.stats.Oversized++
		return
	}
	n := uint64(len(m.cfg.Clusters))
	for _, d := range ds {
		i := slices.Index(m.cfg.Clusters, d.ID)
		if i < 0 || d.State < Passive || d.State > Draining || d.Version%n != uint64(i) ||
			(d.State == Draining && !slices.Contains(m.cfg.Clusters, d.Handoff)) {
			m.stats.Malformed++
			continue
		}
		if d.ID == from && from != m.cfg.Self {
			m.heard[from] = now
		}
		known := m.view[d.ID]
		if !newer(d, known) {
			continue
		}
		if !plausible(d, known) {
			m.stats.Implausible++
			continue
		}
		m.view[d.ID] = d
		m.stats.Merged++
		if d.ID == m.cfg.Self && (m.holder || m.pending != 0) && d.Epoch > m.epoch {
			m.holder, m.pending = false, 0
			m.emit(now, EventDeposed, m.cfg.Self, d.Version)
		}
	}
	m.settle(now)
}

// Tick applies the time-driven rule (unplanned promotion); call it at
// NextDeadline.
func (m *Machine) Tick(now time.Time) { m.settle(now) }

// NextDeadline is when Tick must next be called; zero when no timer runs.
func (m *Machine) NextDeadline() time.Time {
	t, _ := m.promoteAt()
	return t
}

// Promote makes this cluster active with a version above every one seen (the
// operator's forced promotion). Holder only; a no-op for an active cluster.
func (m *Machine) Promote(now time.Time) error {
	if err := m.mayWrite(); err != nil {
		return err
	}
	if m.view[m.cfg.Self].State == Active {
		return nil
	}
	err := m.promote(now)
	m.settle(now)
	return err
}

// Drain hands the active role over to target (planned failover): this cluster
// becomes Draining and stops answering as active; target's holder promotes
// itself on receiving the record, and this cluster turns Passive when it sees
// target active with the higher version. Holder only, from Active.
func (m *Machine) Drain(now time.Time, target string) error {
	if err := m.mayWrite(); err != nil {
		return err
	}
	switch own := m.view[m.cfg.Self]; {
	case own.State != Active:
		m.stats.Refused++
		return fmt.Errorf("%w: drain of %s, which is %v, not active", ErrBadTransition, m.cfg.Self, own.State)
	case target == m.cfg.Self || !slices.Contains(m.cfg.Clusters, target):
		m.stats.Refused++
		return fmt.Errorf("%w: drain to %q, which is not another cluster of %v", ErrBadTransition, target, m.cfg.Clusters)
	}
	m.write(now, func(d *Descriptor) { d.State, d.Handoff = Draining, target })
	m.drained = now
	m.emit(now, EventDraining, target, m.view[m.cfg.Self].Version)
	m.settle(now)
	return nil
}

// Serving reports whether this node answers as the active cluster's registry:
// it holds the lease, its cluster is Active, no cluster it knows of is active
// with a higher version, and a majority of its voters holds that record (Ack).
func (m *Machine) Serving() bool {
	a, ok := Resolve(m.Descriptors())
	return m.holder && ok && a.ID == m.cfg.Self && m.durable()
}

// Active is the active cluster of this node's view.
func (m *Machine) Active() (Descriptor, bool) { return Resolve(m.Descriptors()) }

// Descriptors is the view, sorted by id (a copy): what a node publishes.
func (m *Machine) Descriptors() []Descriptor {
	ds := make([]Descriptor, 0, len(m.view))
	for _, d := range m.view {
		ds = append(ds, d)
	}
	sortByID(ds)
	return ds
}

// Get is the record of cluster id.
func (m *Machine) Get(id string) (Descriptor, bool) { d, ok := m.view[id]; return d, ok }

// Self is this cluster's record.
func (m *Machine) Self() Descriptor { return m.view[m.cfg.Self] }

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// HasReady reports whether Ready has anything.
func (m *Machine) HasReady() bool {
	return len(m.out.Written) > 0 || len(m.out.Events) > 0 || m.out.Sync != 0
}

// Ready is the output since the last Advance; it changes nothing.
func (m *Machine) Ready() Ready { return m.out }

// Advance acknowledges the last Ready.
func (m *Machine) Advance() { m.out = Ready{} }

// --- rules ---

// settle applies the failover rules a holder follows after every input, then
// reports a change of the resolved active cluster.
func (m *Machine) settle(now time.Time) {
	if m.holder {
		own := m.view[m.cfg.Self]
		top, ok := m.topOther()
		switch {
		case own.State != Passive && ok && top.Version > own.Version:
			// A later failover happened elsewhere (active, or already handing
			// over): its version wins, and a draining cluster is no exception, or
			// two clusters draining towards each other would wait forever.
			m.write(now, func(d *Descriptor) { d.State, d.Handoff = Passive, "" })
			m.emit(now, EventDemoted, top.ID, top.Version)
		case own.State == Passive && ok && top.State == Draining && top.Handoff == m.cfg.Self:
			_ = m.promote(now) // planned handoff to us
		default:
			if at, ok := m.promoteAt(); ok && !now.Before(at) {
				_ = m.promote(now) // unplanned: the active cluster, or the handoff's target, is silent
			}
		}
	}
	a, _ := Resolve(m.Descriptors())
	if a.ID != m.active {
		m.active = a.ID
		m.emit(now, EventActiveChanged, a.ID, a.Version)
	}
}

// topOther is the other cluster that is or was last active: the highest version
// among the Active and Draining records of the other clusters.
func (m *Machine) topOther() (Descriptor, bool) {
	var best Descriptor
	ok := false
	for _, id := range m.cfg.Clusters {
		d := m.view[id]
		if id != m.cfg.Self && d.State != Passive && (!ok || d.Version > best.Version) {
			best, ok = d, true
		}
	}
	return best, ok
}

// promoteAt is when this holder promotes its cluster if nothing changes.
// Passive: PromoteAfter after it last heard from the other cluster that is (or
// was last) active, or after it became holder when none is, plus Stagger for each
// passive cluster of better priority heard from since then (alive while the
// active one is silent, so first in line). Draining: PromoteAfter after it last
// heard from the handoff's target, or after the drain: a target that died before
// taking over (or before its promotion reached us) would otherwise leave the
// federation with no active cluster for good.
func (m *Machine) promoteAt() (time.Time, bool) {
	own := m.view[m.cfg.Self]
	if !m.holder || own.State == Active {
		return time.Time{}, false
	}
	if own.State == Draining {
		ref := m.heard[own.Handoff]
		for _, t := range [2]time.Time{m.drained, m.since} {
			if t.After(ref) {
				ref = t
			}
		}
		return ref.Add(m.cfg.PromoteAfter), true
	}
	ref := m.since
	if top, ok := m.topOther(); ok {
		ref = m.heard[top.ID]
	}
	wait := m.cfg.PromoteAfter
	for i, id := range m.cfg.Clusters {
		d := m.view[id]
		if id == m.cfg.Self || d.State != Passive || !m.heard[id].After(ref) {
			continue
		}
		if d.Priority < m.cfg.Priority || d.Priority == m.cfg.Priority && i < m.idx {
			wait += m.cfg.Stagger
		}
	}
	return ref.Add(wait), true
}

func (m *Machine) mayWrite() error {
	if !m.holder {
		m.stats.Refused++
		return ErrNotHolder
	}
	return nil
}

func (m *Machine) promote(now time.Time) error {
	var seen uint64
	for _, d := range m.view {
		seen = max(seen, d.Version)
	}
	v, err := NextVersion(seen, m.idx, len(m.cfg.Clusters))
	if err != nil {
		m.stats.Refused++
		return err
	}
	m.write(now, func(d *Descriptor) { d.State, d.Version, d.Handoff = Active, v, "" })
	m.stats.Promotions++
	m.emit(now, EventPromoted, m.cfg.Self, v)
	return nil
}

// write changes Self's record under the holder's epoch.
func (m *Machine) write(now time.Time, f func(*Descriptor)) {
	d := m.view[m.cfg.Self]
	if m.epoch > d.Epoch {
		d.Epoch, d.Counter = m.epoch, 0
	}
	d.Counter++
	f(&d)
	m.view[m.cfg.Self] = d
	m.out.Written = append(m.out.Written, d)
}

func (m *Machine) emit(now time.Time, k EventKind, c string, v uint64) {
	m.out.Events = append(m.out.Events, Event{Kind: k, Cluster: c, Version: v, At: now})
}
