package shard

import (
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/mesh/internal/wiretest"
)

// benchCluster is a settled leader over n nodes and S shards.
func benchCluster(b *testing.B, n, shards int) (*Controller, time.Time) {
	cfg := testConfig(shards)
	c, err := NewController(cfg, "L")
	if err != nil {
		b.Fatal(err)
	}
	var ms []Member
	for i := range n {
		ms = append(ms, Member{Name: fmt.Sprintf("node-%03d", i), Health: HealthAlive})
	}
	now := simBase
	if err := c.BecomeLeader(now, 1); err != nil {
		b.Fatal(err)
	}
	if err := c.SetMembers(now, ms); err != nil {
		b.Fatal(err)
	}
	now = now.Add(FailoverWait(cfg.LeaseDuration, cfg.MaxDrift))
	c.Tick(now)
	for seq := uint64(1); seq <= 2; seq++ {
		for _, m := range ms {
			c.Step(now, &Renew{Epoch: 1, Node: m.Name, Boot: 1, Seq: seq, Applied: seq - 1, Held: c.Map().ShardsOf(m.Name)})
		}
	}
	c.Ready()
	return c, now
}

func BenchmarkMapOwnerOf(b *testing.B) {
	c, _ := benchCluster(b, 100, 4096)
	m := c.Map()
	key := []byte("customer-1234567")
	b.ReportAllocs()
	for b.Loop() {
		_ = m.OwnerOf(key)
	}
}

// One renewal of a steady node owning ~100 shards (S = 1024, 10 nodes), answered
// with its grant: the leader's per-node, per-interval cost.
func BenchmarkControllerRenew(b *testing.B) {
	c, now := benchCluster(b, 10, 1024)
	held := c.Map().ShardsOf("node-003")
	seq := uint64(2)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		c.Step(now, &Renew{Epoch: 1, Node: "node-003", Boot: 1, Seq: seq, Applied: seq - 1, Held: held})
		c.Ready()
	}
}

// A member applying a fetched map (S = 4096, 100 nodes): with the table reused
// (nodes unchanged, the common case of a move) and rebuilt (a membership change).
func BenchmarkDecodeMap(b *testing.B) {
	c, _ := benchCluster(b, 100, 4096)
	ms := c.Map().Wire()
	for _, reuse := range []bool{true, false} {
		b.Run(fmt.Sprintf("reuse=%v", reuse), func(b *testing.B) {
			var prev *Map
			if reuse {
				prev = c.Map()
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeMap(ms, prev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGrantRoundTrip encodes and decodes a Grant body, the leader's answer to
// every owner's renewal.
func BenchmarkGrantRoundTrip(b *testing.B) {
	m := &Grant{Epoch: 7, Node: "node-b", Boot: 1 << 40, Seq: 12, Duration: 3 * time.Second, Shards: []uint32{3, 300, 1023}, Confirm: []uint32{0, 5}, Version: 300, Checksum: 42}
	wiretest.BenchBody(b, m, new(Grant))
}
