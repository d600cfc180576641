package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/client"
	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
)

// promoteAfter is the unreachable time after which a passive cluster promotes
// itself in the loopback test.
const promoteAfter = 3 * time.Second

// startFederated starts cluster id of three voters, every one a gateway, on
// loopback sockets; wanSeed is a gateway of another cluster ("" for the first).
// tune, if set, adjusts each node's config before it starts.
func startFederated(t *testing.T, id, state, wanSeed string, tune ...func(*Config)) []*Node {
	t.Helper()
	voters := []string{id + "1", id + "2", id + "3"}
	var nodes []*Node
	for i, name := range voters {
		cfg := Config{Name: name, Bind: "127.0.0.1:0", Control: "127.0.0.1:0", ClusterLabel: "fed-" + id,
			Keys: [][]byte{testKey}, Voters: voters, Voter: true, DataDir: t.TempDir(),
			Logger: slog.New(slog.DiscardHandler),
			Federation: &Federation{Cluster: id, Clusters: []string{"a", "b"}, Region: "region-" + id, State: state,
				PromoteAfter: promoteAfter, Gateway: &Gateway{Bind: "127.0.0.1:0"}}}
		if i > 0 {
			cfg.Join = []string{nodes[0].AdvertiseAddr()}
		}
		if wanSeed != "" {
			cfg.Federation.Gateway.Join = []string{wanSeed}
		} else if i > 0 {
			cfg.Federation.Gateway.Join = []string{nodes[0].fed.wan.AdvertiseAddr()}
		}
		for _, f := range tune {
			f(&cfg)
		}
		n, err := Start(t.Context(), cfg)
		if err != nil {
			t.Fatalf("Start(%s): %v", name, err)
		}
		t.Cleanup(func() { n.Close() })
		if err := n.SetMeta(ControlMetaKey, "http://"+n.ControlAddr()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// serving is the node of nodes that answers as the active registry, if one does;
// a second one fails the test.
func serving(t *testing.T, nodes []*Node) (*Node, cluster.Descriptor) {
	t.Helper()
	var who *Node
	var d cluster.Descriptor
	for _, n := range nodes {
		v, err := n.Clusters()
		if errors.Is(err, ErrClosed) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !v.Serving {
			continue
		}
		if who != nil {
			t.Fatalf("%s and %s both answer as the active registry", who.Name(), n.Name())
		}
		who, d = n, descriptorOf(v.Descriptors, v.Self)
	}
	return who, d
}

// TestFederationLoopback: two clusters of three agents on loopback sockets, every
// agent a voter and a gateway, at the default timers but PromoteAfter (3 s). Cluster a starts active; every agent of both lists
// both clusters and the other's endpoints. A planned promotion of b (asked of
// a's lease holder through the control API) drains a and makes b active with a
// higher failover version. Then every agent of b is killed, and a promotes
// itself once b has been unreachable for PromoteAfter. At every sample at most
// one agent of the federation answers as active. The figures are logged:
// docs/benchmarks.md ("multi-cluster, loopback").
func TestFederationLoopback(t *testing.T) {
	a := startFederated(t, "a", "active", "")
	b := startFederated(t, "b", "passive", a[0].fed.wan.AdvertiseAddr())
	all := append(append([]*Node{}, a...), b...)
	start := time.Now()
	federatedSee(t, all)
	t.Logf("federation of 2x3 agents up, a active: %v", time.Since(start).Round(time.Millisecond))

	// A watcher of an agent of a that is not the holder hears the handoff.
	watchCtx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	req, _ := http.NewRequestWithContext(watchCtx, http.MethodGet, "http://"+a[1].ControlAddr()+"/control/v1/clusters?watch=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	actives := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var cs control.Clusters
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && json.Unmarshal([]byte(data), &cs) == nil {
				select {
				case actives <- cs.Active:
				default:
				}
			}
		}
	}()

	holder, before := serving(t, all)
	c := &control.Client{Base: "http://" + holder.ControlAddr()}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := c.PromoteCluster(ctx, "b", false); err != nil {
		t.Fatalf("planned promotion of b through %s: %v", holder.Name(), err)
	}
	var after cluster.Descriptor
	eventually(t, 10*time.Second, "b active after the planned promotion", func() bool {
		var n *Node
		n, after = serving(t, all)
		return n != nil && n.cfg.Federation.Cluster == "b"
	})
	handoff := time.Since(t0)
	if after.Version <= before.Version || after.State != cluster.Active {
		t.Fatalf("b took over as %+v, a was %+v: want a higher failover version", after, before)
	}
	for seen := ""; seen != "b"; {
		select {
		case seen = <-actives:
		case <-time.After(5 * time.Second):
			t.Fatal("the watch stream of a2 did not report b active after the handoff")
		}
	}
	eventually(t, 5*time.Second, "a passive after the handoff", func() bool {
		v, _ := a[0].Clusters()
		return descriptorOf(v.Descriptors, "a").State == cluster.Passive
	})

	t1 := time.Now()
	for _, n := range b {
		n.Close()
	}
	var promoted cluster.Descriptor
	eventually(t, 15*time.Second, "a promoted itself after b died", func() bool {
		var n *Node
		n, promoted = serving(t, a)
		return n != nil
	})
	failover := time.Since(t1)
	if promoted.Version <= after.Version {
		t.Fatalf("a promoted itself at %+v, b was active at %+v: want a higher version", promoted, after)
	}
	if failover < promoteAfter {
		t.Fatalf("a promoted itself %v after b died, before PromoteAfter (%v)", failover, promoteAfter)
	}
	t.Logf("planned handoff a->b: %d ms (version %d -> %d); unplanned failover b->a after killing all of b: %d ms (PromoteAfter %v, version %d)",
		handoff.Milliseconds(), before.Version, after.Version, failover.Milliseconds(), promoteAfter, promoted.Version)
}

// withTLS gives a federated node a node certificate of pki for its cluster
// (its cluster label the federation's id, as TLS requires of a gateway).
func withTLS(pki *testPKI, audit *syncBuffer) func(*Config) {
	return func(c *Config) {
		c.ClusterLabel = c.Federation.Cluster
		c.TLS = pki.sourceIn(c.Federation.Cluster, identity.RoleNode, c.Name)
		if audit != nil {
			c.AuditLog = audit
		}
	}
}

// federatedSee waits until an agent of a answers as the active registry and
// every agent sees both clusters, a active, and the other's endpoints.
func federatedSee(t *testing.T, all []*Node) {
	t.Helper()
	eventually(t, 15*time.Second, "a active and every agent sees both clusters and the other's endpoints", func() bool {
		if n, _ := serving(t, all); n == nil || n.cfg.Federation.Cluster != "a" {
			return false
		}
		for _, n := range all {
			v, err := n.Clusters()
			if err != nil || v.Active != "a" || len(v.Remotes) != 1 {
				return false
			}
			for _, r := range v.Remotes {
				if !r.Reachable || len(r.Control) == 0 {
					return false
				}
			}
		}
		return true
	})
}

// TestFederationMutualTLS: two clusters whose gateways hold node certificates
// of one CA (clusters a and b) federate over a WAN pool on mutual TLS, each
// gateway named NAME@CLUSTER by its certificate. A gateway whose certificate
// another CA signed never enters the pool: its streams are refused and audited.
// A gateway with a valid certificate of cluster b that publishes a record of
// cluster a is refused by every gateway, counted and audited, and a's
// descriptor stays its own.
func TestFederationMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	audit := &syncBuffer{}
	a := startFederated(t, "a", "active", "", withTLS(pki, audit))
	b := startFederated(t, "b", "passive", a[0].fed.wan.AdvertiseAddr(), withTLS(pki, nil))
	all := append(append([]*Node{}, a...), b...)
	federatedSee(t, all)
	for _, m := range a[0].fed.wan.Members() {
		if id := a[0].fed.wan.certs.certOf(m.Name); id == nil {
			t.Fatalf("a1 holds no certificate for WAN member %s", m.Name)
		}
	}
	seed := a[0].fed.wan.AdvertiseAddr()

	// Another CA, same trust domain and cluster names: refused.
	foreign := newTestPKI(t)
	wanCfg := func(src *identity.Source, name string) Config {
		return Config{Name: name, Bind: "127.0.0.1:0", ClusterLabel: DefaultWANLabel, Keys: [][]byte{testKey},
			TLS: src, wan: true, Logger: slog.New(slog.DiscardHandler),
			Meta: map[string]string{WANClusterKey: "b"}}
	}
	intruder, err := Start(t.Context(), wanCfg(foreign.sourceIn("b", identity.RoleNode, "b9"), "b9@b"))
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := intruder.Join(ctx, seed); err == nil {
		t.Fatal("a gateway with a certificate of another CA joined the WAN pool")
	}
	// The intruder refuses a1's certificate first (TLS 1.3: the server's comes
	// first), so a1's record names no identity.
	eventually(t, 5*time.Second, "a1's WAN pool audits the refused handshake", func() bool {
		for _, r := range audit.records(t) {
			if r.Event == "tls_refused" && r.Node == "a1@a" && r.Route == "mesh stream" {
				return true
			}
		}
		return false
	})

	// A certificate of b speaking for a: refused, counted, audited.
	liar, err := Start(t.Context(), wanCfg(pki.sourceIn("b", identity.RoleNode, "b8"), "b8@b"))
	if err != nil {
		t.Fatal(err)
	}
	defer liar.Close()
	fake, _ := json.Marshal(cluster.Descriptor{ID: "a", State: cluster.Draining, Handoff: "b", Version: 1 << 40, Epoch: 1 << 40})
	if err := liar.SetMeta(WANClusterKey, "a"); err != nil {
		t.Fatal(err)
	}
	if err := liar.SetMeta(WANDescriptorKey, string(fake)); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel2()
	if err := liar.Join(ctx2, seed); err != nil {
		t.Fatalf("a gateway of b with a valid certificate could not join: %v", err)
	}
	eventually(t, 10*time.Second, "every gateway refuses b8@b's record of a", func() bool {
		for _, n := range all {
			if n.fed.refused.Load() == 0 {
				return false
			}
		}
		return true
	})
	found := false
	for _, r := range audit.records(t) {
		if r.Event == "wan_record_refused" && r.Member == "b8@b" && r.Cluster == "a" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no wan_record_refused audit of b8@b speaking for a: %s", audit)
	}
	time.Sleep(3 * gatewayInterval) // a relay of the lie would have landed by now
	for _, n := range all {
		v, _ := n.Clusters()
		if d := descriptorOf(v.Descriptors, "a"); d.Version >= 1<<40 || d.State != cluster.Active {
			t.Fatalf("%s took the lie: a is %+v", n.Name(), d)
		}
		if v.Active != "a" {
			t.Fatalf("%s: active %q, want a", n.Name(), v.Active)
		}
	}
	for _, n := range all {
		if got := n.fed.refused.Load(); got != 1 {
			t.Fatalf("%s counted %d refusals of one lie, want 1 (counted once, not every interval)", n.Name(), got)
		}
	}

	// The WAN pool enrolls nobody: b8's certificate, asking a1's WAN port for
	// the keyring with a client that trusts any server, gets nothing.
	src := pki.sourceIn("b", identity.RoleNode, "b8")
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{EnrollALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Certificate(), nil }}
	ctx3, cancel3 := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel3()
	if e, err := enrollAt(ctx3, seed, cfg, enrollRequest{Name: "b8"}); err == nil || len(e.Keys) > 0 {
		t.Fatalf("a gateway of b enrolled at a1's WAN pool: %d keys, err %v", len(e.Keys), err)
	}
}

// A TLS gateway's federation id must be its certificate's cluster: in the WAN
// pool it speaks only for that one.
func TestTLSGatewayNeedsItsCertificatesCluster(t *testing.T) {
	pki := newTestPKI(t)
	cfg := func(certCluster string) Config {
		return Config{Name: "a1", Bind: "127.0.0.1:0", ClusterLabel: certCluster, Keys: [][]byte{testKey},
			TLS: pki.sourceIn(certCluster, identity.RoleNode, "a1"), Voters: []string{"a1"}, Voter: true, DataDir: t.TempDir(),
			Federation: &Federation{Cluster: "a", Clusters: []string{"a", "b"}, Gateway: &Gateway{Bind: "127.0.0.1:0"}}}
	}
	if err := cfg("a").Validate(); err != nil {
		t.Fatalf("a TLS gateway of cluster a with a certificate of a: %v", err)
	}
	err := cfg("b").Validate()
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Federation.Cluster") {
		t.Fatalf("a gateway of a with a certificate of b: %v, want ErrInvalidConfig naming Federation.Cluster", err)
	}
}

// TestClientFollowsClusterFailover: a client.Client with FollowActive, given
// only cluster a's agents, follows a planned promotion of b: it switches to the
// control URLs b's gateways relay, and its Owner answers from b's shard map. The
// time from the promotion request until the client follows is logged as
// client_switch (docs/benchmarks.md, "multi-cluster, loopback").
func TestClientFollowsClusterFailover(t *testing.T) {
	const shards = 16
	withShards := func(c *Config) { c.Shards = shards }
	a := startFederated(t, "a", "active", "", withShards)
	b := startFederated(t, "b", "passive", a[0].fed.wan.AdvertiseAddr(), withShards)
	all := append(append([]*Node{}, a...), b...)
	eventually(t, 20*time.Second, "a active, b's control URLs relayed to a, a shard map in each cluster", func() bool {
		if n, _ := serving(t, all); n == nil || n.cfg.Federation.Cluster != "a" {
			return false
		}
		for _, n := range a {
			v, err := n.Clusters()
			if err != nil || len(v.Remotes) != 1 {
				return false
			}
			for _, r := range v.Remotes {
				if !r.Reachable || len(r.Control) == 0 {
					return false
				}
			}
		}
		return a[0].ShardMap() != nil && b[0].ShardMap() != nil
	})
	// ownerIn is the owner of key in n's own map: what the client must answer.
	ownerIn := func(n *Node, key string) string { m := n.ShardMap(); return m.Owner(m.ShardForString(key)) }
	var urls []string
	for _, n := range a {
		urls = append(urls, "http://"+n.ControlAddr())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Agents: urls, FollowActive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cl := c.Table().Cluster(); cl.Self != "a" || cl.Active != "a" {
		t.Fatalf("client follows %+v before the promotion, want a active", cl)
	}
	eventually(t, 10*time.Second, "the client answers Owner from a's map", func() bool {
		m, ok := c.Owner("user-42")
		return ok && m.Name == ownerIn(a[0], "user-42")
	})

	holder, before := serving(t, all)
	t0 := time.Now()
	if _, err := (&control.Client{Base: "http://" + holder.ControlAddr()}).PromoteCluster(ctx, "b", false); err != nil {
		t.Fatalf("planned promotion of b: %v", err)
	}
	var handoff time.Duration
	eventually(t, 15*time.Second, "the client follows b and answers from b's map", func() bool {
		if handoff == 0 {
			if n, _ := serving(t, all); n != nil && n.cfg.Federation.Cluster == "b" {
				handoff = time.Since(t0)
			}
		}
		cl := c.Table().Cluster()
		if cl.Self != "b" || cl.Active != "b" || cl.Version <= before.Version {
			return false
		}
		for _, key := range []string{"user-42", "user-7", "order-1"} {
			if m, ok := c.Owner(key); !ok || m.Name != ownerIn(b[0], key) {
				return false
			}
		}
		return true
	})
	clientSwitch := time.Since(t0)
	if !strings.Contains(c.Agent(), b[0].ControlAddr()) && !strings.Contains(c.Agent(), b[1].ControlAddr()) && !strings.Contains(c.Agent(), b[2].ControlAddr()) {
		t.Fatalf("the client streams from %s, not an agent of b", c.Agent())
	}
	t.Logf("planned promotion a->b: b serving after %d ms, client_switch %d ms (version %d -> %d)",
		handoff.Milliseconds(), clientSwitch.Milliseconds(), before.Version, c.Table().Cluster().Version)
}
