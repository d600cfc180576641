package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoFederation is returned by the multi-cluster methods of a node started
// without Config.Federation.
var ErrNoFederation = errors.New("node: no federation is configured (Config.Federation is nil)")

// Federation makes a node part of a federation of clusters (docs/multi-cluster.md):
// its cluster's lease holder writes the cluster's descriptor (state, priority,
// failover version) into the cluster map, fenced by the lease epoch, and applies
// the failover rules of package cluster; gateways learn the other clusters in a
// WAN pool and relay them to their cluster.
type Federation struct {
	// Cluster is this cluster's id, in Clusters; the same on every node of the
	// cluster.
	Cluster string
	// Clusters are every cluster's id, in one order shared by the whole
	// federation and append only: a cluster's index there is the residue of its
	// failover versions, so two orders give two clusters the same versions. At
	// most cluster.MaxClusters.
	Clusters []string
	// Region is where the cluster runs, published and not interpreted.
	Region string
	// State is the cluster's state before its holder first writes: "active" for
	// exactly one cluster of the federation, "passive" (the default) for the
	// others. A second active one loses to the higher version once they hear of
	// each other.
	State string
	// Priority orders promotion in an unplanned failover: the reachable passive
	// cluster of lowest priority promotes first. Default 0.
	Priority int
	// PromoteAfter is how long the active cluster must be unreachable from this
	// cluster (no gateway of ours sees one of its gateways alive) before this
	// cluster's holder promotes it. Default 5 s. Raising it rides out longer WAN
	// outages without a failover; lowering it shortens failover.
	PromoteAfter time.Duration
	// Gateway, when set, makes this node a gateway: it joins the WAN pool of
	// gateways of every cluster and relays what it learns there to its cluster.
	// A cluster needs at least one; two or three keep the federation in view
	// while one restarts.
	Gateway *Gateway
}

// Gateway configures a gateway's membership in the WAN pool: a second swim
// membership, with the WAN profile (swim.WANProfile), on its own port. Only
// gateways are in it, and they gossip only their own cluster's descriptor and
// control URL: a cluster never merges another's LAN membership.
type Gateway struct {
	// Bind is the host:port of the WAN pool's packets and streams. Required.
	Bind string
	// Advertise is the host:port other gateways reach this one at; default Bind.
	Advertise string
	// Join lists WAN seeds: gateways of other clusters, or of this one.
	Join []string
	// Label is the WAN pool's cluster label; default DefaultWANLabel. Every
	// gateway of the federation must use the same.
	Label string
	// Tune adjusts the WAN profile's timers before validation.
	Tune func(*swim.Config)
	// Transport carries the WAN pool; default ListenNet(Bind). For tests.
	Transport Transport
}

// DefaultWANLabel is the WAN pool's default cluster label.
const DefaultWANLabel = "omnirelay-wan"

// Metadata keys of a gateway in the WAN pool.
const (
	WANClusterKey    = "cluster"            // the gateway's cluster id
	WANDescriptorKey = "cluster.descriptor" // its cluster's descriptor, JSON
)

// gatewayInterval is how often a gateway exchanges what it knows between its
// cluster and the WAN pool: a hop of a planned handoff costs up to this much.
const gatewayInterval = 250 * time.Millisecond

func (c Config) validateFederation(bad func(field, why string, args ...any) error) error {
	f := c.Federation
	if f == nil {
		return nil
	}
	if len(c.Voters) == 0 {
		return bad("Federation", "needs Voters: only the cluster's lease holder writes its descriptor")
	}
	if _, err := c.clusterConfig(); err != nil {
		return fmt.Errorf("%w: Federation: %v", ErrInvalidConfig, err)
	}
	if g := f.Gateway; g != nil {
		switch {
		case c.TLS != nil && c.TLS.Identity().Cluster != f.Cluster:
			return bad("Federation.Cluster", "%q, but the certificate names %s, of cluster %q: in the WAN pool a gateway speaks only for its certificate's cluster; use one id for both (--cluster-id, --cluster-label)",
				f.Cluster, c.TLS.Identity(), c.TLS.Identity().Cluster)
		case len(c.Keys) == 0 && !c.Insecure:
			return bad("Federation.Gateway", "needs Keys (the WAN pool's packets are sealed with the cluster's keys) or Insecure")
		case g.Transport == nil && checkHostPort(g.Bind) != nil:
			return bad("Federation.Gateway.Bind", "%q: want host:port", g.Bind)
		}
	}
	return nil
}

// clusterConfig is the cluster.Config of this node's federation.
func (c Config) clusterConfig() (cluster.Config, error) {
	f := c.Federation
	st := cluster.Passive
	if f.State != "" {
		var err error
		if st, err = cluster.ParseState(f.State); err != nil {
			return cluster.Config{}, err
		}
	}
	cc := cluster.DefaultConfig(f.Cluster, f.Clusters, st)
	cc.Region, cc.Priority = f.Region, f.Priority
	if f.PromoteAfter != 0 {
		cc.PromoteAfter = f.PromoteAfter
	}
	for _, v := range c.Voters {
		if v != c.Name {
			cc.Peers = append(cc.Peers, v)
		}
	}
	return cc, cc.Validate()
}

// fedState is the multi-cluster part of a Node.
type fedState struct {
	seen uint64 // the stack's cluster view version last published (loop only)
	wan  *Node  // the WAN pool's node; nil unless a gateway
	// refused counts WAN records refused because they speak for another
	// cluster than their gateway's name (omnirelay_cluster_wan_refused_total);
	// misnamed holds, per such gateway, the cluster it claimed when last counted
	// (runGateway only), so a record is counted and audited once, not every
	// interval.
	refused  atomic.Uint64
	misnamed map[string]string
}

// fedHostConfig fills the cluster part of the host config; no federation: no-op.
func (n *Node) fedHostConfig(hc *stack.Config) {
	if n.cfg.Federation == nil {
		return
	}
	cc, _ := n.cfg.clusterConfig() // Validate checked it
	hc.Cluster = &cc
	n.fed = &fedState{}
}

// startGateway joins the WAN pool and starts relaying; a failure to start it
// fails Start. The seeds are joined in the background: a federation starts one
// cluster at a time.
func (n *Node) startGateway() error {
	g := n.cfg.Federation.Gateway
	wc := Config{
		// Its records name it NAME@CLUSTER; with TLS its streams are mutual TLS
		// with its node certificate, its claims signed with it (wanName).
		Name: wanName(n.cfg.Name, n.cfg.Federation.Cluster), Bind: g.Bind, Advertise: g.Advertise,
		ClusterLabel: g.Label, Keys: n.cfg.Keys, Insecure: n.cfg.Insecure, Transport: g.Transport,
		TLS: n.cfg.TLS, wan: true, poolAudit: n.auditLog,
		Logger: n.cfg.Logger.With("pool", "wan"), Clock: n.clock,
		Tune: func(sc *swim.Config) {
			w := swim.WANProfile(sc.Name, sc.Addr)
			if g.Tune != nil {
				g.Tune(&w)
			}
			*sc = w
		},
		Meta: map[string]string{WANClusterKey: n.cfg.Federation.Cluster},
	}
	if wc.ClusterLabel == "" {
		wc.ClusterLabel = DefaultWANLabel
	}
	wan, err := Start(context.Background(), wc)
	if err != nil {
		return fmt.Errorf("node: gateway WAN pool: %w", err)
	}
	n.fed.wan = wan
	if len(g.Join) > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := wan.Join(n.ctx, g.Join...); err != nil && n.ctx.Err() == nil {
				n.log.Warn("gateway: joining the WAN pool failed", "seeds", g.Join, "err", err)
			}
		}()
	}
	n.wg.Add(1)
	go n.runGateway(wan)
	n.log.Info("gateway joined the WAN pool", "wan", wan.Addr(), "label", wc.ClusterLabel)
	return nil
}

// GatewayAddr is the advertised address of this gateway in the WAN pool; "" when
// the node is not a gateway.
func (n *Node) GatewayAddr() string {
	if n.fed == nil || n.fed.wan == nil {
		return ""
	}
	return n.fed.wan.AdvertiseAddr()
}

// runGateway exchanges, every gatewayInterval, this cluster's descriptor for the
// WAN pool's view of the others. It runs off the loop: it reads the WAN node
// through its API and writes to this node through do.
func (n *Node) runGateway(wan *Node) {
	defer n.wg.Done()
	defer wan.Close()
	self := n.cfg.Federation.Cluster
	var published, control string
	relayed := map[string]string{}
	t := n.clock.NewTimer(gatewayInterval)
	defer t.Stop()
	for {
		var own cluster.Descriptor
		var url string
		if !n.do(func() {
			v, _ := n.stack.Clusters()
			own, url = descriptorOf(v.Descriptors, self), n.metaOf(n.cfg.Name)[ControlMetaKey]
		}) {
			return
		}
		if b, _ := json.Marshal(own); string(b) != published && wan.SetMeta(WANDescriptorKey, string(b)) == nil {
			published = string(b)
		}
		if url != control && wan.SetMeta(ControlMetaKey, url) == nil {
			control = url // the agent publishes its control URL once it listens
		}
		rel := n.wanRemotes(wan, self)
		n.do(func() {
			now := n.clock.Now()
			for id, r := range rel {
				b, _ := json.Marshal(r)
				if relayed[id] == string(b) {
					continue
				}
				if err := n.stack.SetMeta(now, stack.RemoteKeyPrefix+id, b); err == nil || errors.Is(err, stack.ErrMetaGossip) {
					relayed[id] = string(b)
				}
			}
		})
		t.Reset(gatewayInterval)
		select {
		case <-n.ctx.Done():
			return
		case <-t.C():
		}
	}
}

// wanRemotes is what the WAN pool shows of every other cluster: its newest
// descriptor among its gateways', whether one of them is alive (not suspect: a
// missed probe already counts as unreachable, which is what bounds failover),
// and their control URLs. A gateway whose metadata does not decode, or names
// a cluster of another federation, is skipped; one whose records speak for
// another cluster than its name's is refused (wanMisnamed).
func (n *Node) wanRemotes(wan *Node, self string) map[string]stack.Remote {
	out := map[string]stack.Remote{}
	for _, m := range wan.Members() {
		if m.Name == wan.Name() {
			continue
		}
		meta := wan.Meta(m.Name)
		id := meta[WANClusterKey]
		var d cluster.Descriptor
		decoded := json.Unmarshal([]byte(meta[WANDescriptorKey]), &d) == nil
		if n.wanMisnamed(m.Name, id, d.ID) || !decoded || d.ID != id ||
			id == "" || id == self || !slices.Contains(n.cfg.Federation.Clusters, id) {
			continue
		}
		r, seen := out[id]
		if !seen || d.Epoch > r.Descriptor.Epoch || d.Epoch == r.Descriptor.Epoch && d.Counter > r.Descriptor.Counter {
			r.Descriptor = d
		}
		if m.Status == swim.StatusAlive {
			r.Reachable = true
			if u := meta[ControlMetaKey]; u != "" && len(r.Control) < stack.MaxEndpoints && !slices.Contains(r.Control, u) {
				r.Control = append(r.Control, u)
			}
		}
		out[id] = r
	}
	for id, r := range out {
		slices.Sort(r.Control)
		out[id] = r
	}
	return out
}

// wanMisnamed reports whether gateway member's records, its cluster id and its
// descriptor's, speak for another cluster than its name NAME@CLUSTER. With TLS
// the name is its certificate's (wanName: its claims, metadata and streams are
// checked against it), so a gateway of cluster B can publish only B's record:
// anything else is refused, counted and audited, once per claimed cluster.
// runGateway only.
func (n *Node) wanMisnamed(member, id, descID string) bool {
	owner, claim := wanCluster(member), ""
	switch {
	case id != "" && id != owner:
		claim = id
	case descID != "" && descID != owner:
		claim = descID
	}
	f := n.fed
	if claim == "" {
		delete(f.misnamed, member)
		return false
	}
	if f.misnamed[member] == claim {
		return true
	}
	if f.misnamed == nil {
		f.misnamed = map[string]string{}
	}
	if len(f.misnamed) >= swim.DefaultMaxMembers { // bounded like the pool
		clear(f.misnamed)
	}
	f.misnamed[member] = claim
	f.refused.Add(1)
	n.log.Warn("refusing a WAN record: a gateway speaks for another cluster than its own", "gateway", member, "claims", claim)
	n.audit(auditRecord{Time: n.clock.Now(), Event: "wan_record_refused", ID: control.NewEventID(), Member: member,
		Cluster: claim, Reason: fmt.Sprintf("gateway %s of cluster %q published a record of cluster %q", member, owner, claim)})
	return true
}

func descriptorOf(ds []cluster.Descriptor, id string) cluster.Descriptor {
	for _, d := range ds {
		if d.ID == id {
			return d
		}
	}
	return cluster.Descriptor{}
}

// driveFederation logs the cluster events of this flush and wakes the watchers
// when the view changed. Loop only.
func (n *Node) driveFederation() {
	if n.fed == nil {
		return
	}
	for _, e := range n.stack.ClusterEvents() {
		level, event, msg := slog.LevelWarn, "", ""
		switch e.Kind {
		case cluster.EventPromoted:
			event, msg = "cluster_promoted", "this cluster promoted itself: now active"
		case cluster.EventDraining:
			event, msg = "cluster_draining", "this cluster is draining: handing over"
		case cluster.EventDemoted:
			event, msg = "cluster_demoted", "this cluster is now passive: another is active with a higher failover version"
		case cluster.EventDeposed:
			level, msg = slog.LevelInfo, "this cluster's descriptor was written under a higher epoch: no longer writing it"
		case cluster.EventActiveChanged:
			level, msg = slog.LevelInfo, "active cluster changed"
		}
		n.log.Log(context.Background(), level, msg, "cluster", e.Cluster, "failover_version", e.Version)
		if event != "" { // the writer's own transitions; every node logs the change of active cluster
			n.audit(auditRecord{Time: e.At, Event: event, ID: control.NewEventID(), Cluster: e.Cluster, FailoverVersion: e.Version})
		}
	}
	if v := n.stack.ClusterVersion(); v != n.fed.seen {
		n.fed.seen = v
		n.mu.Lock()
		close(n.clustersChanged)
		n.clustersChanged = make(chan struct{})
		n.mu.Unlock()
	}
}

// Clusters is this node's view of the federation; ErrNoFederation without one.
func (n *Node) Clusters() (stack.ClusterView, error) {
	if n.fed == nil {
		return stack.ClusterView{}, ErrNoFederation
	}
	var v stack.ClusterView
	if !n.do(func() { v, _ = n.stack.Clusters() }) {
		return v, ErrClosed
	}
	return v, nil
}

// PromoteCluster makes cluster id the active one. Asked of a node of the active
// cluster for another id, it is the planned failover: this cluster drains and
// hands over to id, which promotes itself with a higher failover version. Asked
// for this node's own cluster, it needs force: the operator's forced promotion,
// which makes two clusters answer as active (the old one with the lower
// version) until they hear of each other. Only on the lease holder: an error
// wrapping cluster.ErrNotHolder elsewhere.
func (n *Node) PromoteCluster(id string, force bool) error {
	if n.fed == nil {
		return ErrNoFederation
	}
	self := n.cfg.Federation.Cluster
	var err error
	if !n.do(func() {
		now := n.clock.Now()
		switch {
		case id == self && force:
			err = n.stack.PromoteCluster(now)
		case id == self:
			err = fmt.Errorf("%w: %s is this node's cluster: a planned promotion is asked of the active cluster, which hands over; force promotes here now", cluster.ErrBadTransition, id)
		default:
			err = n.stack.DrainCluster(now, id)
		}
	}) {
		return ErrClosed
	}
	if err != nil {
		return fmt.Errorf("node: promote cluster %s: %w", id, err)
	}
	n.log.Warn("cluster promotion asked", "cluster", id, "force", force)
	return nil
}

// ---- control source ----

// Clusters implements control.ClusterSource.
func (c controlSource) Clusters() (control.Clusters, error) {
	v, err := c.n.Clusters()
	if errors.Is(err, ErrNoFederation) {
		return control.Clusters{}, control.ErrClustersOff
	}
	if err != nil {
		return control.Clusters{}, err
	}
	cs := control.Clusters{Self: v.Self, Active: v.Active, Serving: v.Serving, Clusters: v.Descriptors,
		Version: v.Version, Endpoints: []control.ClusterEndpoints{}}
	for _, d := range v.Descriptors {
		if r, ok := v.Remotes[d.ID]; ok {
			cs.Endpoints = append(cs.Endpoints, control.ClusterEndpoints{Cluster: d.ID, Reachable: r.Reachable, Control: r.Control})
		}
	}
	return cs, nil
}

// ClustersChanged implements control.ClusterSource.
func (c controlSource) ClustersChanged() <-chan struct{} {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	return c.n.clustersChanged
}

// PromoteCluster implements control.ClusterSource.
func (c controlSource) PromoteCluster(id string, force bool) error {
	err := c.n.PromoteCluster(id, force)
	switch {
	case errors.Is(err, ErrNoFederation):
		return control.ErrClustersOff
	case errors.Is(err, cluster.ErrNotHolder):
		return c.leaderOnly(fmt.Errorf("%w: %w", lease.ErrNotLeader, err))
	case errors.Is(err, cluster.ErrBadTransition):
		return &control.CodeError{Status: http.StatusConflict, Code: control.CodeBadTransition, Err: err}
	}
	return err
}

// ---- metrics ----

var (
	descClusterJumps   = prometheus.NewDesc("omnirelay_implausible_total", implausibleHelp, nil, prometheus.Labels{"layer": "cluster"})
	descClusterServing = prometheus.NewDesc("omnirelay_cluster_serving", "1 while this node answers as the active cluster's registry (its cluster's lease holder, its cluster active, a majority of its voters holding that descriptor), else 0.", nil, nil)
	descClusterActive  = prometheus.NewDesc("omnirelay_cluster_active", "1 for the cluster this node's view resolves as active (the active descriptor of highest failover version), 0 for the others.", []string{"cluster"}, nil)
	descClusterVersion = prometheus.NewDesc("omnirelay_cluster_failover_version", "Failover version of each cluster's descriptor in this node's view.", []string{"cluster"}, nil)
	descClusterReach   = prometheus.NewDesc("omnirelay_cluster_reachable", "1 while one of this cluster's gateways sees a gateway of the other cluster alive in the WAN pool, else 0.", []string{"cluster"}, nil)
	descPromotions     = prometheus.NewDesc("omnirelay_cluster_promotions_total", "Promotions of its cluster this node made as lease holder (planned, unplanned and forced).", nil, nil)
	descWANRefused     = prometheus.NewDesc("omnirelay_cluster_wan_refused_total", "WAN pool records this gateway refused because they speak for another cluster than their gateway's name NAME@CLUSTER (with TLS, its certificate's cluster); each gateway and claimed cluster counted once.", nil, nil)
	descClusterDropped = prometheus.NewDesc("omnirelay_cluster_records_dropped_total", "Cluster descriptors received and dropped: malformed (unknown cluster or state, a version of another cluster's residue, an undecodable value), oversized batches.", nil, nil)
)

// fedCollector exports the federation view at scrape time; registered only with
// Config.Federation.
type fedCollector struct{ n *Node }

func (c *fedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterJumps, descClusterServing, descClusterActive, descClusterVersion, descClusterReach, descPromotions, descClusterDropped, descWANRefused} {
		ch <- d
	}
}

func (c *fedCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	var v stack.ClusterView
	var hs stack.ClusterHostStats
	var st cluster.Stats
	if !n.do(func() {
		v, _ = n.stack.Clusters()
		hs, st = n.stack.ClusterHostStats()
	}) {
		return
	}
	gauge := func(d *prometheus.Desc, x float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, labels...)
	}
	b := map[bool]float64{true: 1}
	gauge(descClusterServing, b[v.Serving])
	for _, d := range v.Descriptors {
		gauge(descClusterActive, b[d.ID == v.Active], d.ID)
		gauge(descClusterVersion, float64(d.Version), d.ID)
		if d.ID != v.Self {
			gauge(descClusterReach, b[v.Remotes[d.ID].Reachable], d.ID)
		}
	}
	ch <- prometheus.MustNewConstMetric(descClusterJumps, prometheus.CounterValue, float64(st.Implausible))
	ch <- prometheus.MustNewConstMetric(descPromotions, prometheus.CounterValue, float64(st.Promotions))
	ch <- prometheus.MustNewConstMetric(descClusterDropped, prometheus.CounterValue, float64(st.Malformed+st.Oversized+hs.Malformed))
	ch <- prometheus.MustNewConstMetric(descWANRefused, prometheus.CounterValue, float64(n.fed.refused.Load()))
}
