package swim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// Issue 12 item 13: a node sends to a member's address no stream, and beside its
// probes at most one packet a ProbeInterval, until the member answered there
// (PROTOCOL.md 10.9, "Verified addresses").

// victimNet is a converged cluster of n nodes beside a victim at the victim
// address: a machine of another cluster, so it counts what reaches it
// (Stats().PacketsIn, BytesIn) and never answers; streams to it fail and are
// counted in *streams.
func victimNet(t *testing.T, n int, streams *int) (*tnet, *tnode) {
	t.Helper()
	nt, _ := formed(t, n, 1)
	v := nt.add("victim", victim, 99, func(c *Config) { c.ClusterLabel = "elsewhere" })
	// The victim, knowing nobody, sends nothing: its way out is cut, so every
	// stream to it fails, and each is counted.
	nt.net.PartitionOneWay(nt.ep(v), nt.ep(nt.nodes[:n]...))
	nt.onStream = func(_, to string) {
		if to == victim {
			*streams++
		}
	}
	return nt, v
}

// Fake Alives naming a victim's address make the cluster open no stream to it, and
// send it beside probes and relays (a relayed probe answers one request of a peer
// whose probe of a fake failed) and eager pushes (one per address per input that
// taught the fakes' news) at most one packet per node a probe interval, however
// many fakes there are; the check below leaves eager pushes to that margin. Before
// verification one fake Alive drew 76 packets and 17 reconnect streams over 60 s,
// 1,000 of them 5,003 packets (gossip of the fakes' news to the fakes) and 10
// streams.
func TestFakeAliveAtVictimAddressDrawsOnlyProbes(t *testing.T) {
	for _, fakes := range []int{1, 1000} {
		t.Run(fmt.Sprintf("fakes=%d", fakes), func(t *testing.T) {
			streams := 0
			nt, v := victimNet(t, 5, &streams)
			n0 := nt.nodes[0]
			for sent := 0; sent < fakes; {
				data, k := bigPacket(t, func(i int) wire.Message {
					if sent+i >= fakes {
						return &wire.Ping{Target: "nobody"} // filler: a misdirected ping
					}
					return &wire.Alive{Node: fmt.Sprintf("fake-%04d", sent+i), Addr: victim, Incarnation: 1, ProtoMin: 1, ProtoMax: 1}
				})
				sent += k
				n0.m.HandlePacket(nt.now, attacker, data)
			}
			sent := func() (probes, requests uint64) {
				for _, nd := range nt.nodes[:5] {
					st := nd.m.Stats()
					ic := uint64(nd.m.cfg.IndirectChecks)
					probes += st.ProbesSent + st.FinalProbes
					requests += st.IndirectProbesSent + 2*ic*st.FinalProbes
				}
				return probes, requests
			}
			p0, r0 := sent()
			const d = 60 * time.Second
			nt.run(d)
			p1, r1 := sent()
			st := v.m.Stats()
			t.Logf("%d fake Alives at the victim's address, 5 nodes, %v: %d packets (%d bytes) and %d streams to the victim; %d probes and %d indirect requests sent in all",
				fakes, d, st.PacketsIn, st.BytesIn, streams, p1-p0, r1-r0)
			if streams != 0 {
				t.Errorf("%d streams opened to the victim", streams)
			}
			intervals := uint64(d/n0.m.cfg.ProbeInterval) + 1
			if bound := (p1 - p0) + (r1 - r0) + 5*intervals; st.PacketsIn > bound {
				t.Errorf("%d packets to the victim, more than the probes and indirect requests sent and one packet per node per probe interval (%d)", st.PacketsIn, bound)
			}
		})
	}
}

// A member that moves (an Alive at a higher incarnation with another address) is
// unverified at the new address until an Ack of our probe comes from there: an Ack
// from elsewhere, or a Ping naming the address as reply address, does not verify
// it, and until then its reply-address acks go to the packet's source.
func TestMovedMemberIsReverified(t *testing.T) {
	const old, moved, c = "10.0.0.2:7946", "10.0.0.12:7946", "10.0.0.3:7946"
	m := newMachine(t, "a", nil)
	now := epoch
	m.HandlePacket(now, old, packet(t, &wire.Alive{Node: "b", Addr: old, Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.HandlePacket(now, c, packet(t, &wire.Alive{Node: "c", Addr: c, Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	verified := func() bool { return m.members.get("b").verified }
	if !verified() {
		t.Fatal("b's Alive about itself from its address did not verify it")
	}
	m.HandlePacket(now, c, packet(t, &wire.Alive{Node: "b", Addr: moved, Incarnation: 2, ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	if verified() {
		t.Fatal("b verified at its new address on c's word")
	}
	m.HandlePacket(now, attacker, packet(t, &wire.Ping{Seq: 7, Target: "a", Source: "b", SourceAddr: moved}))
	if out := m.Ready().Packets; sentTo(out, moved) != 0 || sentTo(out, attacker) != 1 || verified() {
		t.Fatalf("ack of a ping naming the unverified address went to %v, want the packet's source", decodePackets(t, out))
	}

	// Probe until b is the target: the probe goes to the new address.
	probeB := func() *wire.Ping {
		t.Helper()
		for range 10 {
			now = m.NextDeadline()
			m.Tick(now)
			for _, d := range decodePackets(t, m.Ready().Packets) {
				if p, ok := d.msg.(*wire.Ping); ok && p.Target == "b" {
					if d.to != moved {
						t.Fatalf("b probed at %s, want %s", d.to, moved)
					}
					return p
				}
			}
		}
		t.Fatal("b never probed")
		return nil
	}
	ping := probeB()
	m.HandlePacket(now, attacker, packet(t, &wire.Ack{Seq: ping.Seq}))
	m.Ready()
	if verified() {
		t.Fatal("an ack from another address verified b's new address")
	}
	ping = probeB()
	m.HandlePacket(now, moved, packet(t, &wire.Ack{Seq: ping.Seq}))
	m.Ready()
	if !verified() {
		t.Fatal("b's ack from its new address did not verify it")
	}
}

// An unverified address gets no periodic push-pull: with only unverified peers,
// none is started; once one is verified, it is the one dialled.
func TestPushPullOnlyToVerifiedMembers(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.PushPullInterval = time.Second })
	for i := range 4 {
		n := fmt.Sprintf("p%d", i)
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: n, Addr: n + ":1", ProtoMin: 1, ProtoMax: 1}))
	}
	m.Ready()
	streams := func(until time.Time) (to []string) {
		for now := m.NextDeadline(); !now.After(until); now = m.NextDeadline() {
			m.Tick(now)
			for _, s := range m.Ready().Streams {
				to = append(to, s.To)
			}
		}
		return to
	}
	if to := streams(epoch.Add(5 * time.Second)); len(to) != 0 {
		t.Fatalf("push-pulls to unverified members: %v", to)
	}
	m.HandlePacket(epoch.Add(5*time.Second), "p2:1", packet(t, &wire.Ping{Seq: 1, Target: "a", Source: "p2", SourceAddr: "p2:1"}))
	m.Ready()
	to := streams(epoch.Add(10 * time.Second))
	if len(to) == 0 || slices.ContainsFunc(to, func(a string) bool { return a != "p2:1" }) {
		t.Fatalf("push-pulls after p2 was verified went to %v, want p2:1 only", to)
	}
}

// unverified counts, over all nodes, the live members whose address is not
// verified.
func unverified(nt *tnet) int {
	n := 0
	for _, nd := range nt.nodes {
		for _, p := range nd.m.plist {
			if isLive(p.Status) && !p.verified {
				n++
			}
		}
	}
	return n
}

// Verification costs nothing once a cluster formed: every member is verified
// everywhere within two probe rounds of formation (each pair as soon as either
// probes the other) and stays so through a false suspicion and its refutation; a
// joiner too.
func TestMembersAreVerifiedSoonAfterFormation(t *testing.T) {
	nt, took := formed(t, 16, 3)
	iv := nt.nodes[0].m.cfg.ProbeInterval
	// Each pair is verified when either probes the other: within a probe round.
	round := 16 * iv
	left, ok := nt.runUntil(2*round, 10*time.Millisecond, func() bool { return unverified(nt) == 0 })
	t.Logf("16 nodes converged in %v; every address verified %v later", took, left)
	if !ok {
		t.Fatalf("%d member addresses still unverified %v after formation", unverified(nt), 2*round)
	}

	// A false suspicion of p1 at p0, refuted: nobody unverifies it.
	p0, p1 := nt.nodes[0], nt.nodes[1]
	p0.m.HandlePacket(nt.now, "x", packet(t, &wire.Suspect{Node: p1.name, Incarnation: memberOf(t, p0.m, p1.name).Incarnation, From: "x"}))
	if _, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged); !ok {
		t.Fatal("the suspicion was not refuted")
	}
	if n := unverified(nt); n != 0 || p1.m.Local().Incarnation == 0 {
		t.Fatalf("after a refutation (incarnation %d): %d addresses unverified", p1.m.Local().Incarnation, n)
	}

	j := nt.add("joiner", addrOf(16), 16, nil)
	j.m.Join(nt.now, []string{addrOf(0)})
	joined, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	if !ok {
		t.Fatal("the joiner did not converge with the cluster in 10 s")
	}
	left, ok = nt.runUntil(2*round, 10*time.Millisecond, func() bool { return unverified(nt) == 0 })
	t.Logf("the joiner converged in %v, verified everywhere %v later", joined, left)
	if !ok {
		t.Fatalf("%d member addresses unverified %v after the join", unverified(nt), 2*round)
	}
}
