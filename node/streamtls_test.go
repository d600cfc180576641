package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// tlsMemConfig is node i of the in-memory network at 10.0.0.i, with the packet key
// and a node certificate of pki for name.
func tlsMemConfig(t *testing.T, mn *MemNetwork, pki *testPKI, i int, name string, audit *syncBuffer, join ...string) Config {
	cfg := memConfig(t, mn, name, fmt.Sprintf("10.0.0.%d:7946", i), join...)
	cfg.Keys = [][]byte{testKey}
	cfg.TLS = pki.source(identity.RoleNode, name)
	if audit != nil { // a nil *syncBuffer would be a non-nil io.Writer
		cfg.AuditLog = audit
	}
	return cfg
}

// TestMeshStreamsNeedACertificateOfTheCluster: three nodes with certificates of
// one CA form a cluster over mutual TLS streams; a fourth with the packet key but
// a certificate of another CA fails to join, its error says why, and the seed's
// audit log has the refused handshake with the joiner's address.
func TestMeshStreamsNeedACertificateOfTheCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki, other := newTestPKI(t), newTestPKI(t) // in the bubble: certificates valid at its clock
		mn := NewMemNetwork()
		audit := &syncBuffer{}
		nodes := []*Node{startMem(t, tlsMemConfig(t, mn, pki, 0, "n0", audit))}
		for i := 1; i < 3; i++ {
			nodes = append(nodes, startMem(t, tlsMemConfig(t, mn, pki, i, fmt.Sprintf("n%d", i), nil, "10.0.0.0:7946")))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		waitFor(t, 10*time.Second, "three members everywhere", func() bool {
			for _, n := range nodes {
				if len(n.Members()) != 3 {
					return false
				}
			}
			return true
		})
		cfg := tlsMemConfig(t, mn, other, 3, "n3", nil, "10.0.0.0:7946")
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err := Start(ctx, cfg)
		if err == nil || !errors.Is(err, ErrNoSeedAnswered) || !strings.Contains(err.Error(), "not signed by a trusted CA") {
			t.Fatalf("a node with a foreign certificate joined or did not say why: %v", err)
		}
		refusals := func(reason string) (k int) {
			for _, r := range audit.records(t) {
				if r.Event == "tls_refused" && r.Remote != "" && r.Route == "mesh stream" && strings.Contains(r.Reason, reason) {
					k++ // MemNetwork pipes have no address: Remote is "pipe"
				}
			}
			return k
		}
		if refusals("bad certificate") == 0 {
			t.Fatalf("the seed did not audit the refused handshake: %s", audit)
		}
		// A node with the key but no certificate: its plain frame is no handshake.
		plain := memConfig(t, mn, "n4", "10.0.0.4:7946", "10.0.0.0:7946")
		plain.Keys = [][]byte{testKey}
		ctx2, cancel2 := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel2()
		if _, err := Start(ctx2, plain); err == nil {
			t.Fatal("a node without a certificate joined")
		} else {
			t.Logf("the joiner without a certificate says: %v", err)
		}
		if refusals("does not look like a TLS handshake") == 0 {
			t.Fatalf("the seed did not audit the plain stream: %s", audit)
		}
		for _, n := range nodes {
			if len(n.Members()) != 3 {
				t.Fatalf("%s has %d members after the refusal", n.Name(), len(n.Members()))
			}
		}
	})
}

// TestStreamPeerCannotSpeakAsAnotherName: a client with n5's certificate and the
// packet key opens a mesh stream to n0 and sends push-pulls that announce n4 (no
// state of its own, or n4 alive at its own address): both are refused, counted
// and audited, and n0 never learns n4.
func TestStreamPeerCannotSpeakAsAnotherName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := newTestPKI(t)
		mn := NewMemNetwork()
		audit := &syncBuffer{}
		n0 := startMem(t, tlsMemConfig(t, mn, pki, 0, "n0", audit))
		defer n0.Close()
		tr, err := mn.Listen("10.0.0.5:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		n5 := pki.source(identity.RoleNode, "n5")
		kr, err := wire.NewKeyring(testKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, nodes := range [][]wire.NodeState{
			{{Name: "n4", Addr: "10.0.0.5:7946", Incarnation: 9}},
			{{Name: "n5", Addr: "10.0.0.5:7946"}, {Name: "n4", Addr: "10.0.0.5:7946", Incarnation: 9}},
		} {
			if reply, err := pushPullAs(t, tr, n5, kr, n0, &wire.PushPull{Join: true, Nodes: nodes}); err == nil {
				t.Errorf("push-pull %v from n5 answered (%d bytes)", nodes, len(reply))
			}
		}
		synctest.Wait()
		for _, m := range n0.Members() {
			if m.Name == "n4" {
				t.Fatalf("n0 learnt n4 from a stream of n5: %+v", m)
			}
		}
		refused := 0
		for _, r := range audit.records(t) {
			if r.Event == "stream_identity_refused" && r.Identity == "n5" {
				refused++
			}
		}
		if refused != 2 {
			t.Fatalf("%d stream_identity_refused records, want 2: %s", refused, audit)
		}
	})
}

// BenchmarkStreamExchange: one push-pull stream (dial, request, reply) between two
// loopback nodes, packet keys on, with and without mutual TLS: what TLS adds to a
// stream is its handshake.
func BenchmarkStreamExchange(b *testing.B) {
	for _, withTLS := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "mtls"}[withTLS], func(b *testing.B) {
			pki := newTestPKI(b)
			var counted countingTransport
			start := func(name string, join ...string) *Node {
				cfg := loopbackConfig(name, [][]byte{testKey}, join...)
				if name == "c" {
					tr, err := ListenNet("127.0.0.1:0")
					if err != nil {
						b.Fatal(err)
					}
					counted.Transport = tr
					cfg.Transport = &counted
				}
				if withTLS {
					cfg.TLS = pki.source(identity.RoleNode, name)
				}
				n, err := Start(b.Context(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { n.Close() })
				return n
			}
			a := start("a")
			c := start("c", a.Addr())
			req, err := wire.EncodeFrame(&wire.PushPull{Nodes: []wire.NodeState{{Name: "c", Addr: c.AdvertiseAddr()}}}, wire.ClusterHash(""))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			counted.bytes.Store(0)
			for b.Loop() {
				if _, err := c.exchange(stack.Stream{To: a.AdvertiseAddr(), Data: req}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(counted.bytes.Load())/float64(b.N), "stream-bytes/op")
		})
	}
}

// countingTransport counts the bytes outbound streams write and read.
type countingTransport struct {
	Transport
	bytes atomic.Int64
}

func (t *countingTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := t.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.bytes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	k, err := c.Conn.Read(b)
	c.n.Add(int64(k))
	return k, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	k, err := c.Conn.Write(b)
	c.n.Add(int64(k))
	return k, err
}

// TestCertificateRotationUnderSteadyCluster: three nodes probing every 250 ms with
// a push-pull every second; every node's certificate files are replaced with a new
// certificate of the same identity. Within one reload interval each node uses its
// new certificate (and audits cert_reloaded), and no probe or stream fails.
func TestCertificateRotationUnderSteadyCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pki := newTestPKI(t)
		mn := NewMemNetwork()
		nodes := make([]*Node, 3)
		audits := make([]*syncBuffer, 3)
		for i := range nodes {
			var join []string
			if i > 0 {
				join = []string{"10.0.0.0:7946"}
			}
			audits[i] = &syncBuffer{}
			cfg := tlsMemConfig(t, mn, pki, i, fmt.Sprintf("n%d", i), audits[i], join...)
			cfg.Tune = func(c *swim.Config) { c.PushPullInterval = time.Second }
			nodes[i] = startMem(t, cfg)
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		time.Sleep(3 * time.Second)
		var before swim.Stats
		serials := make([]string, 3)
		for i, n := range nodes {
			st := n.Stats()
			before.ProbesFailed += st.ProbesFailed
			before.PushPulls += st.PushPulls
			before.PushPullsFailed += st.PushPullsFailed
			serials[i] = n.cfg.TLS.Certificate().Leaf.SerialNumber.String()
			pki.source(identity.RoleNode, n.Name()) // rewrites n's files with a new certificate
		}
		time.Sleep(TLSReloadInterval + 5*time.Second)
		var after swim.Stats
		for i, n := range nodes {
			st := n.Stats()
			after.ProbesFailed += st.ProbesFailed
			after.PushPulls += st.PushPulls
			after.PushPullsFailed += st.PushPullsFailed
			if n.cfg.TLS.Certificate().Leaf.SerialNumber.String() == serials[i] {
				t.Errorf("%s still uses its old certificate", n.Name())
			}
			if !strings.Contains(audits[i].String(), `"event":"cert_reloaded"`) {
				t.Errorf("%s did not audit cert_reloaded", n.Name())
			}
		}
		if after.PushPulls-before.PushPulls < 10 {
			t.Fatalf("only %d push-pulls during the rotation", after.PushPulls-before.PushPulls)
		}
		t.Logf("during the rotation: %d push-pulls, %d failed; %d probes failed",
			after.PushPulls-before.PushPulls, after.PushPullsFailed-before.PushPullsFailed, after.ProbesFailed-before.ProbesFailed)
		if after.PushPullsFailed != before.PushPullsFailed || after.ProbesFailed != before.ProbesFailed {
			t.Fatalf("failures during the rotation: push-pulls %d, probes %d",
				after.PushPullsFailed-before.PushPullsFailed, after.ProbesFailed-before.ProbesFailed)
		}
	})
}
