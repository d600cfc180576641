package rendezvous

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"
)

// The split XXH64 must equal the library's on the whole input for every name
// length, across the stripe, lane, word and byte boundaries.
func TestPairHashMatchesXXHash(t *testing.T) {
	for l := 1; l <= 140; l++ {
		name := strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789", 4)[:l]
		p := newPairHash(name)
		for _, s := range []uint32{0, 1, 255, 1 << 24, 0xdeadbeef, ^uint32(0)} {
			want := xxhash.Sum64(binary.BigEndian.AppendUint32([]byte(name), s))
			if got := p.sum(s); got != want {
				t.Fatalf("len %d shard %#x: %#x, want %#x", l, s, got, want)
			}
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		name := rapid.StringN(1, 100, -1).Draw(t, "name")
		s := rapid.Uint32().Draw(t, "shard")
		p := newPairHash(name)
		if got, want := p.sum(s), xxhash.Sum64(binary.BigEndian.AppendUint32([]byte(name), s)); got != want {
			t.Fatalf("%q shard %d: %#x, want %#x", name, s, got, want)
		}
	})
}
