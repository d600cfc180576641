package node

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// TestLeaseAndShardPacketsCannotSpeakAsAnotherName (issue 14: "a node whose
// certificate names n5 cannot gossip or stream as n4"; PROTOCOL.md 10.11): n0,
// n1 and n4 vote, n2 and n5 do not, every node has a certificate, the packet
// key and shard routing. A tool holding n5's certificate key and the packet key
// sends sealed UDP packets on n4's behalf: to the leader a LeasePromise and a
// LeaseAccept naming voter n4 (a faked quorum) and a shard Renew as n4 holding
// nothing from a new process (which would free n4's shards); to the other
// voter a LeaseRenew as the leader with a round far ahead (which would make it
// drop the real leader's renewals); to n4 a ShardRelease of all its shards as
// if from the leader. Each comes once signed by n5 as n5 and once with n5's
// signature claiming to be n4's (or the leader's). All are refused, counted
// (omnirelay_claims_refused_total{reason="forged"}) and audited
// (packet_forged), and neither the lease nor any shard moves.
func TestLeaseAndShardPacketsCannotSpeakAsAnotherName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		voters := []string{"n0", "n1", "n4"}
		nodes, audits, mn := startShardTLSCluster(t, []string{"n0", "n1", "n4", "n2", "n5"}, voters, func(*Config) {})
		leader := shardLeader(t, nodes)
		holder, epoch := agreed(nodes)
		n4 := nodes[2]
		if holder == "n4" {
			t.Skip("n4 leads: the forged renewals and releases would be its own") // does not happen with these seeds
		}
		other := nodes[0] // the voter that is neither the leader nor n4
		if other == leader {
			other = nodes[1]
		}
		held := n4.OwnedShards()
		if len(held) == 0 {
			t.Fatal("n4 serves nothing")
		}

		tool, err := mn.Listen("10.0.0.9:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer tool.Close()
		kr, err := wire.NewKeyring(testKey)
		if err != nil {
			t.Fatal(err)
		}
		n5key := newCertStore(Config{}, nodes[4].cfg.TLS, time.Now) // signs with n5's key, as n5 would
		send := func(to *Node, sender string, m wire.Message) {
			t.Helper()
			p := wire.NewPacker(wire.DefaultMTU-wire.SealOverhead, wire.ClusterHash(""))
			p.Add(m)
			p.Add(&wire.PacketSig{Sender: sender, Sig: n5key.Sign(wire.PacketClaim("", sender, to.Name(), p.Messages()))})
			sealed, err := wire.Seal(kr, p.Bytes(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if err := tool.WriteTo(sealed, to.AdvertiseAddr()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(logEvery) // past the audit's rate limit: each forgery gets its line
			synctest.Wait()
		}
		forgedBefore := map[string]uint64{}
		for _, n := range nodes {
			forgedBefore[n.Name()] = n.Stats().ClaimsForged
		}
		const far = 1 << 40
		for _, sender := range []string{"n5", "n4"} {
			send(leader, sender, &lease.Promise{Epoch: epoch + 1, Voter: "n4"})
			send(leader, sender, &lease.Accept{Epoch: epoch, Seq: far, Voter: "n4"})
			send(leader, sender, &shard.Renew{Epoch: epoch, Node: "n4", Boot: 12345, Seq: 1})
			send(n4, sender, &shard.Release{Epoch: epoch, Node: "n4", Shards: held})
		}
		for _, sender := range []string{"n5", holder} {
			send(other, sender, &lease.Renew{Epoch: epoch, Seq: far, Holder: holder, Duration: time.Second,
				Membership: lease.Membership{Voters: voters}})
		}
		// Over a mutual-TLS stream with n5's certificate, one-way shard frames
		// (how a Renew or Grant too large for a packet travels) on the same
		// behalf: the frame must speak for the certificate's name.
		sendFrame := func(to *Node, m wire.Message) {
			t.Helper()
			conn, err := tool.Dial(t.Context(), to.AdvertiseAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			tc := tls.Client(conn, nodes[4].cfg.TLS.ClientConfig(identity.Policy{Roles: []identity.Role{identity.RoleNode}, Name: to.Name()}))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("handshake as n5: %v", err)
			}
			f, err := wire.EncodeFrame(m, wire.ClusterHash(""))
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := wire.SealFrame(kr, f, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tc.Write(sealed); err != nil {
				t.Fatal(err)
			}
			time.Sleep(logEvery)
			synctest.Wait()
		}
		sendFrame(leader, &shard.Renew{Epoch: epoch, Node: "n4", Boot: 12345, Seq: 1})
		sendFrame(n4, &shard.Release{Epoch: epoch, Node: "n4", Shards: held})
		time.Sleep(5 * time.Second) // renewals of the lease and of n4's shards go on
		synctest.Wait()

		if h, e := agreed(nodes); h != holder || e != epoch {
			t.Errorf("leader %s at %d, was %s at %d", h, e, holder, epoch)
		}
		if got := n4.OwnedShards(); !slices.Equal(got, held) {
			t.Errorf("n4 serves %v, served %v", got, held)
		}
		if err := partitioned(nodes); err != nil {
			t.Error(err)
		}
		for i, n := range nodes {
			want := map[*Node]uint64{leader: 7, n4: 3, other: 2}[n]
			if got := n.Stats().ClaimsForged - forgedBefore[n.Name()]; got != want {
				t.Errorf("%s counted %d forged claims, want %d", n.Name(), got, want)
			}
			var lines int
			fromTool := false
			for _, r := range audits[i].records(t) {
				if r.Event == "packet_forged" { // only the tool forges here
					lines++
					fromTool = fromTool || r.Remote == tool.Addr()
					if r.Member != "n4" && r.Member != holder {
						t.Errorf("%s audited a forgery for %q, want n4 or %s: %s", n.Name(), r.Member, holder, r.Reason)
					}
					if !strings.Contains(r.Reason, "n5") && !strings.Contains(r.Reason, "not signed by") {
						t.Errorf("%s: reason %q names neither the signer nor the failed signature", n.Name(), r.Reason)
					}
				}
			}
			if want > 0 && !fromTool {
				t.Errorf("%s: no packet_forged line names the tool's address %s as remote", n.Name(), tool.Addr())
			}
			if uint64(lines) != want {
				t.Errorf("%s audited %d forged packets from the tool, want %d:\n%s", n.Name(), lines, want, audits[i])
			}
		}
		if got := forgedMetric(t, leader); got < 7 {
			t.Errorf(`omnirelay_claims_refused_total{reason="forged"} = %v on the leader, want at least 7`, got)
		}
	})
}

// startShardTLSCluster starts names (the first the seed) with certificates of
// one CA, the packet key, voters and shard routing on the in-memory network,
// each with an audit log, tune applied to every Config; they close when the
// test ends. Close is safe twice: tests close the leader themselves.
func startShardTLSCluster(t *testing.T, names, voters []string, tune func(*Config)) ([]*Node, []*syncBuffer, *MemNetwork) {
	pki := newTestPKI(t)
	mn := NewMemNetwork()
	audits := make([]*syncBuffer, len(names))
	nodes := make([]*Node, len(names))
	for i, name := range names {
		var join []string
		if i > 0 {
			join = []string{"10.0.0.0:7946"}
		}
		audits[i] = &syncBuffer{}
		cfg := tlsMemConfig(t, mn, pki, i, name, audits[i], join...)
		cfg.Voters, cfg.Voter, cfg.Shards = voters, slices.Contains(voters, name), testShards
		if cfg.Voter {
			cfg.DataDir = t.TempDir()
		}
		tune(&cfg)
		nodes[i] = startMem(t, cfg)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	return nodes, audits, mn
}

// leaseShardPacketsIn sums omnirelay_packets_total{direction="in"} of the types
// above membership's: with shards on, the lease and shard packets.
func leaseShardPacketsIn(t *testing.T, n *Node) float64 {
	t.Helper()
	mfs, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["direction"] == "in" && labels["type"] == "other" {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestSignedLeasePacketCost measures (it asserts only that the clusters elect
// and fail over) what signing lease and shard packets (PROTOCOL.md 10.11) costs
// 5 mutual-TLS nodes (3 voters, 64 shards) in virtual time: lease and shard
// packets received per node per second in steady state (mean, and at the
// leader), which is the verifications per second, and the leader failover
// time after a crash, signed against unsigned. Run with -v for the figures;
// docs/benchmarks.md records them with BenchmarkPacketSignVerify's.
func TestSignedLeasePacketCost(t *testing.T) {
	for _, signed := range []bool{false, true} {
		for run := range 3 {
			t.Run(fmt.Sprintf("signed=%v/%d", signed, run), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					const n = 5
					nodes, _, _ := startShardTLSCluster(t, []string{"n0", "n1", "n2", "n3", "n4"}, leaderVoters,
						func(c *Config) { c.unsignedGossip = !signed })
					leader := shardLeader(t, nodes)
					time.Sleep(10 * time.Second) // settle
					before := make([]float64, n)
					for i, nd := range nodes {
						before[i] = leaseShardPacketsIn(t, nd)
					}
					const steady = 60 * time.Second
					time.Sleep(steady)
					var sum, atLeader float64
					for i, nd := range nodes {
						got := (leaseShardPacketsIn(t, nd) - before[i]) / steady.Seconds()
						sum += got
						if nd == leader {
							atLeader = got
						}
					}
					holder, _ := agreed(nodes)
					leader.Close()
					var survivors []*Node
					for _, nd := range nodes {
						if nd != leader {
							survivors = append(survivors, nd)
						}
					}
					took := waitFor(t, 10*time.Second, "a new leader agreed by every survivor", func() bool {
						h, _ := agreed(survivors)
						return h != "" && h != holder
					})
					var forged, unsigned, unknown uint64
					for _, nd := range survivors {
						st := nd.Stats()
						forged, unsigned, unknown = forged+st.ClaimsForged, unsigned+st.ClaimsUnsigned, unknown+st.ClaimsUnknownSigner
					}
					t.Logf("signed=%v: lease+shard packets in per node %.1f/s (mean), %.1f/s at the leader; failover %v (virtual); refused by the survivors: forged %d, unsigned %d, unknown signer %d",
						signed, sum/n, atLeader, took.Round(time.Millisecond), forged, unsigned, unknown)
					if forged+unsigned != 0 {
						t.Errorf("honest claims or packets refused as forged (%d) or unsigned (%d)", forged, unsigned)
					}
				})
			})
		}
	}
}

// BenchmarkPacketSignVerify: what a lease or shard packet's PacketSig costs on
// the event loop with a P-256 node certificate: the sender's PacketClaim and
// signature, the receiver's PacketClaim and verification (once per packet), and
// a forged one's.
func BenchmarkPacketSignVerify(b *testing.B) {
	pki := newTestPKI(b)
	st := newCertStore(Config{}, pki.source(identity.RoleNode, "n1"), time.Now)
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash("prod"))
	p.Add(&lease.Renew{Epoch: 7, Seq: 1234, Holder: "n1", Duration: 3 * time.Second,
		Membership: lease.Membership{Voters: []string{"n0", "n1", "n2", "n3", "n4"}}})
	msgs := slices.Clone(p.Messages())
	sig := st.Sign(wire.PacketClaim("prod", "n1", "n2", msgs))
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			st.Sign(wire.PacketClaim("prod", "n1", "n2", msgs))
		}
		b.ReportMetric(float64(len(wire.AppendMessage(nil, &wire.PacketSig{Sender: "n1", Sig: sig}))), "packetsig-bytes")
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if st.Verify("n1", wire.PacketClaim("prod", "n1", "n2", msgs), sig) != swim.VerdictOK {
				b.Fatal("not ok")
			}
		}
	})
	b.Run("verify-forged", func(b *testing.B) {
		for b.Loop() {
			if st.Verify("n1", wire.PacketClaim("prod", "n1", "n3", msgs), sig) != swim.VerdictBad {
				b.Fatal("a packet for n2 verified at n3")
			}
		}
	})
}
