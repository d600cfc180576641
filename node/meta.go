package node

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/prometheus/client_golang/prometheus"
)

// EventMeta is the Kind of a metadata event: one key of a member's metadata got a
// new value or was deleted (Event.Meta says which). It is a node-level kind, above
// every swim.EventKind; KindName calls it "meta".
const EventMeta swim.EventKind = 64

// RolesKey is the metadata key holding a node's roles, comma-separated
// ("api,web"). The control API's role filter matches any of them, and a "role" key
// with a single role.
const RolesKey = "roles"

// MetaChange is what a metadata event changed.
type MetaChange struct {
	Key     string
	Value   string // the new value; "" when Deleted
	Deleted bool
}

// SetMeta sets key = value in this node's metadata, which every member learns by
// gossip (within milliseconds on a LAN) and which the control API serves as the
// peer's "meta". Limits (crdt.DefaultLimits): keys 1..128 bytes, values up to
// 1 KiB, 64 keys and 16 KiB per node; a write over a limit fails with
// crdt.ErrEmptyKey, ErrKeyTooLong, ErrValueTooLarge, ErrTooManyKeys or
// ErrMapTooLarge and changes nothing. ErrClosed once the node is closed.
func (n *Node) SetMeta(key, value string) error {
	var err error
	if !n.do(func() { err = n.stack.SetMeta(n.clock.Now(), key, []byte(value)) }) {
		return ErrClosed
	}
	return n.stored(key, err)
}

// stored turns a write that was stored but could not be gossiped (a delta too big
// for a packet at a small MTU) into success with a warning: push-pulls carry it.
func (n *Node) stored(key string, err error) error {
	if errors.Is(err, stack.ErrMetaGossip) {
		n.log.Warn("metadata write too large to gossip; peers get it by push-pull", "key", key, "err", err)
		return nil
	}
	return err
}

// DeleteMeta deletes key from this node's metadata; crdt.ErrNotFound if it has
// no value.
func (n *Node) DeleteMeta(key string) error {
	var err error
	if !n.do(func() { err = n.stack.DeleteMeta(n.clock.Now(), key) }) {
		return ErrClosed
	}
	return n.stored(key, err)
}

// Meta returns the metadata of member name as this node knows it (a copy), or nil
// if it knows none. After Close it returns the last known metadata.
func (n *Node) Meta(name string) map[string]string {
	var m map[string]string
	if n.do(func() { m = n.metaOf(name) }) {
		if len(m) == 0 {
			return nil
		}
		return m
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.finalMeta[name]; len(m) > 0 {
		return maps.Clone(m)
	}
	return nil
}

// metaOf is name's metadata from the store; loop only. Never nil.
func (n *Node) metaOf(name string) map[string]string {
	raw := n.stack.Meta().NodeMap(name)
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		m[k] = string(v)
	}
	return m
}

// allMeta is every member's metadata, for the view kept after the loop stops.
func (n *Node) allMeta() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, name := range n.stack.Meta().Names() {
		if name != crdt.Cluster {
			out[name] = n.metaOf(name)
		}
	}
	return out
}

// setInitialMeta writes Config.Meta before the node joins, so the join itself
// carries it.
func (n *Node) setInitialMeta() error {
	now := n.clock.Now()
	for _, k := range slices.Sorted(maps.Keys(n.cfg.Meta)) {
		if err := n.stack.SetMeta(now, k, []byte(n.cfg.Meta[k])); err != nil {
			return fmt.Errorf("node: Meta[%q]: %w", k, err)
		}
	}
	rd := n.stack.Ready() // nobody to send to yet; the events of our own writes are not news
	n.driveLease(&rd)     // but a lease state must still be saved
	return nil
}

// withRole returns a copy of meta whose roles include role.
func withRole(meta map[string]string, role string) map[string]string {
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]string{}
	}
	if control.HasRole(out, role) {
		return out
	}
	if out[RolesKey] == "" {
		out[RolesKey] = role
	} else {
		out[RolesKey] += "," + role
	}
	return out
}

// checkMeta checks Config.Meta against the metadata limits without side effects.
func checkMeta(meta map[string]string) error {
	st, err := crdt.NewStore("check", crdt.DefaultLimits())
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		if _, err := st.Set(k, []byte(meta[k])); err != nil {
			return fmt.Errorf("%w: Meta[%q]: %w", ErrInvalidConfig, k, err)
		}
	}
	return nil
}

// metaCorrelationID is the id of a metadata event: the same write has the same id
// on every node (its version names it).
func metaCorrelationID(node, key string, v crdt.Version) string {
	var d xxhash.Digest
	d.Reset()
	d.WriteString(node)
	d.Write([]byte{0})
	d.WriteString(key)
	var b [17]byte
	binary.LittleEndian.PutUint64(b[0:8], v.Epoch)
	binary.LittleEndian.PutUint64(b[8:16], v.Counter)
	b[16] = byte(EventMeta)
	d.Write(b[:])
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], d.Sum64())
	return hex.EncodeToString(out[:])
}

// publishMeta records metadata events like membership events: version, history
// for watch streams, debug log, subscribers. Loop only. Cluster-map changes are
// not published (no member to attach them to).
func (n *Node) publishMeta(evs []stack.MetaEvent) {
	sw := n.stack.Swim()
	n.mu.Lock()
	defer n.mu.Unlock()
	published := false
	for _, e := range evs {
		if e.Node == crdt.Cluster {
			continue
		}
		m, ok := sw.Member(e.Node)
		if !ok {
			m = Member{Name: e.Node}
		}
		mc := &MetaChange{Key: e.Key, Value: string(e.Value), Deleted: e.Deleted}
		n.version++
		ev := Event{ID: metaCorrelationID(e.Node, e.Key, e.Version), Kind: EventMeta, Member: m, At: e.At,
			Version: n.version, Meta: mc}
		n.history = append(n.history, control.Change{N: n.version, ID: ev.ID, Kind: KindName(EventMeta),
			Peer: n.peer(m, n.metaOf(m.Name)), At: e.At,
			Meta: &control.MetaChange{Key: mc.Key, Value: mc.Value, Deleted: mc.Deleted}})
		if len(n.history) > n.cfg.History {
			n.history = slices.Delete(n.history, 0, len(n.history)-n.cfg.History)
		}
		n.metrics.metaChanges.Inc()
		n.log.Log(context.Background(), slog.LevelDebug, "member meta",
			"event_id", ev.ID, "member", e.Node, "key", e.Key, "deleted", e.Deleted, "version", n.version)
		for s := range n.subs {
			s.send(ev)
		}
		published = true
	}
	if published {
		close(n.changed)
		n.changed = make(chan struct{})
	}
}

// metaCollector exports the metadata layer's counters and digest at scrape time.
type metaCollector struct{ n *Node }

var (
	descMetaDigest = prometheus.NewDesc("omnirelay_meta_digest", "Digest of this node's metadata store (low 52 bits, exact in a float): equal on every node once metadata has converged.", nil, nil)
	metaCounters   = []struct {
		desc *prometheus.Desc
		get  func(stack.MetaStats) uint64
	}{
		{prometheus.NewDesc("omnirelay_meta_rejected_total", "Metadata deltas or snapshots from peers dropped: malformed or over the limits.", nil, nil), func(s stack.MetaStats) uint64 { return s.Rejected }},
		{prometheus.NewDesc("omnirelay_implausible_total", implausibleHelp, nil, prometheus.Labels{"layer": "meta"}), func(s stack.MetaStats) uint64 { return s.Implausible }},
		{prometheus.NewDesc("omnirelay_meta_rebroadcasts_total", "Received metadata deltas gossiped on because they changed this node's store.", nil, nil), func(s stack.MetaStats) uint64 { return s.Rebroadcasts }},
		{prometheus.NewDesc("omnirelay_meta_reissues_total", "Times this node re-issued its metadata under a new incarnation after seeing a previous life of itself.", nil, nil), func(s stack.MetaStats) uint64 { return s.Reissues }},
		{prometheus.NewDesc("omnirelay_meta_gossip_errors_total", "Metadata deltas that could not be queued for gossip (peers get them by push-pull).", nil, nil), func(s stack.MetaStats) uint64 { return s.GossipErrors }},
	}
)

func (c *metaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMetaDigest
	for _, d := range metaCounters {
		ch <- d.desc
	}
}

// Collect exports nothing once the loop has stopped: the store is no longer read.
func (c *metaCollector) Collect(ch chan<- prometheus.Metric) {
	var st stack.MetaStats
	var digest uint64
	if !c.n.do(func() { st, digest = c.n.stack.MetaStats(), c.n.stack.Meta().Digest() }) {
		return
	}
	ch <- prometheus.MustNewConstMetric(descMetaDigest, prometheus.GaugeValue, float64(digest&(1<<52-1)))
	for _, d := range metaCounters {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.get(st)))
	}
}
