package wire

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression of push-pull payloads: the measurement behind the choice of S2 for
// stream frames (PROTOCOL.md, "Stream frames"; docs/benchmarks.md, "## wire").
// zstd appears only here, as the alternative measured.

// benchPushPull is a push-pull of n node states shaped like a real cluster view:
// structured names and addresses, small incarnations, mostly alive.
func benchPushPull(n int) *PushPull {
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	pp := &PushPull{Nodes: make([]NodeState, n), Meta: nil}
	for i := range pp.Nodes {
		st := StatusAlive
		if rng.IntN(20) == 0 {
			st = NodeStatus(1 + rng.IntN(3))
		}
		pp.Nodes[i] = NodeState{
			Name:        fmt.Sprintf("orders-%05d.eu-west-1%c", rng.IntN(100000), 'a'+rune(rng.IntN(3))),
			Addr:        fmt.Sprintf("10.%d.%d.%d:7946", rng.IntN(4), rng.IntN(256), 1+rng.IntN(254)),
			Incarnation: uint64(rng.IntN(50)),
			Status:      st,
			ProtoMin:    1,
			ProtoMax:    1,
		}
	}
	return pp
}

func BenchmarkFrameCompression(b *testing.B) {
	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		b.Fatal(err)
	}
	zdef, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		b.Fatal(err)
	}
	zdec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	defer zdec.Close()
	type codec struct {
		name string
		enc  func(dst, src []byte) []byte
		dec  func(dst, src []byte) ([]byte, error)
	}
	codecs := []codec{
		{"s2", s2.Encode, s2.Decode},
		{"s2better", s2.EncodeBetter, s2.Decode},
		{"zstd-fastest", func(dst, src []byte) []byte { return zenc.EncodeAll(src, dst[:0]) }, func(dst, src []byte) ([]byte, error) { return zdec.DecodeAll(src, dst[:0]) }},
		{"zstd-default", func(dst, src []byte) []byte { return zdef.EncodeAll(src, dst[:0]) }, func(dst, src []byte) ([]byte, error) { return zdec.DecodeAll(src, dst[:0]) }},
	}
	for _, n := range []int{10, 100, 1000} {
		raw := AppendMessage(nil, benchPushPull(n))
		for _, c := range codecs {
			comp := c.enc(nil, raw)
			b.Run(fmt.Sprintf("nodes=%d/%s/compress", n, c.name), func(b *testing.B) {
				dst := make([]byte, 2*len(raw)+64)
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					c.enc(dst, raw)
				}
				// After the loop: b.Loop's timer reset drops metrics reported earlier.
				b.ReportMetric(float64(len(raw)), "in-bytes")
				b.ReportMetric(float64(len(comp)), "out-bytes")
				b.ReportMetric(float64(len(raw))/float64(len(comp)), "ratio")
			})
			b.Run(fmt.Sprintf("nodes=%d/%s/decompress", n, c.name), func(b *testing.B) {
				dst := make([]byte, len(raw))
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					if _, err := c.dec(dst, comp); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
