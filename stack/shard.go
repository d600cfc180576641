package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Shard glue: the host owns one shard.Owner (every node) and one shard.Controller
// (driven only while this node holds the leader lease), and is their only caller.
//
//   - Shard messages are types 64..95, defined by the shard package. They
//     travel one per packet, addressed by node name and resolved through the
//     stack's address directory (Stack.addrs), like lease messages. A
//     message to the node itself (the leader is a member too) is handed over
//     locally, never sent.
//   - A full map (MapState) does not fit a packet, so a member fetches it over a
//     stream: its MapRequest is the request frame, and the leader answers with its
//     current map. Any other message too large for a packet also goes as a
//     one-way stream frame. StreamReply and StreamFailed tell shard streams
//     from swim push-pulls by the stream's id.
//   - Leadership: lease events start (BecomeLeader with the epoch as fencing token)
//     and stop (StepDown) the Controller and tell the Owner who leads; Ready also
//     steps the Controller down as soon as IsLeader turns false, event or not.
//   - Membership: swim's view gives health, metadata key WeightKey weights, and the
//     cluster-map keys DrainKeyPrefix+NAME (written under the lease epoch, so they
//     survive failover) drains. The snapshot is rebuilt when any of them changes.

// WeightKey is the node-metadata key holding a node's relative capacity, a decimal
// number (default 1 when absent or unparsable).
const WeightKey = "weight"

// DrainKeyPrefix prefixes the cluster-map key that marks a node as draining.
const DrainKeyPrefix = "drain."

// shardLocalRounds bounds the hand-overs between this node's own Controller and
// Owner within one Ready: each round is a grant answered by a renewal, which the
// Owner rate-limits, so the loop ends in two or three rounds; the bound is a guard.
const shardLocalRounds = 8

// ShardHostStats counts what the host's shard glue dropped or routed specially.
type ShardHostStats struct {
	Unroutable  uint64 // outgoing shard messages to a name with no live address
	Unencodable uint64 // outgoing shard messages or maps the frame encoder refused
	Malformed   uint64 // received shard packets, frames or messages that did not decode
	Foreign     uint64 // received shard packets of another cluster
	Streamed    uint64 // outgoing shard messages sent as stream frames (maps, oversized)
	MapsServed  uint64 // maps sent in answer to a MapRequest stream
	Membership  uint64 // membership snapshots given to the Controller
	// MarksCollected: drain marks deleted because swim does not know their node.
	MarksCollected uint64
	// AnnouncesHeld: signed Announces held because no holder of their epoch was
	// confirmed yet (announce.go); followed once one is.
	AnnouncesHeld uint64
	Auth          PacketAuthStats
}

type shardState struct {
	cfg    shard.Config
	self   string
	owner  *shard.Owner
	ctl    *shard.Controller
	packer *wire.Packer
	reader wire.PacketReader
	dirty  bool // the membership snapshot must be rebuilt
	events []shard.Event
	stats  ShardHostStats
	held   []heldAnnounce // holdAnnounce
}

// validateShard checks the shard fields of Config (shard.Config checks itself).
func (c Config) validateShard() error {
	switch {
	case c.Shard == nil:
		return nil
	case c.Lease == nil:
		return fmt.Errorf("stack: Shard is set but Lease is nil (the shard leader is the lease holder)")
	}
	if err := c.Shard.Validate(); err != nil {
		return fmt.Errorf("stack: Shard: %w", err)
	}
	return nil
}

// newShardState builds the Owner and Controller. boot identifies this process to
// the leader: drawn from the stack's rng, never from the clock, so a restarted
// process whose clock stepped back is still a new process (the Controller takes
// any boot it has not seen replaced as one). Zero means "none" to the Controller.
func newShardState(cfg Config, cluster uint32, rng *rand.Rand) (*shardState, error) {
	boot := max(rng.Uint64(), 1)
	o, err := shard.NewOwner(*cfg.Shard, cfg.Swim.Name, boot)
	if err != nil {
		return nil, err
	}
	c, err := shard.NewController(*cfg.Shard, cfg.Swim.Name)
	if err != nil {
		return nil, err
	}
	return &shardState{cfg: *cfg.Shard, self: cfg.Swim.Name, owner: o, ctl: c,
		packer: wire.NewPacker(cfg.Swim.MTU, cluster), dirty: true}, nil
}

// isShardPacket reports whether a plain packet carries shard messages (the type of
// its first message is in the shard range).
func isShardPacket(data []byte) bool {
	if len(data) <= wire.HeaderSize {
		return false
	}
	return shard.Messages().Owns(wire.MsgType(data[wire.HeaderSize]))
}

// handleShardPacket steps the machines with every shard message of a packet;
// with Auth, only with those its sender signed and speaks for (packetauth.go).
func (h *Stack) handleShardPacket(now time.Time, from string, data []byte) {
	ss := h.shard
	hdr, err := ss.reader.Reset(data)
	if err != nil {
		ss.stats.Malformed++
		return
	}
	if hdr.CheckCluster(h.cluster) != nil {
		ss.stats.Foreign++
		return
	}
	sender, end, ok := h.checkPacket(now, from, data, &ss.reader, &ss.stats.Auth, &ss.stats.Malformed)
	if !ok {
		return
	}
	for ss.reader.Pos() < end && ss.reader.Next() {
		t := ss.reader.Type()
		if !shard.Messages().Owns(t) {
			continue
		}
		wm := h.reg.New(t)
		if wm == nil {
			continue // a shard type of a newer version: skipped
		}
		if err := h.dec.Decode(ss.reader.Body(), wm); err != nil {
			ss.stats.Malformed++
			continue
		}
		if sender != "" && h.misnamedShard(wm, sender, from) {
			return // the rest of a packet that speaks for another member is not read either
		}
		h.stepShard(now, from, wm)
	}
	if ss.reader.Err() != nil {
		ss.stats.Malformed++
	}
}

// stepShard hands one decoded message from from to both machines: each ignores
// the types that are not addressed to its side. With Auth an Announce goes on
// only once its leader is the holder this node knows for its epoch
// (announce.go).
func (h *Stack) stepShard(now time.Time, from string, m shard.Message) {
	if a, ok := m.(*shard.Announce); ok && h.cfg.Swim.Auth != nil && !h.confirmAnnounce(from, a) {
		return
	}
	h.shard.ctl.Step(now, m)
	h.shard.owner.Step(now, m)
}

// handleShardStream answers a shard stream frame: a MapRequest gets the current
// map while this node leads, anything else is stepped and gets no reply.
func (h *Stack) handleShardStream(now time.Time, from string, msg wire.Message) []byte {
	ss := h.shard
	if req, ok := msg.(*shard.MapRequest); ok {
		if !ss.ctl.Leading() || ss.ctl.Map() == nil || req.Node == "" || req.Epoch > ss.ctl.Epoch() {
			h.stepShard(now, from, msg) // lets a deposed Controller see the higher epoch
			return nil
		}
		b, err := h.encodeFrame(ss.ctl.Map().Wire())
		if err != nil {
			ss.stats.Unencodable++
			return nil
		}
		ss.stats.MapsServed++
		return b
	}
	h.stepShard(now, from, msg)
	return nil
}

// shardMembers builds the Controller's membership snapshot from swim's view, the
// weight metadata and the drain keys of the cluster map.
func (h *Stack) shardMembers() []shard.Member {
	ms := h.swim.Members()
	out := make([]shard.Member, 0, len(ms))
	for _, m := range ms {
		sm := shard.Member{Name: m.Name, Weight: 1}
		switch m.Status {
		case swim.StatusAlive:
			sm.Health = shard.HealthAlive
		case swim.StatusSuspect:
			sm.Health = shard.HealthSuspect
		case swim.StatusDead:
			sm.Health = shard.HealthDead
		default:
			sm.Health = shard.HealthLeft
		}
		if v, ok := h.meta.store.Get(m.Name, WeightKey); ok {
			if w, err := strconv.ParseFloat(string(v), 64); err == nil && w > 0 {
				sm.Weight = w
			}
		}
		if _, ok := h.meta.store.Get(crdt.Cluster, DrainKeyPrefix+m.Name); ok {
			sm.Draining = true
		}
		out = append(out, sm)
	}
	return out
}

// observeShardInputs marks the membership snapshot stale on a swim event or a
// change of a weight or drain key, and follows leadership changes.
func (h *Stack) observeShardInputs(now time.Time, evs []swim.Event, meta []MetaEvent, lev []lease.Event) {
	ss := h.shard
	if len(evs) > 0 {
		ss.dirty = true
	}
	for _, e := range meta {
		if e.Key == WeightKey || (e.Node == crdt.Cluster && len(e.Key) > len(DrainKeyPrefix) && e.Key[:len(DrainKeyPrefix)] == DrainKeyPrefix) {
			ss.dirty = true
		}
	}
	if ss.dirty {
		ss.dirty = false
		if err := ss.ctl.SetMembers(now, h.shardMembers()); err == nil {
			ss.stats.Membership++
		}
	}
	for _, e := range lev {
		switch e.Kind {
		case lease.EventBecameLeader:
			if !ss.ctl.Leading() || ss.ctl.Epoch() < e.Epoch {
				_ = ss.ctl.BecomeLeader(now, e.Epoch) // a stale epoch is refused: it was fenced already
			}
			ss.owner.SetLeader(now, ss.self, e.Epoch)
		case lease.EventLostLease:
			ss.ctl.StepDown(now)
		case lease.EventLeaderChanged:
			if e.Holder != "" {
				ss.owner.SetLeader(now, e.Holder, e.Epoch)
			}
		}
	}
	if ss.ctl.Leading() && !h.IsLeader(now) {
		ss.ctl.StepDown(now)
	}
}

// drainShard moves both machines' outputs into out: events as they are, messages
// to this node handed over locally, others packed one per packet (or streamed
// when too large).
func (h *Stack) drainShard(now time.Time, out *Ready) {
	ss := h.shard
	for round := 0; round < shardLocalRounds; round++ {
		var local []shard.Message
		for _, r := range [2]shard.Ready{ss.ctl.Ready(), ss.owner.Ready()} {
			out.ShardEvents = append(out.ShardEvents, r.Events...)
			for _, env := range r.Messages {
				if env.To == ss.self {
					local = append(local, env.Msg)
					continue
				}
				h.sendShard(env, out)
			}
		}
		if len(local) == 0 {
			break
		}
		for _, m := range local {
			ss.ctl.Step(now, m)
			ss.owner.Step(now, m)
		}
	}
}

// sendShard encodes one message to a peer.
func (h *Stack) sendShard(env shard.Envelope, out *Ready) {
	ss := h.shard
	addr, ok := h.addrs.lookup(env.To)
	if !ok {
		ss.stats.Unroutable++
		return
	}
	_, isReq := env.Msg.(*shard.MapRequest)
	h.resetPacker(ss.packer)
	if !isReq && ss.packer.Add(env.Msg) && h.signPacket(ss.packer, env.To, &ss.stats.Auth) {
		out.Packets = append(out.Packets, swim.Packet{To: addr, Data: slices.Clone(ss.packer.Bytes())})
		return
	}
	b, err := h.encodeFrame(env.Msg)
	if err != nil {
		ss.stats.Unencodable++
		return
	}
	ss.stats.Streamed++
	h.stream(addr, b, true)
}

// ShardMap is the latest map this node holds (the Controller's while it leads),
// nil before the first or without Config.Shard.
func (h *Stack) ShardMap() *shard.Map {
	if h.shard == nil {
		return nil
	}
	if h.shard.ctl.Leading() && h.shard.ctl.Map() != nil {
		return h.shard.ctl.Map()
	}
	return h.shard.owner.Map()
}

// ShardFor maps a key to its shard; false until a map is known.
func (h *Stack) ShardFor(key []byte) (uint32, bool) {
	m := h.ShardMap()
	if m == nil {
		return 0, false
	}
	return m.ShardFor(key), true
}

// ShardOwner is who serves shard s per this node's map; false if nobody or no map.
func (h *Stack) ShardOwner(s uint32) (string, bool) {
	m := h.ShardMap()
	if m == nil || int(s) >= m.Shards() {
		return "", false
	}
	o := m.Owner(s)
	return o, o != ""
}

// OwnedShards are the shards this node may serve at now (a valid ownership lease
// by its own clock), ascending.
func (h *Stack) OwnedShards(now time.Time) []uint32 {
	if h.shard == nil {
		return nil
	}
	return h.shard.owner.Held(now)
}

// Serving is the check a worker makes, with the time the work happens, before
// processing a message of shard s.
func (h *Stack) Serving(now time.Time, s uint32) bool {
	return h.shard != nil && h.shard.owner.Serving(now, s)
}

// ErrUnknownNode is returned by DrainNode for a name that is not a live
// member: a mark for it would only take a key of the cluster map.
var ErrUnknownNode = errors.New("stack: not a member (alive or suspect) of this node's view")

// DrainNode marks (on) or unmarks node as draining in the cluster map, under this
// node's lease epoch so the mark survives failover and a deposed leader's write
// loses. Only the lease holder may (lease.ErrNotLeader otherwise, and without
// Config.Shard), and only a member swim holds alive or suspect can be marked
// (ErrUnknownNode); lifting a mark works for any name. The Controller moves the
// node's shards away, MaxMoves at once.
func (h *Stack) DrainNode(now time.Time, node string, on bool) error {
	if h.shard == nil {
		return lease.ErrNotLeader
	}
	epoch, err := h.Fence(now)
	if err != nil {
		return err
	}
	defer h.process(now)
	key := DrainKeyPrefix + node
	if !on {
		if _, ok := h.meta.store.Get(crdt.Cluster, key); !ok {
			return nil
		}
		return h.writeDrainMark(now, epoch, key, false)
	}
	if !h.liveMember(node) {
		return fmt.Errorf("%w: %q", ErrUnknownNode, node)
	}
	// Marks of departed members go first, so they never hold the room this one
	// needs until the next collection pass.
	h.collectDrainMarks(now)
	return h.writeDrainMark(now, epoch, key, true)
}

// liveMember reports whether swim holds name alive or suspect.
func (h *Stack) liveMember(name string) bool {
	for _, m := range h.swim.Members() {
		if m.Name == name {
			return m.Status == swim.StatusAlive || m.Status == swim.StatusSuspect
		}
	}
	return false
}

// collectDrainMarks deletes, while this node leads, the drain marks of names swim
// does not know: members it forgot (TombstoneTTL after they died or left, so a
// drained node restarted for maintenance keeps its mark) and names that were
// never members (marks written before DrainNode checked). The cluster map holds
// few keys (crdt.Limits.MaxKeys), so the pass is cheap; it runs with the metadata
// GC and before every drain.
func (h *Stack) collectDrainMarks(now time.Time) {
	if h.shard == nil {
		return
	}
	epoch, err := h.Fence(now)
	if err != nil {
		return
	}
	var marked []string
	for k := range h.meta.store.NodeMap(crdt.Cluster) {
		if strings.HasPrefix(k, DrainKeyPrefix) {
			marked = append(marked, k)
		}
	}
	if len(marked) == 0 {
		return
	}
	known := map[string]bool{}
	for _, m := range h.swim.Members() {
		known[m.Name] = true
	}
	slices.Sort(marked) // deterministic order for the simulator's traces
	for _, key := range marked {
		if !known[key[len(DrainKeyPrefix):]] && h.writeDrainMark(now, epoch, key, false) == nil {
			h.shard.stats.MarksCollected++
		}
	}
}

// writeDrainMark sets (on) or deletes a drain key under epoch and gossips it.
func (h *Stack) writeDrainMark(now time.Time, epoch uint64, key string, on bool) error {
	var d crdt.Delta
	var err error
	if on {
		d, err = h.meta.store.SetCluster(epoch, key, []byte("1"))
	} else {
		d, err = h.meta.store.DeleteCluster(epoch, key)
	}
	if err != nil {
		return err
	}
	h.meta.dirty = true
	for _, e := range d.Entries {
		if e.Key == key {
			ev := MetaEvent{Node: crdt.Cluster, Key: key, Version: e.Version, At: now, Deleted: !on}
			if on {
				ev.Value = []byte("1")
			}
			h.meta.events = append(h.meta.events, ev)
		}
	}
	h.shard.dirty = true
	_ = h.gossipDelta(now, d) // on failure push-pulls carry it; counted in MetaStats
	return nil
}

// Rebalance recomputes placement now from the current membership (leader only:
// lease.ErrNotLeader otherwise).
func (h *Stack) Rebalance(now time.Time) error {
	if h.shard == nil || !h.shard.ctl.Leading() || !h.IsLeader(now) {
		return lease.ErrNotLeader
	}
	defer h.process(now)
	if err := h.shard.ctl.SetMembers(now, h.shardMembers()); err != nil {
		return err
	}
	h.shard.stats.Membership++
	return nil
}

// UnservedShards is how many shards have no serving owner by the Controller's
// knowledge (shard.Controller.Unserved), while this node holds the leader lease;
// false elsewhere: only the leader knows, and one reporter means no double count.
func (h *Stack) UnservedShards(now time.Time) (int, bool) {
	if h.shard == nil || !h.IsLeader(now) {
		return 0, false
	}
	return h.shard.ctl.Unserved(now), true
}

// ShardStats returns the Owner's and the Controller's counters; zero without
// Config.Shard.
func (h *Stack) ShardStats() (shard.OwnerStats, shard.ControllerStats) {
	if h.shard == nil {
		return shard.OwnerStats{}, shard.ControllerStats{}
	}
	return h.shard.owner.Stats(), h.shard.ctl.Stats()
}

// ShardHostStats returns the host's shard glue counters.
func (h *Stack) ShardHostStats() ShardHostStats {
	if h.shard == nil {
		return ShardHostStats{}
	}
	return h.shard.stats
}
