package swim

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/omnirelay/mesh/wire"
)

// Attacks by a hostile or buggy peer (issue 12: no amplification, no reflection, a
// bounded member table). Addresses are IP literals, as on the wire.

const victim = "192.0.2.66:7946" // an address no member holds (TEST-NET-1)

// bigPacket packs as many copies of msg(i) as fit in one 65,507-byte datagram, the
// largest UDP payload: the receiver accepts any size, the MTU binds only senders.
func bigPacket(t *testing.T, msg func(i int) wire.Message) ([]byte, int) {
	t.Helper()
	p := wire.NewPacker(65507, wire.ClusterHash(""))
	n := 0
	for p.Add(msg(n)) {
		n++
	}
	return append([]byte(nil), p.Bytes()...), n
}

// sentTo counts the packets addressed to addr.
func sentTo(pkts []Packet, addr string) int {
	n := 0
	for _, p := range pkts {
		if p.To == addr {
			n++
		}
	}
	return n
}

// attacker is the source address of the hostile datagrams.
const attacker = "10.0.0.66:7946"

// flood hands m one datagram of as many msg(i) as fit, from attacker, and checks
// that nothing went to the victim and that the packets sent stay within the bound
// (the answer budget plus eager push). It returns the packets and the count sent.
func flood(t *testing.T, m *Machine, what string, msg func(i int) wire.Message) ([]Packet, int) {
	t.Helper()
	data, n := bigPacket(t, msg)
	m.HandlePacket(epoch, attacker, data)
	out := m.Ready().Packets
	t.Logf("%d %s in one datagram: %d packets to the victim, %d to the sender, %d in all", n, what, sentTo(out, victim), sentTo(out, attacker), len(out))
	if got := sentTo(out, victim); got != 0 {
		t.Errorf("%d packets sent to the victim", got)
	}
	if bound := maxRepliesPerInput + m.cfg.EagerFanout; len(out) > bound {
		t.Errorf("one datagram drew %d packets, want at most %d", len(out), bound)
	}
	return out, n
}

// A node answers a ping at the packet's source, not at a reply address the body
// names: otherwise one datagram of pings naming a victim is a reflector (1,900
// packets to the victim per datagram received before the fix).
func TestPingWithVictimReplyAddrIsNotReflected(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "10.0.0.2:7946", packet(t, &wire.Alive{Node: "b", Addr: "10.0.0.2:7946", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	out, n := flood(t, m, "pings naming the victim as reply address", func(i int) wire.Message {
		return &wire.Ping{Seq: uint32(i), Target: "a", Source: "b", SourceAddr: victim}
	})
	if got := sentTo(out, attacker); got != maxRepliesPerInput {
		t.Errorf("%d acks to the packet's source, want %d (the budget)", got, maxRepliesPerInput)
	}
	if got, want := m.Stats().RepliesDropped, uint64(n-maxRepliesPerInput); got != want {
		t.Errorf("RepliesDropped = %d, want %d", got, want)
	}
	// The member's own address, as the view holds it, is a valid reply address.
	m.HandlePacket(epoch, attacker, packet(t, &wire.Ping{Seq: 1, Target: "a", Source: "b", SourceAddr: "10.0.0.2:7946"}))
	if out := m.Ready().Packets; sentTo(out, "10.0.0.2:7946") != 1 {
		t.Errorf("ack not sent to the known address of the member that pinged: %v", decodePackets(t, out))
	}
}

// An indirect probe request makes us probe only a member we know, at the address we
// hold for it, and at most a bounded number per packet.
func TestIndirectPingTargetsOnlyKnownMembersAtKnownAddresses(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "10.0.0.2:7946", packet(t, &wire.Alive{Node: "b", Addr: "10.0.0.2:7946", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	out, n := flood(t, m, "indirect pings naming the victim as target and reply address", func(i int) wire.Message {
		target := "b"
		if i%2 == 0 {
			target = fmt.Sprintf("ghost-%d", i)
		}
		return &wire.IndirectPing{Seq: uint32(i), Target: target, TargetAddr: victim, Source: "evil", SourceAddr: victim}
	})
	for _, d := range decodePackets(t, out) {
		if p, ok := d.msg.(*wire.Ping); ok && (p.Target != "b" || d.to != "10.0.0.2:7946") {
			t.Errorf("relayed probe of %s sent to %s", p.Target, d.to)
		}
	}
	if got, want := m.Stats().IndirectRefused, uint64((n+1)/2); got != want {
		t.Errorf("IndirectRefused = %d, want %d (the requests for unknown members)", got, want)
	}
}

// Claims about us are answered with our Alive at the packet's source, but a datagram
// full of them draws the answer budget, not one Alive per claim; nor do forged
// suspicions "from us" make the buddy system send one suspicion per message.
func TestClaimsAboutUsDrawBoundedAnswers(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "10.0.0.2:7946", packet(t, &wire.Alive{Node: "b", Addr: "10.0.0.2:7946", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	flood(t, m, "suspicions of us", func(i int) wire.Message {
		return &wire.Suspect{Node: "a", Incarnation: uint64(i), From: "evil"}
	})
	for i := range 3 {
		m.HandlePacket(epoch, "10.0.0.2:7946", packet(t, &wire.Alive{Node: fmt.Sprintf("c%d", i), Addr: fmt.Sprintf("10.0.1.%d:7946", i), Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	}
	m.Ready()
	flood(t, m, "suspicions forged from us", func(i int) wire.Message {
		return &wire.Suspect{Node: fmt.Sprintf("c%d", i%3), Incarnation: uint64(1 + i/3), From: "a"}
	})
}

// 100,000 fake members, however they arrive, leave the table at MaxMembers and the
// refusals counted; before the cap the table held all 100,001 records.
func TestFakeAlivesStopAtMaxMembers(t *testing.T) {
	const fakes = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := newMachine(t, "a", nil)
	sent := 0
	for sent < fakes {
		data, k := bigPacket(t, func(i int) wire.Message {
			j := sent + i
			if j >= fakes {
				return &wire.Ping{Target: "nobody"} // filler that fits: a misdirected ping
			}
			return &wire.Alive{Node: fmt.Sprintf("fake-%06d", j), Addr: fmt.Sprintf("10.%d.%d.%d:7946", j>>16, (j>>8)&255, j&255), ProtoMin: 1, ProtoMax: 1}
		})
		sent += k
		m.HandlePacket(epoch, attacker, data)
		m.Ready()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := len(m.Members())
	t.Logf("%d fake Alives: %d members held, heap +%.1f MB", fakes, held, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/1e6)
	if held != m.cfg.MaxMembers {
		t.Errorf("%d members held, want the cap %d", held, m.cfg.MaxMembers)
	}
	if got, want := m.Stats().MembersRefused, uint64(fakes-(m.cfg.MaxMembers-1)); got != want {
		t.Errorf("MembersRefused = %d, want %d", got, want)
	}
	runtime.KeepAlive(m)
}

// At the cap, a new member takes the place of a tombstone: a departed member's
// record is worth less than a live one's, and fake members die into tombstones.
func TestMaxMembersEvictsTombstonesFirst(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.MaxMembers = 3 })
	for i, name := range []string{"b", "c", "d"} {
		m.HandlePacket(epoch, "10.0.0.9:7946", packet(t, &wire.Alive{Node: name, Addr: fmt.Sprintf("10.0.0.%d:7946", i+2), Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	}
	if got, want := len(m.Members()), 3; got != want || m.Stats().MembersRefused != 1 {
		t.Fatalf("%d members, %d refused: want %d and 1", got, m.Stats().MembersRefused, want)
	}
	m.HandlePacket(epoch, "10.0.0.9:7946", packet(t, &wire.Leave{Node: "b", Incarnation: 1}))
	m.HandlePacket(epoch, "10.0.0.9:7946", packet(t, &wire.Alive{Node: "d", Addr: "10.0.0.4:7946", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	names := map[string]Status{}
	for _, mem := range m.Members() {
		names[mem.Name] = mem.Status
	}
	if _, ok := names["d"]; !ok || len(names) != 3 {
		t.Fatalf("d not taken in place of b's tombstone: %v", names)
	}
	if _, ok := names["b"]; ok {
		t.Fatalf("b's tombstone kept at the cap: %v", names)
	}
}

// With CheckAddr (node sets wire.CheckAddr), a message whose address is a host
// name is malformed: counted, dropped, nothing held or sent.
func TestCheckAddrRefusesHostNames(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.CheckAddr = wire.CheckAddr })
	const name = "evil.invalid:7946"
	m.HandlePacket(epoch, attacker, packet(t,
		&wire.Alive{Node: "b", Addr: name, Incarnation: 1, ProtoMin: 1, ProtoMax: 1},
		&wire.Ping{Seq: 1, Target: "a", Source: "b", SourceAddr: name},
		&wire.IndirectPing{Seq: 2, Target: "a", TargetAddr: name, Source: "b", SourceAddr: attacker},
	))
	m.HandlePushPull(epoch, attacker, &wire.PushPull{Nodes: []wire.NodeState{{Name: "c", Addr: name, Incarnation: 1, ProtoMin: 1, ProtoMax: 1}}})
	if got := m.Stats().Malformed; got != 4 {
		t.Errorf("Malformed = %d, want 4 (each message naming a host)", got)
	}
	if got := m.Members(); len(got) != 1 {
		t.Errorf("members with host-name addresses held: %v", got)
	}
	if out := m.Ready().Packets; len(out) != 0 {
		t.Errorf("answered messages with host-name addresses: %v", decodePackets(t, out))
	}
	m.HandlePacket(epoch, "10.0.0.2:7946", packet(t, &wire.Alive{Node: "b", Addr: "10.0.0.2:7946", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	if len(m.Members()) != 2 {
		t.Error("an IP-literal address refused")
	}
}
