package crdt

import (
	"fmt"
	"slices"
	"strings"
)

// Cluster is the map name of the cluster-wide map in Delta.Node and in the Store's
// read methods. Node names are never empty, so it cannot clash with one.
const Cluster = ""

// Delta is part of one map's state, as gossip and push-pull carry it. As a state it
// merges like any other (see the package comment): its Entries, and every other key
// read as a tombstone at Floor. A sender therefore sets Floor to its own floor only
// in a full delta (Since zero, every entry included); a partial delta carries
// Version{Epoch: current epoch}, below every entry it leaves out.
type Delta struct {
	// Node names the map: a node name, or Cluster.
	Node string
	// Since: Entries hold every entry of the sender's view newer than Since. Zero
	// for a full delta.
	Since Version
	// Have: the sender's view was complete through Have (it knew, for every key,
	// the last write at or below Have). A receiver complete through Since becomes
	// complete through Have.
	Have Version
	// Floor: keys absent from Entries read as tombstones at Floor. Floor <= Have.
	Floor Version
	// Entries, sorted by key, each key once.
	Entries []Entry
	// Head is the writer's signature of the map at Have (HeadClaim), in a full
	// delta with an Authority: what makes Have and Floor the writer's word.
	Head []byte
}

// Full reports whether d carries the sender's whole map.
func (d Delta) Full() bool { return d.Since.IsZero() }

// Snapshot is the full state of a store: one full delta per map, sorted by Node
// (the cluster map first).
type Snapshot struct {
	Maps []Delta
}

// Change is a visible change of a replicated map: a key got a new value or lost it.
// A write that only moves a version (same value) is not a change.
type Change struct {
	Node    string  // map name: a node, or Cluster
	Key     string  // the key
	Value   []byte  // the new value; nil when Deleted. Shared: do not modify.
	Deleted bool    // the key no longer has a value
	Version Version // version of the cell now in force (a tombstone's for deletions)
}

// Applied is what merging peer state did.
type Applied struct {
	// Changes, grouped by map in input order, by key within a map.
	Changes []Change
	// Reissue is set when the input carried writes to the local node's map that
	// this node never made (a previous life under the same or a higher
	// incarnation, or forged state). The store moved to a higher incarnation and
	// re-issued its map: gossip Reissue like the delta of a Set.
	Reissue *Delta
	// Refused lists the maps whose delta the signature checks refused (with an
	// Authority): nothing of them was applied. They are not errors: the input was
	// well formed, and the rest of a snapshot still merges.
	Refused []Refusal
}

// validate checks what Apply relies on, the same for decoded and hand-built deltas.
func (d *Delta) validate(lim Limits) error {
	if err := lim.checkName(d.Node); err != nil {
		return err
	}
	if d.Have.Less(d.Floor) {
		return fmt.Errorf("%w: map %q: floor %v above have %v", ErrMalformed, d.Node, d.Floor, d.Have)
	}
	if len(d.Entries) > lim.maxEntries() {
		return fmt.Errorf("%w: map %q: %d entries", ErrMapTooLarge, d.Node, len(d.Entries))
	}
	for i := range d.Entries {
		e := &d.Entries[i]
		if err := lim.checkKey(e.Key); err != nil {
			return fmt.Errorf("map %q: %w", d.Node, err)
		}
		if err := lim.checkValue(e.Key, e.Value); err != nil {
			return fmt.Errorf("map %q: %w", d.Node, err)
		}
		if e.Deleted && len(e.Value) != 0 {
			return fmt.Errorf("%w: map %q: tombstone %q with a value", ErrMalformed, d.Node, e.Key)
		}
		if i > 0 && strings.Compare(d.Entries[i-1].Key, e.Key) >= 0 {
			return fmt.Errorf("%w: map %q: keys not sorted or repeated at %q", ErrMalformed, d.Node, e.Key)
		}
	}
	return nil
}

// plausibleFrom checks every version d carries against known, the newest version
// the receiver holds for d's map.
func (d *Delta) plausibleFrom(known Version) error {
	for _, v := range []Version{d.Since, d.Have, d.Floor} {
		if !v.plausibleFrom(known) {
			return fmt.Errorf("%w: map %q: version %v, ours %v", ErrImplausible, d.Node, v, known)
		}
	}
	for i := range d.Entries {
		if v := d.Entries[i].Version; !v.plausibleFrom(known) {
			return fmt.Errorf("%w: map %q: key %q at version %v, ours %v", ErrImplausible, d.Node, d.Entries[i].Key, v, known)
		}
	}
	return nil
}

// has reports whether the sorted entries of d hold key.
func (d *Delta) has(key string) bool {
	lo, hi := 0, len(d.Entries)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		switch c := strings.Compare(d.Entries[mid].Key, key); {
		case c == 0:
			return true
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return false
}

// newerThan reports whether d holds anything written after v.
func (d *Delta) newerThan(v Version) bool {
	if v.Less(d.Have) {
		return true
	}
	for i := range d.Entries {
		if v.Less(d.Entries[i].Version) {
			return true
		}
	}
	return false
}

// Split cuts d into deltas that each encode in at most maxBytes, for gossip that
// must fit a packet: a re-issued map (SetIncarnation, a refutation, a new cluster
// epoch) can reach MaxMapBytes. The pieces are partial deltas in version order,
// chained by Since and Have, so a receiver that gets them all in order ends as
// complete as the original would leave it; each one alone is a valid, smaller
// piece of state. What they cannot carry is a full delta's floor above the epoch
// start: keys the sender has collected stay at receivers until a push-pull. A
// delta that already fits, or one whose single entry does not, is returned whole.
func (d Delta) Split(maxBytes int) []Delta {
	if len(d.Entries) <= 1 || len(AppendDelta(nil, d)) <= maxBytes {
		return []Delta{d}
	}
	byVersion := slices.Clone(d.Entries)
	slices.SortFunc(byVersion, func(a, b Entry) int {
		if c := a.Version.Compare(b.Version); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	floor := epochStart(d.maxEpoch())
	since := d.Since
	if d.Full() {
		since = d.Floor // a receiver complete through the floor can chain on
	}
	var out []Delta
	var buf []byte
	piece := Delta{Node: d.Node, Since: since, Floor: floor}
	flush := func() {
		slices.SortFunc(piece.Entries, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
		out = append(out, piece)
		piece = Delta{Node: d.Node, Since: piece.Have, Floor: floor}
	}
	for _, e := range byVersion {
		piece.Entries = append(piece.Entries, e)
		piece.Have = maxVersion(e.Version, floor)
		if buf = AppendDelta(buf[:0], piece); len(buf) > maxBytes && len(piece.Entries) > 1 {
			piece.Entries = piece.Entries[:len(piece.Entries)-1]
			piece.Have = maxVersion(piece.Entries[len(piece.Entries)-1].Version, floor)
			flush()
			piece.Entries = append(piece.Entries, e)
			piece.Have = maxVersion(e.Version, floor)
		}
	}
	piece.Have = maxVersion(piece.Have, d.Have)
	flush()
	return out
}
