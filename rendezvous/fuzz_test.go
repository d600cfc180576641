package rendezvous

import (
	"slices"
	"strings"
	"testing"
)

// Node names and weights reach BuildTable from gossip, so any input must yield an
// error or a well-formed table, never a panic.
func FuzzBuildTable(f *testing.F) {
	f.Add("a\nb\nc", 1.0, 16, 2)
	f.Add("node-1\nnode-2\nnode-1", 2.0, 8, 1)
	f.Add("", 1.0, 1, 1)
	f.Add("x\n\ny", 0.0, -3, 0)
	f.Add("only", 1e300, 4, 1)
	f.Add("long-name-of-exactly-28-byt\nshort", 3.5, 100, 2)
	f.Fuzz(func(t *testing.T, names string, weight float64, shards, replicas int) {
		var nodes []Node
		if names != "" {
			for i, n := range strings.Split(names, "\n") {
				w := 1.0
				if i == 0 {
					w = weight
				}
				nodes = append(nodes, Node{Name: n, Weight: w})
			}
		}
		// Keep each input fast: the shard count's bounds have a unit test.
		shards %= 2049
		tab, err := BuildTable(nodes, shards, replicas)
		if err != nil {
			if tab != nil {
				t.Fatal("table returned with an error")
			}
			return
		}
		for _, s := range []uint32{0, uint32(shards - 1)} {
			got := tab.Owners(s)
			if want := bruteOwners(s, nodes, replicas); !slices.Equal(got, want) {
				t.Fatalf("shard %d: %v, brute force %v", s, got, want)
			}
		}
		if k := tab.LookupString(names); !slices.ContainsFunc(nodes, func(n Node) bool { return n.Name == k }) {
			t.Fatalf("Lookup returned %q, not a node", k)
		}
	})
}
