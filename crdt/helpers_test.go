package crdt

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// tb is what the helpers need of *testing.T and *rapid.T alike.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// dump renders every replicated part of a store's state (all maps but self's
// bookkeeping is included too): floor, have and every entry, tombstones included.
func dump(s *Store) string {
	var b strings.Builder
	names := append([]string{Cluster}, s.Names()...)
	for _, n := range names {
		m := s.lookup(n)
		fmt.Fprintf(&b, "%q floor=%v have=%v:", n, m.floor, m.have)
		for _, k := range slices.Sorted(maps.Keys(m.entries)) {
			e := m.entries[k]
			fmt.Fprintf(&b, " %s@%v", k, e.version)
			if e.deleted {
				b.WriteString("†")
			} else {
				fmt.Fprintf(&b, "=%q", e.value)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// checkInvariants verifies the canonical form and the incremental counters of
// every map against a recomputation.
func checkInvariants(t tb, s *Store) {
	t.Helper()
	var total uint64
	for _, m := range append([]*lwwMap{s.cluster}, slices.Collect(maps.Values(s.nodes))...) {
		var live, size int
		var digest uint64
		for k, e := range m.entries {
			if e.version.Epoch < m.floor.Epoch {
				t.Fatalf("map %q: %s@%v below epoch %d", m.name, k, e.version, m.floor.Epoch)
			}
			if compareCells(e.cell, tomb(m.floor)) == 0 {
				t.Fatalf("map %q: %s is an explicit tombstone at the floor", m.name, k)
			}
			size += entrySize(k, e.value)
			if !e.deleted {
				live++
				digest += entryHash(m.name, k, e.cell)
			}
		}
		if m.have.Less(m.floor) {
			t.Fatalf("map %q: have %v below floor %v", m.name, m.have, m.floor)
		}
		if live != m.live || size != m.size || digest != m.digest {
			t.Fatalf("map %q: counters live=%d size=%d digest=%x, recomputed %d %d %x", m.name, m.live, m.size, m.digest, live, size, digest)
		}
		total += digest
	}
	if total != s.Digest() {
		t.Fatalf("store digest %x, recomputed %x", s.Digest(), total)
	}
}

func newTestStore(t tb, name string) *Store {
	t.Helper()
	s, err := NewStore(name, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func must[T any](t tb) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func apply(t tb, s *Store, d Delta) Applied {
	t.Helper()
	a, err := s.Apply(d)
	if err != nil {
		t.Fatalf("%s.Apply(%+v): %v", s.Self(), d, err)
	}
	checkInvariants(t, s)
	return a
}

func merge(t tb, dst, src *Store) Applied {
	t.Helper()
	a, err := dst.Merge(src.Snapshot())
	if err != nil {
		t.Fatalf("%s.Merge(%s): %v", dst.Self(), src.Self(), err)
	}
	checkInvariants(t, dst)
	return a
}
