package swim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/omnirelay/mesh/wire"
)

// --- helpers for single-machine tests --------------------------------------------

func newMachine(t testing.TB, name string, mod func(*Config)) *Machine {
	t.Helper()
	cfg := LANProfile(name, name+":1")
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg, rand.New(rand.NewPCG(1, 2)), epoch)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// failer is what helpers need of *testing.T and *rapid.T.
type failer interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// packet builds a plain packet of msgs for the default cluster label.
func packet(t failer, msgs ...wire.Message) []byte {
	t.Helper()
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(""))
	for _, m := range msgs {
		if !p.Add(m) {
			t.Fatalf("%T does not fit", m)
		}
	}
	return append([]byte(nil), p.Bytes()...)
}

// decoded is one message of an output packet.
type decoded struct {
	to  string
	msg wire.Message
}

// decodePackets decodes every membership message of the packets.
func decodePackets(t failer, pkts []Packet) []decoded {
	t.Helper()
	var out []decoded
	var r wire.PacketReader
	r.Accept(wire.Versions{Min: 1, Max: wire.PreviewVersion}) // preview nodes' packets too
	var d wire.Decoder
	for _, p := range pkts {
		if _, err := r.Reset(p.Data); err != nil {
			t.Fatalf("our own packet is bad: %v", err)
		}
		for r.Next() {
			var m wire.Message
			switch r.Type() {
			case wire.TypePing:
				m = &wire.Ping{}
			case wire.TypeIndirectPing:
				m = &wire.IndirectPing{}
			case wire.TypeAck:
				m = &wire.Ack{}
			case wire.TypeNack:
				m = &wire.Nack{}
			case wire.TypeAlive:
				m = &wire.Alive{}
			case wire.TypeSuspect:
				m = &wire.Suspect{}
			case wire.TypeDead:
				m = &wire.Dead{}
			case wire.TypeLeave:
				m = &wire.Leave{}
			case wire.TypeUser:
				m = &wire.User{}
			case wire.TypeMetaDelta:
				m = &wire.MetaDelta{}
			case wire.TypeDigest:
				m = &wire.Digest{}
			default:
				t.Fatalf("unexpected type %d", r.Type())
			}
			if err := d.Decode(r.Body(), m); err != nil {
				t.Fatal(err)
			}
			out = append(out, decoded{p.To, m})
		}
		if r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	return out
}

func memberOf(t testing.TB, m *Machine, name string) Member {
	t.Helper()
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem
		}
	}
	t.Fatalf("%s does not know %s", m.Local().Name, name)
	return Member{}
}

func hasEvent(evs []Event, kind EventKind, name string) bool {
	for _, e := range evs {
		if e.Kind == kind && e.Member.Name == name {
			return true
		}
	}
	return false
}

// --- incarnation rules -----------------------------------------------------------

// SWIM §4.2: "an Alive message with a higher incarnation number overrides a Suspect".
func TestSuspectRefutedByHigherIncarnation(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 1}))
	m.HandlePacket(epoch, "c:1", packet(t, &wire.Suspect{Node: "b", Incarnation: 3, From: "c"}))
	if s := memberOf(t, m, "b").Status; s != StatusSuspect {
		t.Fatalf("b is %v after Suspect(3), want suspect", s)
	}
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 1}))
	if s := memberOf(t, m, "b").Status; s != StatusSuspect {
		t.Fatalf("Alive at the same incarnation refuted the suspicion")
	}
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 4, ProtoMin: 1, ProtoMax: 1}))
	b := memberOf(t, m, "b")
	if b.Status != StatusAlive || b.Incarnation != 4 {
		t.Fatalf("b = %+v after Alive(4), want alive at 4", b)
	}
	evs := m.Ready().Events
	if !hasEvent(evs, EventSuspect, "b") || !hasEvent(evs, EventAlive, "b") {
		t.Fatalf("events %v lack suspect and alive for b", evs)
	}
}

// SWIM §4.2: "a Suspect message about itself makes a member increment its
// incarnation number and disseminate an Alive message".
func TestSuspicionAboutSelfTriggersRefutation(t *testing.T) {
	for _, msg := range []wire.Message{
		&wire.Suspect{Node: "a", Incarnation: 5, From: "c"},
		&wire.Dead{Node: "a", Incarnation: 5, From: "c"},
		&wire.Leave{Node: "a", Incarnation: 5},
		&wire.Alive{Node: "a", Addr: "elsewhere:1", Incarnation: 5, ProtoMin: 1, ProtoMax: 1},
	} {
		t.Run(fmt.Sprintf("%T", msg), func(t *testing.T) {
			m := newMachine(t, "a", nil)
			m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", ProtoMin: 1, ProtoMax: 1}))
			m.Ready()
			m.HandlePacket(epoch, "c:1", packet(t, msg))
			if inc := m.Local().Incarnation; inc != 6 {
				t.Fatalf("incarnation %d, want max(seen)+1 = 6", inc)
			}
			if m.Local().Status != StatusAlive || m.Stats().Refutations != 1 {
				t.Fatalf("local %+v, stats %+v", m.Local(), m.Stats())
			}
			if m.LocalHealth() != 1 {
				t.Fatalf("a refutation should raise local health to 1, got %d", m.LocalHealth())
			}
			var sent bool
			for _, d := range decodePackets(t, m.Ready().Packets) {
				if a, ok := d.msg.(*wire.Alive); ok && a.Node == "a" && a.Incarnation == 6 {
					sent = true
				}
			}
			if !sent {
				t.Fatal("the refuting Alive was not pushed at once")
			}
		})
	}
}

func TestStaleClaimsAboutSelfIgnored(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "c:1", packet(t, &wire.Suspect{Node: "a", Incarnation: 0, From: "c"}))
	if m.Local().Incarnation != 1 {
		t.Fatalf("incarnation %d", m.Local().Incarnation)
	}
	m.HandlePacket(epoch, "c:1", packet(t,
		&wire.Suspect{Node: "a", Incarnation: 0, From: "c"},
		&wire.Alive{Node: "a", Addr: "a:1", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	if m.Local().Incarnation != 1 || m.Stats().Refutations != 1 {
		t.Fatalf("a stale suspicion or our own alive was refuted: %+v", m.Local())
	}
}

func TestDeadAtOlderIncarnationIgnored(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 4, ProtoMin: 1, ProtoMax: 1}))
	m.HandlePacket(epoch, "c:1", packet(t, &wire.Dead{Node: "b", Incarnation: 3, From: "c"}))
	if s := memberOf(t, m, "b").Status; s != StatusAlive {
		t.Fatalf("Dead(3) killed b at 4: %v", s)
	}
	m.HandlePacket(epoch, "c:1", packet(t, &wire.Dead{Node: "b", Incarnation: 4, From: "c"}))
	if s := memberOf(t, m, "b").Status; s != StatusDead {
		t.Fatalf("Dead(4) did not kill b at 4: %v", s)
	}
	if !hasEvent(m.Ready().Events, EventDead, "b") || m.Stats().Deaths != 1 {
		t.Fatal("no dead event")
	}
}

// A departed node must not be revived by stale state: a tombstone beats alive of the
// same or a lower incarnation from any source, push-pull included.
func TestTombstoneBeatsStaleAlive(t *testing.T) {
	for _, left := range []bool{false, true} {
		m := newMachine(t, "a", nil)
		m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 1}))
		if left {
			m.HandlePacket(epoch, "b:1", packet(t, &wire.Dead{Node: "b", Incarnation: 3, From: "b"}))
		} else {
			m.HandlePacket(epoch, "c:1", packet(t, &wire.Dead{Node: "b", Incarnation: 3, From: "c"}))
		}
		want := map[bool]Status{false: StatusDead, true: StatusLeft}[left]
		if s := memberOf(t, m, "b").Status; s != want {
			t.Fatalf("left=%v: b is %v, want %v", left, s, want)
		}
		m.Ready()
		m.HandlePacket(epoch, "c:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 1}))
		reply := m.HandlePushPull(epoch, "d:1", &wire.PushPull{Nodes: []wire.NodeState{
			{Name: "b", Addr: "b:1", Incarnation: 2, Status: wire.StatusAlive, ProtoMin: 1, ProtoMax: 1},
			{Name: "b", Addr: "b:1", Incarnation: 3, Status: wire.StatusSuspect, ProtoMin: 1, ProtoMax: 1},
		}})
		if s := memberOf(t, m, "b").Status; s != want {
			t.Fatalf("left=%v: stale alive revived b: %v", left, s)
		}
		var carried bool
		for _, ns := range reply.Nodes {
			carried = carried || (ns.Name == "b" && ns.Status == wire.NodeStatus(want))
		}
		if !carried {
			t.Fatal("push-pull reply does not carry the tombstone")
		}
		if evs := m.Ready().Events; len(evs) != 0 {
			t.Fatalf("stale alive produced events %v", evs)
		}
		m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:2", Incarnation: 4, ProtoMin: 1, ProtoMax: 1}))
		b := memberOf(t, m, "b")
		if b.Status != StatusAlive || b.Addr != "b:2" || !hasEvent(m.Ready().Events, EventJoin, "b") {
			t.Fatalf("a higher incarnation did not bring b back: %+v", b)
		}
	}
}

// A remote "dead" seen in a push-pull only makes the member suspect here, so a
// stale or partitioned view cannot kill a live member without giving it time to
// refute.
func TestPushPullDeadIsTakenAsSuspicion(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.HandlePushPullReply(epoch, "c:1", &wire.PushPull{Nodes: []wire.NodeState{
		{Name: "b", Addr: "b:1", Incarnation: 1, Status: wire.StatusDead, ProtoMin: 1, ProtoMax: 1},
	}})
	if s := memberOf(t, m, "b").Status; s != StatusSuspect {
		t.Fatalf("b is %v, want suspect", s)
	}
}

func TestTombstonesAreCollectedAfterTTL(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.TombstoneTTL = time.Minute })
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", ProtoMin: 1, ProtoMax: 1}))
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Leave{Node: "b"}))
	if d := m.Digest(); d.Members != 1 || d.Hash != MemberHash("a", 0, StatusAlive) {
		t.Fatalf("tombstone counted in the digest: %+v", d)
	}
	now := epoch
	for now.Before(epoch.Add(59 * time.Second)) {
		now = m.NextDeadline()
		m.Tick(now)
	}
	if len(m.Members()) != 2 {
		t.Fatal("tombstone collected before its TTL")
	}
	for now.Before(epoch.Add(61 * time.Second)) {
		now = m.NextDeadline()
		m.Tick(now)
	}
	if got := m.Members(); len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("tombstone not collected: %v", got)
	}
}

// --- probing -----------------------------------------------------------------------

// A reused address must not vouch for the node that used to hold it.
func TestPingForAnotherNameIsNotAnswered(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "x:1", packet(t, &wire.Ping{Seq: 9, Target: "old", Source: "x", SourceAddr: "x:1"}))
	if r := m.Ready(); len(r.Packets) != 0 {
		t.Fatalf("answered a ping for another name: %v", decodePackets(t, r.Packets))
	}
	if m.Stats().MisdirectedPings != 1 {
		t.Fatal("not counted")
	}
	// The body's SourceAddr is not the view's address of "x": the ack goes to the
	// packet's source (no reflection, TestPingWithVictimReplyAddrIsNotReflected).
	m.HandlePacket(epoch, "x:1", packet(t, &wire.Ping{Seq: 9, Target: "a", Source: "x", SourceAddr: "x:9"}))
	out := decodePackets(t, m.Ready().Packets)
	if len(out) == 0 || out[0].to != "x:1" || out[0].msg.(*wire.Ack).Seq != 9 {
		t.Fatalf("ping for us not acked to the packet's source address: %v", out)
	}
}

// Lifeguard buddy system: "a member probing a suspect piggybacks the suspicion on
// the ping", so the suspect learns of it first.
func TestBuddySystemPiggybacksSuspicionOnPing(t *testing.T) {
	for _, buddy := range []bool{true, false} {
		m := newMachine(t, "a", func(c *Config) { c.Lifeguard.Buddy = buddy })
		m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 2, ProtoMin: 1, ProtoMax: 1}))
		m.HandlePacket(epoch, "c:1", packet(t, &wire.Suspect{Node: "b", Incarnation: 2, From: "c"}))
		m.Ready()
		var ping []decoded
		for len(ping) == 0 {
			m.Tick(m.NextDeadline())
			for _, d := range decodePackets(t, m.Ready().Packets) {
				if _, ok := d.msg.(*wire.Ping); ok || len(ping) > 0 {
					ping = append(ping, d)
				}
			}
		}
		var got bool
		if len(ping) > 1 {
			s, ok := ping[1].msg.(*wire.Suspect)
			got = ok && s.Node == "b" && s.From == "a"
		}
		if got != buddy {
			t.Fatalf("buddy=%v: probe packet from the ping on %v", buddy, ping)
		}
	}
}

// SWIM §4.3: "new members are inserted at random positions of the probe list", and
// each round is a new permutation that probes every member once.
func TestProbeRoundVisitsEveryMemberOnce(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.ProbeTimeout = time.Millisecond; c.ProbeInterval = 2 * time.Millisecond })
	const n = 20
	for i := range n {
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: fmt.Sprintf("m%02d", i), Addr: fmt.Sprintf("m%02d:1", i), ProtoMin: 1, ProtoMax: 1}))
	}
	m.Ready()
	var rounds [2][]string
	for r := range rounds {
		for len(rounds[r]) < n {
			now := m.NextDeadline()
			m.Tick(now)
			for _, d := range decodePackets(t, m.Ready().Packets) {
				if p, ok := d.msg.(*wire.Ping); ok {
					rounds[r] = append(rounds[r], p.Target)
					// Ack at once so nobody turns suspect.
					m.HandlePacket(now, d.to, packet(t, &wire.Ack{Seq: p.Seq}))
				}
			}
		}
	}
	for r, order := range rounds {
		seen := map[string]bool{}
		for _, x := range order {
			seen[x] = true
		}
		if len(seen) != n {
			t.Fatalf("round %d probed %d distinct members of %d: %v", r, len(seen), n, order)
		}
	}
	if fmt.Sprint(rounds[0]) == fmt.Sprint(rounds[1]) {
		t.Fatal("probe order not reshuffled between rounds")
	}
}

// --- dissemination -----------------------------------------------------------------

// A fact learned for the first time is pushed at once to EagerFanout members, in the
// same step, not at the next gossip tick.
func TestNewFactIsPushedEagerly(t *testing.T) {
	for _, fanout := range []int{0, 3} {
		m := newMachine(t, "a", func(c *Config) { c.EagerFanout = fanout })
		for i := range 6 {
			m.HandlePushPullReply(epoch, "s", &wire.PushPull{Nodes: []wire.NodeState{
				{Name: fmt.Sprintf("p%d", i), Addr: fmt.Sprintf("p%d:1", i), ProtoMin: 1, ProtoMax: 1},
			}})
		}
		m.Ready()
		m.HandlePacket(epoch, "p0:1", packet(t, &wire.Alive{Node: "new", Addr: "new:1", ProtoMin: 1, ProtoMax: 1}))
		peers := map[string]bool{}
		for _, d := range decodePackets(t, m.Ready().Packets) {
			if a, ok := d.msg.(*wire.Alive); ok && a.Node == "new" {
				if d.to == "p0:1" {
					t.Fatal("pushed back to the sender")
				}
				peers[d.to] = true
			}
		}
		if len(peers) != fanout {
			t.Fatalf("fanout %d: pushed to %v", fanout, peers)
		}
	}
}

// Eager push is paced (EagerPace): a burst of inputs that each teach a new fact, as
// in a mass join, gets EagerBurst pushes at once, then one per GossipInterval; the
// facts held back stay queued for the gossip tick.
func TestEagerPushIsPacedInABurst(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.EagerFanout = 3 })
	for i := range 6 {
		m.HandlePushPullReply(epoch, "s", &wire.PushPull{Nodes: []wire.NodeState{
			{Name: fmt.Sprintf("p%d", i), Addr: fmt.Sprintf("p%d:1", i), ProtoMin: 1, ProtoMax: 1},
		}})
	}
	m.Ready()
	learn := func(now time.Time, name string) (pushes int) {
		m.HandlePacket(now, "p0:1", packet(t, &wire.Alive{Node: name, Addr: name + ":1", ProtoMin: 1, ProtoMax: 1}))
		for _, d := range decodePackets(t, m.Ready().Packets) {
			if a, ok := d.msg.(*wire.Alive); ok && a.Node == name {
				pushes++
			}
		}
		return pushes
	}
	for i := range EagerBurst + 2 {
		want := 3
		if i >= EagerBurst {
			want = 0
		}
		if got := learn(epoch, fmt.Sprintf("n%d", i)); got != want {
			t.Fatalf("fact %d of a burst: pushed to %d members, want %d", i, got, want)
		}
	}
	if got := m.Stats().EagerDeferred; got != 2 {
		t.Fatalf("EagerDeferred = %d, want 2", got)
	}
	gi := m.cfg.GossipInterval
	if got := learn(epoch.Add(gi/2), "late"); got != 0 {
		t.Fatalf("half a gossip interval after the burst: pushed to %d, want 0", got)
	}
	if got := learn(epoch.Add(gi), "next"); got != 3 {
		t.Fatalf("a gossip interval after the burst: pushed to %d, want 3", got)
	}
	held := map[string]bool{}
	m.Tick(epoch.Add(gi)) // the gossip tick is due: it carries what eager push held back
	for _, d := range decodePackets(t, m.Ready().Packets) {
		if a, ok := d.msg.(*wire.Alive); ok {
			held[a.Node] = true
		}
	}
	if !held["n4"] || !held["n5"] || !held["late"] {
		t.Fatalf("gossip tick carried %v, want the held-back n4, n5 and late", held)
	}
}

// A metadata delta or user message broadcast by the layer above is pushed at once to
// EagerFanout distinct members, as a membership fact is, not only queued for the
// gossip tick: the metadata layer re-broadcasts deltas new to it, so each hop costs
// a network delay instead of up to a gossip interval.
func TestPayloadIsPushedEagerly(t *testing.T) {
	for _, fanout := range []int{0, 3} {
		m := newMachine(t, "a", func(c *Config) { c.EagerFanout = fanout })
		for i := range 6 {
			m.HandlePushPullReply(epoch, "s", &wire.PushPull{Nodes: []wire.NodeState{
				{Name: fmt.Sprintf("p%d", i), Addr: fmt.Sprintf("p%d:1", i), ProtoMin: 1, ProtoMax: 1},
			}})
		}
		m.Ready()
		pushedTo := func(broadcast func() error, want string) map[string]bool {
			if err := broadcast(); err != nil {
				t.Fatal(err)
			}
			to := map[string]bool{}
			for _, d := range decodePackets(t, m.Ready().Packets) {
				switch p := d.msg.(type) {
				case *wire.MetaDelta:
					to[d.to] = to[d.to] || string(p.Payload) == want
				case *wire.User:
					to[d.to] = to[d.to] || string(p.Payload) == want
				}
			}
			return to
		}
		meta := pushedTo(func() error { return m.BroadcastMeta(epoch, "k", []byte("delta")) }, "delta")
		user := pushedTo(func() error { return m.BroadcastUser(epoch, []byte("hello")) }, "hello")
		for _, to := range []map[string]bool{meta, user} {
			for addr, ok := range to {
				if !ok {
					t.Fatalf("fanout %d: packet to %s lacks the new payload", fanout, addr)
				}
			}
		}
		if len(meta) != fanout || len(user) != fanout {
			t.Fatalf("fanout %d: meta pushed to %v, user to %v", fanout, meta, user)
		}
		// Still queued for the gossip tick, which carries it to GossipNodes more.
		if m.Stats().QueueLen == 0 {
			t.Fatalf("fanout %d: payload not queued for gossip", fanout)
		}
	}
}

func TestJoinConvergesAndDigestsAgree(t *testing.T) {
	nt := newNet(t, 8, 1, nil)
	nt.joinAll()
	took, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	if !ok {
		t.Fatal("8 nodes did not converge in 10 s")
	}
	t.Logf("converged in %v", took)
	nt.run(time.Minute)
	if !nt.converged() {
		t.Fatal("a healthy cluster lost a member")
	}
	d := nt.nodes[0].m.Digest()
	for _, nd := range nt.nodes {
		if nd.m.Digest() != d || d.Members != 8 {
			t.Fatalf("%s digest %+v, n0 %+v", nd.name, nd.m.Digest(), d)
		}
		if !hasEvent(nd.events, EventJoin, "n7") && nd.name != "n7" {
			t.Fatalf("%s saw no join of n7", nd.name)
		}
		// Seeds are live members and nothing departed: no reconnect traffic, and
		// digests agree, so no digest syncs either.
		if st := nd.m.Stats(); st.Reconnects != 0 || st.DigestSyncs != 0 || st.Suspicions != 0 {
			t.Fatalf("%s in a healthy cluster: %+v", nd.name, st)
		}
	}
}

// SWIM: "a member that does not answer direct and indirect probes is suspected, and
// declared failed when the suspicion times out"; everyone learns it.
func TestCrashedMemberIsSuspectedThenDeclaredDead(t *testing.T) {
	nt := newNet(t, 8, 2, nil)
	nt.joinAll()
	if _, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged); !ok {
		t.Fatal("no convergence")
	}
	nt.node("n3").down = true
	allDead := func() bool {
		for _, nd := range nt.nodes {
			if mem, _ := statusOf(nd, "n3"); !nd.down && mem.Status != StatusDead {
				return false
			}
		}
		return true
	}
	took, ok := nt.runUntil(30*time.Second, 50*time.Millisecond, allDead)
	if !ok {
		t.Fatal("n3 not declared dead everywhere in 30 s")
	}
	t.Logf("dead everywhere after %v", took)
	for _, nd := range nt.nodes {
		if nd.down {
			continue
		}
		if !hasEvent(nd.events, EventDead, "n3") {
			t.Fatalf("%s: no dead event", nd.name)
		}
		for _, other := range nt.nodes {
			if mem, _ := statusOf(nd, other.name); other != nd && !other.down && mem.Status != StatusAlive {
				t.Fatalf("false positive: %s sees %s %v", nd.name, other.name, mem.Status)
			}
		}
	}
}

func TestGracefulLeaveIsSeenAsLeftNotDead(t *testing.T) {
	nt := newNet(t, 6, 3, nil)
	nt.joinAll()
	nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	leaver := nt.node("n4")
	leaver.m.Leave(nt.now)
	nt.run(200 * time.Millisecond)
	leaver.down = true
	nt.run(20 * time.Second)
	for _, nd := range nt.nodes {
		if nd.down {
			continue
		}
		mem, _ := statusOf(nd, "n4")
		if mem.Status != StatusLeft || !hasEvent(nd.events, EventLeft, "n4") || hasEvent(nd.events, EventDead, "n4") {
			t.Fatalf("%s sees n4 %v, events %v", nd.name, mem.Status, nd.events)
		}
	}
}

// A member that left gracefully is not coming back at that address on its own, so
// it is not dialled for its tombstone's lifetime: no probe, gossip, push-pull or
// reconnect goes to it (reconnects are for dead members, which may be partitioned).
func TestLeftMemberIsNotDialled(t *testing.T) {
	nt := newNet(t, 5, 3, nil)
	nt.joinAll()
	nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	leaver := nt.node("n4")
	leaver.m.Leave(nt.now)
	nt.run(time.Second) // the Leave spreads
	leaver.down = true
	clear(nt.dialed)
	nt.run(5 * time.Minute) // 30 reconnect intervals
	if got := nt.dialed[leaver.addr]; got != 0 {
		t.Fatalf("%d packets and streams to the address of a member that left", got)
	}
	if got := nt.dialed[nt.nodes[0].addr]; got == 0 {
		t.Fatal("nothing sent to a live member: the test measures nothing")
	}
}

// A restarted node learns its old incarnation from the cluster's view of itself and
// refutes above it, at its new address.
func TestRestartedNodeRejoinsWithHigherIncarnation(t *testing.T) {
	for _, newAddr := range []bool{false, true} {
		nt := newNet(t, 5, 4, nil)
		nt.joinAll()
		nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
		old := nt.node("n2")
		old.down = true
		nt.runUntil(30*time.Second, 100*time.Millisecond, func() bool {
			mem, _ := statusOf(nt.node("n0"), "n2")
			return mem.Status == StatusDead
		})
		nt.run(5 * time.Second)
		deadInc := memberOf(t, nt.node("n0").m, "n2").Incarnation
		addr := old.addr
		if newAddr {
			addr = addrOf(99)
			old.name = "n2-old"
		}
		nd := nt.add("n2", addr, 77, nil)
		nd.m.Join(nt.now, []string{nt.nodes[0].addr})
		if _, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged); !ok {
			t.Fatalf("newAddr=%v: restarted n2 not alive everywhere", newAddr)
		}
		for _, x := range nt.nodes {
			if x.down {
				continue
			}
			mem := memberOf(t, x.m, "n2")
			if mem.Incarnation <= deadInc || mem.Addr != addr {
				t.Fatalf("%s sees n2 %+v, dead incarnation was %d", x.name, mem, deadInc)
			}
		}
	}
}

// --- Lifeguard -----------------------------------------------------------------------

// Lifeguard §IV-A: missed acks raise the local health multiplier, successful probes
// lower it; with LocalHealth off it never moves.
func TestLocalHealthRisesWhenDeafAndRecovers(t *testing.T) {
	for _, on := range []bool{true, false} {
		nt := newNet(t, 5, 5, func(c *Config) { c.Lifeguard.LocalHealth = on })
		nt.joinAll()
		nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
		deaf := nt.node("n1")
		// n1 hears nothing, but others hear it: it is the slow one.
		var others []*tnode
		for _, nd := range nt.nodes {
			if nd != deaf {
				others = append(others, nd)
			}
		}
		nt.net.PartitionOneWay(nt.ep(others...), nt.ep(deaf))
		nt.run(3 * time.Second)
		h := deaf.m.LocalHealth()
		if on && h < 3 || !on && h != 0 {
			t.Fatalf("LocalHealth=%v: health %d while deaf", on, h)
		}
		if on {
			nt.net.Heal()
			nt.run(20 * time.Second)
			if h := deaf.m.LocalHealth(); h != 0 {
				t.Fatalf("health %d after recovery", h)
			}
		}
	}
}

// Lifeguard: nacks from intermediaries show the prober that it can hear; a probe of
// a truly dead target then costs it no health.
func TestNacksKeepProberHealthy(t *testing.T) {
	for _, profile := range []func(string, string) Config{LANProfile, MemberlistProfile} {
		nt := newNet(t, 6, 6, func(c *Config) { *c = profile(c.Name, c.Addr) })
		nt.joinAll()
		nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
		nt.node("n5").down = true
		nt.run(8 * time.Second)
		var nacks uint64
		for _, nd := range nt.nodes[:5] {
			nacks += nd.m.Stats().NacksReceived
			if h := nd.m.LocalHealth(); h != 0 {
				t.Fatalf("%s health %d: a dead target was blamed on the prober", nd.name, h)
			}
		}
		if nacks == 0 {
			t.Fatal("no nacks received")
		}
	}
}

// Lifeguard §IV-B: independent confirmations shorten a suspicion along
// SuspicionTimeout; repeated or own confirmations do not.
func TestSuspicionShrinksWithIndependentConfirmations(t *testing.T) {
	m := newMachine(t, "a", nil)
	for i := range 20 {
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: fmt.Sprintf("p%02d", i), Addr: fmt.Sprintf("p%02d:1", i), ProtoMin: 1, ProtoMax: 1}))
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: "p01"}))
	mem := m.members.get("p00")
	lo := SuspicionMinTimeout(4, 21, 250*time.Millisecond)
	hi := 6 * lo
	if got, want := mem.susp.deadline.Sub(epoch), SuspicionTimeout(0, 2, lo, hi); got != want || want < hi-time.Millisecond {
		t.Fatalf("first suspicion lasts %v, want max %v", got, hi)
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: "p01"}))
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: "p02"}))
	if got, want := mem.susp.deadline.Sub(epoch), SuspicionTimeout(1, 2, lo, hi); got != want {
		t.Fatalf("after one independent confirmation %v, want %v", got, want)
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: "p03"}))
	if got := mem.susp.deadline.Sub(epoch); got != lo {
		t.Fatalf("after k confirmations %v, want min %v", got, lo)
	}
	// It fires at the minimum: a final probe, then death when nothing answers.
	m.Tick(epoch.Add(lo - time.Millisecond))
	if memberOf(t, m, "p00").Status != StatusSuspect || m.Stats().FinalProbes != 0 {
		t.Fatal("suspicion ended early")
	}
	m.Tick(epoch.Add(lo))
	if memberOf(t, m, "p00").Status != StatusSuspect || m.Stats().FinalProbes != 1 {
		t.Fatal("no final probe at the minimum timeout")
	}
	m.Tick(epoch.Add(lo + 250*time.Millisecond))
	if memberOf(t, m, "p00").Status != StatusDead {
		t.Fatal("not dead after an unanswered final probe")
	}
}

// Lifeguard §IV-B counts confirmations from independent members. A push-pull names
// no suspecter (its states say what the sender holds, not who suspected), so its
// suspect or dead states may start a suspicion but never confirm one: a view that
// only echoes a suspicion, however many times and from however many source
// ports, must not shorten it. Nor does a Suspect whose From is empty, unknown, or
// the suspect itself.
func TestOnlyIdentifiedDistinctMembersConfirm(t *testing.T) {
	m := newMachine(t, "a", nil)
	for i := range 20 {
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: fmt.Sprintf("p%02d", i), Addr: fmt.Sprintf("p%02d:1", i), ProtoMin: 1, ProtoMax: 1}))
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: "p01"}))
	full := m.members.get("p00").susp.deadline
	echo := &wire.PushPull{Nodes: []wire.NodeState{
		{Name: "p00", Addr: "p00:1", Status: wire.StatusSuspect, ProtoMin: 1, ProtoMax: 1},
		{Name: "p05", Addr: "p05:1", Status: wire.StatusDead, ProtoMin: 1, ProtoMax: 1},
	}}
	for i := range 5 {
		m.HandlePushPull(epoch, fmt.Sprintf("p02:%d", 40000+i), echo)
		m.HandlePushPullReply(epoch, fmt.Sprintf("p03:%d", 40000+i), echo)
	}
	for _, f := range []string{"", "nobody", "p00"} {
		m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: f}))
	}
	if got := m.members.get("p00").susp.deadline; !got.Equal(full) {
		t.Fatalf("echoes and anonymous claims cut the suspicion to %v, want the full %v", got.Sub(epoch), full.Sub(epoch))
	}
	// A suspicion a push-pull started has no first suspecter: the first named one
	// is not a confirmation, the second is.
	p05 := m.members.get("p05")
	if p05.Status != StatusSuspect {
		t.Fatalf("p05 %v after a push-pull holding it dead, want suspect", p05.Status)
	}
	full = p05.susp.deadline
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p05", From: "p06"}))
	if got := p05.susp.deadline; !got.Equal(full) {
		t.Fatalf("first named suspecter of a push-pull suspicion cut it to %v", got.Sub(epoch))
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p05", From: "p07"}))
	if got := p05.susp.deadline; !got.Before(full) {
		t.Fatal("a second, distinct named suspecter did not confirm")
	}
	// What we gossip about a suspicion learned by push-pull names nobody.
	for _, d := range decodePackets(t, m.Ready().Packets) {
		if s, ok := d.msg.(*wire.Suspect); ok && s.Node == "p00" && s.From != "p01" {
			t.Fatalf("gossiped Suspect(p00) from %q, want the first suspecter p01", s.From)
		}
	}
}

// The final probe: a suspect that answers it is not declared dead (its suspicion
// restarts at the minimum), and the suspicion it carries makes the suspect answer
// with its newer Alive when it had already refuted.
func TestFinalProbeSparesAnAnsweringSuspect(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 2, ProtoMin: 1, ProtoMax: 1}))
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "b", Incarnation: 2, From: "c"}))
	m.Ready()
	end := m.members.get("b").susp.deadline
	m.Tick(end)
	var seq uint32
	var carried bool
	for _, d := range decodePackets(t, m.Ready().Packets) {
		if p, ok := d.msg.(*wire.Ping); ok && d.to == "b:1" && p.Target == "b" {
			seq = p.Seq
		}
		if s, ok := d.msg.(*wire.Suspect); ok && d.to == "b:1" && s.Node == "b" {
			carried = true
		}
	}
	if seq == 0 || !carried {
		t.Fatal("final probe did not ping b with its suspicion")
	}
	m.HandlePacket(end.Add(time.Millisecond), "b:1", packet(t, &wire.Ack{Seq: seq}))
	m.Tick(end.Add(time.Second))
	if memberOf(t, m, "b").Status != StatusSuspect {
		t.Fatalf("b %v after answering its final probe", memberOf(t, m, "b").Status)
	}

	// The suspect's side: a stale suspicion is answered with the current Alive.
	b := newMachine(t, "b", nil)
	b.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: "a", Addr: "a:1", ProtoMin: 1, ProtoMax: 1}))
	b.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "b", Incarnation: 0, From: "c"}))
	b.Ready()
	b.HandlePacket(epoch, "a:1", packet(t, &wire.Ping{Seq: 5, Target: "b", Source: "a", SourceAddr: "a:1"},
		&wire.Suspect{Node: "b", Incarnation: 0, From: "a"}))
	var alive bool
	for _, d := range decodePackets(t, b.Ready().Packets) {
		if al, ok := d.msg.(*wire.Alive); ok && d.to == "a:1" && al.Node == "b" && al.Incarnation == 1 {
			alive = true
		}
	}
	if !alive || b.Local().Incarnation != 1 {
		t.Fatal("a stale suspicion was not answered with the current Alive")
	}
}

// --- the failures of other implementations we must not have --------------------------

// Two halves that declared each other dead during a long partition merge again:
// reconnects push-pull with tombstones. Without reconnects (memberlist) they never do.
func TestLongPartitionHealsIntoOneCluster(t *testing.T) {
	for _, reconnect := range []bool{true, false} {
		nt := newNet(t, 8, 7, func(c *Config) {
			if !reconnect {
				c.ReconnectInterval = 0
				c.DigestSyncInterval = 0
			}
		})
		nt.joinAll()
		nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
		side := func(addr string) bool { return addr < addrOf(4) }
		nt.net.Partition(nt.ep(nt.nodes[:4]...))
		nt.run(60 * time.Second)
		for _, nd := range nt.nodes {
			for _, o := range nt.nodes {
				if mem, _ := statusOf(nd, o.name); side(nd.addr) != side(o.addr) && mem.Status != StatusDead {
					t.Fatalf("%s sees %s %v after 60 s of partition", nd.name, o.name, mem.Status)
				}
			}
		}
		nt.net.Heal()
		var reconnects uint64
		for _, nd := range nt.nodes {
			reconnects += nd.m.Stats().Reconnects
		}
		if reconnect != (reconnects > 0) {
			t.Fatalf("reconnect=%v: %d reconnects", reconnect, reconnects)
		}
		took, ok := nt.runUntil(2*time.Minute, 500*time.Millisecond, nt.converged)
		if ok != reconnect {
			t.Fatalf("reconnect=%v: merged=%v after %v", reconnect, ok, took)
		}
		t.Logf("reconnect=%v: merged=%v after %v", reconnect, ok, took)
	}
}

// A view that drifted (a member missed a fact and its queue moved on) is repaired by
// a digest-triggered push-pull rather than waiting for the periodic one.
func TestDigestMismatchStartsPushPull(t *testing.T) {
	m := newMachine(t, "a", nil)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", ProtoMin: 1, ProtoMax: 1})) // b, verified
	m.Ready()
	other := wire.Digest{Hash: 12345, Members: 1}
	ping := func(at time.Time) {
		m.HandlePacket(at, "b:1", packet(t, &wire.Ping{Seq: 1, Target: "a", Source: "b", SourceAddr: "b:1"}, &other))
	}
	ping(epoch.Add(4 * time.Second))
	ping(epoch.Add(6 * time.Second))
	if s := m.Ready().Streams; len(s) != 0 {
		t.Fatal("push-pull before the mismatch lasted DigestSyncInterval")
	}
	ping(epoch.Add(7 * time.Second))
	s := m.Ready().Streams
	if len(s) != 1 || s[0].To != "b:1" || m.Stats().DigestSyncs != 1 {
		t.Fatalf("streams %v", s)
	}
	ping(epoch.Add(8 * time.Second))
	ping(epoch.Add(9 * time.Second))
	if s := m.Ready().Streams; len(s) != 0 {
		t.Fatal("digest syncs not rate limited")
	}
	own := m.Digest()
	m.HandlePacket(epoch.Add(11*time.Second), "c:1", packet(t, &own))
	ping(epoch.Add(12 * time.Second))
	if s := m.Ready().Streams; len(s) != 0 {
		t.Fatal("a matching digest did not reset the mismatch")
	}
}

// In a quiet cluster the digest rides on every DigestEvery-th probe only; after a
// change of our view it rides on every probe, for 2 × DigestSyncInterval.
func TestDigestOnEveryKthProbeWhenQuiet(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.DigestEvery = 3 })
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	probes := func(until time.Time) (withDigest, without int) {
		for m.NextDeadline().Before(until) {
			now := m.NextDeadline()
			m.Tick(now)
			var ping, dig bool
			for _, d := range decodePackets(t, m.Ready().Packets) {
				switch msg := d.msg.(type) {
				case *wire.Ping: // b answers, so the view stays as it is
					ping = true
					m.HandlePacket(now, "b:1", packet(t, &wire.Ack{Seq: msg.Seq}))
				case *wire.Digest:
					dig = true
				}
			}
			switch {
			case ping && dig:
				withDigest++
			case ping:
				without++
			}
		}
		return withDigest, without
	}
	// The view changed at epoch (b joined): every probe carries it for 6 s.
	if w, wo := probes(epoch.Add(6 * time.Second)); w == 0 || wo != 0 {
		t.Fatalf("after a change: %d probes with the digest, %d without", w, wo)
	}
	w, wo := probes(epoch.Add(60 * time.Second))
	if w == 0 || wo != 2*w && wo != 2*w+1 && wo != 2*w-1 && wo != 2*w-2 {
		t.Fatalf("quiet: %d probes with the digest, %d without; want one in 3", w, wo)
	}
}

// A ping whose digest disagrees with ours is acked with our digest, so the prober
// sees the disagreement too; an agreeing one is acked without it.
func TestDisagreeingDigestIsEchoedInTheAck(t *testing.T) {
	m := newMachine(t, "a", nil)
	ack := func(d wire.Digest) (acked bool, echoed *wire.Digest) {
		m.HandlePacket(epoch, "b:1", packet(t, &d, &wire.Ping{Seq: 1, Target: "a", Source: "b", SourceAddr: "b:1"}))
		for _, d := range decodePackets(t, m.Ready().Packets) {
			switch msg := d.msg.(type) {
			case *wire.Ack:
				acked = true
			case *wire.Digest:
				echoed = msg
			}
		}
		return acked, echoed
	}
	if acked, echoed := ack(wire.Digest{Hash: 12345, Members: 1}); !acked || echoed == nil || *echoed != m.Digest() {
		t.Fatalf("disagreeing digest: acked %v, echoed %v", acked, echoed)
	}
	if acked, echoed := ack(m.Digest()); !acked || echoed != nil {
		t.Fatalf("agreeing digest: acked %v, echoed %v", acked, echoed)
	}
	// A digest without a ping is not answered (two disagreeing nodes must not
	// bounce digests forever).
	other := wire.Digest{Hash: 1, Members: 1}
	m.HandlePacket(epoch, "b:1", packet(t, &other))
	if p := m.Ready().Packets; len(p) != 0 {
		t.Fatalf("answered a lone digest: %v", decodePackets(t, p))
	}
}

// The digest is maintained incrementally; it must equal the digest recomputed from
// the live members of the view (tombstones excluded) after any history.
func TestDigestMatchesRecomputation(t *testing.T) {
	nt := newNet(t, 6, 8, nil)
	nt.joinAll()
	nt.run(3 * time.Second)
	nt.node("n2").m.Leave(nt.now)
	nt.node("n4").down = true
	nt.run(20 * time.Second)
	for _, nd := range nt.nodes {
		var d wire.Digest
		tombs := 0
		for _, mem := range nd.m.Members() {
			if mem.Status == StatusDead || mem.Status == StatusLeft {
				tombs++
				continue
			}
			d.Hash += MemberHash(mem.Name, mem.Incarnation, mem.Status)
			d.Members++
		}
		if tombs == 0 && nd.name != "n2" && nd.name != "n4" {
			t.Fatalf("%s holds no tombstone: the test does not cover them", nd.name)
		}
		if d != nd.m.Digest() {
			t.Fatalf("%s: incremental %+v, recomputed %+v", nd.name, nd.m.Digest(), d)
		}
	}
}

// Same seed and inputs, same outputs, byte for byte; another seed differs.
func TestDeterministicTrace(t *testing.T) {
	run := func(seed uint64) uint64 {
		nt := newNet(t, 6, seed, nil)
		h := fnv.New64a()
		nt.trace = h
		nt.joinAll()
		nt.run(2 * time.Second)
		nt.node("n3").down = true
		nt.node("n1").m.Leave(nt.now)
		nt.run(15 * time.Second)
		return h.Sum64()
	}
	a, b, c := run(11), run(11), run(12)
	if a != b {
		t.Fatalf("same seed, traces %x and %x", a, b)
	}
	if a == c {
		t.Fatal("different seeds gave the same trace")
	}
}

func TestForeignAndMalformedPacketsAreCountedAndDropped(t *testing.T) {
	m := newMachine(t, "a", nil)
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash("other"))
	p.Add(&wire.Alive{Node: "b", Addr: "b:1", ProtoMin: 1, ProtoMax: 1})
	m.HandlePacket(epoch, "b:1", p.Bytes())
	m.HandlePacket(epoch, "b:1", []byte("garbage"))
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "", Addr: "b:1", ProtoMin: 1, ProtoMax: 1}))
	st := m.Stats()
	if st.ForeignPackets != 1 || st.Malformed != 2 || len(m.Members()) != 1 {
		t.Fatalf("stats %+v, members %v", st, m.Members())
	}
}

// A member paused long enough to be declared dead, whose death has left every
// gossip queue by the time it resumes, still learns of it and refutes: it does not
// stay a ghost that sees the cluster while the cluster does not see it. With
// digest sync and reconnects off, what tells it is the Dead claim that members
// holding it dead put in their acks to its pings.
func TestPausedMemberDeclaredDeadComesBack(t *testing.T) {
	for _, repair := range []bool{true, false} {
		nt := newNet(t, 6, 10, func(c *Config) {
			c.PushPullInterval = 0 // only the repairs under test may help
			if !repair {
				c.DigestSyncInterval, c.ReconnectInterval = 0, 0
			}
		})
		nt.joinAll()
		nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
		p := nt.node("n3")
		p.down = true
		nt.run(60 * time.Second)
		for _, nd := range nt.nodes {
			if mem, _ := statusOf(nd, "n3"); !nd.down && mem.Status != StatusDead {
				t.Fatalf("%s sees n3 %v", nd.name, mem.Status)
			}
			if !nd.down && nd.m.Stats().QueueLen != 0 {
				t.Fatalf("%s still has gossip queued", nd.name)
			}
		}
		p.down = false
		took, ok := nt.runUntil(30*time.Second, 100*time.Millisecond, nt.converged)
		if !ok {
			t.Fatalf("repair=%v: not taken back", repair)
		}
		st := p.m.Stats()
		t.Logf("repair=%v: back=%v after %v, n3 refuted %d times", repair, ok, took, st.Refutations)
	}
}

// Without Lifeguard's aware suspicion every suspicion lasts the SWIM minimum, and
// confirmations change nothing.
func TestSuspicionWithoutAwarenessLastsTheMinimum(t *testing.T) {
	m := newMachine(t, "a", func(c *Config) { c.Lifeguard.AwareSuspicion = false })
	for i := range 20 {
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: fmt.Sprintf("p%02d", i), Addr: fmt.Sprintf("p%02d:1", i), ProtoMin: 1, ProtoMax: 1}))
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p00", From: "p01"}, &wire.Suspect{Node: "p00", From: "p02"}))
	lo := SuspicionMinTimeout(4, 21, 250*time.Millisecond)
	if got := m.members.get("p00").susp.deadline.Sub(epoch); got != lo {
		t.Fatalf("suspicion lasts %v, want %v", got, lo)
	}
}

// A new node that takes over a dead node's address is a different member: the
// dead one stays dead, the new one joins, and pings for the old name go unanswered.
func TestNewNodeReusingDeadNodesAddress(t *testing.T) {
	nt := newNet(t, 5, 12, nil)
	nt.joinAll()
	nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	old := nt.node("n2")
	old.down = true
	nt.runUntil(30*time.Second, 100*time.Millisecond, func() bool {
		for _, nd := range nt.nodes {
			if mem, _ := statusOf(nd, "n2"); !nd.down && mem.Status != StatusDead {
				return false
			}
		}
		return true
	})
	fresh := nt.add("fresh", old.addr, 99, nil)
	fresh.m.Join(nt.now, []string{nt.nodes[0].addr})
	if _, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged); !ok {
		t.Fatal("fresh not alive everywhere")
	}
	nt.run(30 * time.Second)
	for _, nd := range nt.nodes {
		if mem, _ := statusOf(nd, "n2"); nd != fresh && mem.Status != StatusDead {
			t.Fatalf("%s sees n2 %v after its address was reused", nd.name, mem.Status)
		}
	}
	if !nt.converged() {
		t.Fatal("cluster lost a member after the address reuse")
	}
}

// Buddy system, prober side: when our own probe fails, the suspect hears of the
// suspicion from us at once, not when gossip happens to reach it.
func TestOwnSuspicionIsToldToTheSuspect(t *testing.T) {
	for _, buddy := range []bool{true, false} {
		m := newMachine(t, "a", func(c *Config) {
			c.Lifeguard.Buddy = buddy
			c.IndirectChecks, c.EagerFanout, c.GossipInterval = 0, 0, 24*time.Hour
		})
		m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 1}))
		m.Ready()
		told := false
		for i := 0; i < 50 && memberOf(t, m, "b").Status == StatusAlive; i++ {
			m.Tick(m.NextDeadline())
			for _, p := range m.Ready().Packets {
				// The direct notice is a packet of its own; the next ping to b
				// also carries the queued suspicion as gossip, which is not it.
				first := decodePackets(t, []Packet{p})[0]
				if s, ok := first.msg.(*wire.Suspect); ok && p.To == "b:1" && s.Node == "b" && s.Incarnation == 3 {
					told = true
				}
			}
		}
		if memberOf(t, m, "b").Status != StatusSuspect || told != buddy {
			t.Fatalf("buddy=%v: b %v, told %v", buddy, memberOf(t, m, "b").Status, told)
		}
	}
}

// Regression (sim churn seed 3): a node that never knew a departed member does not
// learn its tombstone from push-pull, so the digest must leave tombstones out, or
// digests of nodes with the same live view differ for the whole TombstoneTTL and
// digest-sync push-pulls never stop.
func TestDigestIgnoresTombstonesOthersNeverKnew(t *testing.T) {
	a := newMachine(t, "a", nil)
	c := newMachine(t, "c", nil)
	a.HandlePacket(epoch, "c:1", packet(t, &wire.Alive{Node: "c", Addr: "c:1", ProtoMin: 1, ProtoMax: 1}, &wire.Alive{Node: "q", Addr: "q:1", ProtoMin: 1, ProtoMax: 1}))
	a.HandlePacket(epoch, "x:1", packet(t, &wire.Dead{Node: "q", From: "x"}))
	c.HandlePacket(epoch, "a:1", packet(t, &wire.Alive{Node: "a", Addr: "a:1", ProtoMin: 1, ProtoMax: 1}))
	c.HandlePushPullReply(epoch, "a:1", a.localState(false))
	a.HandlePushPullReply(epoch, "c:1", c.localState(false))
	if s := memberOf(t, a, "q").Status; s != StatusDead {
		t.Fatalf("a holds q %v", s)
	}
	for _, mem := range c.Members() {
		if mem.Name == "q" {
			t.Fatalf("c learned q from a push-pull: %+v", mem)
		}
	}
	if a.Digest() != c.Digest() || a.Digest().Members != 2 {
		t.Fatalf("same live view, digests %+v and %+v", a.Digest(), c.Digest())
	}
	// A live member held dead still shows: that is what digest sync repairs.
	c.HandlePacket(epoch, "a:1", packet(t, &wire.Alive{Node: "q", Addr: "q:1", ProtoMin: 1, ProtoMax: 1}))
	if a.Digest() == c.Digest() {
		t.Fatal("q dead at a and alive at c, yet equal digests")
	}
}

// A member we hold dead that pings us is running and does not know it is dead:
// the ack carries the Dead claim, so it refutes, and it sends the refutation
// straight back to whoever made the claim.
func TestPingFromDeadMemberIsToldItIsDead(t *testing.T) {
	a := newMachine(t, "a", nil)
	a.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 2, ProtoMin: 1, ProtoMax: 1}))
	a.HandlePacket(epoch, "x:1", packet(t, &wire.Dead{Node: "b", Incarnation: 2, From: "x"}))
	a.Ready()
	a.HandlePacket(epoch, "b:1", packet(t, &wire.Ping{Seq: 7, Target: "a", Source: "b", SourceAddr: "b:1"}))
	var ack, dead bool
	for _, d := range decodePackets(t, a.Ready().Packets) {
		switch msg := d.msg.(type) {
		case *wire.Ack:
			ack = ack || (d.to == "b:1" && msg.Seq == 7)
		case *wire.Dead:
			dead = dead || (d.to == "b:1" && msg.Node == "b" && msg.Incarnation == 2)
		}
	}
	if !ack || !dead {
		t.Fatalf("ack %v, dead claim %v", ack, dead)
	}
	b := newMachine(t, "b", nil)
	b.HandlePacket(epoch, "a:1", packet(t, &wire.Alive{Node: "a", Addr: "a:1", ProtoMin: 1, ProtoMax: 1}))
	b.Ready()
	b.HandlePacket(epoch, "a:1", packet(t, &wire.Ack{Seq: 7}, &wire.Dead{Node: "b", Incarnation: 2, From: "a"}))
	if inc := b.Local().Incarnation; inc != 3 {
		t.Fatalf("b at incarnation %d after a Dead at 2, want 3", inc)
	}
	var back bool
	for _, d := range decodePackets(t, b.Ready().Packets) {
		if al, ok := d.msg.(*wire.Alive); ok && d.to == "a:1" && al.Node == "b" && al.Incarnation == 3 {
			back = true
		}
	}
	if !back {
		t.Fatal("refutation not sent back to the claimer")
	}
	// A live member's ping gets a plain ack.
	a.HandlePacket(epoch, "c:1", packet(t, &wire.Alive{Node: "c", Addr: "c:1", ProtoMin: 1, ProtoMax: 1}))
	a.Ready()
	a.HandlePacket(epoch, "c:1", packet(t, &wire.Ping{Seq: 8, Target: "a", Source: "c", SourceAddr: "c:1"}))
	for _, d := range decodePackets(t, a.Ready().Packets) {
		if dd, ok := d.msg.(*wire.Dead); ok && dd.Node == "c" {
			t.Fatal("a live member's ping answered with a Dead claim")
		}
	}
}

// Machines given one Config.Interner hold one copy of each member name: what lets
// the simulator run thousands of nodes in one process.
func TestMachinesShareInternedNames(t *testing.T) {
	in := wire.NewInterner(0)
	share := func(c *Config) { c.Interner = in }
	a, b := newMachine(t, "a", share), newMachine(t, "b", share)
	own := newMachine(t, "c", nil)
	for _, m := range []*Machine{a, b, own} {
		m.HandlePacket(epoch, "x:1", packet(t, &wire.Alive{Node: "node-x", Addr: "x:1", ProtoMin: 1, ProtoMax: 1}))
	}
	na, nb, nc := memberOf(t, a, "node-x").Name, memberOf(t, b, "node-x").Name, memberOf(t, own, "node-x").Name
	if unsafe.StringData(na) != unsafe.StringData(nb) {
		t.Fatal("machines sharing an Interner hold two copies of a name")
	}
	if unsafe.StringData(nc) == unsafe.StringData(na) {
		t.Fatal("a machine without Interner used the shared table")
	}
}

// A suspicion at a newer incarnation than the one we suspect is a new suspicion:
// the member refuted in between (we missed its Alive), so the old timer must not
// carry over and declare it dead at once.
func TestSuspicionAtNewerIncarnationRestarts(t *testing.T) {
	for _, final := range []bool{false, true} {
		m := newMachine(t, "a", func(c *Config) { c.FinalProbe = final })
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: "b", Addr: "b:1", ProtoMin: 1, ProtoMax: 1}))
		m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "b", Incarnation: 0, From: "c"}))
		m.Ready()
		first := m.members.get("b").susp.deadline
		late := first.Add(-time.Millisecond)
		m.HandlePacket(late, "x", packet(t, &wire.Suspect{Node: "b", Incarnation: 1, From: "d"}))
		m.Tick(first.Add(time.Millisecond))
		if got := memberOf(t, m, "b"); got.Status != StatusSuspect || got.Incarnation != 1 {
			t.Fatalf("final probe %v: b %v at incarnation %d just after the old deadline, want suspect at 1", final, got.Status, got.Incarnation)
		}
		if d := m.members.get("b").susp.deadline; d.Sub(late) != first.Sub(epoch) {
			t.Fatalf("final probe %v: new deadline %v after the new suspicion, want the full %v", final, d.Sub(late), first.Sub(epoch))
		}
	}
}

// Without FinalProbe (memberlist profile), a Lifeguard suspicion that reaches its
// maximum with no independent confirmation still gets a final probe; a confirmed
// one is declared dead at its deadline, as before.
func TestLonelySuspicionGetsAFinalProbe(t *testing.T) {
	for _, confirmed := range []bool{false, true} {
		m, err := New(MemberlistProfile("a", "a:1"), rand.New(rand.NewPCG(1, 2)), epoch)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"b", "c", "d", "e"} {
			m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: n, Addr: n + ":1", ProtoMin: 1, ProtoMax: 1}))
		}
		m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "b", Incarnation: 0, From: "c"}))
		if confirmed {
			m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "b", Incarnation: 0, From: "d"}))
		}
		m.Ready()
		end := m.members.get("b").susp.deadline
		m.Tick(end)
		got := memberOf(t, m, "b").Status
		switch {
		case !confirmed && (got != StatusSuspect || m.Stats().FinalProbes != 1):
			t.Fatalf("lonely suspicion: b %v, %d final probes at its deadline, want suspect and 1", got, m.Stats().FinalProbes)
		case confirmed && (got != StatusDead || m.Stats().FinalProbes != 0):
			t.Fatalf("confirmed suspicion: b %v, %d final probes at its deadline, want dead and 0", got, m.Stats().FinalProbes)
		}
		m.Tick(end.Add(2 * time.Second))
		if got := memberOf(t, m, "b").Status; got != StatusDead {
			t.Fatalf("confirmed %v: b %v after an unanswered final probe", confirmed, got)
		}
	}
}

// The final probe decides a death, so it asks twice the usual witnesses.
func TestFinalProbeAsksTwiceTheWitnesses(t *testing.T) {
	m := newMachine(t, "a", nil)
	for i := range 10 {
		n := fmt.Sprintf("p%d", i)
		m.HandlePacket(epoch, "x", packet(t, &wire.Alive{Node: n, Addr: n + ":1", ProtoMin: 1, ProtoMax: 1}))
	}
	m.HandlePacket(epoch, "x", packet(t, &wire.Suspect{Node: "p0", Incarnation: 0, From: "p1"}))
	m.Ready()
	m.Tick(m.members.get("p0").susp.deadline)
	witnesses := 0
	for _, d := range decodePackets(t, m.Ready().Packets) {
		if ip, ok := d.msg.(*wire.IndirectPing); ok && ip.Target == "p0" {
			witnesses++
		}
	}
	if want := 2 * LANProfile("a", "a:1").IndirectChecks; witnesses != want {
		t.Fatalf("final probe asked %d witnesses, want %d", witnesses, want)
	}
}

// TestForceLeave: a live member is refused; a dead one becomes left, with a left
// event, and pruning drops it from the forcing node's table only.
func TestForceLeave(t *testing.T) {
	nt := newNet(t, 5, 9, nil)
	nt.joinAll()
	nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	n0 := nt.node("n0")
	if err := n0.m.ForceLeave(nt.now, "n3", false); !errors.Is(err, ErrMemberLive) {
		t.Fatalf("force-leave of a live member: %v, want ErrMemberLive", err)
	}
	if err := n0.m.ForceLeave(nt.now, "nope", false); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("force-leave of an unknown member: %v", err)
	}
	if err := n0.m.ForceLeave(nt.now, "n0", false); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("force-leave of itself: %v", err)
	}
	nt.node("n3").down = true
	nt.runUntil(30*time.Second, 50*time.Millisecond, func() bool {
		mem, _ := statusOf(n0, "n3")
		return mem.Status == StatusDead
	})
	if err := n0.m.ForceLeave(nt.now, "n3", false); err != nil {
		t.Fatal(err)
	}
	nt.drain()
	if mem, _ := statusOf(n0, "n3"); mem.Status != StatusLeft || !hasEvent(n0.events, EventLeft, "n3") {
		t.Fatalf("after force-leave n0 holds n3 %v", mem.Status)
	}
	if err := n0.m.ForceLeave(nt.now, "n3", true); err != nil {
		t.Fatal(err)
	}
	if _, ok := statusOf(n0, "n3"); ok {
		t.Fatal("pruned n3 is still in n0's table")
	}
	nt.run(5 * time.Second) // push-pulls from peers that hold the tombstone do not bring it back
	if _, ok := statusOf(n0, "n3"); ok {
		t.Fatal("pruned n3 came back")
	}
	if _, ok := statusOf(nt.node("n1"), "n3"); !ok {
		t.Fatal("n1 forgot n3: prune is local")
	}
}

// TestNameConflictIsReported: a second node with n1's name at another address
// joining makes both the newcomer and n1 report the other's address.
func TestNameConflictIsReported(t *testing.T) {
	nt := newNet(t, 3, 11, nil)
	nt.joinAll()
	nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	dup := nt.add("n1", addrOf(50), 99, nil)
	dup.m.Join(nt.now, []string{addrOf(0)})
	nt.run(2 * time.Second)
	if got := dup.m.NameConflict(); got != addrOf(1) || dup.m.Stats().NameConflicts == 0 {
		t.Errorf("newcomer: conflict %q (%d), want %s", got, dup.m.Stats().NameConflicts, addrOf(1))
	}
	if got := nt.node("n1").m.NameConflict(); got != addrOf(50) {
		t.Errorf("incumbent: conflict %q, want %s", got, addrOf(50))
	}
	if got := nt.node("n2").m.NameConflict(); got != "" {
		t.Errorf("bystander reports a conflict %q", got)
	}
}

// PROTOCOL.md section 7: a member whose protocol range is invalid (pn > px, or 0,
// which is also what a missing range reads as) or shares no version with ours is
// refused, by Alive and by push-pull alike: not added, not gossiped on, counted,
// and reported with its range for the log. A known member announcing such a range
// keeps the state we hold. A range that overlaps ours is taken.
func TestMemberWithoutACommonVersionIsRefused(t *testing.T) {
	bad := [][2]uint8{{2, 2}, {3, 1}, {0, 0}, {0, 1}}
	for _, viaPushPull := range []bool{false, true} {
		m := newMachine(t, "a", nil)
		m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
		m.Ready()
		claim := func(name string, inc uint64, r [2]uint8) {
			if viaPushPull {
				m.HandlePushPull(epoch, "x:1", &wire.PushPull{Nodes: []wire.NodeState{{Name: name, Addr: name + ":9", Incarnation: inc, ProtoMin: r[0], ProtoMax: r[1]}}})
			} else {
				m.HandlePacket(epoch, "x:1", packet(t, &wire.Alive{Node: name, Addr: name + ":9", Incarnation: inc, ProtoMin: r[0], ProtoMax: r[1]}))
			}
		}
		for i, r := range bad {
			claim(fmt.Sprintf("new%d", i), 0, r)
			claim("b", uint64(2+i), r)
		}
		rd := m.Ready()
		if got := len(m.Members()); got != 2 {
			t.Fatalf("push-pull %v: %d members after bad ranges, want 2 (a, b)", viaPushPull, got)
		}
		if b := memberOf(t, m, "b"); b.Incarnation != 1 || b.Addr != "b:1" {
			t.Fatalf("push-pull %v: b at %d %s after bad ranges, want its held 1 b:1", viaPushPull, b.Incarnation, b.Addr)
		}
		if got, want := m.Stats().VersionsRefused, uint64(2*len(bad)); got != want {
			t.Fatalf("push-pull %v: %d refusals counted, want %d", viaPushPull, got, want)
		}
		if len(rd.Refused) != 2*len(bad) || rd.Refused[0] != (Refusal{Member: "new0", Addr: "new0:9", ProtoMin: 2, ProtoMax: 2}) {
			t.Fatalf("push-pull %v: refusals reported %+v", viaPushPull, rd.Refused)
		}
		for _, d := range decodePackets(t, rd.Packets) {
			if a, ok := d.msg.(*wire.Alive); ok && a.Node != "a" {
				t.Fatalf("push-pull %v: a refused claim was gossiped: %+v", viaPushPull, a)
			}
		}
		claim("newer", 0, [2]uint8{1, 3})
		if memberOf(t, m, "newer").Status != StatusAlive {
			t.Fatal("a member whose range overlaps ours was not added")
		}
	}
}

// A join reply is the answerer's view when it answered. Here x joins, then y, and x
// hears nothing while y's Alive is being gossiped (a stalled loop, as 128 nodes
// joining at once on two cores made one in about four formations): every
// transmission of y's Alive misses x, and gossip cannot bring it later. x's settle
// push-pull, due once that gossip has drained, fetches it within a second instead
// of the digest sync's 3 s or more.
func TestJoinSettlesWhenOthersJoinedMeanwhile(t *testing.T) {
	nt := newNet(t, 30, 9, nil)
	nt.joinAll()
	if _, ok := nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged); !ok {
		t.Fatal("no convergence")
	}
	nt.run(10 * time.Second) // formation gossip drains
	seed := nt.nodes[0].addr
	x := nt.add("x", addrOf(100), 100, nil)
	y := nt.add("y", addrOf(101), 101, nil)
	before := x.m.Stats().PushPulls
	x.m.Join(nt.now, []string{seed})
	nt.drain() // x's join push-pull and its reply
	var others []*tnode
	for _, nd := range nt.nodes {
		if nd != x {
			others = append(others, nd)
		}
	}
	nt.net.PartitionOneWay(nt.ep(others...), nt.ep(x))
	nt.run(5 * time.Millisecond)
	y.m.Join(nt.now, []string{seed})
	nt.run(GossipDrain(4, 31, 3, 50*time.Millisecond) - 10*time.Millisecond)
	nt.net.Heal()
	if _, ok := statusOf(x, "y"); ok {
		t.Fatal("x learned y while deaf: the test measures nothing")
	}
	took, ok := nt.runUntil(3*time.Second, 10*time.Millisecond, func() bool { _, ok := statusOf(x, "y"); return ok })
	if !ok || took > time.Second {
		t.Fatalf("x learned y %v after its deaf spell (ok %v), want within 1 s", took, ok)
	}
	if got := x.m.Stats().PushPulls - before; got != 2 {
		t.Fatalf("x started %d push-pulls, want its join and one settle", got)
	}
	if got := y.m.Stats().PushPulls; got != 2 {
		t.Fatalf("y started %d push-pulls, want its join and one settle", got)
	}
}
