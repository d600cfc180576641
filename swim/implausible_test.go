package swim

import (
	"math"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// forger is an address no member holds: the source of forged claims.
const forger = "10.0.0.200:7946"

// forge converges a 5-node cluster, hands n0 one packet of msgs from the forger,
// runs 30 s and returns the network.
func forge(t *testing.T, msgs ...wire.Message) *tnet {
	t.Helper()
	nt := newNet(t, 5, 11, nil)
	nt.joinAll()
	if _, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged); !ok {
		t.Fatal("cluster did not converge")
	}
	nt.node("n0").m.HandlePacket(nt.now, forger, packet(t, msgs...))
	nt.run(30 * time.Second)
	return nt
}

// n2Elsewhere counts the nodes that, 30 s after the forgery, do not see n2 alive at
// its own address.
func n2Elsewhere(t *testing.T, nt *tnet) int {
	n := 0
	for _, nd := range nt.nodes {
		if mem, _ := statusOf(nd, "n2"); mem.Status != StatusAlive || mem.Addr != addrOf(2) {
			t.Logf("%s sees n2 %v at %s incarnation %d", nd.name, mem.Status, mem.Addr, mem.Incarnation)
			n++
		}
	}
	return n
}

// One Dead(n2) at incarnation 2^64-1 killed n2 for good: its refutation wrapped to
// 0, below the forged death. The jump is refused, so n2 never even turns suspect.
func TestDeadAtExhaustedIncarnationIsRefused(t *testing.T) {
	nt := forge(t, &wire.Dead{Node: "n2", Incarnation: math.MaxUint64, From: "n4"})
	if n := n2Elsewhere(t, nt); n > 0 {
		t.Fatalf("%d of 5 nodes do not see n2 alive 30 s after one forged Dead(2^64-1)", n)
	}
	if got := nt.node("n0").m.Stats().Implausible; got != 1 {
		t.Fatalf("n0 counted %d implausible claims, want 1", got)
	}
}

// One Alive(n2) at 2^64-1 with the forger's address hijacked n2: nobody took its
// wrapped refutation. The jump is refused and n2 keeps its address everywhere.
func TestAliveAtExhaustedIncarnationCannotHijack(t *testing.T) {
	nt := forge(t, &wire.Alive{Node: "n2", Addr: forger, Incarnation: math.MaxUint64, ProtoMin: 1, ProtoMax: 1})
	if n := n2Elsewhere(t, nt); n > 0 {
		t.Fatalf("%d of 5 nodes do not see n2 alive at its address 30 s after one forged Alive(2^64-1)", n)
	}
	if got := nt.node("n0").m.Stats().Implausible; got != 1 {
		t.Fatalf("n0 counted %d implausible claims, want 1", got)
	}
}

// The bound is wire.MaxJump above the held incarnation (0 for an unknown member,
// our own for claims about us), for every kind of claim, push-pull included.
func TestIncarnationJumpBound(t *testing.T) {
	const held = 7
	for _, tc := range []struct {
		name string
		msg  func(inc uint64) wire.Message
		ok   func(m *Machine, inc uint64) bool
	}{
		{"alive", func(i uint64) wire.Message {
			return &wire.Alive{Node: "b", Addr: "b:1", Incarnation: i, ProtoMin: 1, ProtoMax: 1}
		},
			func(m *Machine, i uint64) bool { return memberOf(t, m, "b").Incarnation == i }},
		{"suspect", func(i uint64) wire.Message { return &wire.Suspect{Node: "b", Incarnation: i, From: "c"} },
			func(m *Machine, i uint64) bool { return memberOf(t, m, "b").Status == StatusSuspect }},
		{"dead", func(i uint64) wire.Message { return &wire.Dead{Node: "b", Incarnation: i, From: "c"} },
			func(m *Machine, i uint64) bool { return memberOf(t, m, "b").Status == StatusDead }},
		{"leave", func(i uint64) wire.Message { return &wire.Leave{Node: "b", Incarnation: i} },
			func(m *Machine, i uint64) bool { return memberOf(t, m, "b").Status == StatusLeft }},
		{"self", func(i uint64) wire.Message { return &wire.Suspect{Node: "a", Incarnation: i, From: "c"} },
			func(m *Machine, i uint64) bool { return m.Local().Incarnation == i+1 }},
	} {
		for _, jump := range []uint64{wire.MaxJump, wire.MaxJump + 1} {
			m := newMachine(t, "a", nil)
			m.self.Incarnation = held
			m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: held, ProtoMin: 1, ProtoMax: 1}))
			m.HandlePacket(epoch, "c:1", packet(t, tc.msg(held+jump)))
			if got, want := tc.ok(m, held+jump), jump == wire.MaxJump; got != want {
				t.Fatalf("%s at held+%d: applied %v, want %v", tc.name, jump, got, want)
			}
			if got, want := m.Stats().Implausible, uint64(jump-wire.MaxJump); got != want {
				t.Fatalf("%s at held+%d: %d implausible, want %d", tc.name, jump, got, want)
			}
		}
	}
	m := newMachine(t, "a", nil)
	m.HandlePushPull(epoch, "c:1", &wire.PushPull{Nodes: []wire.NodeState{
		{Name: "x", Addr: "x:1", Incarnation: wire.MaxJump, Status: wire.StatusAlive, ProtoMin: 1, ProtoMax: 1},
		{Name: "y", Addr: "y:1", Incarnation: wire.MaxJump + 1, Status: wire.StatusAlive, ProtoMin: 1, ProtoMax: 1},
	}})
	if _, ok := statusOf(&tnode{m: m}, "y"); ok || memberOf(t, m, "x").Incarnation != wire.MaxJump || m.Stats().Implausible != 1 {
		t.Fatalf("unknown members: the bound is MaxJump above 0; view %+v, stats %+v", m.Members(), m.Stats())
	}
}

// A node whose incarnation is already 2^64-1 has nothing to out-bid a claim with:
// it refuses to refute rather than wrap to 0.
func TestRefutationNeverWraps(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.self.Incarnation = math.MaxUint64
	m.HandlePacket(epoch, "c:1", packet(t, &wire.Suspect{Node: "a", Incarnation: math.MaxUint64, From: "c"}))
	if inc := m.Local().Incarnation; inc != math.MaxUint64 || m.Stats().Refutations != 0 || m.Stats().Implausible != 1 {
		t.Fatalf("incarnation %d, stats %+v", inc, m.Stats())
	}
}
