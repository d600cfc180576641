package stack

import (
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Sender signatures of lease and shard packets (PROTOCOL.md 10.11). With
// Config.Swim.Auth (node certificates) every lease and shard packet this stack
// sends ends with a wire.PacketSig: its sender's signature, made with the same
// Authenticator as swim's self-claims, over the cluster label, the sender's and
// the destination's names and the packet's messages. A receiver checks it
// before any message reaches a machine, then checks that each message speaks
// for the signer (the voter of a Promise, the holder of a Renew, the owner of a
// shard Renew, the leader this node follows for a Grant), so a packet-key
// holder with its own certificate can no longer vote, renew or release as
// another member, and a vote sent to one candidate cannot be replayed to
// another. One signature per packet: a packet costs at most one verification,
// a sixteenth of what a gossip packet may (swim's maxVerifiesPerPacket).

// PacketAuthStats counts lease or shard packets refused for their sender
// signature, with Config.Swim.Auth; all zero without it.
type PacketAuthStats struct {
	Forged        uint64 // the signature is not its sender's, or a message speaks for another member
	Unsigned      uint64 // no PacketSig, or an empty signature
	UnknownSigner uint64 // no certificate held for the signing key (a certificate sync follows)
	SignFailures  uint64 // packets of ours the key could not sign (sent unsigned: peers refuse them)
}

// PacketForgery is a lease or shard packet refused because its signature is
// not Sender's, or (Misnamed) because Sender signed a message of Type that
// speaks for Claimed ("" for a Grant or Release while this node follows no
// leader); a shard frame is Misnamed when it speaks for another member than
// Sender, the name of its stream's certificate. From is the packet's or the
// stream's source, Type that of its first message unless Misnamed.
type PacketForgery struct {
	Sender, Claimed, From string
	Type                  wire.MsgType
	Misnamed              bool
}

// signPacket ends the packet p holds, addressed to member to, with our
// signature; without Auth it does nothing. It reports false when the signature
// does not fit the packet (the caller then sends the message another way or
// counts it). A key that cannot sign leaves the packet unsigned, counted.
func (h *Stack) signPacket(p *wire.Packer, to string, st *PacketAuthStats) bool {
	a := h.cfg.Swim.Auth
	if a == nil {
		return true
	}
	sig := a.Sign(wire.PacketClaim(h.cfg.Swim.ClusterLabel, h.cfg.Swim.Name, to, p.Messages()))
	if len(sig) == 0 {
		st.SignFailures++
		return true
	}
	h.packetSig = wire.PacketSig{Sender: h.cfg.Swim.Name, Sig: sig}
	return p.Add(&h.packetSig)
}

// checkPacket verifies, with Auth, the PacketSig of a received packet that r
// was just Reset on, and leaves r at its first message again. It returns the
// signer ("" without Auth) and the end of the messages to read (the offset of
// the PacketSig; the whole packet without Auth), or ok false when the packet is
// refused: unsigned, of an unknown signer (a certificate sync with from
// follows), forged (reported), or malformed (counted in *malformed). Only the
// first PacketSig counts, and messages after it are not read: they are not
// signed.
func (h *Stack) checkPacket(now time.Time, from string, data []byte, r *wire.PacketReader, st *PacketAuthStats, malformed *uint64) (sender string, end int, ok bool) {
	if h.cfg.Swim.Auth == nil {
		return "", len(data), true
	}
	for {
		at := r.Pos()
		if !r.Next() {
			st.Unsigned++
			return "", 0, false
		}
		if r.Type() != wire.TypePacketSig {
			continue
		}
		if err := h.dec.Decode(r.Body(), &h.packetSig); err != nil {
			*malformed++
			return "", 0, false
		}
		end = at
		break
	}
	ps := &h.packetSig
	if len(ps.Sig) == 0 {
		st.Unsigned++
		return "", 0, false
	}
	claim := wire.PacketClaim(h.cfg.Swim.ClusterLabel, ps.Sender, h.cfg.Swim.Name, data[wire.HeaderSize:end])
	switch h.cfg.Swim.Auth.Verify(ps.Sender, claim, ps.Sig) {
	case swim.VerdictOK:
		_, _ = r.Reset(data) // it read the packet once: again from the first message
		return ps.Sender, end, true
	case swim.VerdictUnknown:
		st.UnknownSigner++
		h.swim.SyncCerts(now, from)
	default:
		st.Forged++
		h.reportForged(PacketForgery{Sender: ps.Sender, From: from, Type: wire.MsgType(data[wire.HeaderSize])})
	}
	return "", 0, false
}

// reportForged queues f for the driver's audit log, at most
// swim.MaxRefusedPerReady a batch (every one is counted).
func (h *Stack) reportForged(f PacketForgery) {
	if len(h.pending.PacketsForged) < swim.MaxRefusedPerReady {
		h.pending.PacketsForged = append(h.pending.PacketsForged, f)
	}
}

// misnamed reports, counts and returns whether m, in a packet signed by sender,
// speaks for another member: name is the member it speaks for (known false:
// a type the sender rules do not cover, refused).
func (h *Stack) misnamed(m wire.Message, name string, known bool, sender, from string, st *PacketAuthStats) bool {
	if known && name == sender {
		return false
	}
	st.Forged++
	h.reportForged(PacketForgery{Sender: sender, Claimed: name, From: from, Type: m.Type(), Misnamed: true})
	return true
}

func (h *Stack) misnamedLease(m wire.Message, sender, from string) bool {
	name, known := leaseSender(m)
	return h.misnamed(m, name, known, sender, from, &h.lease.stats.Auth)
}

func (h *Stack) misnamedShard(m wire.Message, sender, from string) bool {
	name, known := h.shardSender(m)
	return h.misnamed(m, name, known, sender, from, &h.shard.stats.Auth)
}

// leaseSender is the member a lease message speaks for: the one it names as
// its sender. known is false for a type these rules do not cover (a test
// holds them to every type lease.Messages makes).
func leaseSender(m wire.Message) (name string, known bool) {
	switch m := m.(type) {
	case *lease.Prepare:
		return m.Candidate, true
	case *lease.Promise:
		return m.Voter, true
	case *lease.Reject:
		return m.Voter, true
	case *lease.Propose:
		return m.Holder, true
	case *lease.Accept:
		return m.Voter, true
	case *lease.Renew:
		return m.Holder, true
	case *lease.Release:
		return m.Holder, true
	}
	return "", false
}

// shardSender is leaseSender for a shard message: the member it names as its
// sender (an Announce's leader, a MapRequest's or Renew's owner), and for the
// leader's messages that name only their addressee (Grant, Release, a map) the
// leader this node's Owner follows, the one its renewals go to: a deposed
// leader's late Grant is fenced anyway, and another member's is a forgery.
func (h *Stack) shardSender(m wire.Message) (name string, known bool) {
	switch m := m.(type) {
	case *shard.Announce:
		return m.Leader, true
	case *shard.MapRequest:
		return m.Node, true
	case *shard.Renew:
		return m.Node, true
	case *shard.Grant, *shard.Release, *shard.MapState:
		leader, _ := h.shard.owner.Leader()
		return leader, true
	}
	return "", false
}
