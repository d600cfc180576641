package node

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/identity"
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
		names := []string{"n0", "n1", "n2", "n4", "n5"}
		audits := make([]*syncBuffer, len(names))
		nodes := make([]*Node, len(names))
		for i, name := range names {
			var join []string
			if i > 0 {
				join = []string{"10.0.0.0:7946"}
			}
			audits[i] = &syncBuffer{}
			nodes[i] = startMem(t, tlsMemConfig(t, mn, pki, i, name, audits[i], join...))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		honest := []*Node{nodes[0], nodes[1], nodes[2]} // n4 crashes below; n5 is the forger
		waitFor(t, 10*time.Second, "five members everywhere", func() bool {
			for _, n := range nodes {
				if len(n.Members()) != 5 || !allSee(nodes, n.Name(), swim.StatusAlive)() {
					return false
				}
			}
			return true
		})
		tool, err := mn.Listen("10.0.0.6:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer tool.Close()
		kr, err := wire.NewKeyring(testKey)
		if err != nil {
			t.Fatal(err)
		}
		n5key := newCertStore(nodes[4].cfg.TLS, time.Now) // signs with n5's key, as n5 would
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
// relay is made by the current key) and no honest claim is refused.
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
		before := make([]uint64, len(nodes))
		for i, n := range nodes {
			before[i] = n.Local().Incarnation
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
		for _, n := range nodes {
			if st := n.Stats(); st.ClaimsForged+st.ClaimsUnsigned+st.SignFailures != 0 {
				t.Errorf("%s: forged %d, unsigned %d, sign failures %d", n.Name(), st.ClaimsForged, st.ClaimsUnsigned, st.SignFailures)
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
	st := newCertStore(src, time.Now)
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
