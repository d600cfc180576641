package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Store is one node's replica of the cluster's metadata: its own map, which it
// alone writes, a replica of every other node's map, and a replica of the cluster
// map, which it writes while it leads a lease epoch. Not safe for concurrent use.
//
// Values passed in are copied; values handed out in Deltas, Snapshots and Changes
// are shared with the store and must not be modified; Get and NodeMap return
// copies.
type Store struct {
	self    string
	lim     Limits
	nodes   map[string]*lwwMap // node maps, self included
	cluster *lwwMap
	// clusterOwned: this store opened the cluster map's current epoch (it led that
	// lease epoch) and may write into it.
	clusterOwned bool
	digest       uint64   // sum of the maps' digests
	ups          []update // scratch for plans
	// auth signs our writes and checks peers' (SetAuthority); label is the
	// cluster label the claims name. hostile: the input being merged carried a
	// forgery, so the rest of it is refused unverified.
	auth    Authority
	label   string
	hostile bool
}

// NewStore returns the store of node self, at incarnation 0 with empty maps.
func NewStore(self string, lim Limits) (*Store, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	if self == Cluster {
		return nil, errors.New("crdt: NewStore: empty node name")
	}
	if err := lim.checkName(self); err != nil {
		return nil, err
	}
	return &Store{
		self:    self,
		lim:     lim,
		nodes:   map[string]*lwwMap{self: newMap(self)},
		cluster: newMap(Cluster),
	}, nil
}

// Self returns the local node's name.
func (s *Store) Self() string { return s.self }

// Limits returns the limits the store enforces.
func (s *Store) Limits() Limits { return s.lim }

func (s *Store) own() *lwwMap { return s.nodes[s.self] }

// Incarnation returns the epoch of the local node's map.
func (s *Store) Incarnation() uint64 { return s.own().epoch() }

// SetIncarnation starts a new life of the local map: every live entry is re-issued
// under inc with counters from 1, and peers drop what the map held under older
// incarnations once they see the returned full delta (or any later one). Call it
// when the node restarts under a higher incarnation; it costs a full-map gossip, so
// it is not meant for every SWIM refutation. inc must exceed Incarnation.
func (s *Store) SetIncarnation(inc uint64) (Delta, error) {
	m := s.own()
	if inc <= m.epoch() {
		return Delta{}, fmt.Errorf("%w: %d, current %d", ErrStaleIncarnation, inc, m.epoch())
	}
	old := m.digest
	d := m.reissue(inc, s.signer(m))
	s.digest += m.digest - old
	s.withHead(m, &d)
	return d, nil
}

// Set writes key = value in the local map and returns the delta to gossip.
func (s *Store) Set(key string, value []byte) (Delta, error) {
	if err := s.checkWrite(key, value); err != nil {
		return Delta{}, err
	}
	return s.write(s.own(), key, cell{value: bytes.Clone(value)})
}

// Delete writes a tombstone for key in the local map and returns the delta to
// gossip. It returns ErrNotFound when key has no live value.
func (s *Store) Delete(key string) (Delta, error) {
	if err := s.checkLive(s.own(), key); err != nil {
		return Delta{}, err
	}
	return s.write(s.own(), key, cell{deleted: true})
}

// SetCluster writes key = value in the cluster map as leader of lease epoch epoch
// and returns the delta to gossip. The first write under an epoch newer than the
// map's opens it: the store's view of the cluster map is re-issued under epoch and
// the returned delta is full. A write under an older epoch, or under the current
// one by a store that did not open it, returns ErrFenced. Lease epochs start at 1.
func (s *Store) SetCluster(epoch uint64, key string, value []byte) (Delta, error) {
	if err := s.checkWrite(key, value); err != nil {
		return Delta{}, err
	}
	return s.clusterWrite(epoch, key, cell{value: bytes.Clone(value)})
}

// DeleteCluster writes a tombstone for key in the cluster map as leader of lease
// epoch epoch; see SetCluster.
func (s *Store) DeleteCluster(epoch uint64, key string) (Delta, error) {
	if err := s.checkLive(s.cluster, key); err != nil {
		return Delta{}, err
	}
	return s.clusterWrite(epoch, key, cell{deleted: true})
}

// ClusterEpoch returns the newest lease epoch the cluster map has seen.
func (s *Store) ClusterEpoch() uint64 { return s.cluster.epoch() }

func (s *Store) checkWrite(key string, value []byte) error {
	if err := s.lim.checkKey(key); err != nil {
		return err
	}
	return s.lim.checkValue(key, value)
}

func (s *Store) checkLive(m *lwwMap, key string) error {
	if err := s.lim.checkKey(key); err != nil {
		return err
	}
	if c, _ := m.cellOf(key); c.deleted {
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return nil
}

func (s *Store) write(m *lwwMap, key string, c cell) (Delta, error) {
	old := m.digest
	d, err := m.write(key, c, s.lim, s.signer(m))
	s.digest += m.digest - old
	return d, err
}

func (s *Store) clusterWrite(epoch uint64, key string, c cell) (Delta, error) {
	m := s.cluster
	switch {
	case epoch < m.epoch() || epoch == m.epoch() && !s.clusterOwned:
		return Delta{}, fmt.Errorf("%w: epoch %d, cluster map at %d", ErrFenced, epoch, m.epoch())
	case epoch == m.epoch():
		return s.write(m, key, c)
	}
	// Open the epoch on a copy (reissue builds fresh entries and leaves m's alone),
	// so a write over the limits changes nothing.
	n := *m
	n.reissue(epoch, s.signer(&n))
	if _, err := n.write(key, c, s.lim, s.signer(&n)); err != nil {
		return Delta{}, err
	}
	s.digest += n.digest - m.digest
	s.cluster, s.clusterOwned = &n, true
	d := n.deltaSince(Version{})
	s.withHead(&n, &d)
	return d, nil
}

// Apply merges a delta received from a peer. Nothing of a delta that fails
// (malformed, over the limits) is applied. A delta for the local node's map is
// never merged into it: if it holds writes this node never made, the store moves
// to a higher incarnation and returns the re-issued map in Applied.Reissue.
func (s *Store) Apply(d Delta) (Applied, error) {
	var a Applied
	s.hostile = false
	err := s.apply(&d, &a)
	return a, err
}

// Merge merges a snapshot received from a peer, map by map; maps that fail are
// skipped and their errors joined, maps refused by the signature checks listed
// in Applied.Refused. Once one map carried a forgery, every later map that needs
// a check is refused as forged unverified.
func (s *Store) Merge(snap Snapshot) (Applied, error) {
	var a Applied
	s.hostile = false
	var errs []error
	for i := range snap.Maps {
		if err := s.apply(&snap.Maps[i], &a); err != nil {
			errs = append(errs, err)
		}
	}
	return a, errors.Join(errs...)
}

func (s *Store) apply(d *Delta, a *Applied) error {
	if err := d.validate(s.lim); err != nil {
		return err
	}
	if d.Node == s.self {
		if err := d.plausibleFrom(s.own().known()); err != nil {
			return err
		}
		if s.auth != nil {
			// A forgery (another member's key, or ours not verifying) must not
			// make us re-issue the map. A key we do not hold is taken as ours of
			// a previous life (a certificate we had before a restart): refuting
			// it only re-issues what we hold, and without it our new writes would
			// stay below that life's everywhere.
			n := len(a.Refused)
			if ok, _ := s.authorize(s.own(), d, a); !ok {
				if a.Refused[n].Reason != ReasonUnknownSigner {
					return nil
				}
				a.Refused = a.Refused[:n]
			}
		}
		return s.refute(d, a)
	}
	m, created := s.mapOf(d.Node)
	if m == nil {
		return fmt.Errorf("%w: %d node maps, max %d", ErrTooManyNodes, len(s.nodes)-1, s.lim.MaxNodes)
	}
	if err := d.plausibleFrom(m.known()); err != nil {
		if created {
			delete(s.nodes, d.Node)
		}
		return err
	}
	var h *head
	if s.auth != nil {
		// A removed map is checked as an empty one: the state of a node that is
		// back is taken whole.
		against := m
		if m.removed {
			against = newMap(d.Node)
		}
		var ok bool
		if ok, h = s.authorize(against, d, a); !ok {
			if created {
				delete(s.nodes, d.Node)
			}
			return nil
		}
	}
	if m.removed && d.newerThan(m.floor) {
		// The node is back: what it still holds is live again, so forget the
		// removal rather than let its floor hide the node's older entries.
		m = newMap(d.Node)
		s.nodes[d.Node] = m
	}
	old, oldEpoch := m.digest, m.epoch()
	var err error
	s.ups, a.Changes, err = m.join(d, s.lim, s.ups, a.Changes)
	if err != nil {
		if created {
			delete(s.nodes, d.Node)
		}
		return err
	}
	s.digest += m.digest - old
	if h != nil {
		m.head = *h
	}
	if m == s.cluster && m.epoch() != oldEpoch {
		s.clusterOwned = false // a newer leader opened an epoch
	}
	return nil
}

// mapOf returns the map named name, creating a node map if there is room.
func (s *Store) mapOf(name string) (m *lwwMap, created bool) {
	if name == Cluster {
		return s.cluster, false
	}
	if m := s.nodes[name]; m != nil {
		return m, false
	}
	if len(s.nodes)-1 >= s.lim.MaxNodes { // self is not counted
		return nil, false
	}
	m = newMap(name)
	s.nodes[name] = m
	return m, true
}

// refute handles peer state of the local map (SWIM's refutation, for metadata).
func (s *Store) refute(d *Delta, a *Applied) error {
	m := s.own()
	if !m.foreign(d) {
		return nil
	}
	e := max(m.epoch(), d.maxEpoch())
	if e == math.MaxUint64 {
		return fmt.Errorf("%w: incarnation %d", ErrVersionExhausted, e)
	}
	old := m.digest
	r := m.reissue(e+1, s.signer(m))
	s.digest += m.digest - old
	s.withHead(m, &r)
	a.Reissue = &r
	return nil
}

// Snapshot returns the full state of every map, for push-pull. Maps emptied by
// RemoveNode are left out: their raised floor is local protection, not news.
func (s *Store) Snapshot() Snapshot {
	names := s.Names()
	snap := Snapshot{Maps: make([]Delta, 0, len(names)+1)}
	for _, m := range append([]*lwwMap{s.cluster}, s.mapsOf(names)...) {
		if !m.removed {
			d := m.deltaSince(Version{})
			s.withHead(m, &d)
			snap.Maps = append(snap.Maps, d)
		}
	}
	return snap
}

// DeltaSince returns the entries of map name newer than since, for a peer whose
// view of that map is complete through since (its Have). When since is below the
// map's floor the result is the full map. It returns false for an unknown map.
func (s *Store) DeltaSince(name string, since Version) (Delta, bool) {
	m := s.lookup(name)
	if m == nil {
		return Delta{}, false
	}
	d := m.deltaSince(since)
	s.withHead(m, &d)
	return d, true
}

func (s *Store) mapsOf(names []string) []*lwwMap {
	out := make([]*lwwMap, len(names))
	for i, n := range names {
		out[i] = s.nodes[n]
	}
	return out
}

// Have returns the version through which the local view of map name is complete:
// what to send a peer asking for DeltaSince.
func (s *Store) Have(name string) (Version, bool) {
	m := s.lookup(name)
	if m == nil {
		return Version{}, false
	}
	return m.have, true
}

// Digest returns the digest of every live entry of every map (see MapDigest).
func (s *Store) Digest() uint64 { return s.digest }

// MapDigest returns the digest of map name: the sum of the xxhash64 of its live
// entries (name, key, version, value). Equal digests mean, up to hash collisions,
// equal live entries; tombstones are not counted.
func (s *Store) MapDigest(name string) (uint64, bool) {
	m := s.lookup(name)
	if m == nil {
		return 0, false
	}
	return m.digest, true
}

func (s *Store) lookup(name string) *lwwMap {
	if name == Cluster {
		return s.cluster
	}
	return s.nodes[name]
}

// Get returns a copy of the live value of key in map name.
func (s *Store) Get(name, key string) ([]byte, bool) {
	m := s.lookup(name)
	if m == nil {
		return nil, false
	}
	e, ok := m.entries[key]
	if !ok || e.deleted {
		return nil, false
	}
	return bytes.Clone(e.value), true
}

// Lookup returns the entry of key in map name, tombstones included, with a copy of
// its value.
func (s *Store) Lookup(name, key string) (Entry, bool) {
	m := s.lookup(name)
	if m == nil {
		return Entry{}, false
	}
	e, ok := m.entries[key]
	if !ok {
		return Entry{}, false
	}
	return Entry{Key: key, Value: bytes.Clone(e.value), Version: e.version, Deleted: e.deleted}, true
}

// NodeMap returns a copy of the live entries of map name (a node, or Cluster), or
// nil for an unknown map.
func (s *Store) NodeMap(name string) map[string][]byte {
	m := s.lookup(name)
	if m == nil {
		return nil
	}
	out := make(map[string][]byte, m.live)
	for k, e := range m.entries {
		if !e.deleted {
			out[k] = bytes.Clone(e.value)
		}
	}
	return out
}

// Names returns the names of the node maps the store holds, sorted, self included.
func (s *Store) Names() []string {
	return slices.Sorted(maps.Keys(s.nodes))
}

// GC forgets, in every map, the tombstones first seen by a GC at least horizon
// before now (nanoseconds, the caller's clock), and the maps RemoveNode emptied
// that long ago. Tombstones go in version order and only up to the map's Have, and
// the map's floor rises to the newest one forgotten: from then on a write at or
// below the floor, arriving late, reads as already deleted. The horizon must
// exceed the time a write can take to reach every replica (gossip plus a few
// push-pull intervals); a replica cut off for longer must rejoin by push-pull
// before it gossips its stale state. It returns the number of tombstones forgotten.
func (s *Store) GC(now int64, horizon time.Duration) int {
	n := s.cluster.gc(now, horizon)
	for name, m := range s.nodes {
		n += m.gc(now, horizon)
		if !m.removed || len(m.entries) > 0 {
			continue
		}
		if !m.removedMarked {
			m.removedMarked, m.removedSeen = true, now
		} else if now-m.removedSeen >= int64(horizon) {
			delete(s.nodes, name)
		}
	}
	return n
}

// RemoveNode empties the map of a node that membership has forgotten (SWIM's dead
// node tombstone was collected). Its floor rises above every version the store
// knew for it, so late deltas of the node's past cannot recreate it. A delta with
// anything newer shows the node is back: the removal is forgotten and the node's
// state accepted whole again. GC deletes the empty map after the horizon. It
// returns false for self and for unknown nodes.
func (s *Store) RemoveNode(name string) bool {
	m := s.nodes[name]
	if name == s.self || m == nil {
		return false
	}
	s.digest -= m.digest
	m.clear()
	return true
}
