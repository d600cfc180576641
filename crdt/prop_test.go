package crdt

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// Property tests. Two sources of states: arbitrary ones (any floors, versions,
// tombstones and values, including combinations no honest history produces), on
// which merge must still be a join; and states reached by random histories of
// writes, restarts, leader changes, lossy reordered gossip, push-pulls and GCs, on
// which deltas and convergence are checked too.

var (
	propKeys   = []string{"a", "b", "c", "d"}
	propValues = [][]byte{nil, []byte("x"), []byte("y"), []byte("zz")}
)

func genVersion(t *rapid.T, label string) Version {
	return Version{
		Epoch:   rapid.Uint64Range(0, 2).Draw(t, label+".e"),
		Counter: rapid.Uint64Range(0, 4).Draw(t, label+".c"),
	}
}

// genSnapshot draws an arbitrary valid snapshot over two node maps and the
// cluster map.
func genSnapshot(t *rapid.T, label string) Snapshot {
	var s Snapshot
	for _, name := range []string{Cluster, "n0", "n1"} {
		if !rapid.Bool().Draw(t, label+".has"+name) {
			continue
		}
		floor := genVersion(t, label+".floor")
		have := maxVersion(floor, genVersion(t, label+".have"))
		d := Delta{Node: name, Floor: floor, Have: have}
		for _, k := range propKeys {
			if !rapid.Bool().Draw(t, label+".key") {
				continue
			}
			e := Entry{Key: k, Version: genVersion(t, label+".v"), Deleted: rapid.Bool().Draw(t, label+".del")}
			if !e.Deleted {
				e.Value = rapid.SampledFrom(propValues).Draw(t, label+".val")
			}
			d.Entries = append(d.Entries, e)
		}
		s.Maps = append(s.Maps, d)
	}
	return s
}

// observe merges snapshots, in order, into a fresh store that writes nothing of
// its own: the join of the inputs with the bottom state.
func observe(t tb, snaps ...Snapshot) *Store {
	t.Helper()
	s, err := NewStore("observer", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range snaps {
		if _, err := s.Merge(sn); err != nil {
			t.Fatalf("merge: %v", err)
		}
		checkInvariants(t, s)
	}
	return s
}

// checkLaws checks that merging the states a, b, c is commutative, associative and
// idempotent, comparing whole states (tombstones, floors and haves included), not
// just digests.
func checkLaws(t *rapid.T, a, b, c Snapshot) {
	ab, ba := observe(t, a, b), observe(t, b, a)
	if dump(ab) != dump(ba) {
		t.Fatalf("not commutative:\na+b\n%s\nb+a\n%s", dump(ab), dump(ba))
	}
	left := observe(t, ab.Snapshot(), c)
	right := observe(t, a, observe(t, b, c).Snapshot())
	if dump(left) != dump(right) {
		t.Fatalf("not associative:\n(a+b)+c\n%s\na+(b+c)\n%s", dump(left), dump(right))
	}
	once := dump(ab)
	for _, again := range []Snapshot{ab.Snapshot(), a, b} {
		if got, err := ab.Merge(again); err != nil || len(got.Changes) != 0 || dump(ab) != once {
			t.Fatalf("not idempotent (%v, %+v):\nbefore\n%s\nafter\n%s", err, got.Changes, once, dump(ab))
		}
	}
	if ab.Digest() != ba.Digest() || left.Digest() != right.Digest() {
		t.Fatal("equal states with different digests")
	}
}

func TestMergeLawsArbitraryStates(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkLaws(t, genSnapshot(t, "a"), genSnapshot(t, "b"), genSnapshot(t, "c"))
	})
}

// world is a small cluster driven by a random history.
type world struct {
	t       *rapid.T
	stores  []*Store // owners n0..n2 first, then replicas r0, r1
	owners  int
	inc     []uint64 // highest incarnation each owner name has used
	leader  int      // index of the store leading the cluster map, -1 before any
	epoch   uint64   // lease epoch of the leader
	flight  []flight // gossip in flight
	now     int64
	liars   bool // owners may restart without raising their incarnation
	restart bool // an owner restarted dishonestly at least once
	// holders is the lease holder of each epoch, for stores with an Authority
	// (nil: unsigned stores).
	holders map[uint64]string
}

type flight struct {
	to int
	d  Delta
}

var worldNames = []string{"n0", "n1", "n2", "r0", "r1"}

func newWorld(t *rapid.T, liars, signed bool) *world {
	w := &world{t: t, owners: 3, leader: -1, liars: liars}
	if signed {
		w.holders = map[uint64]string{}
	}
	for _, n := range worldNames {
		w.stores = append(w.stores, w.newStore(n))
	}
	w.inc = make([]uint64, w.owners)
	return w
}

// newStore is a fresh store of name, signing if the world is.
func (w *world) newStore(name string) *Store {
	s := newTestStore(w.t, name)
	if w.holders != nil {
		a := &simAuthority{self: name, known: map[string]bool{}, holders: w.holders}
		for _, n := range worldNames {
			a.known[n] = true
		}
		s.SetAuthority("prod", a)
	}
	return s
}

// gossip sends d from store i to every other store, each copy lost with
// probability about 1/3.
func (w *world) gossip(from int, d Delta) {
	for to := range w.stores {
		if to != from && rapid.IntRange(0, 2).Draw(w.t, "lost") > 0 {
			w.flight = append(w.flight, flight{to, d})
		}
	}
}

func (w *world) check(a Applied, err error, to int) {
	if err != nil {
		w.t.Fatalf("%s: %v", w.stores[to].Self(), err)
	}
	if len(a.Refused) > 0 {
		w.t.Fatalf("%s refused honest state: %+v", w.stores[to].Self(), a.Refused)
	}
	if a.Reissue != nil {
		w.gossip(to, *a.Reissue)
	}
	checkInvariants(w.t, w.stores[to])
}

func (w *world) actions() map[string]func(*rapid.T) {
	owner := func(t *rapid.T) int { return rapid.IntRange(0, w.owners-1).Draw(t, "owner") }
	any := func(t *rapid.T, label string) int { return rapid.IntRange(0, len(w.stores)-1).Draw(t, label) }
	return map[string]func(*rapid.T){
		"set": func(t *rapid.T) {
			i := owner(t)
			d, err := w.stores[i].Set(rapid.SampledFrom(propKeys).Draw(t, "key"), rapid.SampledFrom(propValues).Draw(t, "value"))
			if err != nil {
				t.Fatal(err)
			}
			w.gossip(i, d)
		},
		"delete": func(t *rapid.T) {
			i := owner(t)
			d, err := w.stores[i].Delete(rapid.SampledFrom(propKeys).Draw(t, "key"))
			if err != nil {
				t.Skip("not live")
			}
			w.gossip(i, d)
		},
		"incarnation": func(t *rapid.T) {
			i := owner(t)
			w.inc[i] = max(w.inc[i], w.stores[i].Incarnation()) + 1
			d, err := w.stores[i].SetIncarnation(w.inc[i])
			if err != nil {
				t.Fatal(err)
			}
			w.gossip(i, d)
		},
		"restart": func(t *rapid.T) {
			i := owner(t)
			name := w.stores[i].Self()
			w.inc[i] = max(w.inc[i], w.stores[i].Incarnation())
			w.stores[i] = w.newStore(name)
			if w.leader == i {
				w.leader = -1 // its lease dies with it
			}
			if w.liars && rapid.Bool().Draw(t, "liar") {
				w.restart = true
				return // back at incarnation 0, to be refuted
			}
			w.inc[i]++
			d, err := w.stores[i].SetIncarnation(w.inc[i])
			if err != nil {
				t.Fatal(err)
			}
			w.gossip(i, d)
		},
		"elect": func(t *rapid.T) {
			w.leader = any(t, "leader")
			w.epoch++
			if w.holders != nil {
				w.holders[w.epoch] = w.stores[w.leader].Self()
			}
		},
		"cluster-set": func(t *rapid.T) {
			if w.leader < 0 {
				t.Skip("no leader")
			}
			d, err := w.stores[w.leader].SetCluster(w.epoch, rapid.SampledFrom(propKeys).Draw(t, "key"), rapid.SampledFrom(propValues).Draw(t, "value"))
			if err != nil {
				t.Fatal(err)
			}
			w.gossip(w.leader, d)
		},
		"cluster-delete": func(t *rapid.T) {
			if w.leader < 0 {
				t.Skip("no leader")
			}
			d, err := w.stores[w.leader].DeleteCluster(w.epoch, rapid.SampledFrom(propKeys).Draw(t, "key"))
			if err != nil {
				t.Skip("not live")
			}
			w.gossip(w.leader, d)
		},
		"deliver": func(t *rapid.T) {
			if len(w.flight) == 0 {
				t.Skip("nothing in flight")
			}
			k := rapid.IntRange(0, len(w.flight)-1).Draw(t, "msg")
			f := w.flight[k]
			if !rapid.Bool().Draw(t, "duplicate") {
				w.flight = slices.Delete(w.flight, k, k+1)
			}
			before := liveView(w.stores[f.to])
			a, err := w.stores[f.to].Apply(f.d)
			w.check(a, err, f.to)
			checkChanges(t, before, liveView(w.stores[f.to]), a.Changes)
		},
		"push-pull": func(t *rapid.T) {
			i, j := any(t, "from"), any(t, "to")
			si, sj := w.stores[i].Snapshot(), w.stores[j].Snapshot()
			before := liveView(w.stores[j])
			a, err := w.stores[j].Merge(si)
			w.check(a, err, j)
			checkChanges(t, before, liveView(w.stores[j]), a.Changes)
			a, err = w.stores[i].Merge(sj)
			w.check(a, err, i)
		},
		"delta-sync": func(t *rapid.T) {
			i, j := any(t, "from"), any(t, "to")
			w.deltaSync(i, j)
		},
		"gc": func(t *rapid.T) {
			w.now += rapid.Int64Range(0, 3).Draw(t, "tick")
			i := any(t, "store")
			w.stores[i].GC(w.now, 2)
		},
	}
}

// deltaSync brings store to up to date with store from, map by map, with deltas
// since what it has.
func (w *world) deltaSync(from, to int) {
	for _, name := range append([]string{Cluster}, w.stores[from].Names()...) {
		since, _ := w.stores[to].Have(name)
		d, _ := w.stores[from].DeltaSince(name, since)
		a, err := w.stores[to].Apply(d)
		w.check(a, err, to)
	}
}

// writerOf returns the store that writes map name now, or nil.
func (w *world) writerOf(name string) *Store {
	if name == Cluster {
		// The leader writes the map once it has opened its epoch.
		if w.leader < 0 || !w.stores[w.leader].clusterOwned || w.stores[w.leader].ClusterEpoch() != w.epoch {
			return nil
		}
		return w.stores[w.leader]
	}
	for _, s := range w.stores[:w.owners] {
		if s.Self() == name {
			return s
		}
	}
	return nil
}

// converge runs push-pull rounds between every pair until nothing changes.
func (w *world) converge() {
	for round := 0; ; round++ {
		if round == 10 {
			w.t.Fatal("no convergence after 10 rounds of full push-pull")
		}
		before := make([]string, len(w.stores))
		for i, s := range w.stores {
			before[i] = dump(s)
		}
		for i := range w.stores {
			for j := range w.stores {
				if i != j {
					a, err := w.stores[j].Merge(w.stores[i].Snapshot())
					w.check(a, err, j)
				}
			}
		}
		same := true
		for i, s := range w.stores {
			same = same && dump(s) == before[i]
		}
		if same {
			return
		}
	}
}

func runWorld(t *rapid.T, liars, signed bool) {
	w := newWorld(t, liars, signed)
	t.Repeat(w.actions())

	// Merge laws on reachable states.
	pick := func(label string) Snapshot {
		return w.stores[rapid.IntRange(0, len(w.stores)-1).Draw(t, label)].Snapshot()
	}
	checkLaws(t, pick("A"), pick("B"), pick("C"))

	// A delta since what a stale replica has brings it level with a fuller one.
	if !w.restart {
		stale := rapid.IntRange(0, len(w.stores)-1).Draw(t, "stale")
		for _, name := range []string{Cluster, "n0", "n1", "n2"} {
			full := w.writerOf(name)
			if full == nil || full == w.stores[stale] {
				continue
			}
			since, _ := w.stores[stale].Have(name)
			d, _ := full.DeltaSince(name, since)
			a, err := w.stores[stale].Apply(d)
			w.check(a, err, stale)
			got, _ := w.stores[stale].MapDigest(name)
			want, _ := full.MapDigest(name)
			if got != want {
				t.Fatalf("map %q: delta since %v left %s at digest %x, writer at %x\nstale:\n%s\nwriter:\n%s",
					name, since, w.stores[stale].Self(), got, want, dump(w.stores[stale]), dump(full))
			}
		}
	}

	// Everyone converges on what the writers hold.
	w.converge()
	for _, s := range w.stores {
		if s.Digest() != w.stores[0].Digest() {
			t.Fatalf("%s digest %x, %s %x", s.Self(), s.Digest(), w.stores[0].Self(), w.stores[0].Digest())
		}
		for _, name := range []string{Cluster, "n0", "n1", "n2"} {
			wr := w.writerOf(name)
			if wr == nil {
				continue
			}
			if got, want := s.NodeMap(name), wr.NodeMap(name); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s sees map %q as %q, its writer %s as %q", s.Self(), name, got, wr.Self(), want)
			}
		}
	}
}

func TestHistoriesHonest(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { runWorld(t, false, false) })
}

func TestHistoriesWithUnrefutedRestarts(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { runWorld(t, true, false) })
}

// The same histories with every write signed (PROTOCOL.md section 13): no honest
// cell or head is refused, and everyone still converges on what the writers
// hold, though Have now moves only with a writer's head.
func TestHistoriesSigned(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { runWorld(t, true, true) })
}

// Entries handed out share memory with the store; make sure the store itself never
// writes into a value after handing it out.
func TestDeltaValuesStable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := newTestStore(t, "s")
		var ds []Delta
		var want [][]byte
		for range rapid.IntRange(1, 20).Draw(t, "n") {
			v := rapid.SliceOfN(rapid.Byte(), 0, 8).Draw(t, "v")
			d, err := s.Set(rapid.SampledFrom(propKeys).Draw(t, "k"), v)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
			want = append(want, bytes.Clone(v))
		}
		s.GC(0, 0)
		for i, d := range ds {
			if !bytes.Equal(d.Entries[0].Value, want[i]) {
				t.Fatalf("delta %d value changed", i)
			}
		}
	})
}

// liveView is what a reader of the store sees: every live value, by map and key.
func liveView(s *Store) map[[2]string]string {
	v := make(map[[2]string]string)
	for _, n := range append([]string{Cluster}, s.Names()...) {
		for k, val := range s.NodeMap(n) {
			v[[2]string{n, k}] = string(val)
		}
	}
	return v
}

// checkChanges: the changes Apply and Merge report are exactly the difference of
// what a reader sees, each key at most once.
func checkChanges(t *rapid.T, before, after map[[2]string]string, changes []Change) {
	want := make(map[[2]string]string)
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			want[k] = "=" + v
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			want[k] = "deleted"
		}
	}
	got := make(map[[2]string]string)
	for _, c := range changes {
		k := [2]string{c.Node, c.Key}
		if _, dup := got[k]; dup {
			t.Fatalf("change for %v reported twice", k)
		}
		if c.Deleted {
			got[k] = "deleted"
		} else {
			got[k] = "=" + string(c.Value)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes reported %v, reader saw %v", got, want)
	}
}
