package swim

import (
	"math/bits"

	"github.com/omnirelay/mesh/wire"
)

// Versions and features in a mixed cluster (PROTOCOL.md section 7).
//
// A node sends at the highest version every live member it holds speaks: the
// minimum of their announced ProtoMax and of its own. Every member it holds
// overlaps its range (applyAlive refuses the others), so that minimum is never
// below our own Min. A feature is on only while every live member, ourselves
// included, advertises it: one member without it that joins (or restarts
// without it) turns it off again in the same input that adds it.
//
// A node that holds no live member but itself (starting, joining, or cut off)
// knows nothing about the cluster it is about to talk to: it sends at its own
// Min, which every node it can share a cluster with accepts during an upgrade,
// and has no feature on. At its Max its join would be dropped by old seeds (the
// simulator's rolling upgrade found restarted nodes stuck alone, suspected by
// everyone), and with its features on it would act on them toward old members
// it has yet to learn of.
//
// Both are kept by counting, not by scanning the view: account runs on every
// change of a member's liveness or announcement, and the answers come from
// arrays of at most 256 and 64 counts. Dead and left members do not count: they
// receive nothing but reconnect push-pulls, and a node that comes back announces
// itself (and is counted) before anyone relies on its versions again.

// account adds (d = 1) or removes (d = -1) a live member other than us from the
// counts behind SendVersion and Features, and refreshes both.
func (m *Machine) account(mem *member, d int32) {
	if mem == m.self {
		return
	}
	m.pxCount[mem.protoMax] += d
	m.peersCounted += d
	for own := uint64(m.cfg.Features); own != 0; own &= own - 1 {
		b := bits.TrailingZeros64(own)
		if mem.features&(1<<b) == 0 {
			m.lacking[b] += d
		}
	}
	m.refreshVersions()
}

func (m *Machine) refreshVersions() {
	if m.peersCounted == 0 {
		m.setSendVersion(m.versions.Min)
		m.enabled = 0
		return
	}
	v := m.versions.Max
	for p := m.versions.Min; p < m.versions.Max; p++ {
		if m.pxCount[p] > 0 {
			v = p
			break
		}
	}
	m.setSendVersion(v)
	on := m.cfg.Features
	for own := uint64(m.cfg.Features); own != 0; own &= own - 1 {
		if b := bits.TrailingZeros64(own); m.lacking[b] > 0 {
			on &^= 1 << b
		}
	}
	m.enabled = on
}

func (m *Machine) setSendVersion(v uint8) {
	m.sendVersion = v
	m.packer.SetVersion(v) // takes effect at the next Reset: every send starts with one
	if m.versionCap != 0 {
		m.packer.SetVersion(min(v, m.versionCap))
	}
}

// capVersion makes the packets built while handling a received packet of
// version v go out at v if that is lower than SendVersion (0 lifts the cap).
// They include the answers to its sender, and a sender on an older build than
// we hold it at (restarted by a rollback, its refutation not yet here) must be
// able to read them: the claim about it they carry is what makes it refute.
func (m *Machine) capVersion(v uint8) {
	m.versionCap = v
	m.setSendVersion(m.sendVersion)
}

// SendVersion is the protocol version this node sends packets and frames at now:
// the highest one every live member it holds speaks. The host encodes its stream
// frames (wire.EncodeFrameVersion) and the packets of its other machines at it.
func (m *Machine) SendVersion() uint8 { return m.sendVersion }

// Versions is the range this node speaks (Config.Versions, defaulted).
func (m *Machine) Versions() wire.Versions { return m.versions }

// Features are the features on in this node's view: those of Config.Features that
// every live member advertises. Deterministic: a function of the view alone.
func (m *Machine) Features() wire.Features { return m.enabled }
