package node

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// byteCounter is a Transport that counts the bytes it sends: datagrams and the
// stream bytes it writes (TLS records included), for the signing cost figures
// of docs/benchmarks.md.
type byteCounter struct {
	Transport
	udp, tcp *atomic.Int64
}

func (c byteCounter) WriteTo(b []byte, addr string) error {
	c.udp.Add(int64(len(b)))
	return c.Transport.WriteTo(b, addr)
}

func (c byteCounter) Dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := c.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return countedConn{conn, c.tcp}, nil
}

func (c byteCounter) Accept() (net.Conn, error) {
	conn, err := c.Transport.Accept()
	if err != nil {
		return nil, err
	}
	return countedConn{conn, c.tcp}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countedConn) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	return c.Conn.Write(b)
}

// TestSignedGossipCost measures (it asserts only that both clusters form) what
// signing self-claims costs a cluster of 5 mutual-TLS nodes in virtual time:
// the time to form (every node sees every other alive, joined through one seed)
// and the steady bytes per node per second over 60 s, UDP and streams. Run with
// -v for the figures; docs/benchmarks.md records them.
func TestSignedGossipCost(t *testing.T) {
	for _, signed := range []bool{false, true} {
		t.Run(fmt.Sprintf("signed=%v", signed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 5
				pki := newTestPKI(t)
				mn := NewMemNetwork()
				var udp, tcp atomic.Int64
				nodes := make([]*Node, n)
				for i := range nodes {
					var join []string
					if i > 0 {
						join = []string{"10.0.0.0:7946"}
					}
					cfg := tlsMemConfig(t, mn, pki, i, fmt.Sprintf("n%d", i), nil, join...)
					cfg.Transport = byteCounter{cfg.Transport, &udp, &tcp}
					cfg.unsignedGossip = !signed
					nodes[i] = startMem(t, cfg)
				}
				defer func() {
					for _, nd := range nodes {
						nd.Close()
					}
				}()
				defer func() {
					if t.Failed() {
						for _, nd := range nodes {
							st := nd.Stats()
							t.Logf("DUMP %s: members %v unknown %d unsigned %d forged %d syncs %d over %d", nd.Name(), nd.Members(), st.ClaimsUnknownSigner, st.ClaimsUnsigned, st.ClaimsForged, st.CertSyncs, st.ClaimsOverBudget)
						}
					}
				}()
				formed := waitFor(t, 30*time.Second, "formed", func() bool {
					for _, nd := range nodes {
						if !allSee(nodes, nd.Name(), swim.StatusAlive)() {
							return false
						}
					}
					return true
				})
				time.Sleep(10 * time.Second) // settle: formation's gossip and syncs are over
				u0, t0 := udp.Load(), tcp.Load()
				const steady = 60 * time.Second
				time.Sleep(steady)
				u, s := float64(udp.Load()-u0)/n/steady.Seconds(), float64(tcp.Load()-t0)/n/steady.Seconds()
				var refused uint64
				for _, nd := range nodes {
					st := nd.Stats()
					refused += st.ClaimsForged + st.ClaimsUnsigned
				}
				t.Logf("signed=%v: formed in %v (virtual); steady per node: %.0f B/s UDP (sealed), %.0f B/s streams (TLS records), %.0f B/s in all; claims refused %d",
					signed, formed.Round(time.Millisecond), u, s, u+s, refused)
			})
		})
	}
}

// BenchmarkClaimSignVerify: signing an Alive claim with a node's P-256
// certificate key, and verifying it against the held certificate (the cost a
// receiver pays per claim that changes its view, and per forgery).
func BenchmarkClaimSignVerify(b *testing.B) {
	pki := newTestPKI(b)
	st := newCertStore(Config{}, pki.source(identity.RoleNode, "n1"), time.Now)
	claim := wire.AliveClaim("prod", "n1", "10.0.0.1:7946", 7, wire.MinProtocolVersion, wire.ProtocolVersion, 0)
	sig := st.Sign(claim)
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			st.Sign(claim)
		}
		b.ReportMetric(float64(len(sig)), "sig-bytes")
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if st.Verify("n1", claim, sig) != swim.VerdictOK {
				b.Fatal("not ok")
			}
		}
	})
	b.Run("verify-forged", func(b *testing.B) {
		bad := append([]byte(nil), sig...)
		bad[len(bad)-1] ^= 1
		for b.Loop() {
			st.Verify("n1", claim, bad)
		}
	})
}

// certAuthority is a crdt.Authority over one certStore, for the benchmark: a
// node map's writer is its node (the cluster map is not written here).
type certAuthority struct{ s *certStore }

func (a certAuthority) Sign(claim []byte) []byte { return a.s.Sign(claim) }

func (a certAuthority) Verify(name string, _ uint64, claim, sig []byte) crdt.Verdict {
	if a.s.Verify(name, claim, sig) == swim.VerdictOK {
		return crdt.VerdictOK
	}
	return crdt.VerdictBad
}

// BenchmarkMetaSignedWrite: one metadata write (a 4-byte key, a 22-byte value)
// made by its writer and applied by a replica, unsigned and signed with P-256
// certificate keys (PROTOCOL.md section 13): the writer signs the cell, the
// replica verifies it. delta-bytes is the encoded one-key delta, signature
// included.
func BenchmarkMetaSignedWrite(b *testing.B) {
	pki := newTestPKI(b)
	for _, signed := range []bool{false, true} {
		b.Run(map[bool]string{false: "unsigned", true: "signed"}[signed], func(b *testing.B) {
			writer, err := crdt.NewStore("n1", crdt.DefaultLimits())
			if err != nil {
				b.Fatal(err)
			}
			replica, err := crdt.NewStore("n2", crdt.DefaultLimits())
			if err != nil {
				b.Fatal(err)
			}
			if signed {
				n1 := pki.source(identity.RoleNode, "n1")
				writer.SetAuthority("prod", certAuthority{newCertStore(Config{}, n1, time.Now)})
				rs := newCertStore(Config{}, pki.source(identity.RoleNode, "n2"), time.Now)
				var chain []byte
				for _, der := range n1.Certificate().Certificate {
					chain = append(chain, der...)
				}
				rs.Learn([][]byte{chain}) // as a push-pull would bring it
				replica.SetAuthority("prod", certAuthority{rs})
			}
			var size, i int
			for b.Loop() {
				i++
				d, err := writer.Set("grpc", fmt.Appendf(nil, "10.0.0.1:9090 v%07d", i%10_000_000))
				if err != nil {
					b.Fatal(err)
				}
				a, err := replica.Apply(d)
				if err != nil || len(a.Refused) > 0 || len(a.Changes) != 1 {
					b.Fatalf("apply: %v %+v", err, a)
				}
				size = len(crdt.AppendDelta(nil, d))
			}
			b.ReportMetric(float64(size), "delta-bytes")
		})
	}
}
