package swim

import (
	"container/heap"
	"encoding/binary"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/wire"
)

// MemberHash is one live member's contribution to the membership digest:
// xxhash64(name | 0x00 | incarnation as 8 bytes big-endian | status byte), status
// as on the wire (alive 0, suspect 1). The digest of a view is the sum of the hashes
// of its live (alive or suspect) members modulo 2^64 (order-independent, and updated
// in O(1) when one member changes: subtract its old hash, add the new one).
//
// Tombstones (dead and left members) are left out on purpose: the digest must cover
// exactly the facts every node converges on, and tombstones are not such facts. A
// node that never knew a departed member does not learn its tombstone (a dead entry
// of a push-pull only raises a suspicion of a member already known), and each node
// collects a tombstone TombstoneTTL after it learned it, at its own time. Counting
// tombstones made digests of nodes with the same live view differ for a whole TTL
// after churn, so digest syncs never stopped. A member held dead by one node and
// alive by another still makes their digests differ (it is live in one of them),
// which is the disagreement that digest sync exists to repair. PROTOCOL.md,
// "Membership behaviour and timers", specifies the same.
func MemberHash(name string, incarnation uint64, status Status) uint64 {
	var buf [64]byte
	b := buf[:0]
	if len(name) > len(buf)-10 {
		b = make([]byte, 0, len(name)+10)
	}
	b = append(b, name...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, incarnation)
	b = append(b, byte(status))
	return xxhash.Sum64(b)
}

// viewDigest maintains the digest incrementally.
type viewDigest struct{ d wire.Digest }

func (v *viewDigest) add(h uint64) { v.d.Hash += h; v.d.Members++ }
func (v *viewDigest) sub(h uint64) { v.d.Hash -= h; v.d.Members-- }

// timerKind says what a timerEntry fires.
type timerKind uint8

const (
	timerSuspicion timerKind = iota // a suspicion expires: declare the member dead
	timerGC                         // a tombstone's TTL ended: forget the member
)

// timerEntry is a deadline about one member. Entries are never removed when they go
// stale; a popped entry acts only if gen still matches the member's.
type timerEntry struct {
	at   time.Time
	seq  uint64 // insertion order, so equal deadlines fire deterministically
	kind timerKind
	name string
	gen  uint32
}

type timerHeap []timerEntry

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// timers is a min-heap of member deadlines.
type timers struct {
	h   timerHeap
	seq uint64
}

func (t *timers) push(e timerEntry) {
	t.seq++
	e.seq = t.seq
	heap.Push(&t.h, e)
}

// next is the earliest deadline, or the zero time.
func (t *timers) next() time.Time {
	if len(t.h) == 0 {
		return time.Time{}
	}
	return t.h[0].at
}

// popDue removes and returns the earliest entry if it is due at now.
func (t *timers) popDue(now time.Time) (timerEntry, bool) {
	if len(t.h) == 0 || t.h[0].at.After(now) {
		return timerEntry{}, false
	}
	return heap.Pop(&t.h).(timerEntry), true
}
