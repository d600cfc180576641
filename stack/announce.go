package stack

import (
	"slices"
	"time"

	"github.com/omnirelay/mesh/shard"
)

// Confirmed leaders (PROTOCOL.md 10.11, section 12). A PacketSig proves only
// that an Announce comes from the leader it names, not that a lease made that
// member leader: any member with a node certificate could announce itself at
// an epoch no lease gave it, and the owners would renew with it, and take its
// Grants and Releases, until the real leader's higher epoch. So with Auth an
// Announce is followed only when its (leader, epoch) is the holder this node
// knows for that epoch, the same holder that may sign the cluster map of that
// epoch (holderOf: the lease machine on a voter, a majority of the voters'
// AcceptedKey cells elsewhere).
//
//   - Confirmed: stepped as without Auth.
//   - Contradicted (another holder is confirmed for the epoch): refused,
//     counted as forged and reported.
//   - Not confirmed yet (an honest new leader's first announce usually outruns
//     its voters' AcceptedKey gossip): held, not counted as forged, and
//     stepped once its holder is confirmed (retryAnnounces, after each input).
//     One is held per leader name: a signature binds the name to its signer,
//     so a member holds at most one slot, whatever it sends.

// maxHeldAnnounces bounds the Announces held for confirmation: a few leader
// changes in flight at once.
const maxHeldAnnounces = 4

// heldAnnounce is an Announce waiting for its holder, and its source.
type heldAnnounce struct {
	a    shard.Announce
	from string
}

// confirmAnnounce reports whether a signed Announce may be stepped; if not it
// is held (unconfirmed) or refused (contradicted).
func (h *Stack) confirmAnnounce(from string, a *shard.Announce) bool {
	ok, unknown := h.checkAnnounce(from, a)
	if unknown {
		h.holdAnnounce(from, a)
	}
	return ok
}

// checkAnnounce compares a's leader with the holder this node knows for a's
// epoch: ok when they match, unknown when none is confirmed yet; a contradicted
// one is counted as forged and reported.
func (h *Stack) checkAnnounce(from string, a *shard.Announce) (ok, unknown bool) {
	switch holder := h.holderOf(a.Epoch); holder {
	case a.Leader:
		return true, false
	case "":
		return false, true
	default:
		h.shard.stats.Auth.Forged++
		h.reportForged(PacketForgery{Sender: a.Leader, Claimed: holder, From: from, Type: shard.TypeAnnounce, Misnamed: true})
		return false, false
	}
}

// holdAnnounce keeps a, replacing an older one of the same leader; when full,
// the lowest epoch goes (a newer leader's announce matters more).
func (h *Stack) holdAnnounce(from string, a *shard.Announce) {
	ss := h.shard
	ss.stats.AnnouncesHeld++
	if i := slices.IndexFunc(ss.held, func(p heldAnnounce) bool { return p.a.Leader == a.Leader }); i >= 0 {
		if p := ss.held[i].a; a.Epoch > p.Epoch || (a.Epoch == p.Epoch && a.Version >= p.Version) {
			ss.held[i] = heldAnnounce{a: *a, from: from}
		}
		return
	}
	if len(ss.held) == maxHeldAnnounces {
		low := slices.IndexFunc(ss.held, func(p heldAnnounce) bool {
			return !slices.ContainsFunc(ss.held, func(q heldAnnounce) bool { return q.a.Epoch < p.a.Epoch })
		})
		if ss.held[low].a.Epoch >= a.Epoch {
			return
		}
		ss.held = slices.Delete(ss.held, low, low+1)
	}
	ss.held = append(ss.held, heldAnnounce{a: *a, from: from})
}

// retryAnnounces steps the held Announces whose holder is confirmed now, refuses
// those contradicted, and forgets those below the epoch the Owner follows
// already (they could only be fenced).
func (h *Stack) retryAnnounces(now time.Time) {
	ss := h.shard
	held := ss.held
	ss.held = nil
	for i := range held {
		p := &held[i]
		if p.a.Epoch < ss.owner.HighestEpoch() {
			continue
		}
		switch ok, unknown := h.checkAnnounce(p.from, &p.a); {
		case ok:
			ss.ctl.Step(now, &p.a)
			ss.owner.Step(now, &p.a)
		case unknown:
			ss.held = append(ss.held, *p)
		}
	}
}
