package client

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/omnirelay/mesh/rendezvous"
	"github.com/omnirelay/mesh/shard"
)

// benchTable is a table of a 1,024-shard map over 16 members, as a client holds it.
func benchTable(b testing.TB) *Table {
	const shards, n = 1024, 16
	var nodes []rendezvous.Node
	members := map[string]Member{}
	for i := range n {
		name := fmt.Sprintf("node-%02d", i)
		nodes = append(nodes, rendezvous.Node{Name: name, Weight: 1})
		members[name] = Member{Name: name, Status: "alive", Meta: map[string]string{"grpc": name + ":9000"}}
	}
	table, err := rendezvous.BuildTable(nodes, shards, 1)
	if err != nil {
		b.Fatal(err)
	}
	owners := make([]string, shards)
	for s := range owners {
		owners[s] = table.Primary(uint32(s))
	}
	m, err := shard.NewMap(1, 1, shards, table, owners, make([]shard.State, shards))
	if err != nil {
		b.Fatal(err)
	}
	return (&Table{m: m}).withMembers(members, "e.1", "")
}

func benchKeys() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkOwner: Client.Owner and Client.Endpoint (Owner plus one metadata
// read) on a held table; neither may allocate.
func BenchmarkOwner(b *testing.B) {
	c := &Client{}
	c.table.Store(benchTable(b))
	keys := benchKeys()
	for _, bc := range []struct {
		name string
		call func(key string) bool
	}{
		{"owner", func(k string) bool { _, ok := c.Owner(k); return ok }},
		{"endpoint", func(k string) bool { _, ok := c.Endpoint(k, "grpc"); return ok }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !bc.call(keys[i&1023]) {
					b.Fatal("no owner")
				}
				i++
			}
		})
	}
}

func TestOwnerDoesNotAllocate(t *testing.T) {
	c := &Client{}
	c.table.Store(benchTable(t))
	if n := testing.AllocsPerRun(1000, func() { c.Endpoint("user-7", "grpc") }); n != 0 {
		t.Fatalf("Endpoint allocates %v times per call", n)
	}
}
