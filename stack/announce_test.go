package stack

import (
	"bytes"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
)

// followed is the leader d's Owner renews with, and the highest epoch it saw.
func followed(h *Stack) (string, uint64) {
	l, _ := h.shard.owner.Leader()
	return l, h.shard.owner.HighestEpoch()
}

// TestAFalseLeaderIsNotFollowed: e, a member with its own certificate, signs
// Announces naming itself leader. One at an epoch no holder is confirmed for
// yet is held, not followed and not counted as forged (an honest new leader's
// looks the same); one at the leader's epoch contradicts the holder every node
// knows and is refused, counted and reported. The owners keep renewing with
// the real leader, every shard stays served once, and a crash of the leader
// still moves every owner to the next one.
func TestAFalseLeaderIsNotFollowed(t *testing.T) {
	n, leader, epoch := signedCluster(t)
	lname := leader.cfg.Swim.Name
	const rogue = "e"
	voter := "a:1"
	if lname == "a" {
		voter = "b:1"
	}
	targets := []*Stack{n.hosts["d:1"], n.hosts[voter]} // a non-voter and a voter
	n.flush()
	for _, h := range targets {
		name := h.cfg.Swim.Name
		before := h.ShardHostStats()
		h.HandlePacket(n.now, rogue+":1", forgedPacket(rogue, rogue, name,
			&shard.Announce{Epoch: epoch + 1, Leader: rogue, Version: 1, Checksum: 1}))
		if l, e := followed(h); l != lname || e != epoch {
			t.Fatalf("%s follows %s at %d after an unconfirmed announce, want %s at %d", name, l, e, lname, epoch)
		}
		st := h.ShardHostStats()
		if st.AnnouncesHeld != before.AnnouncesHeld+1 || st.Auth != before.Auth {
			t.Errorf("%s: unconfirmed announce counted %+v, was %+v (want held, not forged)", name, st, before)
		}
		h.HandlePacket(n.now, rogue+":1", forgedPacket(rogue, rogue, name,
			&shard.Announce{Epoch: epoch, Leader: rogue, Version: 1, Checksum: 1}))
		if got := h.ShardHostStats().Auth.Forged; got != before.Auth.Forged+1 {
			t.Errorf("%s: announce contradicting holder %s counted %d forged, want %d", name, lname, got, before.Auth.Forged+1)
		}
		rd := h.Ready()
		if !slices.ContainsFunc(rd.PacketsForged, func(f PacketForgery) bool {
			return f.From == rogue+":1" && f.Sender == rogue && f.Claimed == lname && f.Type == shard.TypeAnnounce
		}) {
			t.Errorf("%s reported no false leader: %+v", name, rd.PacketsForged)
		}
	}
	n.run(5 * time.Second)
	for _, h := range targets {
		if l, e := followed(h); l != lname || e != epoch {
			t.Errorf("%s follows %s at %d, want %s at %d", h.cfg.Swim.Name, l, e, lname, epoch)
		}
	}
	for s, srv := range n.servers(testShardConfig().Shards) {
		if len(srv) != 1 {
			t.Fatalf("shard %d served by %v with a false leader about", s, srv)
		}
	}

	// An honest leader change still reaches every owner.
	n.down[leader.cfg.Swim.Name+":1"] = true
	n.run(15 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v after the crash", ls)
	}
	next := n.hosts[ls[0]]
	nextEpoch, _ := next.Fence(n.now)
	for _, addr := range n.order {
		if n.down[addr] {
			continue
		}
		if l, e := followed(n.hosts[addr]); l != next.cfg.Swim.Name || e != nextEpoch {
			t.Errorf("%s follows %s at %d, want %s at %d", addr, l, e, next.cfg.Swim.Name, nextEpoch)
		}
	}
	for s, srv := range n.servers(testShardConfig().Shards) {
		if len(srv) != 1 {
			t.Fatalf("shard %d served by %v after the failover", s, srv)
		}
	}
}

// oldKeys is an Authenticator that holds no key for signatures starting with
// "old" (a node's own key of a previous life, or any key id nobody holds).
type oldKeys struct{ swim.Authenticator }

func (o oldKeys) Verify(name string, claim, sig []byte) swim.Verdict {
	if bytes.HasPrefix(sig, []byte("old")) {
		return swim.VerdictUnknown
	}
	return o.Authenticator.Verify(name, claim, sig)
}

// oldSigner signs metadata as oldKeys cannot check.
type oldSigner struct{}

func (oldSigner) Sign([]byte) []byte { return []byte("old-key") }
func (oldSigner) Verify(string, uint64, []byte, []byte) crdt.Verdict {
	return crdt.VerdictUnknown
}

// A delta of a node's own map signed by a key it does not hold is taken as a
// previous life and makes it re-issue its map, signed again cell by cell. Any
// member can send one a packet, so the node re-issues at most once a
// GossipInterval and drops the rest of its own map's deltas meanwhile.
func TestOwnMapOfAnUnknownKeyReissuesOnceAGossipInterval(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) { cfg.Swim.Auth = oldKeys{testAuthority.Node(cfg.Swim.Name)} })
	h := c.h(0)
	if err := h.SetMeta(c.now, "zone", []byte("a")); err != nil {
		t.Fatal(err)
	}
	forger, err := crdt.NewStore("n0", crdt.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	forger.SetAuthority("", oldSigner{})
	if _, err := forger.Set("zone", []byte("b")); err != nil {
		t.Fatal(err)
	}
	send := func() {
		d, err := forger.SetIncarnation(max(forger.Incarnation(), h.Meta().Incarnation()) + 1)
		if err != nil {
			t.Fatal(err)
		}
		h.receiveMeta(c.now, swim.Payload{From: "n9:1", Data: crdt.AppendDelta(nil, d)})
	}
	const packets = 10
	for range packets {
		send()
	}
	if st := h.MetaStats(); st.Reissues != 1 || st.ReissuesLimited != packets-1 {
		t.Fatalf("%d deltas at one instant: %d re-issues, %d limited; want 1 and %d", packets, st.Reissues, st.ReissuesLimited, packets-1)
	}
	c.now = c.now.Add(h.cfg.Swim.GossipInterval)
	send()
	if st := h.MetaStats(); st.Reissues != 2 {
		t.Fatalf("a GossipInterval later: %d re-issues, want 2", st.Reissues)
	}
	if v, _ := h.Meta().Get("n0", "zone"); string(v) != "a" {
		t.Fatalf("own value %q after the re-issues, want a", v)
	}
}

// An honest Announce that arrives before its holder is confirmed is held and
// followed as soon as a majority of the voters publish that holder.
func TestAnEarlyAnnounceIsFollowedOnceConfirmed(t *testing.T) {
	n, leader, epoch := signedCluster(t)
	u := "a"
	if leader.cfg.Swim.Name == u {
		u = "b"
	}
	e2 := epoch + 1
	d := n.hosts["d:1"]
	n.flush()
	d.HandlePacket(n.now, u+":1", forgedPacket(u, u, "d", &shard.Announce{Epoch: e2, Leader: u, Version: 1, Checksum: 1}))
	if l, _ := followed(d); l == u {
		t.Fatalf("d follows %s before any voter confirmed it", u)
	}
	for i, voter := range []string{"a", "c"} {
		v := n.hosts[voter+":1"]
		delta, err := v.meta.store.Set(AcceptedKey, []byte(strconv.FormatUint(e2, 10)+" "+u))
		if err != nil {
			t.Fatal(err)
		}
		d.receiveMeta(n.now, swim.Payload{From: voter + ":1", Data: crdt.AppendDelta(nil, delta)})
		d.process(n.now)
		l, e := followed(d)
		if confirmed := i == 1; (l == u && e == e2) != confirmed {
			t.Fatalf("after %d of 3 voters confirmed %s at %d, d follows %s at %d", i+1, u, e2, l, e)
		}
	}
	if st := d.ShardHostStats(); st.Auth.Forged != 0 || len(d.shard.held) != 0 {
		t.Fatalf("the early announce: %+v, %d still held", st, len(d.shard.held))
	}
}
