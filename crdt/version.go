package crdt

import (
	"bytes"
	"cmp"
	"fmt"
)

// Version orders the writes of one map. Epoch is the writer's incarnation (node
// maps) or lease epoch (cluster map); Counter numbers the writes of the epoch from
// 1. Versions compare lexicographically: a newer epoch beats any counter.
type Version struct {
	Epoch   uint64
	Counter uint64
}

// Compare returns -1, 0 or +1 as v is older than, equal to, or newer than o.
func (v Version) Compare(o Version) int {
	if c := cmp.Compare(v.Epoch, o.Epoch); c != 0 {
		return c
	}
	return cmp.Compare(v.Counter, o.Counter)
}

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool { return v.Compare(o) < 0 }

// IsZero reports whether v is the zero version, older than every write.
func (v Version) IsZero() bool { return v == Version{} }

// String formats v as "epoch.counter".
func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Epoch, v.Counter) }

func maxVersion(a, b Version) Version {
	if a.Less(b) {
		return b
	}
	return a
}

// MaxVersionJump bounds how far one delta may move a map's versions above those
// the receiver holds: its epochs by at most this, and its counters by at most this
// above ours in the same epoch (above 0 in a newer one). It is wire.MaxJump
// (PROTOCOL.md 4.1; crdt imports no other package of the module, and
// stack checks that the two agree). Honest versions grow by one per write,
// refutation or lease epoch; one forged delta at epoch 2^64-1 would otherwise
// freeze a node's map (its refutation has no epoch left) or fence every later
// leader out of the cluster map.
const MaxVersionJump = 1 << 32

// plausibleFrom reports whether v moves at most MaxVersionJump beyond known.
func (v Version) plausibleFrom(known Version) bool {
	switch {
	case v.Epoch < known.Epoch:
		return true
	case v.Epoch == known.Epoch:
		return v.Counter <= known.Counter || v.Counter-known.Counter <= MaxVersionJump
	default:
		return v.Epoch-known.Epoch <= MaxVersionJump && v.Counter <= MaxVersionJump
	}
}

// epochStart is the version every entry of an older epoch is demoted to once
// epoch e is known: a tombstone there reads as "written before e, now dead".
func epochStart(e uint64) Version { return Version{Epoch: e} }

// next returns the version after v in v's epoch.
func (v Version) next() (Version, error) {
	if v.Counter == ^uint64(0) {
		return v, ErrVersionExhausted
	}
	return Version{Epoch: v.Epoch, Counter: v.Counter + 1}, nil
}

// Entry is one key of a map as deltas and snapshots carry it.
type Entry struct {
	Key     string
	Value   []byte  // the value; nil for a tombstone (ignored when Deleted)
	Version Version // the write that produced this entry
	Deleted bool    // a tombstone: the key was deleted by the write at Version
	// Sig is the writer's signature of the cell (CellClaim) with an Authority,
	// relayed unchanged; nil without one.
	Sig []byte
}

// cell is a key's state in a map: what the merge order compares.
type cell struct {
	version Version
	deleted bool
	value   []byte // nil when deleted
	sig     []byte // the writer's signature (Entry.Sig); merges do not compare it
}

// tomb is the cell an absent key reads as under floor f.
func tomb(f Version) cell { return cell{version: f, deleted: true} }

// compareCells is the total order merges take maxima in: version first; at equal
// versions a tombstone beats a value, and between two values the larger bytes win.
// An honest writer never produces two cells with one version, so the tie-breaks
// only make merges deterministic (and still a join) against buggy or forged input.
func compareCells(a, b cell) int {
	if c := a.version.Compare(b.version); c != 0 {
		return c
	}
	if a.deleted != b.deleted {
		if a.deleted {
			return 1
		}
		return -1
	}
	if a.deleted {
		return 0
	}
	return bytes.Compare(a.value, b.value)
}

func maxCell(a, b cell) cell {
	if compareCells(a, b) < 0 {
		return b
	}
	return a
}

func (e Entry) cell() cell {
	if e.Deleted {
		return cell{version: e.Version, deleted: true, sig: e.Sig}
	}
	return cell{version: e.Version, value: e.Value, sig: e.Sig}
}
