package crdt

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// slot is a key's cell plus local GC bookkeeping, which is not replicated.
type slot struct {
	cell
	marked bool  // GC has seen this tombstone
	seen   int64 // when GC first saw it, nanoseconds (valid when marked)
}

// lwwMap is one replicated map. Invariants (canonical form): floor.Epoch is the
// highest epoch the map has seen; no entry is older than epochStart(floor.Epoch);
// no entry equals tomb(floor) (it would read the same absent); floor <= have.
type lwwMap struct {
	name    string
	entries map[string]slot
	floor   Version // absent keys read as tomb(floor)
	have    Version // complete through have (local bookkeeping, see Delta.Have)
	live    int     // entries that are not tombstones
	size    int     // sum of entrySize over entries
	digest  uint64  // sum of entryHash over live entries
	head    head    // the writer's signed head, with an Authority

	// removed: RemoveNode emptied the map; GC deletes it once the horizon has
	// passed since removedSeen, unless a newer write arrived meanwhile.
	removed       bool
	removedMarked bool
	removedSeen   int64
}

func newMap(name string) *lwwMap {
	return &lwwMap{name: name, entries: make(map[string]slot)}
}

func (m *lwwMap) epoch() uint64 { return m.floor.Epoch }

// cellOf is how key reads: its entry, or a tombstone at the floor.
func (m *lwwMap) cellOf(key string) (cell, bool) {
	if s, ok := m.entries[key]; ok {
		return s.cell, true
	}
	return tomb(m.floor), false
}

// top is the newest version the map knows of: what a writer counts on from.
func (m *lwwMap) top() Version {
	t := m.have
	for _, s := range m.entries {
		t = maxVersion(t, s.version)
	}
	return t
}

// known is what a peer's versions for m are bounded by (MaxVersionJump): cheaper
// than top, and behind it only by writes this replica missed.
func (m *lwwMap) known() Version { return maxVersion(m.have, m.floor) }

// update is one key's planned transition.
type update struct {
	key    string
	old    cell
	hadOld bool
	new    cell
	keep   bool // false: the key becomes absent
}

func (u *update) oldLive() bool { return u.hadOld && !u.old.deleted }
func (u *update) newLive() bool { return u.keep && !u.new.deleted }

// settle appends the transition of key from (old, had) to the merged cell w under
// floor f, if it is one.
func settle(ups []update, key string, old cell, had bool, w cell, f Version) []update {
	keep := compareCells(w, tomb(f)) != 0
	if keep == had && (!keep || compareCells(w, old) == 0) {
		return ups
	}
	return append(ups, update{key: key, old: old, hadOld: had, new: w, keep: keep})
}

// plan computes the join of m with d without changing m: the key transitions and
// the resulting floor. d must be valid (sorted keys).
func (m *lwwMap) plan(d *Delta, ups []update) ([]update, Version) {
	e := max(m.floor.Epoch, d.Floor.Epoch)
	for i := range d.Entries {
		e = max(e, d.Entries[i].Version.Epoch)
	}
	base := tomb(epochStart(e))
	f := maxVersion(maxVersion(m.floor, d.Floor), epochStart(e))
	for i := range d.Entries {
		x := &d.Entries[i]
		old, had := m.cellOf(x.Key)
		ups = settle(ups, x.Key, old, had, maxCell(maxCell(old, x.cell()), base), f)
	}
	// Keys d leaves out read as tomb(d.Floor) in d, and every cell is demoted to at
	// least base. Both can only beat local entries when they exceed the local epoch
	// start, below which the canonical form holds no entry.
	if d.Floor.Compare(epochStart(m.floor.Epoch)) > 0 || e > m.floor.Epoch {
		other := maxCell(tomb(d.Floor), base)
		for k, s := range m.entries {
			if !d.has(k) {
				ups = settle(ups, k, s.cell, true, maxCell(s.cell, other), f)
			}
		}
	}
	return ups, f
}

// check enforces the map limits on the state ups would produce.
func (m *lwwMap) check(ups []update, lim Limits) error {
	live, size := m.live, m.size
	for i := range ups {
		u := &ups[i]
		if u.oldLive() {
			live--
		}
		if u.hadOld {
			size -= entrySize(u.key, u.old.value)
		}
		if u.newLive() {
			live++
		}
		if u.keep {
			size += entrySize(u.key, u.new.value)
		}
	}
	if live > lim.MaxKeys && live > m.live {
		return fmt.Errorf("%w: map %q: %d live keys, max %d", ErrTooManyKeys, m.name, live, lim.MaxKeys)
	}
	if size > lim.MaxMapBytes && size > m.size {
		return fmt.Errorf("%w: map %q: %d bytes, max %d", ErrMapTooLarge, m.name, size, lim.MaxMapBytes)
	}
	return nil
}

// commit applies planned transitions and appends the visible ones to changes,
// sorted by key.
func (m *lwwMap) commit(ups []update, f Version, changes []Change) []Change {
	first := len(changes)
	for i := range ups {
		u := &ups[i]
		if u.oldLive() {
			m.live--
			m.digest -= entryHash(m.name, u.key, u.old)
		}
		if u.hadOld {
			m.size -= entrySize(u.key, u.old.value)
		}
		if u.keep {
			m.entries[u.key] = slot{cell: u.new}
			m.size += entrySize(u.key, u.new.value)
			if u.newLive() {
				m.live++
				m.digest += entryHash(m.name, u.key, u.new)
			}
		} else {
			delete(m.entries, u.key)
		}
		switch ol, nl := u.oldLive(), u.newLive(); {
		case nl && (!ol || !bytes.Equal(u.old.value, u.new.value)):
			changes = append(changes, Change{Node: m.name, Key: u.key, Value: u.new.value, Version: u.new.version})
		case ol && !nl:
			v := u.new.version
			if !u.keep {
				v = f
			}
			changes = append(changes, Change{Node: m.name, Key: u.key, Deleted: true, Version: v})
		}
	}
	m.floor = f
	m.have = maxVersion(m.have, f)
	if len(m.entries) > 0 {
		m.removed = false
	}
	slices.SortFunc(changes[first:], func(a, b Change) int { return strings.Compare(a.Key, b.Key) })
	return changes
}

// join merges d into m (a replica, not the writer), all or nothing.
func (m *lwwMap) join(d *Delta, lim Limits, ups []update, changes []Change) ([]update, []Change, error) {
	ups, f := m.plan(d, ups[:0])
	if err := m.check(ups, lim); err != nil {
		return ups, changes, err
	}
	changes = m.commit(ups, f, changes)
	// Completeness transfers when nothing lies between what we had and what the
	// sender sent from.
	if d.Since.Compare(m.have) <= 0 {
		m.have = maxVersion(m.have, d.Have)
	}
	return ups, changes, nil
}

// foreign reports whether d tells the writer of m something it does not know: a
// cell newer than its own, a claim of completeness beyond its last write, or a
// deletion of one of its live keys. For the writer's own map that can only be a
// previous life or forgery. Mere GC skew (a replica that already forgot tombstones
// the writer still keeps) is not foreign.
func (m *lwwMap) foreign(d *Delta) bool {
	if m.have.Less(d.Have) || m.have.Less(d.Floor) {
		return true
	}
	for i := range d.Entries {
		x := &d.Entries[i]
		if own, _ := m.cellOf(x.Key); compareCells(x.cell(), own) > 0 {
			return true
		}
	}
	if d.Floor.Compare(epochStart(m.floor.Epoch)) > 0 {
		for k, s := range m.entries {
			if !s.deleted && !d.has(k) && compareCells(tomb(d.Floor), s.cell) > 0 {
				return true
			}
		}
	}
	return false
}

// maxEpoch is the highest epoch d mentions.
func (d *Delta) maxEpoch() uint64 {
	e := max(d.Have.Epoch, d.Floor.Epoch, d.Since.Epoch)
	for i := range d.Entries {
		e = max(e, d.Entries[i].Version.Epoch)
	}
	return e
}

// write is a local write by m's writer: the cell c gets the next version, and
// the signature of sign unless it is nil.
func (m *lwwMap) write(key string, c cell, lim Limits, sign func(string, cell) []byte) (Delta, error) {
	prev := m.top()
	v, err := prev.next()
	if err != nil {
		return Delta{}, err
	}
	c.version = v
	if sign != nil {
		c.sig = sign(key, c)
	}
	old, had := m.cellOf(key)
	ups := []update{{key: key, old: old, hadOld: had, new: c, keep: true}}
	if err := m.check(ups, lim); err != nil {
		return Delta{}, err
	}
	m.commit(ups, m.floor, nil)
	m.have = v
	return Delta{
		Node:    m.name,
		Since:   prev,
		Have:    v,
		Floor:   epochStart(v.Epoch),
		Entries: []Entry{{Key: key, Value: c.value, Version: v, Deleted: c.deleted, Sig: c.sig}},
	}, nil
}

// reissue moves the writer's map to epoch e: its live entries get versions e.1,
// e.2, ... in key order, tombstones go (the epoch start kills whatever they
// protected against), each signed by sign unless it is nil. It returns the full
// delta to gossip.
func (m *lwwMap) reissue(e uint64, sign func(string, cell) []byte) Delta {
	keys := make([]string, 0, m.live)
	for k, s := range m.entries {
		if !s.deleted {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	old := m.entries
	m.entries = make(map[string]slot, len(keys))
	m.size, m.digest = 0, 0
	out := make([]Entry, len(keys))
	for i, k := range keys {
		c := cell{version: Version{Epoch: e, Counter: uint64(i + 1)}, value: old[k].value}
		if sign != nil {
			c.sig = sign(k, c)
		}
		m.entries[k] = slot{cell: c}
		m.size += entrySize(k, c.value)
		m.digest += entryHash(m.name, k, c)
		out[i] = Entry{Key: k, Value: c.value, Version: c.version, Sig: c.sig}
	}
	m.floor = epochStart(e)
	m.have = Version{Epoch: e, Counter: uint64(len(keys))}
	return Delta{Node: m.name, Have: m.have, Floor: m.floor, Entries: out}
}

// deltaSince returns the entries newer than since. When since is below the floor
// the receiver may lack tombstones this map has forgotten, so it gets the full map.
func (m *lwwMap) deltaSince(since Version) Delta {
	d := Delta{Node: m.name, Since: since, Have: m.have, Floor: epochStart(m.floor.Epoch)}
	full := since.IsZero() || since.Less(m.floor)
	if full {
		d.Since, d.Floor = Version{}, m.floor
	}
	for k, s := range m.entries {
		if full || since.Less(s.version) {
			d.Entries = append(d.Entries, Entry{Key: k, Value: s.value, Version: s.version, Deleted: s.deleted, Sig: s.sig})
		}
	}
	slices.SortFunc(d.Entries, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return d
}

// gc forgets tombstones that GC first saw at least horizon ago, taken in version
// order up to the first younger one and never beyond have, and raises the floor to
// the newest one forgotten. It returns how many it forgot.
func (m *lwwMap) gc(now int64, horizon time.Duration) int {
	type cand struct {
		key string
		v   Version
	}
	var cands []cand
	for k, s := range m.entries {
		if !s.deleted {
			continue
		}
		if !s.marked {
			s.marked, s.seen = true, now
			m.entries[k] = s
		}
		if s.version.Compare(m.have) <= 0 {
			cands = append(cands, cand{k, s.version})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := a.v.Compare(b.v); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	n := 0
	for _, c := range cands {
		if now-m.entries[c.key].seen < int64(horizon) {
			break
		}
		n++
	}
	if n == 0 {
		return 0
	}
	m.floor = cands[n-1].v
	dropped := 0
	for k, s := range m.entries {
		if s.deleted && s.version.Compare(m.floor) <= 0 {
			delete(m.entries, k)
			m.size -= entrySize(k, nil)
			dropped++
		}
	}
	return dropped
}

// clear empties a map whose node swim has forgotten. The floor rises above
// everything known, so late deltas of that node's past are dead on arrival.
func (m *lwwMap) clear() {
	t := maxVersion(m.top(), m.floor)
	clear(m.entries)
	m.live, m.size, m.digest = 0, 0, 0
	m.floor, m.have = t, t
	m.removed, m.removedMarked = true, false
}
