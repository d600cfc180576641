package crdt

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// benchKeys and benchValue give every node the kind of metadata the mesh carries:
// roles, endpoints, zone, versions. Values come from a seeded generator so that
// compression figures are not flattered by repetition.
var benchKeys = []string{"role", "zone", "region", "addr.grpc", "addr.http", "version", "build", "weight", "shards", "cluster"}

func benchValue(node, key int) []byte {
	r := rand.New(rand.NewPCG(uint64(node), uint64(key)))
	switch benchKeys[key] {
	case "role":
		return []byte([]string{"voter", "member", "edge"}[r.IntN(3)])
	case "zone":
		return fmt.Appendf(nil, "eu-west-%d%c", 1+r.IntN(3), 'a'+r.IntN(3))
	case "region":
		return []byte([]string{"eu-west", "us-east", "ap-south"}[r.IntN(3)])
	case "addr.grpc", "addr.http":
		return fmt.Appendf(nil, "10.%d.%d.%d:%d", r.IntN(256), r.IntN(256), r.IntN(256), 7000+r.IntN(3000))
	case "version":
		return fmt.Appendf(nil, "v1.%d.%d", r.IntN(30), r.IntN(10))
	case "build":
		return fmt.Appendf(nil, "%012x", r.Uint64()>>16)
	case "weight":
		return fmt.Appendf(nil, "%d", 1+r.IntN(1000))
	case "shards":
		return fmt.Appendf(nil, "%d,%d,%d", r.IntN(4096), r.IntN(4096), r.IntN(4096))
	}
	return []byte("prod-eu-1")
}

// benchStore returns a store that holds maps of nodes nodes with keys keys each,
// as learned from their owners' deltas.
func benchStore(b *testing.B, nodes, keys int) *Store {
	b.Helper()
	s, err := NewStore("observer", DefaultLimits())
	if err != nil {
		b.Fatal(err)
	}
	for n := range nodes {
		owner, _ := NewStore(fmt.Sprintf("node-%04d", n), DefaultLimits())
		for k := range keys {
			d, err := owner.Set(benchKeys[k], benchValue(n, k))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Apply(d); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s
}

// BenchmarkApplyDelta: a one-key gossip update merged into a store of 1,000 nodes
// x 10 keys.
func BenchmarkApplyDelta(b *testing.B) {
	s := benchStore(b, 1000, 10)
	owner, _ := NewStore("node-0500", DefaultLimits())
	// The owner hears of its map's previous life (benchStore's) and refutes it.
	if a, err := owner.Merge(s.Snapshot()); err != nil || a.Reissue == nil {
		b.Fatal("no refutation", err)
	}
	if _, err := s.Merge(owner.Snapshot()); err != nil {
		b.Fatal(err)
	}
	deltas := make([]Delta, 4096)
	refill := func() {
		for i := range deltas {
			deltas[i], _ = owner.Set("zone", fmt.Appendf(nil, "zone-%d", i%7))
		}
	}
	refill()
	oneKey := len(AppendDelta(nil, deltas[0]))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(deltas)
		if j == 0 && i > 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		if _, err := s.Apply(deltas[j]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(oneKey), "delta-bytes")
}

// BenchmarkSet: a local write, delta included.
func BenchmarkSet(b *testing.B) {
	s, _ := NewStore("self", DefaultLimits())
	v := []byte("eu-west-1a")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Set(benchKeys[i%len(benchKeys)], v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMergeSnapshot: a push-pull of 1,000 nodes x 10 keys, into a store that
// knows nothing (cold) and into one that already has it all (warm: the common case
// of anti-entropy).
func BenchmarkMergeSnapshot(b *testing.B) {
	snap := benchStore(b, 1000, 10).Snapshot()
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			s, _ := NewStore("x", DefaultLimits())
			if _, err := s.Merge(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		s, _ := NewStore("x", DefaultLimits())
		s.Merge(snap)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := s.Merge(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDigest: the store digest is kept up to date incrementally, so reading
// it costs nothing; "recompute" is what hashing every live entry of 1,000 nodes x
// 10 keys from scratch would cost instead.
func BenchmarkDigest(b *testing.B) {
	s := benchStore(b, 1000, 10)
	b.Run("incremental", func(b *testing.B) {
		var sink uint64
		for i := 0; i < b.N; i++ {
			sink += s.Digest()
		}
		_ = sink
	})
	b.Run("recompute", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var sum uint64
			for _, m := range s.nodes {
				for k, e := range m.entries {
					if !e.deleted {
						sum += entryHash(m.name, k, e.cell)
					}
				}
			}
			if sum != s.Digest() {
				b.Fatal("digest mismatch")
			}
		}
	})
}

// BenchmarkSnapshotCodec: encoding and decoding the full state of 1,000 nodes x 10
// keys, the push-pull payload, with its size plain and zstd-compressed.
func BenchmarkSnapshotCodec(b *testing.B) {
	snap := benchStore(b, 1000, 10).Snapshot()
	enc := AppendSnapshot(nil, snap)
	zenc, err := zstd.NewWriter(nil)
	if err != nil {
		b.Fatal(err)
	}
	compressed := len(zenc.EncodeAll(enc, nil))
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		buf := make([]byte, 0, len(enc))
		for i := 0; i < b.N; i++ {
			buf = AppendSnapshot(buf[:0], snap)
		}
		b.ReportMetric(float64(len(enc)), "payload-bytes")
		b.ReportMetric(float64(compressed), "zstd-bytes")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for i := 0; i < b.N; i++ {
			if _, err := DecodeSnapshot(enc, DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDeltaCodec: a one-key update as gossip carries it.
func BenchmarkDeltaCodec(b *testing.B) {
	s, _ := NewStore("node-0042", DefaultLimits())
	s.SetIncarnation(3)
	for k := range benchKeys {
		s.Set(benchKeys[k], benchValue(42, k))
	}
	d, _ := s.Set("zone", []byte("eu-west-1b"))
	enc := AppendDelta(nil, d)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for i := 0; i < b.N; i++ {
			buf = AppendDelta(buf[:0], d)
		}
		b.ReportMetric(float64(len(enc)), "delta-bytes")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := DecodeDelta(enc, DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
