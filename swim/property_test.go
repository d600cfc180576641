package swim

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
	"pgregory.net/rapid"
)

// checkInvariants verifies what must hold after any input: the incremental digest
// equals the one recomputed from the live members, the live count matches the view, and the probe and
// tombstone indexes point where they claim.
func checkInvariants(t failer, m *Machine) {
	var d wire.Digest
	live := 0
	for _, mem := range m.Members() {
		if mem.Status == StatusAlive || mem.Status == StatusSuspect {
			d.Hash += MemberHash(mem.Name, mem.Incarnation, mem.Status)
			d.Members++
			live++
		}
	}
	if d != m.Digest() {
		t.Fatalf("digest %+v, recomputed %+v", m.Digest(), d)
	}
	if live != m.live {
		t.Fatalf("live %d, counted %d", m.live, live)
	}
	if len(m.plist) != m.members.Len()-1 {
		t.Fatalf("probe list %d, members %d", len(m.plist), m.members.Len())
	}
	for i, p := range m.plist {
		if int(p.probeIdx) != i || m.members.get(p.Name) != p {
			t.Fatalf("probe list entry %d (%s) is stale", i, p.Name)
		}
	}
	for i, p := range m.tombs {
		if int(p.tombIdx) != i || (p.Status != StatusDead && p.Status != StatusLeft) {
			t.Fatalf("tombstone entry %d (%s, %v) is stale", i, p.Name, p.Status)
		}
	}
}

// After any sequence of facts, pushes, pulls and ticks: the invariants hold, our own
// incarnation never falls, and a tombstone only ever gives way to a higher
// incarnation.
func TestPropertyFactsKeepInvariants(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m, err := New(LANProfile("self", "self:1"), rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 1)), epoch)
		if err != nil {
			rt.Fatal(err)
		}
		names := []string{"self", "a", "b", "c", "d"}
		now := epoch
		prev := map[string]Member{}
		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for range steps {
			name := rapid.SampledFrom(names).Draw(rt, "name")
			inc := rapid.Uint64Range(0, 4).Draw(rt, "inc")
			from := rapid.SampledFrom(names).Draw(rt, "from")
			switch rapid.IntRange(0, 6).Draw(rt, "op") {
			case 0:
				m.HandlePacket(now, "x", packet(rt, &wire.Alive{Node: name, Addr: name + ":1", Incarnation: inc, ProtoMin: 1, ProtoMax: 1}))
			case 1:
				m.HandlePacket(now, "x", packet(rt, &wire.Suspect{Node: name, Incarnation: inc, From: from}))
			case 2:
				m.HandlePacket(now, "x", packet(rt, &wire.Dead{Node: name, Incarnation: inc, From: from}))
			case 3:
				m.HandlePacket(now, "x", packet(rt, &wire.Leave{Node: name, Incarnation: inc}))
			case 4:
				st := wire.NodeStatus(rapid.IntRange(0, 3).Draw(rt, "status"))
				m.HandlePushPull(now, "x", &wire.PushPull{Nodes: []wire.NodeState{{Name: name, Addr: name + ":1", Incarnation: inc, Status: st, ProtoMin: 1, ProtoMax: 1}}})
			case 5:
				now = now.Add(time.Duration(rapid.IntRange(0, 20_000).Draw(rt, "ms")) * time.Millisecond)
				m.Tick(now)
			case 6:
				// Ack whatever probe is in flight.
				for _, d := range decodePackets(rt, m.Ready().Packets) {
					if p, ok := d.msg.(*wire.Ping); ok {
						m.HandlePacket(now, d.to, packet(rt, &wire.Ack{Seq: p.Seq}))
					}
				}
			}
			checkInvariants(rt, m)
			m.Ready()
			for _, mem := range m.Members() {
				old, ok := prev[mem.Name]
				if ok && mem.Incarnation < old.Incarnation {
					rt.Fatalf("%s incarnation fell from %d to %d", mem.Name, old.Incarnation, mem.Incarnation)
				}
				if ok && (old.Status == StatusDead || old.Status == StatusLeft) && mem.Status != old.Status && mem.Incarnation <= old.Incarnation {
					rt.Fatalf("%s revived from %v at %d without a higher incarnation", mem.Name, old.Status, old.Incarnation)
				}
				prev[mem.Name] = mem
			}
		}
	})
}

// FuzzHandlePacket: input from the network never panics and never breaks the
// invariants; it is counted when malformed.
func FuzzHandlePacket(f *testing.F) {
	seeds := [][]wire.Message{
		{&wire.Ping{Seq: 1, Target: "self", Source: "a", SourceAddr: "a:1"}, &wire.Digest{Hash: 1, Members: 2}},
		{&wire.IndirectPing{Seq: 2, Target: "b", TargetAddr: "b:1", Source: "a", SourceAddr: "a:1", WantNack: true}},
		{&wire.Ack{Seq: 3}, &wire.Nack{Seq: 3}},
		{&wire.Alive{Node: "c", Addr: "c:1", Incarnation: 2, ProtoMin: 1, ProtoMax: 1}, &wire.Suspect{Node: "b", Incarnation: 1, From: "c"}},
		{&wire.Dead{Node: "b", Incarnation: 5, From: "c"}, &wire.Leave{Node: "self", Incarnation: 9}},
		{&wire.User{Payload: []byte("u")}, &wire.MetaDelta{Payload: []byte("m")}},
	}
	for _, msgs := range seeds {
		p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(""))
		for _, m := range msgs {
			p.Add(m)
		}
		f.Add(append([]byte(nil), p.Bytes()...))
	}
	f.Add([]byte("OR\x01\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := New(LANProfile("self", "self:1"), rand.New(rand.NewPCG(1, 1)), epoch)
		if err != nil {
			t.Fatal(err)
		}
		m.HandlePacket(epoch, "a:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
		m.HandlePacket(epoch, "a:1", data)
		m.Tick(epoch.Add(time.Second))
		checkInvariants(t, m)
		for _, p := range m.Ready().Packets {
			var r wire.PacketReader
			if _, err := r.Reset(p.Data); err != nil {
				t.Fatalf("we built a bad packet: %v", err)
			}
			if len(p.Data) > wire.DefaultMTU {
				t.Fatalf("packet of %d bytes", len(p.Data))
			}
		}
	})
}

// The queue's lists, key index and counts stay consistent under any mix of pushes
// and packet fills, and a packet never exceeds its MTU or repeats a broadcast.
func TestPropertyQueueConsistent(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		limit := rapid.IntRange(1, 20).Draw(rt, "limit")
		qs := newQueues(limit)
		for range rapid.IntRange(1, 80).Draw(rt, "steps") {
			if rapid.Bool().Draw(rt, "push") {
				kind := bcastKind(rapid.IntRange(0, int(numKinds)-1).Draw(rt, "kind"))
				key := rapid.SampledFrom([]string{"", "a", "b", "c"}).Draw(rt, "key")
				size := rapid.IntRange(0, 400).Draw(rt, "size")
				b := &broadcast{kind: kind, key: key, msg: wire.AppendMessage(nil, &wire.User{Payload: make([]byte, size)})}
				qs.push(b)
			} else {
				mtu := rapid.IntRange(64, 1400).Draw(rt, "mtu")
				p := wire.NewPacker(mtu, 0)
				qs.fill(p)
				seen := map[*broadcast]bool{}
				for _, b := range qs.picked {
					if seen[b] {
						rt.Fatal("a broadcast twice in one packet")
					}
					seen[b] = true
				}
				if len(p.Bytes()) > mtu {
					rt.Fatalf("packet %d > mtu %d", len(p.Bytes()), mtu)
				}
				qs.commit(rapid.IntRange(1, 5).Draw(rt, "transmits"))
			}
			total := 0
			for k := range qs.q {
				q := &qs.q[k]
				n := 0
				for t, l := range q.buckets {
					var prev *broadcast
					for b := l.head; b != nil; b = b.next {
						if !b.queued || b.kind != bcastKind(k) || b.transmits != t || b.prev != prev || b.picked {
							rt.Fatalf("bad list entry %+v in kind %d bucket %d", b, k, t)
						}
						if b.key != "" && q.byKey[b.key] != b {
							rt.Fatalf("key %q not indexed", b.key)
						}
						prev = b
						n++
					}
					if l.tail != prev {
						rt.Fatal("tail out of step")
					}
				}
				for key, b := range q.byKey {
					if !b.queued || b.key != key {
						rt.Fatalf("key %q indexes a retired broadcast", key)
					}
				}
				if n != q.n || n > limit {
					rt.Fatalf("kind %d counts %d, holds %d, limit %d", k, q.n, n, limit)
				}
				total += n
			}
			if total != qs.Len() {
				rt.Fatal("Len out of step")
			}
		}
	})
}
