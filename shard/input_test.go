package shard

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

func drawShardList(t *rapid.T, label string) []uint32 {
	return rapid.SliceOfN(rapid.Uint32Range(0, 20), 0, 6).Draw(t, label)
}

func drawMessage(t *rapid.T) Message {
	epoch := rapid.Uint64Range(0, 8).Draw(t, "epoch")
	node := rapid.SampledFrom([]string{"", "a", "b", "L"}).Draw(t, "node")
	seq := rapid.Uint64Range(0, 6).Draw(t, "seq")
	switch rapid.IntRange(0, 5).Draw(t, "type") {
	case 0:
		return &Renew{Epoch: epoch, Node: node, Boot: rapid.Uint64Range(0, 3).Draw(t, "boot"), Seq: seq,
			Applied: rapid.Uint64Range(0, 6).Draw(t, "applied"), Held: drawShardList(t, "held")}
	case 1:
		return &MapRequest{Node: node, Epoch: epoch}
	case 2:
		return &Grant{Epoch: epoch, Node: node, Boot: rapid.Uint64Range(0, 3).Draw(t, "boot"), Seq: seq,
			Duration: time.Duration(rapid.Int64Range(-1, int64(10*time.Second)).Draw(t, "d")),
			Shards:   drawShardList(t, "shards"), Confirm: drawShardList(t, "confirm")}
	case 3:
		return &Release{Epoch: epoch, Node: node, Shards: drawShardList(t, "release")}
	case 4:
		return &Announce{Epoch: epoch, Leader: node, Version: seq, Checksum: rapid.Uint64().Draw(t, "sum")}
	default:
		n := rapid.IntRange(0, 20).Draw(t, "mapShards")
		return &MapState{
			Epoch: epoch, Version: seq, Checksum: rapid.Uint64().Draw(t, "sum"), Shards: uint32(n),
			Replicas: rapid.Uint32Range(0, 3).Draw(t, "replicas"),
			Nodes: rapid.SliceOfN(rapid.Custom(func(t *rapid.T) NodeWeight {
				return NodeWeight{Name: rapid.SampledFrom([]string{"", "a", "b"}).Draw(t, "n"), Weight: rapid.Float64Range(-1, 3).Draw(t, "w")}
			}), 0, 3).Draw(t, "nodes"),
			Names:  rapid.SliceOfN(rapid.SampledFrom([]string{"", "a", "b"}), 0, 3).Draw(t, "names"),
			Owners: rapid.SliceOfN(rapid.Uint32Range(0, 4), n, n+1).Draw(t, "owners"),
			States: rapid.SliceOfN(rapid.Uint8Range(0, 3), n, n+1).Draw(t, "states"),
		}
	}
}

// Peer input is untrusted: whatever arrives, neither machine panics, a shard is
// never served outside [0, S), and inputs that break a message's rules are
// counted as malformed.
func TestArbitraryPeerInput(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := testConfig(16)
		c, _ := NewController(cfg, "L")
		o, _ := NewOwner(cfg, "a", 1)
		now := simBase
		if err := c.BecomeLeader(now, 3); err != nil {
			t.Fatal(err)
		}
		if err := c.SetMembers(now, members("a", "b", "L")); err != nil {
			t.Fatal(err)
		}
		o.SetLeader(now, "L", 3)
		for range rapid.IntRange(1, 40).Draw(t, "steps") {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(2*time.Second)).Draw(t, "dt")))
			msg := drawMessage(t)
			before := o.Stats().Malformed + c.Stats().Malformed
			c.Step(now, msg)
			o.Step(now, msg)
			if g, ok := msg.(*Grant); ok && g.Node == "a" && g.Boot == 1 && !validShardList(g.Shards, 16) {
				if o.Stats().Malformed+c.Stats().Malformed == before {
					t.Fatalf("grant with invalid shard list %v not counted", g.Shards)
				}
			}
			c.Tick(now)
			o.Tick(now)
			c.Ready()
			o.Ready()
			for _, s := range o.Held(now) {
				if s >= 16 {
					t.Fatalf("serving shard %d of 16", s)
				}
			}
		}
	})
}
