package node

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// TestGossipCannotSpeakAsAnotherName (issue 14: "a node whose certificate names
// n5 cannot gossip or stream as n4"; docs/security.md, "stolen node key"): n0,
// n1, n2, n4 and n5 form a cluster with certificates and the packet key. A tool
// with n5's certificate key and the packet key sends sealed UDP packets signed
// with n5's key: an Alive naming n4 at the tool's address (hijack), a Leave of
// the live n1, and, once n4 has crashed, Alives refuting its suspicion on its
// behalf. No view ever shows the forged claims (n4 goes dead everywhere), and
// the refusals are counted and audited.
func TestGossipCannotSpeakAsAnotherName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := newTestPKI(t)
		mn := NewMemNetwork()
		nodes, audits := startForgeryCluster(t, mn, pki, false)
		honest := []*Node{nodes[0], nodes[1], nodes[2]} // n4 crashes below; n5 is the forger
		waitFor(t, 10*time.Second, "five members everywhere", func() bool {
			for _, n := range nodes {
				if len(n.Members()) != 5 || !allSee(nodes, n.Name(), swim.StatusAlive)() {
					return false
				}
			}
			return true
		})
		tool, kr, n5key := forgerOf(t, mn, nodes[4])
		send := func(msgs ...wire.Message) {
			t.Helper()
			p := wire.NewPacker(wire.DefaultMTU-wire.SealOverhead, wire.ClusterHash(""))
			for _, m := range msgs {
				p.Add(m)
			}
			sealed, err := wire.Seal(kr, p.Bytes(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range honest {
				if err := tool.WriteTo(sealed, n.AdvertiseAddr()); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(logEvery) // past the audit's rate limit: each forgery gets its line
			synctest.Wait()
		}
		alive := func(node, addr string, inc uint64) *wire.Alive {
			a := &wire.Alive{Node: node, Addr: addr, Incarnation: inc, ProtoMin: wire.MinProtocolVersion, ProtoMax: wire.ProtocolVersion}
			a.Sig = n5key.Sign(wire.AliveClaim("", node, addr, inc, a.ProtoMin, a.ProtoMax, a.Features))
			return a
		}
		_, inc4 := statusOf(nodes[0], "n4")
		_, inc1 := statusOf(nodes[0], "n1")

		send(alive("n4", tool.Addr(), inc4+1))
		send(&wire.Leave{Node: "n1", Incarnation: inc1, Sig: n5key.Sign(wire.LeaveClaim("", "n1", inc1))})
		for _, n := range honest {
			for _, m := range n.Members() {
				if m.Name == "n4" && m.Addr == tool.Addr() || m.Name == "n1" && m.Status != swim.StatusAlive {
					t.Fatalf("%s took a forged claim: %+v", n.Name(), m)
				}
			}
		}
		// n4 crashes; the forger refutes its suspicion for it, again and again.
		nodes[3].Close()
		dead := allSee(honest, "n4", swim.StatusDead)
		for i := uint64(1); !dead(); i++ {
			if i > 30 {
				t.Fatal("n4 never went dead: the forged refutations masked its crash")
			}
			send(alive("n4", nodes[3].AdvertiseAddr(), inc4+i))
		}
		for i, n := range honest {
			// n1 refutes the Leave about itself instead of judging it.
			wantLeaves, wantForged := 1, uint64(3)
			if n.Name() == "n1" {
				wantLeaves, wantForged = 0, 2
			}
			st := n.Stats()
			if st.ClaimsForged < wantForged {
				t.Errorf("%s counted %d forged claims, want at least %d", n.Name(), st.ClaimsForged, wantForged)
			}
			var alives, leaves int
			for _, r := range audits[i].records(t) {
				if r.Event == "claim_forged" && r.Remote == tool.Addr() {
					if strings.HasPrefix(r.Reason, "leave") {
						leaves++
					} else {
						alives++
					}
				}
			}
			if alives < 2 || leaves != wantLeaves {
				t.Errorf("%s audited %d forged alives and %d forged leaves from the tool, want 2+ and %d:\n%s", n.Name(), alives, leaves, wantLeaves, audits[i])
			}
		}
		if got := forgedMetric(t, nodes[0]); got < 3 {
			t.Errorf(`omnirelay_claims_refused_total{reason="forged"} = %v, want at least 3`, got)
		}
	})
}

// TestSignedGossipSurvivesCertificateRotation: after every node's certificate is
// replaced, each re-signs its Alive at a new incarnation (so the proof others
// relay is made by the current key) and re-issues its metadata signed by the new
// key, every member takes it, and no honest claim or cell is refused.
func TestSignedGossipSurvivesCertificateRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := newTestPKI(t)
		mn := NewMemNetwork()
		nodes := make([]*Node, 4)
		for i := range nodes {
			var join []string
			if i > 0 {
				join = []string{"10.0.0.0:7946"}
			}
			nodes[i] = startMem(t, tlsMemConfig(t, mn, pki, i, fmt.Sprintf("n%d", i), nil, join...))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		waitFor(t, 10*time.Second, "four members everywhere", func() bool {
			for _, n := range nodes {
				if !allSee(nodes, n.Name(), swim.StatusAlive)() {
					return false
				}
			}
			return true
		})
		for _, n := range nodes {
			if err := n.SetMeta("zone", "z-"+n.Name()); err != nil {
				t.Fatal(err)
			}
		}
		// metaEpoch is the epoch of o's zone cell as n holds it.
		metaEpoch := func(n, o *Node) uint64 {
			var e crdt.Entry
			n.do(func() { e, _ = n.stack.Meta().Lookup(o.Name(), "zone") })
			return e.Version.Epoch
		}
		waitFor(t, 10*time.Second, "every zone everywhere", func() bool {
			for _, n := range nodes {
				for _, o := range nodes {
					if n.Meta(o.Name())["zone"] != "z-"+o.Name() {
						return false
					}
				}
			}
			return true
		})
		before := make([]uint64, len(nodes))
		metaBefore := make([]uint64, len(nodes))
		for i, n := range nodes {
			before[i] = n.Local().Incarnation
			metaBefore[i] = metaEpoch(n, n)
			pki.source(identity.RoleNode, n.Name()) // new certificate files
		}
		waitFor(t, TLSReloadInterval+10*time.Second, "every node re-signed and seen at its new incarnation", func() bool {
			for i, n := range nodes {
				for _, o := range nodes {
					if _, inc := statusOf(o, n.Name()); inc <= before[i] {
						return false
					}
				}
			}
			return true
		})
		waitFor(t, 10*time.Second, "every zone re-issued under the new keys, everywhere", func() bool {
			for _, n := range nodes {
				for i, o := range nodes {
					if metaEpoch(n, o) <= metaBefore[i] || n.Meta(o.Name())["zone"] != "z-"+o.Name() {
						return false
					}
				}
			}
			return true
		})
		for _, n := range nodes {
			if st := n.Stats(); st.ClaimsForged+st.ClaimsUnsigned+st.SignFailures != 0 {
				t.Errorf("%s: forged %d, unsigned %d, sign failures %d", n.Name(), st.ClaimsForged, st.ClaimsUnsigned, st.SignFailures)
			}
			if st := n.stack.MetaStats(); st.Forged+st.Unsigned+st.OverBudget != 0 {
				t.Errorf("%s refused honest metadata: %+v", n.Name(), st)
			}
			if got := n.certs.certOf(n.Name()); got == nil || !got.Equal(n.cfg.TLS.Certificate().Leaf) {
				t.Errorf("%s does not hold its own new certificate", n.Name())
			}
		}
	})
}

// forgedMetric reads omnirelay_claims_refused_total{reason="forged"} from n's
// registry.
func forgedMetric(t *testing.T, n *Node) float64 {
	t.Helper()
	mfs, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_claims_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "forged" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal("omnirelay_claims_refused_total{reason=\"forged\"} is not exported")
	return 0
}

// A full certificate store makes room for a new member: expired names first,
// then any other but this node's own.
func TestCertStoreMakesRoomForNewMembers(t *testing.T) {
	pki := newTestPKI(t)
	src := pki.source(identity.RoleNode, "n0")
	st := newCertStore(Config{}, src, time.Now)
	leaf := src.Certificate().Leaf
	expired := *leaf
	expired.NotAfter = time.Now().Add(-time.Hour)
	for i := range maxCertNames - 1 {
		c := expired
		c.Raw = []byte(fmt.Sprintf("cert-%d", i)) // distinct hashes
		if i%2 == 0 {
			c = *leaf
			c.Raw = []byte(fmt.Sprintf("live-%d", i))
		}
		st.addVerified(fmt.Sprintf("m%d", i), []*x509.Certificate{&c})
	}
	st.addVerified("new", []*x509.Certificate{leaf})
	if st.certOf("new") == nil || st.certOf("n0") == nil {
		t.Fatal("the full store did not take a new member, or dropped our own certificate")
	}
	if got := len(st.byName); got > maxCertNames/2+2 {
		t.Errorf("%d names held, want the expired ones gone", got)
	}
	if st.evicted.Load() != 0 {
		t.Errorf("%d live names evicted while expired ones were there", st.evicted.Load())
	}
}

// TestGossipCannotWriteAnotherMembersMetadata (issue 14, "a node whose
// certificate names n5 cannot gossip or stream as n4", for metadata;
// PROTOCOL.md section 13, "Signatures"): voters n0..n2 and non-voters n4 and n5
// form a cluster with certificates. A tool holding n5's certificate key and the
// packet key writes n4's grpc cell and a cluster-map drain.n4 cell under the
// leader's epoch, each signed with n5's key, in sealed UDP MetaDeltas and in a
// push-pull over mutual TLS as n5 (where n4's map also comes with a floor that
// would delete grpc); and it opens a later lease epoch naming itself the
// holder. No view shows any of it: the forgeries are counted and audited, the
// epoch nobody confirmed is counted as an unknown signer, and the non-voter n4
// keeps the real leader.
func TestGossipCannotWriteAnotherMembersMetadata(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := newTestPKI(t)
		mn := NewMemNetwork()
		nodes, audits := startForgeryCluster(t, mn, pki, true)
		honest := nodes[:4]
		n4 := nodes[3]
		if err := n4.SetMeta("grpc", "10.0.0.3:9000"); err != nil {
			t.Fatal(err)
		}
		var leader LeaderInfo
		waitFor(t, 20*time.Second, "one leader and n4's grpc everywhere", func() bool {
			leader = nodes[0].Leader()
			for _, n := range nodes {
				if l := n.Leader(); l.Holder == "" || l != leader && (l.Holder != leader.Holder || l.Epoch != leader.Epoch) {
					return false
				}
				if n.Meta("n4")["grpc"] != "10.0.0.3:9000" || len(n.Members()) != 5 {
					return false
				}
			}
			return true
		})
		var grpcAt, clusterAt crdt.Version
		nodes[0].do(func() {
			e, _ := nodes[0].stack.Meta().Lookup("n4", "grpc")
			grpcAt = e.Version
			l, _ := nodes[0].stack.Meta().Lookup(crdt.Cluster, stack.LeaderKey)
			clusterAt = l.Version
		})
		tool, kr, n5key := forgerOf(t, mn, nodes[4])
		cell := func(name, key, value string, v crdt.Version) crdt.Delta {
			since := crdt.Version{Epoch: v.Epoch, Counter: v.Counter - 1}
			return crdt.Delta{Node: name, Since: since, Have: v, Floor: crdt.Version{Epoch: v.Epoch},
				Entries: []crdt.Entry{{Key: key, Value: []byte(value), Version: v,
					Sig: n5key.Sign(crdt.CellClaim("", name, key, v, false, []byte(value)))}}}
		}
		bump := func(v crdt.Version, n uint64) crdt.Version {
			return crdt.Version{Epoch: v.Epoch, Counter: v.Counter + n}
		}
		hijack := cell("n4", "grpc", tool.Addr(), bump(grpcAt, 1))
		drain := cell(crdt.Cluster, "drain.n4", "1", bump(clusterAt, 100))
		usurp := cell(crdt.Cluster, stack.LeaderKey, "n5", crdt.Version{Epoch: leader.Epoch + 1, Counter: 1})
		// No view shows a forgery, looked at right after each one (n4 itself
		// would refute a hijack of its map quickly, so the others get it first).
		views := func(when string) {
			t.Helper()
			for _, n := range honest {
				var drained bool
				n.do(func() { _, drained = n.stack.Meta().Get(crdt.Cluster, "drain.n4") })
				if got := n.Meta("n4")["grpc"]; got != "10.0.0.3:9000" || drained {
					t.Errorf("after %s, %s shows n4's grpc %q, drain.n4 %v", when, n.Name(), got, drained)
				}
				if l := n.Leader(); l.Holder != leader.Holder {
					t.Errorf("after %s, %s names %q the leader, want %q", when, n.Name(), l.Holder, leader.Holder)
				}
			}
		}
		send := func(d crdt.Delta, to []*Node) {
			p := wire.NewPacker(wire.DefaultMTU-wire.SealOverhead, wire.ClusterHash(""))
			p.Add(&wire.MetaDelta{Payload: crdt.AppendDelta(nil, d)})
			sealed, err := wire.Seal(kr, p.Bytes(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range to {
				if err := tool.WriteTo(sealed, n.AdvertiseAddr()); err != nil {
					t.Fatal(err)
				}
			}
			synctest.Wait()
		}
		send(hijack, nodes[:3])
		views("the hijack of grpc")
		send(hijack, []*Node{n4})
		time.Sleep(logEvery) // past the audit's rate limit: each forgery gets its line
		send(drain, honest)
		views("the drain mark")
		time.Sleep(logEvery)
		send(usurp, honest)
		views("the usurped epoch")
		time.Sleep(logEvery)
		// The push-pull, as n5 over mutual TLS: the cluster-map cell, then n4's
		// map as a full delta whose floor would delete grpc, under a head signed
		// by n5.
		top := bump(grpcAt, 5)
		wipe := crdt.Delta{Node: "n4", Have: top, Floor: top}
		wipe.Head = n5key.Sign(crdt.HeadClaim("", "n4", top, crdt.LiveHash(nil)))
		_, inc5 := statusOf(nodes[0], "n5")
		pp := &wire.PushPull{Nodes: []wire.NodeState{{Name: "n5", Addr: nodes[4].AdvertiseAddr(), Incarnation: inc5}},
			Meta: crdt.AppendSnapshot(nil, crdt.Snapshot{Maps: []crdt.Delta{drain, wipe}})}
		if _, err := pushPullAs(t, tool, nodes[4].cfg.TLS, kr, nodes[0], pp); err != nil {
			t.Fatalf("the push-pull as n5 was not answered: %v", err)
		}
		time.Sleep(logEvery)
		synctest.Wait()

		views("the push-pull")
		for i, n := range honest {
			want := 2.0 // the UDP hijack and drain
			if n == nodes[0] {
				want = 4 // and the push-pull's two maps
			}
			if got := forgedMetric(t, n); got < want {
				t.Errorf(`%s: omnirelay_claims_refused_total{reason="forged"} = %v, want at least %v`, n.Name(), got, want)
			}
			if st := n.stack.MetaStats(); st.UnknownSigner == 0 {
				t.Errorf("%s did not count the unconfirmed epoch as an unknown signer: %+v", n.Name(), st)
			}
			var lines []string
			for _, r := range audits[i].records(t) {
				if r.Event == "claim_forged" && strings.HasPrefix(r.Reason, "meta") && strings.HasPrefix(r.Remote, "10.0.0.6") {
					lines = append(lines, r.Reason)
				}
			}
			all := strings.Join(lines, "\n")
			if !strings.Contains(all, `"grpc"`) || !strings.Contains(all, `"drain.n4"`) || strings.Contains(all, stack.LeaderKey) {
				t.Errorf("%s audited forged metadata:\n%s\nwant grpc and drain.n4, and not the unconfirmed epoch", n.Name(), all)
			}
		}
	})
}

// startForgeryCluster starts n0, n1, n2, n4 and n5 (at 10.0.0.0..4) with
// certificates of pki and audit logs, n0..n2 voters if voters is set, and closes
// them when the test ends.
func startForgeryCluster(t *testing.T, mn *MemNetwork, pki *testPKI, voters bool) ([]*Node, []*syncBuffer) {
	names := []string{"n0", "n1", "n2", "n4", "n5"}
	audits := make([]*syncBuffer, len(names))
	nodes := make([]*Node, len(names))
	for i, name := range names {
		var join []string
		if i > 0 {
			join = []string{"10.0.0.0:7946"}
		}
		audits[i] = &syncBuffer{}
		cfg := tlsMemConfig(t, mn, pki, i, name, audits[i], join...)
		if voters {
			cfg.Voters, cfg.Voter = leaderVoters, i < len(leaderVoters)
			if cfg.Voter {
				cfg.DataDir = t.TempDir()
			}
		}
		nodes[i] = startMem(t, cfg)
		t.Cleanup(func() { nodes[i].Close() })
	}
	return nodes, audits
}

// pushPullAs sends pp to node to over a mutual-TLS stream from tr with the
// certificate of src, sealed with kr, and returns the reply frame (an error if
// the node answered none within 5 s).
func pushPullAs(t *testing.T, tr Transport, src *identity.Source, kr *wire.Keyring, to *Node, pp *wire.PushPull) ([]byte, error) {
	t.Helper()
	conn, err := tr.Dial(t.Context(), to.AdvertiseAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := tls.Client(conn, src.ClientConfig(identity.Policy{Roles: []identity.Role{identity.RoleNode}, Name: to.Name()}))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake as %s: %v", src.Identity().Name, err)
	}
	f, err := wire.EncodeFrame(pp, wire.ClusterHash(""))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := wire.SealFrame(kr, f, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write(sealed)
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	return wire.ReadFrame(tc, wire.DefaultMaxFrame)
}

// forgerOf is the forging tool of the tests above: a transport at 10.0.0.6, the
// packet keyring, and a signer with n5's certificate key, as n5 would sign.
func forgerOf(t *testing.T, mn *MemNetwork, n5 *Node) (Transport, *wire.Keyring, *certStore) {
	tool, err := mn.Listen("10.0.0.6:7946")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tool.Close() })
	kr, err := wire.NewKeyring(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return tool, kr, newCertStore(Config{}, n5.cfg.TLS, time.Now)
}
