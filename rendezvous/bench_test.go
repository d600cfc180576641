package rendezvous

import (
	"fmt"
	"testing"
)

// benchTable is the size: 1,000 equal-weight nodes, 10,000 shards, 3 owners.
func benchTable(b *testing.B) *Table {
	b.Helper()
	return mustBuild(b, equalNodes(1000, "node"), 10000, 3)
}

func benchKeys() [][]byte {
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user:%d", 1_000_003*i)
	}
	return keys
}

// BenchmarkLookup: key to primary owner in a built table (goal: < 50 ns, 0 allocs).
func BenchmarkLookup(b *testing.B) {
	tab, keys := benchTable(b), benchKeys()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = tab.Lookup(keys[i&1023])
		i++
	}
}

func BenchmarkLookupString(b *testing.B) {
	tab, raw := benchTable(b), benchKeys()
	keys := make([]string, len(raw))
	for i, k := range raw {
		keys[i] = string(k)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = tab.LookupString(keys[i&1023])
		i++
	}
}

// BenchmarkBuildTable: a full build, nodes × shards scores plus top-R selection.
func BenchmarkBuildTable(b *testing.B) {
	for _, c := range []struct{ nodes, shards, r int }{{1000, 10000, 3}, {1000, 10000, 1}, {100, 10000, 3}} {
		nodes := equalNodes(c.nodes, "node")
		b.Run(fmt.Sprintf("nodes=%d/shards=%d/R=%d", c.nodes, c.shards, c.r), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				mustBuild(b, nodes, c.shards, c.r)
			}
		})
	}
}

// BenchmarkScore: one (shard, node) score from scratch, as Score computes it.
func BenchmarkScore(b *testing.B) {
	n := Node{Name: "node-123", Weight: 1}
	b.ReportAllocs()
	s := uint32(0)
	for b.Loop() {
		_ = Score(s, n)
		s++
	}
}

// BenchmarkDiffTables: diff of 10,000-shard tables around one leave among 1,000.
func BenchmarkDiffTables(b *testing.B) {
	nodes := equalNodes(1000, "node")
	old := mustBuild(b, nodes, 10000, 3)
	next := mustBuild(b, nodes[1:], 10000, 3)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DiffTables(old, next); err != nil {
			b.Fatal(err)
		}
	}
}
