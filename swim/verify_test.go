package swim

import (
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// Issue 12 item 13: a node sends to a member's address only once it has evidence
// that the member answers there (PROTOCOL.md 10.9, "Verified addresses").

// victimNet is a converged cluster of n nodes beside a victim at the victim
// address: a machine of another cluster, so it counts what reaches it
// (Stats().PacketsIn, BytesIn) and never answers; streams to it fail and are
// counted in *streams.
func victimNet(t *testing.T, n int, streams *int) (*tnet, *tnode) {
	t.Helper()
	nt := newNet(t, n, 1, nil)
	nt.joinAll()
	if _, ok := nt.runUntil(30*time.Second, 100*time.Millisecond, nt.converged); !ok {
		t.Fatal("cluster did not converge")
	}
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

// Fake Alives naming a victim's address make the cluster send it at most the
// probes that would verify the fake members and one push per fake per node, and
// open no stream to it. Before verification, one fake Alive drew probes, gossip and eager pushes
// until the fake was declared dead, and reconnect push-pulls after.
func TestFakeAliveAtVictimAddressDrawsOnlyVerificationProbes(t *testing.T) {
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
					return &wire.Alive{Node: fmt.Sprintf("fake-%04d", sent+i), Addr: victim, Incarnation: 1}
				})
				sent += k
				n0.m.HandlePacket(nt.now, attacker, data)
			}
			probes := func() (n uint64) {
				for _, nd := range nt.nodes[:5] {
					n += nd.m.Stats().ProbesSent + nd.m.Stats().FinalProbes
				}
				return n
			}
			before := probes()
			nt.run(60 * time.Second)
			probed := probes() - before
			st := v.m.Stats()
			t.Logf("%d fake Alives at the victim's address, 5 nodes, 60 s: %d packets (%d bytes) and %d streams to the victim",
				fakes, st.PacketsIn, st.BytesIn, streams)
			if streams != 0 {
				t.Errorf("%d streams opened to the victim", streams)
			}
			// Probes, and one eager push of the fake's news per node: a fake is
			// probed once per probe round while it lives (alive, then suspect)
			// and once more, finally, before it is dead.
			if bound := probed + uint64(5*fakes*maxUnverifiedPushes); st.PacketsIn > bound {
				t.Errorf("%d packets to the victim, more than the %d probes sent in all and one push per fake per node", st.PacketsIn, probed)
			}
			if fakes == 1 && st.PacketsIn > 4*5 {
				t.Errorf("%d packets to the victim, want at most 20 (5 nodes, each probing the fake at most 3 times and pushing to it once)", st.PacketsIn)
			}
		})
	}
}

// pushedTo is the set of addresses that got a packet carrying payload.
func pushedTo(t *testing.T, pkts []Packet, payload string) map[string]bool {
	t.Helper()
	to := map[string]bool{}
	for _, d := range decodePackets(t, pkts) {
		if u, ok := d.msg.(*wire.User); ok && string(u.Payload) == payload {
			to[d.to] = true
		}
	}
	return to
}

// A real member joining is verified by the cluster as it probes and is probed, and
// from then on gets gossip and eager pushes as before: a broadcast reaches it, and
// the cluster converges.
func TestJoiningMemberIsVerifiedAndGossipedTo(t *testing.T) {
	nt := newNet(t, 8, 3, nil)
	nt.joinAll()
	took, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	if !ok {
		t.Fatal("8 nodes did not converge in 10 s")
	}
	j := nt.add("joiner", addrOf(8), 8, nil)
	j.m.Join(nt.now, []string{addrOf(0)})
	joined, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	if !ok {
		t.Fatal("the joiner did not converge with the cluster in 10 s")
	}
	t.Logf("8 nodes converged in %v, the joiner in %v more", took, joined)
	// Two probe rounds: every node has pinged the joiner or been pinged by it.
	nt.run(2 * 9 * LANProfile("x", "x").ProbeInterval)
	const rounds = 4
	eager := 0
	for r := range rounds {
		for _, nd := range nt.nodes[:8] {
			msg := fmt.Sprintf("hello %d from %s", r, nd.name)
			if err := nd.m.BroadcastUser(nt.now, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			if pushedTo(t, nd.m.out.Packets, msg)[j.addr] {
				eager++
			}
		}
		nt.run(time.Second)
	}
	// Eager push picks 5 of each node's 8 peers: the joiner, verified everywhere
	// by now, is picked as often as any member (unverified, it would never be).
	t.Logf("joiner picked by %d of %d eager pushes (expected about %d); received %d broadcasts",
		eager, rounds*8, rounds*8*5/8, len(j.user))
	if eager < rounds*8/4 {
		t.Errorf("the joiner got %d of %d eager pushes, want at least %d", eager, rounds*8, rounds*8/4)
	}
	if len(j.user) < eager {
		t.Errorf("the joiner received %d broadcasts, fewer than the %d pushed to it", len(j.user), eager)
	}
}

// A member that comes back at another address (an Alive at a higher incarnation)
// is unverified again: the new address gets only probes and maxUnverifiedPushes
// eager pushes until an ack of our ping comes from it; an ack from elsewhere, or a
// ping naming it as reply address, does not count.
func TestMovedMemberIsReverified(t *testing.T) {
	const old, moved, c = "10.0.0.2:7946", "10.0.0.12:7946", "10.0.0.3:7946"
	m := newMachine(t, "a", func(cfg *Config) { cfg.EagerFanout = 5 })
	m.HandlePacket(epoch, old, packet(t, &wire.Alive{Node: "b", Addr: old, Incarnation: 1}))
	m.HandlePacket(epoch, c, packet(t, &wire.Alive{Node: "c", Addr: c, Incarnation: 1}))
	m.Ready()
	broadcast := func(msg string) map[string]bool {
		t.Helper()
		if err := m.BroadcastUser(epoch, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		return pushedTo(t, m.Ready().Packets, msg)
	}
	if to := broadcast("before"); !to[old] || !to[c] {
		t.Fatalf("eager push before the move went to %v, want b and c", to)
	}

	// c gossips b's new address.
	m.HandlePacket(epoch, c, packet(t, &wire.Alive{Node: "b", Addr: moved, Incarnation: 2}))
	early := sentTo(m.Ready().Packets, moved) // the eager push of the move itself
	// pushes counts the broadcasts of a burst that reached b's new address.
	pushes := func(what string) int {
		t.Helper()
		n := 0
		for i := range 5 {
			to := broadcast(fmt.Sprintf("%s %d", what, i))
			if !to[c] {
				t.Fatalf("%s: eager push went to %v, not to c", what, to)
			}
			if to[moved] {
				n++
			}
		}
		return n
	}
	if n := early + pushes("moved"); n != maxUnverifiedPushes {
		t.Fatalf("%d of 5 eager pushes after the move reached b's new address, want %d (it is unverified)", n, maxUnverifiedPushes)
	}
	m.HandlePacket(epoch, attacker, packet(t, &wire.Ping{Seq: 7, Target: "a", Source: "b", SourceAddr: moved}))
	if out := m.Ready().Packets; sentTo(out, moved) != 0 || sentTo(out, attacker) != 1 {
		t.Fatalf("ack of a ping naming the unverified address went to %v, want the packet's source", decodePackets(t, out))
	}

	// Probe until b is the target: the probe goes to the new address.
	probeB := func() *wire.Ping {
		t.Helper()
		for range 10 {
			m.Tick(m.NextDeadline())
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
	// The ack from another address does not verify b there.
	m.HandlePacket(epoch, attacker, packet(t, &wire.Ack{Seq: ping.Seq}))
	m.Ready()
	if n := pushes("spoofed"); n != 0 {
		t.Fatal("an ack from another address verified b's new address")
	}
	ping = probeB()
	m.HandlePacket(epoch, moved, packet(t, &wire.Ack{Seq: ping.Seq}))
	m.Ready()
	if n := pushes("verified"); n != 5 {
		t.Fatalf("%d of 5 eager pushes reached b after it acked at its new address, want 5", n)
	}
}
