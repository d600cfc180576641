package crdt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Signed metadata (PROTOCOL.md section 13, "Signatures"). With an Authority every
// write is signed by its map's writer and replicas relay the signature with the
// cell, so a member holding the packet key cannot write another member's map:
//
//   - a cell (key, version, tombstone flag, value) carries its writer's
//     signature of CellClaim, made when it was written and never again;
//   - what a delta says beyond its entries (Have: completeness; Floor: every
//     absent key is dead) is the writer's word only in a full delta carrying the
//     writer's signature of HeadClaim: its live entries at Have, hashed. Without
//     one a receiver keeps the entries and drops the rest, so a forged floor
//     cannot delete and a forged Have cannot make GC hide a write.
//
// A receiver verifies only what would change its state: a cell newer than the
// one it holds, a head that moves its floor or Have. The records every push-pull
// brings again cost comparisons, no signature. Verifying is the Authority's: this
// package builds the claims, hashes with SHA-256 and compares, nothing else.

// MaxSigBytes bounds a decoded signature field: wire.MaxSig (stack checks they
// agree), an RSA-4096 signature; P-256 signatures are about 80 bytes with their
// key id.
const MaxSigBytes = 512

// Verdict is an Authority's judgement of a signature.
type Verdict uint8

const (
	// VerdictOK: the writer's key signed the claim.
	VerdictOK Verdict = iota
	// VerdictUnknown: no key is known for the writer (its certificate has not
	// reached us; or, for the cluster map, the holder of the epoch is unknown).
	VerdictUnknown
	// VerdictBad: the signature is not the writer's.
	VerdictBad
	// VerdictOverBudget: the Authority verifies no more for the input at hand.
	VerdictOverBudget
)

// Authority signs this store's writes and judges peers'. The host implements it;
// it must not block and must be deterministic for a given state.
type Authority interface {
	// Sign returns this node's signature of claim, nil if it cannot sign (the
	// write is then stored and gossiped unsigned, and peers refuse it).
	Sign(claim []byte) []byte
	// Verify judges sig as the signature of claim by the writer of map name at
	// epoch: the node name itself for a node map, for Cluster the holder of
	// lease epoch epoch as the host knows it.
	Verify(name string, epoch uint64, claim, sig []byte) Verdict
}

// Reason says why part of peer input was refused by the signature checks.
type Reason uint8

const (
	ReasonUnsigned      Reason = iota + 1 // a cell to apply carried no signature
	ReasonForged                          // a signature is not the writer's, or the input carried one that was not
	ReasonUnknownSigner                   // the writer's key is not known (yet)
	ReasonOverBudget                      // the Authority verified no more for this input
)

var reasonNames = [...]string{ReasonUnsigned: "unsigned", ReasonForged: "forged",
	ReasonUnknownSigner: "unknown_signer", ReasonOverBudget: "over_budget"}

// String is the reason's metric label.
func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "reason?"
}

// Refusal is one map's delta refused by the signature checks: nothing of it was
// applied. Key and Version name the cell whose check failed; Key is "" for a
// delta's head signature.
type Refusal struct {
	Map     string
	Key     string
	Version Version
	Reason  Reason
}

// Domain separation: a metadata signature is never read as a self-claim
// (PROTOCOL.md 10.10) or as anything else the certificate's key signs.
const (
	cellClaimContext = "omnirelay-mesh v1 meta cell\x00"
	headClaimContext = "omnirelay-mesh v1 meta head\x00"
)

// CellClaim is the byte string the writer of map name signs for a cell: the
// context string; the cluster label, map name and key, each a 2-byte big-endian
// length and its bytes; the version's epoch and counter, 8 bytes big-endian each;
// 1 for a tombstone, else 0; the SHA-256 of the value (of nothing for a
// tombstone).
func CellClaim(label, name, key string, v Version, deleted bool, value []byte) []byte {
	b := make([]byte, 0, len(cellClaimContext)+6+len(label)+len(name)+len(key)+17+sha256.Size)
	b = appendClaimStr(appendClaimStr(appendClaimStr(append(b, cellClaimContext...), label), name), key)
	b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, v.Epoch), v.Counter)
	var del byte
	if deleted {
		del, value = 1, nil
	}
	h := sha256.Sum256(value)
	return append(append(b, del), h[:]...)
}

// HeadClaim is the byte string the writer of map name signs to say its map was
// complete through have with exactly the live entries hashed in live (LiveHash):
// the context string, label and name as in CellClaim, have's epoch and counter,
// 8 bytes big-endian each, then live.
func HeadClaim(label, name string, have Version, live [sha256.Size]byte) []byte {
	b := make([]byte, 0, len(headClaimContext)+4+len(label)+len(name)+16+sha256.Size)
	b = appendClaimStr(appendClaimStr(append(b, headClaimContext...), label), name)
	b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, have.Epoch), have.Counter)
	return append(b, live[:]...)
}

// LiveHash is the SHA-256 of a map's live entries (tombstones left out) in key
// order, entries sorted by key as a Delta holds them: per entry the key as a
// 2-byte length and its bytes, the version's epoch and counter (8 bytes each),
// the value as a 4-byte length and its bytes, all big-endian.
func LiveHash(entries []Entry) [sha256.Size]byte {
	h := sha256.New()
	var buf []byte
	for i := range entries {
		e := &entries[i]
		if e.Deleted {
			continue
		}
		buf = appendClaimStr(buf[:0], e.Key)
		buf = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(buf, e.Version.Epoch), e.Version.Counter)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(e.Value)))
		h.Write(buf)
		h.Write(e.Value)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func appendClaimStr(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// head is a map's signed head as this store holds it: the writer's signature of
// the map at have, whose live entries summed to digest (entryHash) and hashed to
// hash. A replica relays it while its own map still is that state.
type head struct {
	have   Version
	digest uint64
	hash   [sha256.Size]byte
	sig    []byte
}

// current reports whether h describes m as it is now.
func (h *head) current(m *lwwMap) bool {
	return h.sig != nil && h.have == m.have && h.digest == m.digest
}

// SetAuthority makes the store sign its writes with a and check peers' against it
// (PROTOCOL.md section 13), in the cluster of label. Set it before the first
// write: writes made before are unsigned and peers with an authority refuse them.
func (s *Store) SetAuthority(label string, a Authority) {
	s.auth, s.label = a, label
}

// signer returns the cell signer of map m, nil without an authority.
func (s *Store) signer(m *lwwMap) func(key string, c cell) []byte {
	if s.auth == nil {
		return nil
	}
	return func(key string, c cell) []byte {
		return s.auth.Sign(CellClaim(s.label, m.name, key, c.version, c.deleted, c.value))
	}
}

// withHead adds the head signature to d, a full delta of m: made now (and kept
// until m changes) when this store writes m, relayed when it holds m's writer's
// head for m as it is.
func (s *Store) withHead(m *lwwMap, d *Delta) {
	if s.auth == nil || !d.Full() {
		return
	}
	if !m.head.current(m) && (m == s.own() || m == s.cluster && s.clusterOwned) {
		hash := LiveHash(d.Entries)
		if sig := s.auth.Sign(HeadClaim(s.label, m.name, m.have, hash)); len(sig) > 0 {
			m.head = head{have: m.have, digest: m.digest, hash: hash, sig: sig}
		}
	}
	if m.head.current(m) {
		d.Head = m.head.sig
	}
}

// authorize checks d against m before it is merged (PROTOCOL.md section 13):
// every entry that would beat m's cell must carry its writer's signature, and d's
// Have and Floor, where they would move m's, its writer's head. A delta without
// a head keeps its entries and loses the rest (Since, Have and Floor become the
// start of the newest epoch its entries show). It returns false, with the
// refusal appended to a.Refused, when d must be dropped whole; else the head to
// keep once d is merged, if d brought one.
func (s *Store) authorize(m *lwwMap, d *Delta, a *Applied) (bool, *head) {
	check := func(claim, sig []byte, epoch uint64, key string, v Version) bool {
		var r Reason
		switch {
		case s.hostile:
			r = ReasonForged // an honest member relays only what it verified
		case len(sig) == 0:
			r = ReasonUnsigned
		default:
			switch s.auth.Verify(d.Node, epoch, claim, sig) {
			case VerdictOK:
				return true
			case VerdictUnknown:
				r = ReasonUnknownSigner
			case VerdictOverBudget:
				r = ReasonOverBudget
			default:
				r = ReasonForged
				s.hostile = true
			}
		}
		a.Refused = append(a.Refused, Refusal{Map: d.Node, Key: key, Version: v, Reason: r})
		return false
	}
	newest := uint64(0)
	for i := range d.Entries {
		x := &d.Entries[i]
		newest = max(newest, x.Version.Epoch)
		if own, _ := m.cellOf(x.Key); compareCells(x.cell(), own) <= 0 {
			continue // it loses to what we hold: it changes nothing
		}
		if !check(CellClaim(s.label, d.Node, x.Key, x.Version, x.Deleted, x.Value), x.Sig, x.Version.Epoch, x.Key, x.Version) {
			return false, nil
		}
	}
	if !m.have.Less(d.Have) && d.Floor.Compare(m.floor) <= 0 {
		return true, nil
	}
	if d.Full() && len(d.Head) > 0 && !slices.ContainsFunc(d.Entries, func(x Entry) bool { return d.Have.Less(x.Version) }) {
		hash := LiveHash(d.Entries)
		h := head{have: d.Have, hash: hash, sig: bytes.Clone(d.Head)}
		for i := range d.Entries {
			if x := &d.Entries[i]; !x.Deleted {
				h.digest += entryHash(d.Node, x.Key, x.cell())
			}
		}
		if m.head.sig != nil && m.head.have == d.Have && m.head.hash == hash {
			h.sig = m.head.sig // verified when we took it; the bytes relayed may not be
		} else if !check(HeadClaim(s.label, d.Node, d.Have, hash), d.Head, d.Have.Epoch, "", d.Have) {
			return false, nil
		}
		return true, &h
	}
	// Every epoch the entries show is vouched for: a newer one than ours beat
	// our cells, so it was verified.
	f := epochStart(min(d.Floor.Epoch, newest))
	d.Since, d.Have, d.Floor, d.Head = f, f, f, nil
	return true, nil
}
