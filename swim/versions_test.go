package swim

import (
	"errors"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/wire"
)

func preview(c *Config) {
	c.Versions = wire.Versions{Min: 1, Max: wire.PreviewVersion}
	c.Features = wire.FeatureAckHealth
}

// headerVersions are the header versions of the packets in pkts.
func headerVersions(t *testing.T, pkts []Packet) map[uint8]int {
	t.Helper()
	var r wire.PacketReader
	r.Accept(wire.Versions{Min: 1, Max: wire.PreviewVersion})
	out := map[uint8]int{}
	for _, p := range pkts {
		h, err := r.Reset(p.Data)
		if err != nil {
			t.Fatalf("our own packet: %v", err)
		}
		out[h.Version]++
	}
	return out
}

// PROTOCOL.md section 7: a node sends at the highest version every live member
// it holds speaks, and a feature is on only while every live member advertises
// it. A 1..2 node alone sends its lowest version with no feature on (it may be
// about to join old nodes); an upgraded member brings both up; an old member (1..1, no
// features) brings both down in the input that adds it; its death brings them
// back; its return as an upgraded node keeps them; a restart as an old node
// (higher incarnation, old range) brings them down again.
func TestSendVersionAndFeaturesFollowTheLiveMembers(t *testing.T) {
	m := newMachine(t, "a", preview)
	check := func(step string, wantV uint8, wantOn bool) {
		t.Helper()
		if got := m.SendVersion(); got != wantV {
			t.Errorf("%s: sends at %d, want %d", step, got, wantV)
		}
		if got := m.Features().Has(wire.FeatureAckHealth); got != wantOn {
			t.Errorf("%s: ack-health on %v, want %v", step, got, wantOn)
		}
		m.Ready()               // answers to the version-1 test packets go out at 1 (capVersion)
		m.Tick(epoch.Add(10e9)) // sends gossip at the version of the view
		for v := range headerVersions(t, m.Ready().Packets) {
			if v != wantV {
				t.Errorf("%s: a packet of version %d, want %d", step, v, wantV)
			}
		}
	}
	check("alone", 1, false) // nothing known of the cluster it may join

	alive := func(name string, inc uint64, pmax uint8, f wire.Features) {
		m.HandlePacket(epoch, name+":1", packet(t, &wire.Alive{Node: name, Addr: name + ":1", Incarnation: inc, ProtoMin: 1, ProtoMax: pmax, Features: f}))
	}
	alive("b", 1, 2, wire.FeatureAckHealth)
	check("with an upgraded member", 2, true)
	alive("c", 1, 1, 0)
	check("with an old member", 1, false)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Dead{Node: "c", Incarnation: 1, From: "b"}))
	check("old member dead", 2, true)
	alive("c", 2, 2, wire.FeatureAckHealth)
	check("old member back upgraded", 2, true)
	alive("c", 3, 1, 0)
	check("old member restarted old", 1, false)
	m.HandlePacket(epoch, "c:1", packet(t, &wire.Leave{Node: "c", Incarnation: 3}))
	check("old member left", 2, true)
	alive("d", 1, 2, 0) // upgraded, but without the feature
	check("a member without the feature", 2, false)
}

// FeatureAckHealth: a node whose cluster has the feature on answers a direct ping
// with its local health in the ack, and a prober with it on records it; while an
// old member is alive nobody sends it, so an old prober's acks stay as they were.
func TestAckHealthOnlyWhileEveryMemberAdvertisesIt(t *testing.T) {
	m := newMachine(t, "a", preview)
	ping := packet(t, &wire.Ping{Seq: 7, Target: "a", Source: "b", SourceAddr: "b:1"})
	lh := func() (uint8, bool) {
		for _, d := range decodePackets(t, m.Ready().Packets) {
			if a, ok := d.msg.(*wire.Ack); ok {
				return a.LocalHealth, true
			}
		}
		return 0, false
	}
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 1, ProtoMin: 1, ProtoMax: 1}))
	m.Ready()
	m.HandlePacket(epoch, "b:1", ping)
	if got, ok := lh(); !ok || got != 0 {
		t.Fatalf("ack to an old member: health %d (ack sent %v), want none", got, ok)
	}
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 2, ProtoMin: 1, ProtoMax: 2, Features: wire.FeatureAckHealth}))
	m.Ready()
	m.HandlePacket(epoch, "b:1", ping)
	if got, ok := lh(); !ok || got != uint8(m.LocalHealth()+1) {
		t.Fatalf("ack with the feature on: health %d (ack sent %v), want %d", got, ok, m.LocalHealth()+1)
	}
}

// A node restarted onto another build starts again at incarnation 0, where the
// cluster holds its previous life's range and features: a claim about itself at
// its own incarnation and address that announces other versions is refuted, so
// the new ones spread. The same claim with its own versions is not.
func TestRestartOnAnotherBuildIsAnnounced(t *testing.T) {
	m := newMachine(t, "a", preview)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "a", Addr: "a:1", Incarnation: 0, ProtoMin: 1, ProtoMax: 2, Features: wire.FeatureAckHealth}))
	if got := m.Local().Incarnation; got != 0 {
		t.Fatalf("refuted a claim equal to our own state: incarnation %d", got)
	}
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "a", Addr: "a:1", Incarnation: 0, ProtoMin: 1, ProtoMax: 1}))
	if got := m.Local().Incarnation; got != 1 {
		t.Fatalf("incarnation %d after a claim of our previous build, want 1", got)
	}
}

// A packet of a lower version than we send at is answered at its version: its
// sender may be a member restarted onto an older build (a rollback) that we still
// hold at its newer range, and only an answer it can read tells it to refute.
func TestAnswerAtTheVersionAsked(t *testing.T) {
	m := newMachine(t, "a", preview)
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Alive{Node: "b", Addr: "b:1", Incarnation: 1, ProtoMin: 1, ProtoMax: 2, Features: wire.FeatureAckHealth}))
	m.Ready()
	if m.SendVersion() != 2 {
		t.Fatalf("sends at %d with an upgraded member, want 2", m.SendVersion())
	}
	m.HandlePacket(epoch, "b:1", packet(t, &wire.Ping{Seq: 1, Target: "a", Source: "b", SourceAddr: "b:1"}))
	if got := headerVersions(t, m.Ready().Packets); got[2] != 0 || got[1] == 0 {
		t.Fatalf("answer to a version-1 ping: packets by version %v, want only version 1", got)
	}
	m.Tick(epoch.Add(10e9))
	if got := headerVersions(t, m.Ready().Packets); got[1] != 0 {
		t.Fatalf("after the answer: packets by version %v, want only version 2", got)
	}
}

// Validate names a protocol range this build cannot speak and features it does
// not implement.
func TestConfigRefusesUnknownVersionsAndFeatures(t *testing.T) {
	for _, c := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Versions", func(c *Config) { c.Versions = wire.Versions{Min: 3, Max: 3} }},
		{"Versions", func(c *Config) { c.Versions = wire.Versions{Min: 2, Max: 1} }},
		{"Features", func(c *Config) { c.Features = 1 << 40 }},
	} {
		cfg := LANProfile("a", "a:1")
		c.mod(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: %v, want an error naming %s", cfg.Versions, err, c.field)
		}
	}
	cfg := LANProfile("a", "a:1")
	preview(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Errorf("preview build: %v", err)
	}
}
