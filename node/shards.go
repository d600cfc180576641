package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/stack"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoShards is returned by the shard methods of a node started without
// Config.Shards.
var ErrNoShards = errors.New("node: shard routing is not configured (Config.Shards is 0)")

// ErrUnknownNode is wrapped by DrainShards for a name that is not a member this
// node (the leader) holds alive or suspect: only members can be drained.
var ErrUnknownNode = stack.ErrUnknownNode

// ControlMetaKey is the metadata key under which an agent publishes its control
// API URL, so a non-leader can tell the CLI where the leader's API is.
const ControlMetaKey = "control"

// ShardChange is one change of this node's own ownership, as WatchShards
// delivers it.
type ShardChange struct {
	Shard uint32
	// Gained: this node started serving Shard. Otherwise it stopped (released
	// at the leader's request or its ownership lease expired) and must stop
	// processing the shard's messages.
	Gained bool
	// Epoch is the fencing token of the leader that granted (or last granted)
	// the shard: attach it to writes made on the shard's behalf, so a store can
	// reject a deposed owner's late writes.
	Epoch uint64
	// Version, on a gain, is the map version of the granting leader's grant:
	// (Epoch, Version) orders the grants of one shard, so it is an exact fencing
	// token per grant where Epoch alone is shared by every owner one leader
	// grants the shard to. 0 on a loss.
	Version uint64
	At      time.Time // when this node saw it, on its Clock
}

// ShardWatch is a subscription to this node's ownership changes.
type ShardWatch struct {
	// C delivers changes in order. Its buffer holds Config.EventBuffer changes;
	// when a slow reader lets it fill, the oldest change is dropped and Dropped
	// grows, as for Subscribe. A reader that sees Dropped grow must resynchronize
	// from OwnedShards (and, before each piece of work, Serving is authoritative
	// anyway). C is closed by Close or when the node closes.
	C       <-chan ShardChange
	ch      chan ShardChange
	n       *Node
	dropped uint64
}

// shardState is the shard part of a Node. The loop writes; mu guards all fields.
type shardState struct {
	mu      sync.Mutex
	m       *shard.Map    // latest map this node holds (immutable)
	changed chan struct{} // closed at the next map change
	watches map[*ShardWatch]struct{}
	// Leader-side view, from the Controller's events; cleared when not leading.
	moving map[uint32]movingShard
}

// movingShard is a shard the leader has in flight.
type movingShard struct {
	from, to, state string
	parkedAt        time.Time // zero unless parked (forced off a dead owner)
}

// shardHostConfig fills the shard part of the host config; shards off: no-op.
func (n *Node) shardHostConfig(hc *stack.Config) {
	sc, ok := n.cfg.shardConfig()
	if !ok {
		return
	}
	hc.Shard = &sc
	n.shards = &shardState{changed: make(chan struct{}), watches: map[*ShardWatch]struct{}{}, moving: map[uint32]movingShard{}}
}

// driveShards applies the shard part of a Ready: logs and counts every
// transition, tracks the leader's moves, delivers ownership changes to watches
// and publishes a new map. Loop only.
func (n *Node) driveShards(rd *stack.Ready, now time.Time) {
	s := n.shards
	if s == nil {
		return
	}
	m := n.stack.ShardMap()
	leading := n.stack.IsLeader(now)
	if len(rd.ShardEvents) == 0 && m == s.m && (leading || len(s.moving) == 0) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var t shardTally
	for _, e := range rd.ShardEvents {
		n.shardEvent(e)
		t.count(e)
	}
	n.logShardTally(t, m, now)
	if !leading {
		clear(s.moving)
	}
	if m != s.m {
		s.m = m
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// shardTally counts the shard events of one Ready, for its one summary line.
type shardTally struct {
	kinds  [shard.EventMapChanged + 1]int
	forced int
}

func (t *shardTally) count(e shard.Event) {
	if int(e.Kind) < len(t.kinds) {
		t.kinds[e.Kind]++
	}
	if e.Forced {
		t.forced++
	}
}

// logShardTally writes one line for a batch of shard events: INFO, or WARN when
// leases expired or moves were forced; the per-shard lines are DEBUG. A
// 256-shard formation writes a handful of lines instead of one per transition.
func (n *Node) logShardTally(t shardTally, m *shard.Map, now time.Time) {
	level := slog.LevelInfo
	var attrs []any
	for k, c := range t.kinds {
		if c > 0 && shard.EventKind(k) != shard.EventMapChanged && shard.EventKind(k) != shard.EventFenced && shard.EventKind(k) != shard.EventStaleEpoch {
			attrs = append(attrs, shard.EventKind(k).String(), c)
		}
	}
	if t.forced > 0 {
		attrs = append(attrs, "forced", t.forced)
		level = slog.LevelWarn
	}
	if t.kinds[shard.EventExpired] > 0 {
		level = slog.LevelWarn
	}
	if len(attrs) == 0 && t.kinds[shard.EventMapChanged] == 0 {
		return
	}
	if m != nil {
		attrs = append(attrs, "epoch", m.Epoch(), "version", m.Version())
	}
	attrs = append(attrs, "owned", len(n.stack.OwnedShards(now)))
	n.log.Log(context.Background(), level, "shards changed", attrs...)
}

// shardEvent handles one transition; the caller holds n.shards.mu. Its log line
// is DEBUG but for fencing (WARN): logShardTally summarizes the rest.
func (n *Node) shardEvent(e shard.Event) {
	s := n.shards
	level := slog.LevelDebug
	attrs := []any{"shard", e.Shard, "epoch", e.Epoch}
	switch e.Kind {
	case shard.EventDraining, shard.EventRebalancing, shard.EventSteady:
		attrs = append(attrs, "from", e.From, "to", e.To, "state", e.Kind.String(), "forced", e.Forced)
		n.metrics.shardMoves.WithLabelValues(e.From, e.To, e.Kind.String()).Inc()
		sh := e.Shard
		n.audit(auditRecord{Time: e.At, Event: "shard_move", Epoch: e.Epoch, Shard: &sh, From: e.From, To: e.To,
			State: e.Kind.String(), Forced: e.Forced,
			ID: leaderCorrelationID("shard_"+e.Kind.String(), fmt.Sprintf("%d:%s>%s", e.Shard, e.From, e.To), e.Epoch)})
		if e.Kind == shard.EventSteady {
			delete(s.moving, e.Shard)
			break
		}
		mv := movingShard{from: e.From, to: e.To, state: e.Kind.String()}
		if prev, ok := s.moving[e.Shard]; ok {
			mv.parkedAt = prev.parkedAt
		}
		if e.Forced && e.Kind == shard.EventDraining && mv.parkedAt.IsZero() {
			mv.parkedAt = e.At
		}
		if e.Kind == shard.EventRebalancing {
			mv.parkedAt = time.Time{} // granted to a live node: no longer parked
		}
		s.moving[e.Shard] = mv
	case shard.EventAcquired, shard.EventReleased, shard.EventExpired:
		c := ShardChange{Shard: e.Shard, Gained: e.Kind == shard.EventAcquired, Epoch: e.Epoch, Version: e.Version, At: e.At}
		for w := range s.watches {
			w.send(c)
		}
	case shard.EventMapChanged:
		attrs = []any{"epoch", e.Epoch, "version", e.Version}
	case shard.EventFenced, shard.EventStaleEpoch:
		attrs = []any{"epoch", e.Epoch, "from", e.From}
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, e.String(), attrs...)
}

// send delivers c, dropping the oldest buffered change if C is full. Caller holds
// n.shards.mu.
func (w *ShardWatch) send(c ShardChange) {
	for {
		select {
		case w.ch <- c:
			return
		default:
		}
		select {
		case <-w.ch:
			w.dropped++
			w.n.metrics.subscriberDropped.Inc()
		default:
		}
	}
}

// Dropped is how many changes were dropped because C was full.
func (w *ShardWatch) Dropped() uint64 {
	w.n.shards.mu.Lock()
	defer w.n.shards.mu.Unlock()
	return w.dropped
}

// Close ends the watch and closes C.
func (w *ShardWatch) Close() {
	s := w.n.shards
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watches[w]; ok {
		delete(s.watches, w)
		close(w.ch)
	}
}

// WatchShards returns a watch of this node's ownership changes from now on (call
// OwnedShards after it to learn the starting set). ErrNoShards when shard
// routing is off.
func (n *Node) WatchShards() (*ShardWatch, error) {
	s := n.shards
	if s == nil {
		return nil, ErrNoShards
	}
	ch := make(chan ShardChange, n.cfg.EventBuffer)
	w := &ShardWatch{C: ch, ch: ch, n: n}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n.ctx.Err() != nil {
		close(ch)
		return w, nil
	}
	s.watches[w] = struct{}{}
	return w, nil
}

// closeShardWatches closes every watch; called once the loop has stopped.
func (n *Node) closeShardWatches() {
	if s := n.shards; s != nil {
		s.mu.Lock()
		for w := range s.watches {
			delete(s.watches, w)
			close(w.ch)
		}
		s.mu.Unlock()
	}
}

// ShardMap returns the latest shard map this node holds; nil before the first
// (or with shard routing off). Maps are immutable.
func (n *Node) ShardMap() *shard.Map {
	if n.shards == nil {
		return nil
	}
	n.shards.mu.Lock()
	defer n.shards.mu.Unlock()
	return n.shards.m
}

// ShardFor maps key to its shard (xxhash64(key) mod the shard count); false
// until a map is known.
func (n *Node) ShardFor(key []byte) (uint32, bool) {
	m := n.ShardMap()
	if m == nil {
		return 0, false
	}
	return m.ShardFor(key), true
}

// Owner is who serves shard s per this node's latest map; false when nobody
// does (parked), s is out of range, or no map is known yet.
func (n *Node) Owner(s uint32) (string, bool) {
	m := n.ShardMap()
	if m == nil || int(s) >= m.Shards() {
		return "", false
	}
	o := m.Owner(s)
	return o, o != ""
}

// OwnedShards are the shards this node may serve now (it holds an unexpired
// ownership lease for each), ascending; nil when none or shard routing is off.
func (n *Node) OwnedShards() []uint32 {
	if n.shards == nil {
		return nil
	}
	var out []uint32
	n.do(func() { out = n.stack.OwnedShards(n.clock.Now()) })
	return out
}

// Serving reports whether this node may process a message of shard s now: the
// check to make before each piece of work (a lease can lapse between a watch
// event and the work).
func (n *Node) Serving(s uint32) bool {
	if n.shards == nil {
		return false
	}
	var ok bool
	n.do(func() { ok = n.stack.Serving(n.clock.Now(), s) })
	return ok
}

// DrainShards marks node as draining (on) so the leader moves its shards away,
// MaxMoves at a time, or lifts the mark. The mark lives in the cluster metadata
// under the lease epoch, so it survives failover; the leader deletes it once
// membership has forgotten node (TombstoneTTL after it died or left). Only the
// leader can (an error wrapping lease.ErrNotLeader elsewhere), and only a member
// it holds alive or suspect can be marked (ErrUnknownNode); any mark can be lifted.
func (n *Node) DrainShards(node string, on bool) error {
	if n.shards == nil {
		return ErrNoShards
	}
	var err error
	if !n.do(func() { err = n.stack.DrainNode(n.clock.Now(), node, on) }) {
		return ErrClosed
	}
	if err != nil {
		if errors.Is(err, ErrUnknownNode) {
			n.log.Warn("shard drain refused", "target", node, "err", err)
		}
		return fmt.Errorf("node: %s: drain %s: %w", n.cfg.Name, node, err)
	}
	n.log.Info("shard drain set", "target", node, "drain", on)
	return nil
}

// Rebalance makes the leader recompute the placement now (lease.ErrNotLeader
// elsewhere).
func (n *Node) Rebalance() error {
	if n.shards == nil {
		return ErrNoShards
	}
	var err error
	if !n.do(func() { err = n.stack.Rebalance(n.clock.Now()) }) {
		return ErrClosed
	}
	if err != nil {
		return fmt.Errorf("node: %s: rebalance: %w", n.cfg.Name, err)
	}
	return nil
}

// ---- control source ----

// ShardMap implements control.ShardSource.
func (c controlSource) ShardMap() (control.ShardMap, error) {
	n := c.n
	if n.shards == nil {
		return control.ShardMap{}, control.ErrShardsOff
	}
	m := n.ShardMap()
	if m == nil {
		return control.ShardMap{}, control.ErrNoShardMap
	}
	out := control.ShardMap{Epoch: m.Epoch(), Version: m.Version(), Checksum: fmt.Sprintf("%016x", m.Checksum()),
		Count: m.Shards(), Leader: n.Leader().Holder, Node: n.cfg.Name, Owned: len(n.OwnedShards()),
		Shards: make([]control.Shard, m.Shards())}
	if t := m.Table(); t != nil {
		out.Placement = &control.Placement{Replicas: t.Replicas()}
		for _, nd := range t.Nodes() {
			out.Placement.Nodes = append(out.Placement.Nodes, control.PlacementNode{Name: nd.Name, Weight: nd.Weight})
		}
	}
	for i := range out.Shards {
		s := uint32(i)
		out.Shards[i] = control.Shard{ID: s, Owner: m.Owner(s), State: m.State(s).String(), Target: m.Target(s)}
	}
	return out, nil
}

// ShardsChanged implements control.ShardSource.
func (c controlSource) ShardsChanged() <-chan struct{} {
	s := c.n.shards
	if s == nil {
		return nil // never: the routes answer 404 before watching
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// LookupShard implements control.ShardSource.
func (c controlSource) LookupShard(key string) (control.ShardLookup, error) {
	n := c.n
	if n.shards == nil {
		return control.ShardLookup{}, control.ErrShardsOff
	}
	m := n.ShardMap()
	if m == nil {
		return control.ShardLookup{}, control.ErrNoShardMap
	}
	s := m.ShardForString(key)
	return control.ShardLookup{Key: key, Shard: s, Owner: m.Owner(s), State: m.State(s).String(),
		Leader: n.Leader().Holder, Epoch: m.Epoch(), Version: m.Version()}, nil
}

// DrainNode implements control.ShardSource.
func (c controlSource) DrainNode(node string, on bool) error {
	err := c.n.DrainShards(node, on)
	if errors.Is(err, ErrUnknownNode) {
		return fmt.Errorf("%w: %q is not an alive or suspect member of the leader's view", control.ErrUnknownNode, node)
	}
	return c.leaderOnly(err)
}

// Rebalance implements control.ShardSource.
func (c controlSource) Rebalance() error { return c.leaderOnly(c.n.Rebalance()) }

// leaderOnly turns lease.ErrNotLeader into a *control.NotLeaderError naming the
// leader and its published control URL.
func (c controlSource) leaderOnly(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoShards):
		return control.ErrShardsOff
	case errors.Is(err, lease.ErrNotLeader):
		nl := &control.NotLeaderError{Leader: c.n.Leader().Holder}
		if nl.Leader != "" {
			nl.Control = c.n.Meta(nl.Leader)[ControlMetaKey]
		}
		return nl
	}
	return err
}

// ---- metrics ----

var (
	descShardJumps   = prometheus.NewDesc("omnirelay_implausible_total", implausibleHelp, nil, prometheus.Labels{"layer": "shard"})
	descShardsOwned  = prometheus.NewDesc("omnirelay_shards_owned", "Shards this node serves now (holds an unexpired ownership lease for).", nil, nil)
	descShardMapVer  = prometheus.NewDesc("omnirelay_shard_map_version", "Version of the shard map in force on this node.", nil, nil)
	descShardMoving  = prometheus.NewDesc("omnirelay_shard_moving", "1 for each shard the leader has in flight (draining or rebalancing). Leader only.", []string{"shard", "from", "to", "state"}, nil)
	descShardsParked = prometheus.NewDesc("omnirelay_shards_parked", "Shards draining with no owner that could receive them (their owner was not alive). Leader only.", nil, nil)
	descParkedAge    = prometheus.NewDesc("omnirelay_shard_parked_max_age_seconds", "How long the oldest parked shard has been parked; 0 when none. Leader only.", nil, nil)
	descUnowned      = prometheus.NewDesc("omnirelay_shards_unowned", "Shards of the leader's map without a serving owner: none named, one not alive or suspect, or one whose latest grant lapsed; all of them while the leader's controller is fenced. Leader only.", nil, nil)
	descStaleEpoch   = prometheus.NewDesc("omnirelay_shard_stale_epoch_total", "Shard leader messages (grants, releases, maps, announcements) this node rejected because their epoch was below the highest it has seen.", nil, nil)
)

// shardCollector exports the shard view at scrape time; registered only when
// shard routing is on.
type shardCollector struct{ n *Node }

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descShardJumps
	ch <- descShardsOwned
	ch <- descShardMapVer
	ch <- descShardMoving
	ch <- descShardsParked
	ch <- descParkedAge
	ch <- descUnowned
	ch <- descStaleEpoch
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	var owned, unowned int
	var now time.Time
	var leading bool
	var ownerStats shard.OwnerStats
	var ctrlStats shard.ControllerStats
	if !n.do(func() {
		now = n.clock.Now()
		owned = len(n.stack.OwnedShards(now))
		unowned, leading = n.stack.UnservedShards(now)
		ownerStats, ctrlStats = n.stack.ShardStats()
	}) {
		return
	}
	ch <- prometheus.MustNewConstMetric(descShardJumps, prometheus.CounterValue, float64(ownerStats.Implausible+ctrlStats.Implausible))
	s := n.shards
	s.mu.Lock()
	defer s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descShardsOwned, prometheus.GaugeValue, float64(owned))
	var version float64
	if s.m != nil {
		version = float64(s.m.Version())
	}
	ch <- prometheus.MustNewConstMetric(descShardMapVer, prometheus.GaugeValue, version)
	ch <- prometheus.MustNewConstMetric(descStaleEpoch, prometheus.CounterValue, float64(ownerStats.StaleEpoch))
	if !leading {
		return
	}
	ch <- prometheus.MustNewConstMetric(descUnowned, prometheus.GaugeValue, float64(unowned))
	parked, oldest := 0, time.Duration(0)
	for id, mv := range s.moving {
		ch <- prometheus.MustNewConstMetric(descShardMoving, prometheus.GaugeValue, 1,
			strconv.FormatUint(uint64(id), 10), mv.from, mv.to, mv.state)
		if !mv.parkedAt.IsZero() {
			parked++
			oldest = max(oldest, now.Sub(mv.parkedAt))
		}
	}
	ch <- prometheus.MustNewConstMetric(descShardsParked, prometheus.GaugeValue, float64(parked))
	ch <- prometheus.MustNewConstMetric(descParkedAge, prometheus.GaugeValue, oldest.Seconds())
}

// shardMetrics registers the shard metrics when shard routing is on.
func (m *metrics) shardMetrics(n *Node) {
	if n.shards == nil {
		return
	}
	m.shardMoves = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_shard_moves_total",
		Help: "Shard transitions the leader made, by the state entered (draining, rebalancing, steady). Leader only."},
		[]string{"from", "to", "state"})
	m.reg.MustRegister(m.shardMoves, &shardCollector{n: n})
}
