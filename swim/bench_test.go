package swim

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/omnirelay/mesh/wire"
)

// benchMachine is a machine that knows n alive members and has nothing queued.
func benchMachine(b *testing.B, n int) *Machine {
	b.Helper()
	m, err := New(LANProfile("self", "self:1"), rand.New(rand.NewPCG(1, 1)), epoch)
	if err != nil {
		b.Fatal(err)
	}
	nodes := make([]wire.NodeState, n)
	for i := range nodes {
		nodes[i] = wire.NodeState{Name: fmt.Sprintf("node-%05d", i), Addr: fmt.Sprintf("10.0.%d.%d:7946", i/256, i%256), ProtoMin: 1, ProtoMax: 1}
	}
	m.HandlePushPullReply(epoch, "seed", &wire.PushPull{Nodes: nodes})
	for m.queues.Len() > 0 {
		m.packer.Reset()
		m.queues.fill(m.packer)
		m.queues.commit(1)
	}
	m.Ready()
	return m
}

// BenchmarkHandlePing: a ping for us in a 1,000-member cluster, answered with an ack.
func BenchmarkHandlePing(b *testing.B) {
	m := benchMachine(b, 1000)
	d := m.Digest()
	pkt := packet(b, &wire.Ping{Seq: 7, Target: "self", Source: "node-00001", SourceAddr: "10.0.0.1:7946"}, &d)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		m.HandlePacket(epoch, "10.0.0.1:7946", pkt)
		m.Ready()
	}
}

// BenchmarkHandleAck: the ack that completes our probe.
func BenchmarkHandleAck(b *testing.B) {
	m := benchMachine(b, 1000)
	pkt := packet(b, &wire.Ack{Seq: 7})
	target := m.plist[0]
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		m.probe = probeState{active: true, target: target, seq: 7}
		m.HandlePacket(epoch, target.Addr, pkt)
	}
	if m.probe.active {
		b.Fatal("ack not taken")
	}
}

// gossipPacket builds one full packet of Alive messages about members 0..k-1 at
// incarnation inc, and returns it with k.
func gossipPacket(b *testing.B, inc uint64) ([]byte, int) {
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(""))
	n := 0
	for p.Add(&wire.Alive{Node: fmt.Sprintf("node-%05d", n), Addr: fmt.Sprintf("10.0.%d.%d:7946", n/256, n%256), Incarnation: inc, ProtoMin: 1, ProtoMax: 1}) {
		n++
	}
	return append([]byte(nil), p.Bytes()...), n
}

// BenchmarkHandleGossipKnown: a full compound packet of facts we already hold, the
// common case once a fact has spread.
func BenchmarkHandleGossipKnown(b *testing.B) {
	m := benchMachine(b, 1000)
	pkt, n := gossipPacket(b, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		m.HandlePacket(epoch, "10.0.0.1:7946", pkt)
	}
	b.ReportMetric(float64(n), "msgs/packet")
}

// BenchmarkHandleGossipNew: a full compound packet of new facts (each a higher
// incarnation), which are applied, queued and pushed eagerly.
func BenchmarkHandleGossipNew(b *testing.B) {
	m := benchMachine(b, 1000)
	const cycle = 256
	pkts := make([][]byte, cycle)
	var n int
	for i := range pkts {
		pkts[i], n = gossipPacket(b, uint64(i+1))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkts[0])))
	i := 0
	for b.Loop() {
		if i == cycle {
			b.StopTimer()
			m.members.each(func(mem *member) {
				if mem != m.self {
					m.setState(epoch, mem, 0, StatusAlive)
				}
			})
			i = 0
			b.StartTimer()
		}
		m.HandlePacket(epoch, "10.0.0.1:7946", pkts[i])
		m.Ready()
		i++
	}
	b.ReportMetric(float64(n), "msgs/packet")
}
