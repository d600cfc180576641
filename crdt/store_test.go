package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestSetGetDeleteReplicate(t *testing.T) {
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	d1 := must[Delta](t)(a.Set("zone", []byte("eu-1")))
	if d1.Node != "a" || d1.Since != (Version{}) || d1.Have != (Version{0, 1}) || len(d1.Entries) != 1 {
		t.Fatalf("first delta %+v", d1)
	}
	got := apply(t, b, d1)
	if len(got.Changes) != 1 || got.Changes[0].Key != "zone" || string(got.Changes[0].Value) != "eu-1" {
		t.Fatalf("changes %+v", got.Changes)
	}
	if v, ok := b.Get("a", "zone"); !ok || string(v) != "eu-1" {
		t.Fatalf("b sees a.zone = %q %v", v, ok)
	}
	// Re-applying is idempotent and reports nothing.
	if got := apply(t, b, d1); len(got.Changes) != 0 {
		t.Fatalf("duplicate delta changed %+v", got.Changes)
	}
	// Same value again: new version, no visible change.
	if got := apply(t, b, must[Delta](t)(a.Set("zone", []byte("eu-1")))); len(got.Changes) != 0 {
		t.Fatalf("same value reported as change: %+v", got.Changes)
	}
	d3 := must[Delta](t)(a.Delete("zone"))
	got = apply(t, b, d3)
	if len(got.Changes) != 1 || !got.Changes[0].Deleted || got.Changes[0].Version != d3.Have {
		t.Fatalf("delete changes %+v", got.Changes)
	}
	if _, ok := b.Get("a", "zone"); ok {
		t.Fatal("deleted key still visible")
	}
	if e, ok := b.Lookup("a", "zone"); !ok || !e.Deleted || e.Version != d3.Have {
		t.Fatalf("tombstone %+v %v", e, ok)
	}
	if _, err := a.Delete("zone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of deleted key: %v", err)
	}
	if h, _ := b.Have("a"); h != d3.Have {
		t.Fatalf("b complete through %v, want %v", h, d3.Have)
	}
	if mustDigest(t, a, "a") != mustDigest(t, b, "a") || a.Digest() != b.Digest() {
		t.Fatal("digests differ")
	}
}

func mustDigest(t tb, s *Store, name string) uint64 {
	d, ok := s.MapDigest(name)
	if !ok {
		t.Fatalf("no map %q", name)
	}
	return d
}

func TestValuesAreCopied(t *testing.T) {
	a := newTestStore(t, "a")
	v := []byte("abc")
	must[Delta](t)(a.Set("k", v))
	v[0] = 'X'
	got, _ := a.Get("a", "k")
	got[1] = 'Y'
	if again, _ := a.Get("a", "k"); string(again) != "abc" {
		t.Fatalf("store value aliased caller memory: %q", again)
	}
}

func TestLimits(t *testing.T) {
	lim := DefaultLimits()
	a := newTestStore(t, "a")
	tests := []struct {
		name  string
		key   string
		value []byte
		want  error
	}{
		{"empty key", "", nil, ErrEmptyKey},
		{"key too long", strings.Repeat("k", lim.MaxKeyBytes+1), nil, ErrKeyTooLong},
		{"value too large", "k", make([]byte, lim.MaxValueBytes+1), ErrValueTooLarge},
	}
	for _, tt := range tests {
		if _, err := a.Set(tt.key, tt.value); !errors.Is(err, tt.want) {
			t.Errorf("%s: Set err = %v, want %v", tt.name, err, tt.want)
		}
		if _, err := a.SetCluster(1, tt.key, tt.value); !errors.Is(err, tt.want) {
			t.Errorf("%s: SetCluster err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// Exactly at the limits is fine.
	must[Delta](t)(a.Set(strings.Repeat("k", lim.MaxKeyBytes), make([]byte, lim.MaxValueBytes)))

	b := newTestStore(t, "b")
	for i := range lim.MaxKeys {
		must[Delta](t)(b.Set(string(rune('A'+i)), nil))
	}
	if _, err := b.Set("one-more", nil); !errors.Is(err, ErrTooManyKeys) {
		t.Fatalf("key %d: %v", lim.MaxKeys+1, err)
	}
	must[Delta](t)(b.Set("A", []byte("overwrite is fine")))

	c := newTestStore(t, "c")
	var err error
	for i := 0; err == nil; i++ {
		_, err = c.Set(string(rune('A'+i)), make([]byte, lim.MaxValueBytes))
	}
	if !errors.Is(err, ErrMapTooLarge) {
		t.Fatalf("filling a map: %v", err)
	}
	if m := c.own(); m.size > lim.MaxMapBytes {
		t.Fatalf("map grew to %d bytes", m.size)
	}
	checkInvariants(t, c)
}

func TestLimitsOnPeerInput(t *testing.T) {
	big := DefaultLimits()
	big.MaxKeys = 100
	a, _ := NewStore("a", big)
	small := newTestStore(t, "s")
	for i := range 64 {
		apply(t, small, must[Delta](t)(a.Set(string(rune('A'+i)), nil)))
	}
	before := dump(small)
	if _, err := small.Apply(must[Delta](t)(a.Set("over", nil))); !errors.Is(err, ErrTooManyKeys) {
		t.Fatalf("65th key from a peer: %v", err)
	}
	if dump(small) != before {
		t.Fatal("rejected delta changed the store")
	}

	lim := DefaultLimits()
	lim.MaxNodes = 2
	s, _ := NewStore("s", lim)
	for i, n := range []string{"x", "y", "z"} {
		p := newTestStore(t, n)
		_, err := s.Apply(must[Delta](t)(p.Set("k", nil)))
		if (i < 2) != (err == nil) || i == 2 && !errors.Is(err, ErrTooManyNodes) {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if len(s.Names()) != 3 {
		t.Fatalf("names %v", s.Names())
	}
}

func TestInvalidDeltasRejected(t *testing.T) {
	s := newTestStore(t, "s")
	tests := []struct {
		name string
		d    Delta
		want error
	}{
		{"floor above have", Delta{Node: "p", Floor: Version{1, 2}, Have: Version{1, 1}}, ErrMalformed},
		{"unsorted keys", Delta{Node: "p", Have: Version{0, 2}, Entries: []Entry{{Key: "b", Version: Version{0, 1}}, {Key: "a", Version: Version{0, 2}}}}, ErrMalformed},
		{"repeated key", Delta{Node: "p", Have: Version{0, 2}, Entries: []Entry{{Key: "a", Version: Version{0, 1}}, {Key: "a", Version: Version{0, 2}}}}, ErrMalformed},
		{"tombstone with value", Delta{Node: "p", Entries: []Entry{{Key: "a", Value: []byte("x"), Deleted: true}}}, ErrMalformed},
		{"empty key", Delta{Node: "p", Entries: []Entry{{Key: ""}}}, ErrEmptyKey},
		{"long name", Delta{Node: strings.Repeat("n", 256)}, ErrNameTooLong},
	}
	for _, tt := range tests {
		if _, err := s.Apply(tt.d); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if len(s.Names()) != 1 {
		t.Fatalf("rejected deltas created maps: %v", s.Names())
	}
}

// The resurrection rule: once a replica has collected a tombstone, a put of that
// key at or below the tombstone's version, however late it arrives and from
// whichever path, stays dead.
func TestNoResurrectionAfterGC(t *testing.T) {
	const horizon = time.Minute
	owner, r, stale := newTestStore(t, "o"), newTestStore(t, "r"), newTestStore(t, "stale")
	put := must[Delta](t)(owner.Set("k", []byte("old")))
	apply(t, stale, put) // stale saw the put, never the delete
	del := must[Delta](t)(owner.Delete("k"))
	apply(t, r, put)
	apply(t, r, del)
	if n := r.GC(0, horizon); n != 0 {
		t.Fatalf("GC collected %d tombstones before the horizon", n)
	}
	if n := r.GC(int64(horizon), horizon); n != 1 {
		t.Fatalf("GC after the horizon collected %d, want 1", n)
	}
	if _, ok := r.Lookup("o", "k"); ok {
		t.Fatal("tombstone still held after GC")
	}
	// The late put, by gossip.
	if a := apply(t, r, put); len(a.Changes) != 0 {
		t.Fatalf("late put changed %+v", a.Changes)
	}
	// The stale replica's whole state, by push-pull.
	merge(t, r, stale)
	// The stale replica's answer to a delta request.
	since, _ := r.Have("o")
	if d, ok := stale.DeltaSince("o", Version{}); ok {
		apply(t, r, d)
	}
	if _, ok := r.Get("o", "k"); ok {
		t.Fatal("collected key resurrected")
	}
	if h, _ := r.Have("o"); h != since {
		t.Fatalf("have moved from %v to %v", since, h)
	}
	// And the collected replica repairs the stale one: its floor kills the put.
	merge(t, stale, r)
	if _, ok := stale.Get("o", "k"); ok {
		t.Fatal("push-pull from a collected replica did not delete the stale put")
	}
	if stale.Digest()-mustDigest(t, stale, "stale") != r.Digest()-mustDigest(t, r, "r") {
		t.Fatal("replicas disagree after push-pull")
	}
}

// GC never raises the floor past what the replica is complete for: a replica that
// missed a write keeps accepting it, however many later tombstones it collects.
func TestGCStopsAtHave(t *testing.T) {
	owner, r := newTestStore(t, "o"), newTestStore(t, "r")
	apply(t, r, must[Delta](t)(owner.Set("b", nil)))
	missed := must[Delta](t)(owner.Set("a", []byte("live")))
	apply(t, r, must[Delta](t)(owner.Delete("b")))
	if h, _ := r.Have("o"); h != (Version{0, 1}) {
		t.Fatalf("have %v after a gap, want 0.1", h)
	}
	if n := r.GC(1e12, time.Nanosecond); n != 0 {
		r.GC(2e12, time.Nanosecond)
	}
	if n := r.GC(3e12, time.Nanosecond); n != 0 {
		t.Fatalf("collected %d tombstones beyond have", n)
	}
	apply(t, r, missed)
	if v, ok := r.Get("o", "a"); !ok || string(v) != "live" {
		t.Fatal("missed write refused after GC")
	}
	// A push-pull from the owner fills the gap; now the tombstone can go.
	merge(t, r, owner)
	if h, _ := r.Have("o"); h != (Version{0, 3}) {
		t.Fatalf("have %v after push-pull, want 0.3", h)
	}
	if n := r.GC(4e12, time.Nanosecond); n != 1 { // marked by the GCs above
		t.Fatalf("collected %d, want 1", n)
	}
	if f := r.nodes["o"].floor; f != (Version{0, 3}) {
		t.Fatalf("floor %v, want 0.3", f)
	}
}

func TestDeltaSince(t *testing.T) {
	owner, r := newTestStore(t, "o"), newTestStore(t, "r")
	apply(t, r, must[Delta](t)(owner.Set("a", []byte("1"))))
	since, _ := r.Have("o")
	must[Delta](t)(owner.Set("b", []byte("2")))
	must[Delta](t)(owner.Set("a", []byte("3")))
	d, ok := owner.DeltaSince("o", since)
	if !ok || d.Full() || len(d.Entries) != 2 || d.Floor != (Version{}) {
		t.Fatalf("partial delta %+v", d)
	}
	apply(t, r, d)
	if mustDigest(t, r, "o") != mustDigest(t, owner, "o") {
		t.Fatal("delta did not bring the replica level")
	}
	if h, _ := r.Have("o"); h != (Version{0, 3}) {
		t.Fatalf("have %v", h)
	}
	// Once the owner collects a tombstone above since, only the full map is safe.
	must[Delta](t)(owner.Delete("b"))
	if owner.GC(0, 0) != 1 {
		t.Fatal("owner did not collect")
	}
	if d, _ := owner.DeltaSince("o", Version{0, 1}); !d.Full() || d.Floor != (Version{0, 4}) {
		t.Fatalf("delta below floor is not full: %+v", d)
	}
	if _, ok := owner.DeltaSince("nobody", Version{}); ok {
		t.Fatal("delta for an unknown map")
	}
}

func TestIncarnation(t *testing.T) {
	owner, r := newTestStore(t, "o"), newTestStore(t, "r")
	apply(t, r, must[Delta](t)(owner.Set("keep", []byte("k"))))
	apply(t, r, must[Delta](t)(owner.Set("gone", []byte("g"))))
	apply(t, r, must[Delta](t)(owner.Delete("gone")))
	if _, err := owner.SetIncarnation(0); !errors.Is(err, ErrStaleIncarnation) {
		t.Fatalf("same incarnation: %v", err)
	}
	d := must[Delta](t)(owner.SetIncarnation(5))
	if !d.Full() || d.Floor != (Version{5, 0}) || d.Have != (Version{5, 1}) || len(d.Entries) != 1 {
		t.Fatalf("reissue %+v", d)
	}
	apply(t, r, d)
	if e, ok := r.Lookup("o", "keep"); !ok || e.Version != (Version{5, 1}) {
		t.Fatalf("keep %+v", e)
	}
	if _, ok := r.Lookup("o", "gone"); ok {
		t.Fatal("old incarnation's tombstone kept")
	}
	next := must[Delta](t)(owner.Set("new", nil))
	if next.Have != (Version{5, 2}) || owner.Incarnation() != 5 {
		t.Fatalf("write after reissue %+v", next)
	}
}

// A node that restarts without a higher incarnation hears of its previous life and
// refutes it: it moves above it and re-issues its own map, which wins everywhere.
func TestRestartRefutesPreviousLife(t *testing.T) {
	old, r := newTestStore(t, "o"), newTestStore(t, "r")
	apply(t, r, must[Delta](t)(old.Set("role", []byte("old"))))
	apply(t, r, must[Delta](t)(old.Set("zone", []byte("z1"))))
	apply(t, r, must[Delta](t)(old.SetIncarnation(3)))
	apply(t, r, must[Delta](t)(old.Set("x", nil)))

	reborn := newTestStore(t, "o")
	first := must[Delta](t)(reborn.Set("zone", []byte("z2")))
	apply(t, r, first) // an older life's version: dead on arrival
	if v, _ := r.Get("o", "zone"); string(v) != "z1" {
		t.Fatalf("zone %q", v)
	}
	a := merge(t, reborn, r)
	if a.Reissue == nil || reborn.Incarnation() != 4 {
		t.Fatalf("no refutation: %+v, incarnation %d", a, reborn.Incarnation())
	}
	if v, _ := reborn.Get("o", "role"); v != nil {
		t.Fatal("the previous life's keys leaked into the local map")
	}
	apply(t, r, *a.Reissue)
	if got, want := r.NodeMap("o"), reborn.NodeMap("o"); len(got) != 1 || !bytes.Equal(got["zone"], want["zone"]) {
		t.Fatalf("replica sees %q, owner %q", got, want)
	}
	// Hearing the refuted life again changes nothing.
	if a := merge(t, reborn, old); a.Reissue != nil {
		t.Fatal("refuted twice")
	}
	// GC skew is not a previous life: a replica that collected tombstones first.
	must[Delta](t)(reborn.Set("t", nil))
	apply(t, r, must[Delta](t)(reborn.Delete("t")))
	merge(t, r, reborn)
	r.GC(0, 0)
	r.GC(0, 0)
	if a := merge(t, reborn, r); a.Reissue != nil {
		t.Fatal("GC skew taken for a previous life")
	}
}

func TestClusterMapFencing(t *testing.T) {
	a, b, c := newTestStore(t, "a"), newTestStore(t, "b"), newTestStore(t, "c")
	if _, err := a.SetCluster(0, "k", nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("epoch 0: %v", err)
	}
	d := must[Delta](t)(a.SetCluster(1, "shards", []byte("v1")))
	if !d.Full() || d.Have != (Version{1, 1}) {
		t.Fatalf("opening delta %+v", d)
	}
	apply(t, b, d)
	apply(t, c, d)
	if _, err := b.SetCluster(1, "shards", []byte("b")); !errors.Is(err, ErrFenced) {
		t.Fatalf("b writes into a's epoch: %v", err)
	}
	late := must[Delta](t)(a.SetCluster(1, "late", []byte("x")))
	// b takes over at epoch 2 without having seen "late".
	d2 := must[Delta](t)(b.SetCluster(2, "shards", []byte("v2")))
	if !d2.Full() || d2.Floor != (Version{2, 0}) || len(d2.Entries) != 1 || d2.Entries[0].Version != (Version{2, 2}) {
		t.Fatalf("takeover delta %+v", d2)
	}
	apply(t, a, d2)
	if _, err := a.SetCluster(1, "again", nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("deposed leader wrote: %v", err)
	}
	apply(t, c, d2)
	apply(t, c, late) // the deposed leader's late write is dead at c
	if _, ok := c.Get(Cluster, "late"); ok {
		t.Fatal("write of a deposed epoch accepted")
	}
	if v, _ := c.Get(Cluster, "shards"); string(v) != "v2" || c.ClusterEpoch() != 2 {
		t.Fatalf("cluster map at c: %q epoch %d", v, c.ClusterEpoch())
	}
	apply(t, c, must[Delta](t)(b.DeleteCluster(2, "shards")))
	if _, ok := c.Get(Cluster, "shards"); ok {
		t.Fatal("cluster delete lost")
	}
	// A write over the limits while opening an epoch leaves the store unchanged.
	before := dump(c)
	if _, err := c.SetCluster(3, "k", make([]byte, DefaultLimits().MaxValueBytes+1)); !errors.Is(err, ErrValueTooLarge) {
		t.Fatal(err)
	}
	if dump(c) != before || c.ClusterEpoch() != 2 {
		t.Fatal("failed write opened the epoch")
	}
}

func TestRemoveNode(t *testing.T) {
	const horizon = time.Minute
	p, s := newTestStore(t, "p"), newTestStore(t, "s")
	early := must[Delta](t)(p.Set("a", []byte("1")))
	apply(t, s, early)
	apply(t, s, must[Delta](t)(p.Set("b", []byte("2"))))
	if s.RemoveNode("s") || s.RemoveNode("nobody") {
		t.Fatal("removed self or unknown")
	}
	if !s.RemoveNode("p") {
		t.Fatal("RemoveNode(p) = false")
	}
	checkInvariants(t, s)
	if len(s.NodeMap("p")) != 0 {
		t.Fatal("removed map not empty")
	}
	apply(t, s, early)
	if len(s.NodeMap("p")) != 0 {
		t.Fatal("late delta recreated a removed node's entry")
	}
	for _, d := range s.Snapshot().Maps {
		if d.Node == "p" {
			t.Fatal("removed map in snapshot")
		}
	}
	s.GC(0, horizon)
	s.GC(int64(horizon), horizon)
	if len(s.Names()) != 1 {
		t.Fatalf("removed map not collected: %v", s.Names())
	}

	// A node that comes back writes above the floor and is heard, and then its
	// older entries count again.
	q := newTestStore(t, "q")
	apply(t, s, must[Delta](t)(q.Set("a", []byte("still"))))
	s.RemoveNode("q")
	apply(t, s, must[Delta](t)(q.Set("b", []byte("back"))))
	if v, ok := s.Get("q", "b"); !ok || string(v) != "back" {
		t.Fatal("returning node not heard")
	}
	merge(t, s, q)
	if v, ok := s.Get("q", "a"); !ok || string(v) != "still" {
		t.Fatal("returning node's older entry still hidden")
	}
	s.GC(0, horizon)
	s.GC(int64(2*horizon), horizon)
	if _, ok := s.Have("q"); !ok {
		t.Fatal("GC dropped a map that came back")
	}
}

func TestSnapshotDeterministic(t *testing.T) {
	build := func() *Store {
		s := newTestStore(t, "s")
		for _, n := range []string{"z", "b", "m"} {
			p := newTestStore(t, n)
			for _, k := range []string{"y", "a", "q"} {
				apply(t, s, must[Delta](t)(p.Set(k, []byte(n+k))))
			}
		}
		return s
	}
	a, b := AppendSnapshot(nil, build().Snapshot()), AppendSnapshot(nil, build().Snapshot())
	if !bytes.Equal(a, b) {
		t.Fatal("two identical stores encode differently")
	}
}

func TestNewStoreValidates(t *testing.T) {
	if _, err := NewStore("", DefaultLimits()); err == nil {
		t.Fatal("empty name accepted")
	}
	bad := DefaultLimits()
	bad.MaxKeys = 0
	if _, err := NewStore("a", bad); !errors.Is(err, ErrInvalidLimits) || !strings.Contains(err.Error(), "MaxKeys") {
		t.Fatalf("bad limits: %v", err)
	}
	bad = DefaultLimits()
	bad.MaxMapBytes = 100
	if err := bad.Validate(); !errors.Is(err, ErrInvalidLimits) || !strings.Contains(err.Error(), "MaxMapBytes") {
		t.Fatalf("map smaller than one entry: %v", err)
	}
}

// A re-issued map too large for a packet goes out in pieces that each fit and,
// applied in order, do what the whole would; a lost piece loses nothing else.
func TestSplit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		owner, _ := NewStore("o", DefaultLimits())
		r, _ := NewStore("r", DefaultLimits())
		for range rapid.IntRange(0, 60).Draw(t, "writes") {
			k := fmt.Sprintf("key-%02d", rapid.IntRange(0, 40).Draw(t, "key"))
			var d Delta
			var err error
			if rapid.IntRange(0, 4).Draw(t, "op") == 0 {
				d, err = owner.Delete(k)
			} else {
				d, err = owner.Set(k, make([]byte, rapid.IntRange(0, 300).Draw(t, "len")))
			}
			if err == nil && rapid.Bool().Draw(t, "deliver") {
				apply(t, r, d)
			}
		}
		if rapid.Bool().Draw(t, "gc") {
			owner.GC(0, 0)
		}
		var full Delta
		if rapid.Bool().Draw(t, "reissue") {
			full = must[Delta](t)(owner.SetIncarnation(owner.Incarnation() + 1))
		} else {
			full, _ = owner.DeltaSince("o", Version{})
		}
		const room = 1200
		pieces := full.Split(room)
		whole, _ := NewStore("r", DefaultLimits())
		whole.Merge(r.Snapshot())
		apply(t, whole, full)
		lossy, _ := NewStore("r", DefaultLimits())
		lossy.Merge(r.Snapshot())
		for i, p := range pieces {
			if n := len(AppendDelta(nil, p)); n > room && len(p.Entries) > 1 {
				t.Fatalf("piece %d is %d bytes", i, n)
			}
			apply(t, r, p)
			if rapid.Bool().Draw(t, "lost") {
				continue
			}
			apply(t, lossy, p)
		}
		if full.Floor == epochStart(full.Floor.Epoch) && mustDigest(t, r, "o") != mustDigest(t, whole, "o") {
			t.Fatalf("%d pieces left the replica at another state than the whole delta", len(pieces))
		}
		// Pieces never go beyond the whole: adding it afterwards gives the same state.
		apply(t, r, full)
		apply(t, lossy, full)
		if dump(r) != dump(whole) || dump(lossy) != dump(whole) {
			t.Fatalf("pieces then whole\n%s\nwhole\n%s\nlossy\n%s", dump(r), dump(whole), dump(lossy))
		}
	})
}

func TestSplitReissue(t *testing.T) {
	owner, r := newTestStore(t, "o"), newTestStore(t, "r")
	for i := range 20 {
		apply(t, r, must[Delta](t)(owner.Set(fmt.Sprintf("k%02d", i), bytes.Repeat([]byte{byte(i)}, 200))))
	}
	pieces := must[Delta](t)(owner.SetIncarnation(2)).Split(1200)
	if len(pieces) < 4 {
		t.Fatalf("%d pieces for 4 KB", len(pieces))
	}
	// The first piece alone moves the replica to the new incarnation.
	apply(t, r, pieces[0])
	if r.nodes["o"].epoch() != 2 || len(r.NodeMap("o")) != len(pieces[0].Entries) {
		t.Fatalf("after piece 1: epoch %d, %d keys", r.nodes["o"].epoch(), len(r.NodeMap("o")))
	}
	for _, p := range pieces[1:] {
		apply(t, r, p)
	}
	if h, _ := r.Have("o"); h != (Version{2, 20}) || mustDigest(t, r, "o") != mustDigest(t, owner, "o") {
		t.Fatalf("after all pieces: have %v", h)
	}
}
