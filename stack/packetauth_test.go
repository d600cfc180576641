package stack

import (
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// testAuthority is the simulated certificate authority of the signed stacks.
var testAuthority = swim.SimAuthority{Secret: 14}

func signedStacks(c *Config) { c.Swim.Auth = testAuthority.Node(c.Swim.Name) }

// forgedPacket is a lease or shard packet for dest holding msgs, ended by a
// PacketSig that names sender and is made with signer's key (signer == sender:
// an honest signature; signer != sender: a forgery).
func forgedPacket(signer, sender, dest string, msgs ...wire.Message) []byte {
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(""))
	for _, m := range msgs {
		p.Add(m)
	}
	claim := wire.PacketClaim("", sender, dest, p.Messages())
	p.Add(&wire.PacketSig{Sender: sender, Sig: testAuthority.SignAs(signer, claim)})
	return slices.Clone(p.Bytes())
}

func unsignedPacket(msgs ...wire.Message) []byte {
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(""))
	for _, m := range msgs {
		p.Add(m)
	}
	return slices.Clone(p.Bytes())
}

// A signed cluster (PROTOCOL.md 10.11) elects, serves every shard and fails
// over exactly as an unsigned one, and refuses none of its own packets.
func TestSignedLeaseAndShardPacketsWork(t *testing.T) {
	n := newShardNet(t, []string{"a", "b", "c", "d"}, 3, signedStacks)
	n.run(15 * time.Second)
	check := func(when string) {
		t.Helper()
		if ls := n.leaders(); len(ls) != 1 {
			t.Fatalf("%s: leaders %v, want one", when, ls)
		}
		for s, srv := range n.servers(testShardConfig().Shards) {
			if len(srv) != 1 {
				t.Fatalf("%s: shard %d served by %v", when, s, srv)
			}
		}
	}
	check("formed")
	n.down[n.leaders()[0]] = true
	n.run(15 * time.Second)
	check("after the leader crashed")
	for _, addr := range n.order {
		h := n.hosts[addr]
		if a, s := h.LeaseHostStats().Auth, h.ShardHostStats().Auth; a != (PacketAuthStats{}) || s != (PacketAuthStats{}) {
			t.Errorf("%s refused honest packets: lease %+v shard %+v", addr, a, s)
		}
	}
}

// signedCluster forms a signed cluster of a to e (a, b and c vote, 64 shards)
// and returns it with its one leader and the leader's epoch.
func signedCluster(t *testing.T) (n *leaseNet, leader *Stack, epoch uint64) {
	t.Helper()
	n = newShardNet(t, []string{"a", "b", "c", "d", "e"}, 3, signedStacks)
	n.run(15 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v", ls)
	}
	leader = n.hosts[ls[0]]
	epoch, _ = leader.Fence(n.now)
	return n, leader, epoch
}

// TestLeasePacketsCannotSpeakAsAnotherVoter: e, a member with its own
// credential and the packet key, sends lease packets on b's behalf to the
// voters and the leader. Each is refused before the lease machine sees it,
// counted by reason and reported for the audit log, and nothing of the lease
// state moves.
func TestLeasePacketsCannotSpeakAsAnotherVoter(t *testing.T) {
	n, leader, epoch := signedCluster(t)
	lname := leader.cfg.Swim.Name
	voter := "a:1"
	if lname == "a" {
		voter = "c:1"
	}
	vh := n.hosts[voter]
	vname := vh.cfg.Swim.Name
	const forger = "e:1"

	cases := []struct {
		name   string
		to     *Stack
		data   []byte
		reason func(PacketAuthStats) uint64
	}{
		{"Promise naming b, signed by e", leader,
			forgedPacket("e", "e", lname, &lease.Promise{Epoch: epoch + 1, Voter: "b"}),
			func(s PacketAuthStats) uint64 { return s.Forged }},
		{"Accept naming b, signed by e", leader,
			forgedPacket("e", "e", lname, &lease.Accept{Epoch: epoch, Seq: 1 << 40, Voter: "b"}),
			func(s PacketAuthStats) uint64 { return s.Forged }},
		{"Accept naming b, e's signature claiming to be b's", leader,
			forgedPacket("e", "b", lname, &lease.Accept{Epoch: epoch, Seq: 1 << 40, Voter: "b"}),
			func(s PacketAuthStats) uint64 { return s.Forged }},
		{"Prepare for b at a higher epoch, signed by e", vh,
			forgedPacket("e", "e", vname, &lease.Prepare{Epoch: epoch + 5, Candidate: "b"}),
			func(s PacketAuthStats) uint64 { return s.Forged }},
		{"Renew as the leader, signed by e", vh,
			forgedPacket("e", "e", vname, &lease.Renew{Epoch: epoch, Seq: 1 << 40, Holder: lname, Duration: time.Second,
				Membership: lease.Membership{Voters: []string{"a", "b", "c"}}}),
			func(s PacketAuthStats) uint64 { return s.Forged }},
		// b's own Promise, signed for the voter d... replayed to the leader:
		// the destination is signed, so it does not verify there.
		{"b's Promise to another candidate, replayed", leader,
			forgedPacket("b", "b", "d", &lease.Promise{Epoch: epoch + 1, Voter: "b"}),
			func(s PacketAuthStats) uint64 { return s.Forged }},
		{"Promise without a signature", leader,
			unsignedPacket(&lease.Promise{Epoch: epoch + 1, Voter: "b"}),
			func(s PacketAuthStats) uint64 { return s.Unsigned }},
		{"Promise of a signer nobody knows", leader,
			forgedPacket("zz", "zz", lname, &lease.Promise{Epoch: epoch + 1, Voter: "zz"}),
			func(s PacketAuthStats) uint64 { return s.UnknownSigner }},
	}
	for _, c := range cases {
		n.flush()
		before, auth, saved := c.to.LeaseStats(), c.to.LeaseHostStats().Auth, c.to.persist.newest
		syncs := c.to.Swim().Stats().CertSyncs
		c.to.HandlePacket(n.now, forger, c.data)
		after := c.to.LeaseHostStats().Auth
		if got, want := c.reason(after), c.reason(auth)+1; got != want {
			t.Errorf("%s: counted %d, want %d (%+v)", c.name, got, want, after)
		}
		if st := c.to.LeaseStats(); st != before || c.to.persist.newest != saved {
			t.Errorf("%s: the lease machine saw it: stats %+v, were %+v", c.name, st, before)
		}
		rd := c.to.Ready()
		forged := slices.ContainsFunc(rd.PacketsForged, func(f PacketForgery) bool { return f.From == forger })
		if isForged := after.Forged > auth.Forged; forged != isForged {
			t.Errorf("%s: reported %v, counted as forged %v: %+v", c.name, forged, isForged, rd.PacketsForged)
		}
		if after.UnknownSigner > auth.UnknownSigner && c.to.Swim().Stats().CertSyncs == syncs {
			t.Errorf("%s: an unknown signer started no certificate sync", c.name)
		}
	}
	// The same kind of packet, honestly signed by its voter, goes through the
	// checks: they refused the forgeries, not the messages.
	auth := leader.LeaseHostStats().Auth
	leader.HandlePacket(n.now, "b:1", forgedPacket("b", "b", lname, &lease.Accept{Epoch: epoch, Seq: 1, Voter: "b"}))
	if got := leader.LeaseHostStats().Auth; got != auth {
		t.Errorf("an honest Accept was refused: %+v, was %+v", got, auth)
	}
	if ls := n.leaders(); len(ls) != 1 || n.hosts[ls[0]] != leader {
		t.Errorf("leaders %v after the forgeries", ls)
	}
}

// TestShardPacketsCannotSpeakAsAnotherOwner: e sends the leader a Renew as d
// (holding nothing, which would free d's shards), and d a Release of its
// shards as if from the leader, in packets and in one-way frames of a stream
// whose certificate names e. All are refused, counted and reported; d keeps
// serving and the leader's view of d does not move.
func TestShardPacketsCannotSpeakAsAnotherOwner(t *testing.T) {
	n, leader, epoch := signedCluster(t)
	lname := leader.cfg.Swim.Name
	d := n.hosts["d:1"]
	held := d.OwnedShards(n.now)
	if len(held) == 0 {
		t.Fatal("d serves nothing")
	}
	n.flush()
	ownerBefore, _ := d.ShardStats()
	_, ctlBefore := leader.ShardStats()

	leader.HandlePacket(n.now, "e:1", forgedPacket("e", "e", lname,
		&shard.Renew{Epoch: epoch, Node: "d", Boot: d.shard.owner.Boot(), Seq: 1 << 40}))
	d.HandlePacket(n.now, "e:1", forgedPacket("e", "e", "d", &shard.Release{Epoch: epoch, Node: "d", Shards: held}))
	d.HandlePacket(n.now, "e:1", forgedPacket("e", lname, "d", &shard.Release{Epoch: epoch, Node: "d", Shards: held}))

	// The same as one-way frames over a stream whose certificate names e.
	frame := func(m wire.Message) []byte {
		f, err := wire.EncodeFrame(m, wire.ClusterHash(""))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	leader.HandleStream(n.now, "e:1", "e", frame(&shard.Renew{Epoch: epoch, Node: "d", Boot: d.shard.owner.Boot(), Seq: 1 << 40}))
	d.HandleStream(n.now, "e:1", "e", frame(&shard.Release{Epoch: epoch, Node: "d", Shards: held}))

	if got := leader.ShardHostStats().Auth.Forged; got != 2 {
		t.Errorf("leader counted %d forged shard packets and frames, want 2", got)
	}
	if got := d.ShardHostStats().Auth.Forged; got != 3 {
		t.Errorf("d counted %d forged shard packets and frames, want 3", got)
	}
	for _, h := range []*Stack{leader, d} {
		if rd := h.Ready(); !slices.ContainsFunc(rd.PacketsForged, func(f PacketForgery) bool { return f.From == "e:1" }) {
			t.Errorf("%s reported no forgery: %+v", h.cfg.Swim.Name, rd.PacketsForged)
		}
	}
	if o, _ := d.ShardStats(); o != ownerBefore || !slices.Equal(d.OwnedShards(n.now), held) {
		t.Errorf("d's owner moved: stats %+v (were %+v), serves %v (served %v)", o, ownerBefore, d.OwnedShards(n.now), held)
	}
	if _, c := leader.ShardStats(); c != ctlBefore {
		t.Errorf("the leader's controller moved: %+v, was %+v", c, ctlBefore)
	}
}

// Every lease and shard message type this build makes has a sender rule: a
// type added without one would be refused from every honest sender.
func TestEveryLeaseAndShardTypeHasASenderRule(t *testing.T) {
	n := newShardNet(t, []string{"a"}, 1, signedStacks)
	h := n.hosts["a:1"]
	for _, p := range []wire.Protocol{lease.Messages(), shard.Messages()} {
		for typ := int(p.First); typ <= int(p.Last); typ++ {
			m := p.New(wire.MsgType(typ))
			if m == nil {
				continue
			}
			var known bool
			if p.Name == lease.Messages().Name {
				_, known = leaseSender(m)
			} else {
				_, known = h.shardSender(m)
			}
			if !known {
				t.Errorf("%s type %d (%T) has no sender rule in packetauth.go", p.Name, typ, m)
			}
		}
	}
}
