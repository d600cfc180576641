package stack

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
)

// Signed metadata (PROTOCOL.md section 13, "Signatures"). With swim's
// Authenticator (node certificates) the store signs our writes with our key and
// takes a peer's cell only signed by its map's writer: a node's map by that node,
// the cluster map by the holder of the lease epoch the cell was written under.
//
//   - A voter knows the holder of an epoch from its lease machine (the lease it
//     holds or accepted: leaseState.holders).
//   - A non-voter gets no lease messages. Every voter writes the holder it
//     accepted, with the epoch, under AcceptedKey in its own map, which only it
//     can sign; a node takes H as the holder of epoch E once a majority of the
//     voter set in force says so (of both sets during a change). Cluster-map
//     deltas of an epoch whose holder is not known yet wait (keepPending) and
//     are applied once a majority confirms it.
//   - One gossip packet makes us verify at most maxMetaVerifiesPerPacket
//     signatures; a push-pull is not bounded, but stops at its first forgery.

// AcceptedKey is the node-map key under which a voter publishes the lease holder it
// accepted: "EPOCH NAME" (decimal epoch, a space, the holder's name).
const AcceptedKey = "lease.accepted"

// maxMetaVerifiesPerPacket bounds the signatures one gossip packet's metadata
// makes us verify (as swim's maxVerifiesPerPacket does for self-claims): an
// honest packet carries at most about 12 signed cells (one-key deltas or split
// pieces, about 100 bytes each with their signature).
const maxMetaVerifiesPerPacket = 16

// maxPendingMeta bounds the gossip deltas kept while their signer cannot be
// checked (keepPending): a new holder's first cluster-map writes, the re-issued
// maps of members whose new certificates have not reached us.
const maxPendingMeta = 8

// maxHolders bounds the (epoch, holder) pairs a voter remembers: the cluster map
// only ever holds cells of its newest epoch, so a few recent ones are enough.
const maxHolders = 4

// MetaForgery is a metadata cell (or a delta's head, Key "") refused because its
// signature is not its map's writer's, received from From (a packet's source or
// a push-pull peer). Writer is who should have signed: the map's node, or the
// lease holder of Version's epoch for the cluster map ("" if unknown).
type MetaForgery struct {
	Map, Key, Writer, From string
	Version                crdt.Version
}

// metaAuth is the store's crdt.Authority over swim's Authenticator.
type metaAuth struct {
	h    *Stack
	auth swim.Authenticator
	// budget is the verifications left for the input at hand, -1: unbounded.
	budget int
	// unknownSigner: a verification met a key we lack; the host asks the source
	// for certificates.
	unknownSigner bool
}

func (a *metaAuth) Sign(claim []byte) []byte { return a.auth.Sign(claim) }

func (a *metaAuth) Verify(name string, epoch uint64, claim, sig []byte) crdt.Verdict {
	if name == crdt.Cluster {
		if name = a.h.holderOf(epoch); name == "" {
			a.h.meta.stats.UnknownHolder++
			return crdt.VerdictUnknown
		}
	}
	switch {
	case a.budget == 0:
		return crdt.VerdictOverBudget
	case a.budget > 0:
		a.budget--
	}
	switch a.auth.Verify(name, claim, sig) {
	case swim.VerdictOK:
		return crdt.VerdictOK
	case swim.VerdictUnknown:
		a.unknownSigner = true
		return crdt.VerdictUnknown
	}
	return crdt.VerdictBad
}

// holderOf is the lease holder of epoch as this node knows it, "" if unknown:
// from the lease machine on a voter, else from a majority of the voters'
// AcceptedKey cells.
func (h *Stack) holderOf(epoch uint64) string {
	ls := h.lease
	if ls == nil {
		return ""
	}
	for _, p := range ls.holders {
		if p.epoch == epoch {
			return p.name
		}
	}
	mb := ls.m.Membership()
	holder := h.acceptedBy(mb.Voters, epoch)
	if holder != "" && len(mb.Joint) > 0 && h.acceptedBy(mb.Joint, epoch) != holder {
		return ""
	}
	return holder
}

// acceptedBy is the holder of epoch that a majority of voters published under
// AcceptedKey, "" if none.
func (h *Stack) acceptedBy(voters []string, epoch uint64) string {
	votes := map[string]int{}
	for _, v := range voters {
		b, ok := h.meta.store.Get(v, AcceptedKey)
		if !ok {
			continue
		}
		e, name, ok := strings.Cut(string(b), " ")
		if n, err := strconv.ParseUint(e, 10, 64); ok && err == nil && n == epoch && name != "" {
			votes[name]++
		}
	}
	for name, n := range votes {
		if 2*n > len(voters) {
			return name
		}
	}
	return ""
}

// noteHolder remembers the holder of a lease epoch from a lease event and, on a
// voter, publishes it under AcceptedKey for the non-voters.
func (h *Stack) noteHolder(now time.Time, e lease.Event) {
	ls := h.lease
	if e.Holder == "" || slices.ContainsFunc(ls.holders, func(p epochHolder) bool { return p.epoch == e.Epoch }) {
		return
	}
	ls.holders = append(ls.holders, epochHolder{epoch: e.Epoch, name: e.Holder})
	slices.SortFunc(ls.holders, func(a, b epochHolder) int { return cmp.Compare(b.epoch, a.epoch) })
	ls.holders = ls.holders[:min(len(ls.holders), maxHolders)]
	if h.meta.auth == nil || !ls.voter() || e.Epoch < ls.holders[0].epoch {
		return
	}
	v := strconv.FormatUint(e.Epoch, 10) + " " + e.Holder
	if b, ok := h.meta.store.Get(ls.self, AcceptedKey); ok && string(b) == v {
		return
	}
	d, err := h.meta.store.Set(AcceptedKey, []byte(v))
	if err != nil {
		return
	}
	_ = h.localMeta(now, d, AcceptedKey, []byte(v), false) // counted in MetaStats.GossipErrors
	if len(h.meta.pending) > 0 {
		h.retryPending(now)
	}
}

// epochHolder is the holder of one lease epoch.
type epochHolder struct {
	epoch uint64
	name  string
}

// keepPending keeps a gossip delta refused for a signer we could not check yet
// (a certificate we lack, or the holder of a cluster-map epoch not confirmed
// yet), to apply once certificates or the holder arrive (retryPending): without
// it a member's metadata re-issued after a certificate rotation waited for a
// periodic push-pull at members that had not met the new certificate. One
// already kept for the same map and key is replaced.
func (h *Stack) keepPending(d crdt.Delta, from string) {
	ms := h.meta
	key := metaKey(&d)
	if i := slices.IndexFunc(ms.pending, func(p pendingDelta) bool { return key != "" && metaKey(&p.d) == key }); i >= 0 {
		ms.pending[i] = pendingDelta{d: d, from: from}
		return
	}
	if len(ms.pending) == maxPendingMeta {
		ms.pending = ms.pending[1:]
	}
	ms.pending = append(ms.pending, pendingDelta{d: d, from: from})
}

// pendingDelta is a kept delta, the address it came from, and how many retries
// it has had.
type pendingDelta struct {
	d     crdt.Delta
	from  string
	tries int
}

// maxPendingTries is how many times a kept delta is retried (after push-pulls
// that may have brought certificates, or a confirmed holder) before it is
// dropped; push-pulls carry the state anyway.
const maxPendingTries = 4

// retryPending applies the kept deltas again; those still of an unknown signer
// are kept for their next try.
func (h *Stack) retryPending(now time.Time) {
	ms := h.meta
	if ms.retrying {
		return // a retried delta confirmed a holder: the loop below goes on
	}
	ms.retrying = true
	defer func() { ms.retrying = false }()
	ps := ms.pending
	ms.pending = nil
	budget := ms.budget() // each verified once a try: bounded by maxPendingMeta
	defer ms.setBudget(budget)
	for _, p := range ps {
		ms.auth.unknownSigner = false
		a, err := ms.store.Apply(p.d)
		if len(a.Refused) == 1 && a.Refused[0].Reason == crdt.ReasonUnknownSigner {
			if p.tries++; p.tries < maxPendingTries {
				ms.pending = append(ms.pending, p)
			}
			continue
		}
		h.afterApply(now, a, err, p.from, &p.d, crdt.AppendDelta(nil, p.d))
	}
}

// newestEpoch is the newest epoch a delta's entries or Have name: the one whose
// holder signed a cluster-map delta.
func newestEpoch(d *crdt.Delta) uint64 {
	e := d.Have.Epoch
	for i := range d.Entries {
		e = max(e, d.Entries[i].Version.Epoch)
	}
	return e
}
