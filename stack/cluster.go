package stack

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	fed "github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/crdt"
)

// Multi-cluster glue: the host owns the fed.Machine and is its only caller.
// Everything rides on the metadata layer, so no wire message is added:
//
//   - The holder of this cluster's lease is the machine's holder (SetHolder at the
//     lease's epoch, Resign when the lease lapses), checked on every input.
//   - Its writes go to the cluster map, key DescriptorKey, under the record's
//     epoch: the crdt fences that map by epoch (as LeaderKey), so a deposed
//     holder's late write never overwrites its successor's. Every node merges
//     what it receives there.
//   - Each voter publishes, in its own map under HeldKey, the record of its
//     cluster it holds and the highest lease epoch it knows: the holder counts
//     it as an Ack, and, when the epoch is its own new one, as the answer of its
//     quorum read. A voter learns a new epoch by taking part in the election, so
//     its answer is given after the election, as the read requires.
//   - Gateways (node, which runs the WAN pool) publish what they learn of each
//     other cluster in their own map, one key RemoteKeyPrefix+ID per cluster: its
//     record, whether one of its gateways is alive in the WAN pool, and its
//     control URLs. Every node merges those records; one relayed by a gateway that
//     swim holds alive here and that reports the cluster reachable counts as
//     hearing from that cluster, every RelayInterval, which is what keeps a
//     passive holder from promoting while the active cluster lives.

// Metadata keys of the multi-cluster glue.
const (
	// DescriptorKey is the cluster-map key of this cluster's descriptor.
	DescriptorKey = "cluster.descriptor"
	// HeldKey is a voter's node-map key: Held as JSON.
	HeldKey = "cluster.held"
	// RemoteKeyPrefix + a cluster id is a gateway's node-map key: Remote as JSON.
	RemoteKeyPrefix = "cluster.remote."
)

// RelayInterval is how often the records relayed by gateways count again as
// hearing from their clusters: well below fed.Config.PromoteAfter (5 s).
const RelayInterval = 500 * time.Millisecond

// MaxEndpoints bounds the control URLs of one remote cluster kept and served.
const MaxEndpoints = 4

// Held is what a voter publishes under HeldKey.
type Held struct {
	Epoch      uint64         `json:"epoch"` // the highest lease epoch this voter knows
	Descriptor fed.Descriptor `json:"descriptor"`
}

// Remote is what a gateway publishes about another cluster.
type Remote struct {
	Descriptor fed.Descriptor `json:"descriptor"`
	// Reachable: a gateway of that cluster is alive in the gateway's WAN view.
	Reachable bool `json:"reachable"`
	// Control are the control URLs of that cluster's reachable gateways, at most
	// MaxEndpoints.
	Control []string `json:"control,omitempty"`
}

// ClusterView is the federation as this node sees it.
type ClusterView struct {
	Self        string
	Active      string // "" when no cluster is active
	Serving     bool   // this node answers as the active registry
	Holder      bool   // this node writes its cluster's descriptor
	Descriptors []fed.Descriptor
	// Remotes are the other clusters as the gateways relay them, by id.
	Remotes map[string]Remote
	// Version grows with every change of the above, for watches.
	Version uint64
}

// ClusterHostStats counts what the glue dropped.
type ClusterHostStats struct {
	Malformed uint64 // metadata values of the glue's keys that did not decode or name the wrong cluster
}

type clusterState struct {
	m     *fed.Machine
	self  string // node name
	voter bool
	peers []string
	epoch uint64 // the lease epoch last given to SetHolder (0: not leading)
	held  Held   // last published under HeldKey
	// relays are the Remote records of each gateway of this cluster, by gateway
	// name then cluster id.
	relays    map[string]map[string]Remote
	nextRelay time.Time
	events    []fed.Event
	version   uint64
	merged    uint64 // the machine's Merged count at the last relay merge
	stats     ClusterHostStats
}

func (c Config) validateCluster() error {
	if c.Cluster == nil {
		return nil
	}
	if c.Lease == nil {
		return fmt.Errorf("stack: Cluster needs Lease: only the lease holder writes the descriptor")
	}
	return c.Cluster.Validate()
}

func newClusterState(cfg Config, now time.Time) (*clusterState, error) {
	m, err := fed.New(*cfg.Cluster, now)
	if err != nil {
		return nil, err
	}
	return &clusterState{m: m, self: cfg.Swim.Name, peers: cfg.Cluster.Peers,
		voter:  slices.Contains(cfg.Lease.Voters, cfg.Swim.Name),
		relays: map[string]map[string]Remote{}}, nil
}

// observeCluster feeds the machine what this pass brought: metadata of the
// glue's keys (evs) and the state of the lease; then it writes what the machine
// produced. It reports whether it queued gossip.
func (h *Stack) observeCluster(now time.Time, evs []MetaEvent) bool {
	cs := h.clus
	relays := false
	for _, e := range evs {
		switch {
		case e.Node == crdt.Cluster && e.Key == DescriptorKey && !e.Deleted:
			var d fed.Descriptor
			if json.Unmarshal(e.Value, &d) != nil {
				cs.stats.Malformed++
				continue
			}
			cs.m.Merge(now, h.cfg.Cluster.Self, []fed.Descriptor{d})
			cs.version++
		case e.Node != crdt.Cluster && e.Key == HeldKey && !e.Deleted && slices.Contains(cs.peers, e.Node):
			var hd Held
			if json.Unmarshal(e.Value, &hd) != nil || hd.Descriptor.ID != h.cfg.Cluster.Self {
				cs.stats.Malformed++
				continue
			}
			cs.m.Ack(e.Node, hd.Descriptor.Epoch, hd.Descriptor.Counter) // a read under way takes it in answerSync
			cs.version++
		case e.Node != crdt.Cluster && strings.HasPrefix(e.Key, RemoteKeyPrefix):
			id := strings.TrimPrefix(e.Key, RemoteKeyPrefix)
			if e.Deleted {
				delete(cs.relays[e.Node], id)
				relays = true
				continue
			}
			var r Remote
			if json.Unmarshal(e.Value, &r) != nil || r.Descriptor.ID != id || id == h.cfg.Cluster.Self ||
				!slices.Contains(h.cfg.Cluster.Clusters, id) || len(r.Control) > MaxEndpoints {
				cs.stats.Malformed++
				continue
			}
			if cs.relays[e.Node] == nil {
				cs.relays[e.Node] = map[string]Remote{}
			}
			cs.relays[e.Node][id] = r
			relays = true
		}
	}
	if relays {
		h.mergeRelays(now)
		cs.version++
	}
	h.followLease(now)
	h.answerSync(now)
	return h.drainCluster(now)
}

// followLease makes the machine's holder the lease's: holder at the lease's
// epoch while this node leads, resigned once its lease lapses.
func (h *Stack) followLease(now time.Time) {
	cs := h.clus
	epoch, err := h.lease.m.Fence(now)
	_, syncing := cs.m.Syncing()
	switch {
	case err == nil && epoch != cs.epoch:
		cs.epoch = epoch
		_ = cs.m.SetHolder(now, epoch) // a stale epoch is refused and counted in the machine's stats
		cs.version++
	case err != nil && (cs.m.Holder() || syncing):
		cs.epoch = 0
		cs.m.Resign(now)
		cs.version++
	}
}

// answerSync feeds a quorum read under way the held records the voters have
// published for its epoch, from the store: a voter publishes once per epoch,
// and its record may have arrived before this node's lease machine made it
// leader, or the read may be a second one at the same epoch (the lease lapsed
// and was renewed), so waiting for a metadata event would wait forever.
func (h *Stack) answerSync(now time.Time) {
	cs := h.clus
	epoch, ok := cs.m.Syncing()
	if !ok {
		return
	}
	for _, p := range cs.peers {
		v, found := h.meta.store.Get(p, HeldKey)
		var hd Held
		if !found || json.Unmarshal(v, &hd) != nil || hd.Epoch != epoch || hd.Descriptor.ID != h.cfg.Cluster.Self {
			continue
		}
		cs.m.SyncReply(now, p, epoch, []fed.Descriptor{hd.Descriptor})
	}
}

// drainCluster writes the machine's records to the cluster map, publishes what
// a voter holds, and keeps the events. It reports whether it queued gossip.
func (h *Stack) drainCluster(now time.Time) bool {
	cs := h.clus
	wrote := false
	r := cs.m.Ready()
	for _, d := range r.Written {
		b, err := json.Marshal(d)
		if err != nil {
			panic("stack: encoding our own descriptor: " + err.Error())
		}
		delta, err := h.meta.store.SetCluster(d.Epoch, DescriptorKey, b)
		if err != nil {
			continue // fenced: a newer holder wrote since; its record reaches us and deposes us
		}
		h.meta.dirty = true
		for _, e := range delta.Entries {
			if e.Key == DescriptorKey {
				h.meta.events = append(h.meta.events, MetaEvent{Node: crdt.Cluster, Key: DescriptorKey, Value: b, Version: e.Version, At: now})
			}
		}
		_ = h.gossipDelta(now, delta) // on failure push-pulls carry it; counted in MetaStats
		wrote = true
	}
	cs.events = append(cs.events, r.Events...)
	if len(r.Written)+len(r.Events) > 0 {
		cs.version++
	}
	cs.m.Advance()
	if cs.voter {
		_, epoch, _, _ := h.Leader(now)
		hd := Held{Epoch: max(epoch, cs.held.Epoch), Descriptor: cs.m.Self()}
		if hd != cs.held {
			b, _ := json.Marshal(hd)
			if d, err := h.meta.store.Set(HeldKey, b); err == nil {
				cs.held = hd
				_ = h.localMeta(now, d, HeldKey, b, false)
				wrote = true
			}
		}
	}
	return wrote
}

// mergeRelays merges every record the live gateways relay; one of a cluster a
// gateway reports reachable counts as heard from that cluster.
func (h *Stack) mergeRelays(now time.Time) {
	cs := h.clus
	for id, r := range h.remotes() {
		from := h.cfg.Cluster.Self // a relay: not hearing from the cluster
		if r.Reachable {
			from = id
		}
		cs.m.Merge(now, from, []fed.Descriptor{r.Descriptor})
	}
	cs.nextRelay = now.Add(RelayInterval)
	if merged := cs.m.Stats().Merged; merged != cs.merged {
		cs.merged = merged // the view changed: watchers hear of it, not of every refresh
		cs.version++
	}
}

// remotes folds the relays of the gateways swim holds alive (this node
// included): per cluster the newest record, reachable if any gateway reaches it,
// and the union of their control URLs (at most MaxEndpoints, sorted).
func (h *Stack) remotes() map[string]Remote {
	out := map[string]Remote{}
	for g, rs := range h.clus.relays {
		if g != h.clus.self && !h.addrs.live(g) {
			continue
		}
		for id, r := range rs {
			o, seen := out[id]
			if !seen || r.Descriptor.Epoch > o.Descriptor.Epoch ||
				r.Descriptor.Epoch == o.Descriptor.Epoch && r.Descriptor.Counter > o.Descriptor.Counter {
				o.Descriptor = r.Descriptor
			}
			o.Reachable = o.Reachable || r.Reachable
			for _, u := range r.Control {
				if !slices.Contains(o.Control, u) {
					o.Control = append(o.Control, u)
				}
			}
			out[id] = o
		}
	}
	for id, o := range out {
		slices.Sort(o.Control)
		o.Control = o.Control[:min(len(o.Control), MaxEndpoints)]
		out[id] = o
	}
	return out
}

// tickCluster runs the machine's timer and the periodic relay merge.
func (h *Stack) tickCluster(now time.Time) {
	cs := h.clus
	if len(cs.relays) > 0 && !now.Before(cs.nextRelay) {
		h.mergeRelays(now)
	}
	if d := cs.m.NextDeadline(); !d.IsZero() && !now.Before(d) {
		cs.m.Tick(now)
	}
}

// clusterDeadline is the glue's next deadline; zero when none.
func (h *Stack) clusterDeadline() time.Time {
	cs := h.clus
	d := cs.m.NextDeadline()
	if len(cs.relays) > 0 && (d.IsZero() || cs.nextRelay.Before(d)) {
		d = cs.nextRelay
	}
	return d
}

// Clusters is this node's view of the federation; ok is false when Config.Cluster
// is nil.
func (h *Stack) Clusters() (ClusterView, bool) {
	cs := h.clus
	if cs == nil {
		return ClusterView{}, false
	}
	a, _ := cs.m.Active()
	return ClusterView{Self: h.cfg.Cluster.Self, Active: a.ID, Serving: cs.m.Serving(), Holder: cs.m.Holder(),
		Descriptors: cs.m.Descriptors(), Remotes: h.remotes(), Version: cs.version}, true
}

// ClusterVersion grows with every change of Clusters' view; 0 without Config.Cluster.
func (h *Stack) ClusterVersion() uint64 {
	if h.clus == nil {
		return 0
	}
	return h.clus.version
}

// ClusterEvents are the machine's events since the last call (promotions,
// drains, demotions, depositions, changes of the active cluster).
func (h *Stack) ClusterEvents() []fed.Event {
	if h.clus == nil {
		return nil
	}
	evs := h.clus.events
	h.clus.events = nil
	return evs
}

// PromoteCluster is the operator's forced promotion of this node's cluster
// (fed.Machine.Promote); fed.ErrNotHolder unless this node holds the lease.
func (h *Stack) PromoteCluster(now time.Time) error {
	if h.clus == nil {
		return fed.ErrNotHolder
	}
	defer h.process(now)
	return h.clus.m.Promote(now)
}

// DrainCluster hands the active role of this node's cluster to target (a planned
// failover, fed.Machine.Drain); fed.ErrNotHolder unless this node holds
// the lease.
func (h *Stack) DrainCluster(now time.Time, target string) error {
	if h.clus == nil {
		return fed.ErrNotHolder
	}
	defer h.process(now)
	return h.clus.m.Drain(now, target)
}

// ClusterHostStats returns the glue's counters and the machine's.
func (h *Stack) ClusterHostStats() (ClusterHostStats, fed.Stats) {
	if h.clus == nil {
		return ClusterHostStats{}, fed.Stats{}
	}
	return h.clus.stats, h.clus.m.Stats()
}
