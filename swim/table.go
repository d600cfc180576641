package swim

import "github.com/cespare/xxhash/v2"

// memberTable is the view: every member we hold a record of, by name.
//
// Full-membership SWIM is n² records across a cluster, and a 10,000-node
// simulation holds 10⁸ of them in one process, so the per-record cost decides
// whether it fits. A map[string]*member with one allocation per record cost about
// 150 B a member (a 96 B record, ~55 B of map); this costs ~90: records live in
// fixed-size chunks (stable pointers, no per-record allocation), and the index is
// open addressing over 8-byte slots. A slot holds the upper half of the name's
// hash beside the record number, so probing past other names' slots reads no
// record: with thousands of views in a process every record read is a likely
// cache miss.
type memberTable struct {
	chunks [][]member
	used   int32    // record numbers handed out, freed ones included
	free   []int32  // freed record numbers, reused first
	index  []uint64 // hash>>32<<32 | record number + 1, at the name's probe position; 0 = empty
	count  int
}

func slot(h uint64, r int32) uint64 { return h&^0xffffffff | uint64(r+1) }

// recOf is the record number in a non-empty slot.
func recOf(s uint64) int32 { return int32(uint32(s)) - 1 }

const (
	chunkShift = 8
	chunkSize  = 1 << chunkShift
)

func (t *memberTable) rec(r int32) *member {
	return &t.chunks[r>>chunkShift][r&(chunkSize-1)]
}

// Len is the number of members held.
func (t *memberTable) Len() int { return t.count }

// get returns the record of name, or nil.
func (t *memberTable) get(name string) *member {
	if t.count == 0 {
		return nil
	}
	mask := uint64(len(t.index) - 1)
	h := xxhash.Sum64String(name)
	for i := h & mask; ; i = (i + 1) & mask {
		s := t.index[i]
		if s == 0 {
			return nil
		}
		if s>>32 == h>>32 {
			if mem := t.rec(recOf(s)); mem.Name == name {
				return mem
			}
		}
	}
}

// add returns a zeroed record for name, which must not be held already. A reused
// record keeps its gen counter (raised when it was freed), so timers and probes
// that refer to the record's previous member by gen no longer match.
func (t *memberTable) add(name string) *member {
	if 4*(t.count+1) > 3*len(t.index) {
		t.grow()
	}
	var r int32
	if n := len(t.free); n > 0 {
		r, t.free = t.free[n-1], t.free[:n-1]
	} else {
		if int(t.used>>chunkShift) == len(t.chunks) {
			t.chunks = append(t.chunks, make([]member, chunkSize))
		}
		r = t.used
		t.used++
	}
	mem := t.rec(r)
	*mem = member{gen: mem.gen, Name: name}
	t.place(xxhash.Sum64String(name), r)
	t.count++
	return mem
}

func (t *memberTable) place(h uint64, r int32) {
	mask := uint64(len(t.index) - 1)
	i := h & mask
	for t.index[i] != 0 {
		i = (i + 1) & mask
	}
	t.index[i] = slot(h, r)
}

func (t *memberTable) grow() {
	old := t.index
	t.index = make([]uint64, max(16, 2*len(old)))
	for _, s := range old {
		if s != 0 {
			r := recOf(s)
			t.place(xxhash.Sum64String(t.rec(r).Name), r)
		}
	}
}

// remove frees name's record; the pointer must not be used afterwards.
func (t *memberTable) remove(name string) {
	mask := uint64(len(t.index) - 1)
	h := xxhash.Sum64String(name)
	i := h & mask
	for {
		s := t.index[i]
		if s == 0 {
			return
		}
		if s>>32 == h>>32 {
			if mem := t.rec(recOf(s)); mem.Name == name {
				*mem = member{gen: mem.gen + 1}
				t.free = append(t.free, recOf(s))
				break
			}
		}
		i = (i + 1) & mask
	}
	// Backward-shift deletion (Knuth 6.4, Algorithm R): move later entries of the
	// probe run into the hole unless that would put one before its home slot, so
	// lookups never need tombstones.
	t.index[i] = 0
	t.count--
	for j := (i + 1) & mask; t.index[j] != 0; j = (j + 1) & mask {
		home := xxhash.Sum64String(t.rec(recOf(t.index[j])).Name) & mask
		// The entry at j may move to the hole at i only if its home is not in the
		// cyclic range (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.index[i], t.index[j] = t.index[j], 0
			i = j
		}
	}
}

// each calls f for every member, in no particular order.
func (t *memberTable) each(f func(*member)) {
	for _, s := range t.index {
		if s != 0 {
			f(t.rec(recOf(s)))
		}
	}
}
