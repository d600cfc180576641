package sim

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/internal/vnet"
	"github.com/omnirelay/mesh/lease"
)

// The region model: a federation of clusters of three voters each on one virtual
// network, LAN inside a cluster and WAN between clusters. Every node runs the
// production lease.Machine and cluster.Machine; the lease holder of each cluster
// (its gateway) gossips its view of the descriptors to every node of every
// cluster each regionGossip. Membership (swim) is not modelled: the clusters'
// members are fixed. A client polls the registry and follows the active cluster.
// After every event the model checks that no two clusters are active for one
// failover version, and accounts the time two clusters answer as active at once.

const (
	regionVoters = 3
	regionGossip = 500 * time.Millisecond
	clientPoll   = 250 * time.Millisecond
	clientName   = "client"
)

// wanLink is the link between clusters: 20-80 ms one way.
func wanLink() vnet.Link { return vnet.Uniform(20*time.Millisecond, 80*time.Millisecond) }

// regionMsg is one datagram of the model: a lease message, a gossiped view, a
// client's query or its answer.
type regionMsg struct {
	lease     lease.Message
	from      string // cluster of the sender of view
	view      []cluster.Descriptor
	sync      uint64     // a new holder's quorum read for this epoch
	syncReply uint64     // view answers the read of this epoch
	ack       *[2]uint64 // the (epoch, counter) of its cluster's record the sender holds
	query     uint64     // client poll number, 0: not a query
	answer    *regionAnswer
}

type regionAnswer struct {
	poll    uint64
	serving bool
	cluster string
	version uint64
	view    []cluster.Descriptor
}

type regionNode struct {
	name  string
	ci    int // cluster index
	store *lease.MemoryStorage
	saved []cluster.Descriptor // the descriptors as last persisted; survive a crash
	lm    *lease.Machine       // nil while crashed
	cm    *cluster.Machine
	held  uint64 // the epoch cm was told it holds, 0: not holder
	rng   *rand.Rand
	wake  time.Duration
	lives int
}

type regionClient struct {
	target  int // node polled
	poll    uint64
	pending bool // the last poll is unanswered
	misses  int  // polls unanswered in a row
	gaveUp  int  // the cluster left after a poll of each of its nodes went unanswered, -1: none
	follows string
	// version is the failover version of the cluster followed: the client never
	// goes back to a lower one.
	version uint64
}

type regionModel struct {
	net    *vnet.Net[regionMsg]
	ids    []string
	cfgs   []cluster.Config
	nodes  []*regionNode
	client regionClient
	seed   uint64

	hash   *xxhash.Digest
	sent   uint64
	events uint64
	// checks
	dual      int           // instants two clusters were active for one version
	firstDual string        // the first, described
	overlap   time.Duration // time during which two clusters answered as active
	lastAt    time.Duration
	lastMulti bool
	served    func(at time.Duration, ci int) // called at each check for every cluster answering as active
	switched  func(at time.Duration, cl string)
}

var regionOrigin = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newRegionModel builds clusters "a", "b", ... of three voters each, "a" initially
// active, priorities in order; lc is the lease timing and promote the
// cluster.Config.PromoteAfter (0: default); loss applies to every link.
func newRegionModel(clusters int, seed uint64, lc lease.Config, promote time.Duration, loss float64) (*regionModel, error) {
	if clusters < 2 || clusters > 9 {
		return nil, fmt.Errorf("%w: Clusters %d not in [2, 9]", ErrConfig, clusters)
	}
	lan, wan := vnet.DefaultLink(), wanLink()
	lan.Loss, wan.Loss = loss, loss
	net, err := vnet.NewNet[regionMsg](lan, Stream(seed, "network"))
	if err != nil {
		return nil, err
	}
	m := &regionModel{net: net, seed: seed, hash: xxhash.New()}
	net.Deliver = m.deliver
	net.AfterEvent = m.check
	for i := range clusters {
		m.ids = append(m.ids, string(rune('a'+i)))
	}
	for i, id := range m.ids {
		st := cluster.Passive
		if i == 0 {
			st = cluster.Active
		}
		cfg := cluster.DefaultConfig(id, m.ids, st)
		cfg.Region, cfg.Priority = "region-"+id, i
		if promote > 0 {
			cfg.PromoteAfter = promote
		}
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		m.cfgs = append(m.cfgs, cfg)
		var voters []string
		for v := range regionVoters {
			voters = append(voters, fmt.Sprintf("%s%d", id, v))
		}
		for _, name := range voters {
			net.Add(name)
			m.nodes = append(m.nodes, &regionNode{name: name, ci: i, store: &lease.MemoryStorage{}})
		}
	}
	net.Add(clientName)
	// LAN inside a cluster (the default link), WAN between clusters and to the client
	// (which sits in none of them).
	for i, a := range m.nodes {
		for j, b := range m.nodes {
			if a.ci != b.ci {
				if err := net.SetLink(i, j, wan); err != nil {
					return nil, err
				}
			}
		}
	}
	ce := len(m.nodes)
	for i := range m.nodes {
		_ = net.SetLink(i, ce, wan) // wan is valid: SetLink above took it
		_ = net.SetLink(ce, i, wan)
	}
	for i := range m.nodes {
		if err := m.start(i, lc); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		m.gossipLoop(i)
	}
	m.client.gaveUp = -1
	m.clientLoop()
	return m, nil
}

func (m *regionModel) now() time.Time { return regionOrigin.Add(m.net.Now()) }

func (m *regionModel) start(i int, lc lease.Config) error {
	nd := m.nodes[i]
	c := lc
	c.Self, c.Voters = nd.name, m.voters(nd.ci)
	nd.rng = Stream(m.seed, fmt.Sprintf("node/%s/%d", nd.name, nd.lives))
	lm, err := lease.New(c, nd.store, nd.rng, m.now())
	if err != nil {
		return err
	}
	cfg := m.cfgs[nd.ci]
	cfg.Peers = slices.DeleteFunc(m.voters(nd.ci), func(v string) bool { return v == nd.name })
	cm, err := cluster.New(cfg, m.now())
	if err != nil {
		return err
	}
	cm.Merge(m.now(), m.ids[nd.ci], nd.saved) // what this node had persisted
	nd.lm, nd.cm, nd.held = lm, cm, 0
	m.after(i)
	return nil
}

func (m *regionModel) voters(ci int) []string {
	var v []string
	for _, nd := range m.nodes {
		if nd.ci == ci {
			v = append(v, nd.name)
		}
	}
	return v
}

// crash stops node i; its lease storage and persisted descriptors survive.
func (m *regionModel) crash(i int) {
	nd := m.nodes[i]
	if nd.lm != nil {
		nd.lm, nd.cm, nd.held = nil, nil, 0
		nd.lives++
		m.note(1, i)
	}
}

// restart starts a crashed node i again.
func (m *regionModel) restart(i int, lc lease.Config) {
	if m.nodes[i].lm == nil {
		if err := m.start(i, lc); err != nil {
			panic(err) // the same config started it before
		}
		m.note(2, i)
	}
}

// clusterNodes are the node numbers of cluster ci.
func (m *regionModel) clusterNodes(ci int) []int {
	var ns []int
	for i, nd := range m.nodes {
		if nd.ci == ci {
			ns = append(ns, i)
		}
	}
	return ns
}

// after syncs node i's cluster machine with its lease, persists and sends what
// the machines produced, and rearms its timer.
func (m *regionModel) after(i int) {
	nd := m.nodes[i]
	now := m.now()
	for {
		rd := nd.lm.Ready()
		if rd.State != nil {
			if err := nd.store.Save(*rd.State); err != nil {
				panic(err) // MemoryStorage does not fail
			}
		}
		for _, env := range rd.Messages {
			m.send(i, env.To, regionMsg{lease: env.Msg})
		}
		if len(rd.Messages) == 0 && rd.State == nil {
			break
		}
	}
	if nd.lm.IsLeader(now) {
		e, _ := nd.lm.Fence(now)
		if nd.held != e {
			nd.held = e
			if err := nd.cm.SetHolder(now, e); err != nil {
				nd.held = 0 // fenced: a later holder wrote already
			}
		}
	} else if nd.held != 0 {
		nd.held = 0
		nd.cm.Resign(now)
	}
	nd.saved = nd.cm.Descriptors() // persisted before anything is published
	if nd.cm.HasReady() {
		rd := nd.cm.Ready()
		nd.cm.Advance()
		for _, e := range rd.Events {
			m.noteEvent(i, e)
		}
		if rd.Sync != 0 {
			m.askPeers(i, rd.Sync)
		}
		if len(rd.Written) > 0 {
			m.publish(i)
		}
	}
	m.rearm(i)
}

// askPeers sends node i's quorum read for epoch to the other voters of its cluster.
func (m *regionModel) askPeers(i int, epoch uint64) {
	for _, j := range m.clusterNodes(m.nodes[i].ci) {
		if j != i {
			m.send(i, m.nodes[j].name, regionMsg{sync: epoch})
		}
	}
}

// publish sends node i's view to every other node of the federation.
func (m *regionModel) publish(i int) {
	nd := m.nodes[i]
	view := nd.cm.Descriptors()
	for j, o := range m.nodes {
		if j != i {
			m.send(i, o.name, regionMsg{from: m.ids[nd.ci], view: view})
		}
	}
}

func (m *regionModel) send(from int, to string, msg regionMsg) {
	m.sent++
	m.net.Send(from, to, msg)
}

func (m *regionModel) rearm(i int) {
	nd := m.nodes[i]
	d := nd.lm.NextDeadline()
	if c := nd.cm.NextDeadline(); !c.IsZero() && (d.IsZero() || c.Before(d)) {
		d = c
	}
	if d.IsZero() {
		nd.wake = -1
		return
	}
	wake, lm := max(d.Sub(regionOrigin), m.net.Now()), nd.lm
	nd.wake = wake
	m.net.At(wake, func() {
		if nd.lm != lm || wake != nd.wake {
			return // crashed, or superseded by a later rearm
		}
		nd.lm.Tick(m.now())
		nd.cm.Tick(m.now())
		m.after(i)
	})
}

// gossipLoop makes node i publish every regionGossip while it holds its lease.
func (m *regionModel) gossipLoop(i int) {
	m.net.After(regionGossip, func() {
		if nd := m.nodes[i]; nd.lm != nil && nd.cm.Holder() {
			m.publish(i)
		} else if nd.lm != nil {
			if e, ok := nd.cm.Syncing(); ok {
				m.askPeers(i, e) // answers may have been lost
			}
		}
		m.gossipLoop(i)
	})
}

func (m *regionModel) deliver(from, to int, msg regionMsg) {
	m.fold(from, to, msg)
	if to == len(m.nodes) {
		m.clientAnswer(msg.answer)
		return
	}
	nd := m.nodes[to]
	if nd.lm == nil {
		return
	}
	now := m.now()
	switch {
	case msg.lease != nil:
		nd.lm.Step(now, msg.lease)
	case msg.sync != 0:
		m.send(to, m.nodes[from].name, regionMsg{from: m.ids[nd.ci], view: nd.cm.Descriptors(), syncReply: msg.sync})
	case msg.syncReply != 0:
		nd.cm.SyncReply(now, m.nodes[from].name, msg.syncReply, msg.view)
	case msg.ack != nil:
		nd.cm.Ack(m.nodes[from].name, msg.ack[0], msg.ack[1])
	case msg.view != nil:
		nd.cm.Merge(now, msg.from, msg.view)
		if m.nodes[from].ci == nd.ci { // our holder's write: say we hold it
			own := nd.cm.Self()
			m.send(to, m.nodes[from].name, regionMsg{ack: &[2]uint64{own.Epoch, own.Counter}})
		}
	case msg.query != 0:
		self := nd.cm.Self()
		a := &regionAnswer{poll: msg.query, serving: nd.cm.Serving() && nd.lm.IsLeader(now),
			cluster: self.ID, version: self.Version, view: nd.cm.Descriptors()}
		m.send(to, clientName, regionMsg{answer: a})
	}
	m.after(to)
}

// clientLoop polls the registry every clientPoll. An unanswered poll moves the
// client to the next node of the cluster it polls, and after three misses to
// the next cluster.
func (m *regionModel) clientLoop() {
	m.net.After(clientPoll, func() {
		c := &m.client
		if c.pending {
			c.misses++
			n := len(m.nodes)
			if c.misses%regionVoters == 0 {
				c.gaveUp = c.target / regionVoters
				c.target = (c.target/regionVoters*regionVoters + regionVoters) % n
			} else {
				c.target = c.target/regionVoters*regionVoters + (c.target+1)%regionVoters
			}
		}
		c.poll++
		c.pending = true
		m.send(len(m.nodes), m.nodes[c.target].name, regionMsg{query: c.poll})
		m.clientLoop()
	})
}

func (m *regionModel) clientAnswer(a *regionAnswer) {
	c := &m.client
	if a == nil || a.poll != c.poll {
		return // late
	}
	c.pending, c.misses = false, 0
	if a.serving {
		c.gaveUp = -1
		if a.cluster != c.follows && a.version >= c.version {
			c.follows, c.version = a.cluster, a.version
			if m.switched != nil {
				m.switched(m.net.Now(), a.cluster)
			}
		}
		return
	}
	// Not the active registry: go where its view says the active cluster is, unless
	// that is this cluster or the one just given up on; else try the next node of
	// this cluster (its lease holder answers once it is promoted).
	base := c.target / regionVoters * regionVoters
	act, ok := cluster.Resolve(a.view)
	if !ok {
		for _, d := range a.view {
			if d.State == cluster.Draining { // a handoff under way: its target is next
				act, ok = cluster.Descriptor{ID: d.Handoff}, true
			}
		}
	}
	if ci := slices.Index(m.ids, act.ID); ok && ci != c.target/regionVoters && ci != c.gaveUp {
		c.target = ci * regionVoters
	} else {
		c.target = base + (c.target+1)%regionVoters
	}
}

// serving lists the clusters with a node answering as the active registry now.
func (m *regionModel) serving() []int {
	var s []int
	now := m.now()
	for ci := range m.ids {
		for _, i := range m.clusterNodes(ci) {
			if nd := m.nodes[i]; nd.lm != nil && nd.cm.Serving() && nd.lm.IsLeader(now) {
				s = append(s, ci)
				break
			}
		}
	}
	return s
}

// check runs after every event: two clusters active for one failover version
// (in any live node's own record or in any view) is a violation; the time two
// clusters answer as active is accounted.
func (m *regionModel) check() {
	now := m.net.Now()
	if m.lastMulti {
		m.overlap += now - m.lastAt
	}
	var views [][]cluster.Descriptor
	for _, nd := range m.nodes {
		if nd.cm != nil {
			views = append(views, nd.cm.Descriptors())
		}
	}
	if bad := sharedVersion(views); bad != "" {
		m.dual++
		if m.firstDual == "" {
			m.firstDual = fmt.Sprintf("at %v: %s", now, bad)
		}
	}
	s := m.serving()
	if m.served != nil {
		for _, ci := range s {
			m.served(now, ci)
		}
	}
	m.lastAt, m.lastMulti = now, len(s) > 1
}

// sharedVersion describes two clusters active for one failover version across
// the views (each node's records), or is "" when there are none.
func sharedVersion(views [][]cluster.Descriptor) string {
	byVersion := map[uint64]string{}
	for _, ds := range views {
		for _, d := range ds {
			if d.State != cluster.Active {
				continue
			}
			if c, ok := byVersion[d.Version]; ok && c != d.ID {
				return fmt.Sprintf("%s and %s active for version %d", c, d.ID, d.Version)
			}
			byVersion[d.Version] = d.ID
		}
	}
	return ""
}

// converged reports whether every live node holds the same descriptors and one
// cluster answers as active, and says what differs when not.
func (m *regionModel) converged() error {
	var ref []cluster.Descriptor
	for _, nd := range m.nodes {
		if nd.cm == nil {
			continue
		}
		ds := nd.cm.Descriptors()
		if ref == nil {
			ref = ds
		} else if !slices.Equal(ref, ds) {
			return fmt.Errorf("%s holds %v, another node %v", nd.name, ds, ref)
		}
	}
	if s := m.serving(); len(s) != 1 {
		return fmt.Errorf("%d clusters answer as active: %v", len(s), s)
	}
	return nil
}

// fold adds one delivery to the trace hash.
func (m *regionModel) fold(from, to int, msg regionMsg) {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(m.net.Now()))
	binary.LittleEndian.PutUint32(b[8:], uint32(from))
	binary.LittleEndian.PutUint32(b[12:], uint32(to))
	binary.LittleEndian.PutUint64(b[16:], msg.query^msg.sync<<20^msg.syncReply<<40)
	binary.LittleEndian.PutUint64(b[24:], uint64(len(msg.view)))
	_, _ = m.hash.Write(b[:])
	if msg.lease != nil {
		_, _ = fmt.Fprintf(m.hash, "%T%+v", msg.lease, msg.lease)
	}
	for _, d := range msg.view {
		_, _ = fmt.Fprintf(m.hash, "%+v", d)
	}
	m.events++
}

func (m *regionModel) note(kind byte, i int) {
	_, _ = m.hash.Write([]byte{kind, byte(i)})
}

func (m *regionModel) noteEvent(i int, e cluster.Event) {
	_, _ = fmt.Fprintf(m.hash, "%d %s %d %s %d", m.net.Now(), m.nodes[i].name, e.Kind, e.Cluster, e.Version)
}

// holder is the node holding cluster ci's lease and writing its descriptor, or -1.
func (m *regionModel) holder(ci int) int {
	for _, i := range m.clusterNodes(ci) {
		if nd := m.nodes[i]; nd.lm != nil && nd.cm.Holder() {
			return i
		}
	}
	return -1
}

// isolateCluster cuts cluster ci off from the rest (a WAN partition).
func (m *regionModel) isolateCluster(ci int) { m.net.Isolate(m.clusterNodes(ci)...) }

// operate runs an operator command on node i's cluster machine (the command's
// error, such as not being the holder, is the operator's to read, not a fault).
func (m *regionModel) operate(i int, f func(*regionNode) error) error {
	nd := m.nodes[i]
	if nd.lm == nil {
		return nil
	}
	err := f(nd)
	m.after(i)
	return err
}
