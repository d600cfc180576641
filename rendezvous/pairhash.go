package rendezvous

import (
	"encoding/binary"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// pairHash computes xxhash64(name || uint32_be(shard)) for one node and any shard,
// with the part of XXH64 that depends only on the name done once. A table build
// hashes every (shard, node) pair, so this per-node state is what makes the build
// cheap: per shard only the last ≤ 11 input bytes and the final mix remain.
//
// XXH64 (Collet, xxHash specification) consumes its input as 32-byte stripes into
// four accumulators, then 8-byte lanes, one 4-byte word and single bytes into one
// state, then avalanches. With the shard as the last 4 bytes, everything before the
// lane holding the name's last bytes depends on the name alone. When the shard
// would fall inside a 32-byte stripe (name length mod 32 in 28..31, names of 28
// bytes or more), the state cannot be split there and the whole input is hashed.
type pairHash struct {
	h    uint64 // state after the stripes, the length and the name's full lanes
	tail uint64 // the name's remaining bytes (0..7), little-endian
	n    uint8  // how many bytes tail holds
	// whole is the full input with a 4-byte shard slot at the end, set only when
	// the state cannot be split (see above); nil otherwise.
	whole []byte
}

const (
	xxPrime1 uint64 = 11400714785074694791
	xxPrime2 uint64 = 14029467366897019727
	xxPrime3 uint64 = 1609587929392839161
	xxPrime4 uint64 = 9650029242287828579
	xxPrime5 uint64 = 2870177450012600261
)

func xxRound(acc, input uint64) uint64 {
	return bits.RotateLeft64(acc+input*xxPrime2, 31) * xxPrime1
}

func xxMerge(h, v uint64) uint64 {
	return (h^xxRound(0, v))*xxPrime1 + xxPrime4
}

func newPairHash(name string) pairHash {
	total := len(name) + 4
	stripes := total / 32 * 32
	if stripes > len(name) {
		whole := make([]byte, total)
		copy(whole, name)
		return pairHash{whole: whole}
	}
	b := []byte(name)
	h := xxPrime5
	if stripes > 0 {
		// The seed-0 accumulators prime1+prime2 and -prime1, which wrap: a variable
		// keeps the arithmetic modular.
		p1 := xxPrime1
		v1, v2, v3, v4 := p1+xxPrime2, xxPrime2, uint64(0), -p1
		for ; len(b) >= 32 && len(name)-len(b) < stripes; b = b[32:] {
			v1 = xxRound(v1, binary.LittleEndian.Uint64(b[0:8]))
			v2 = xxRound(v2, binary.LittleEndian.Uint64(b[8:16]))
			v3 = xxRound(v3, binary.LittleEndian.Uint64(b[16:24]))
			v4 = xxRound(v4, binary.LittleEndian.Uint64(b[24:32]))
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxMerge(xxMerge(xxMerge(xxMerge(h, v1), v2), v3), v4)
	}
	h += uint64(total)
	for ; len(b) >= 8; b = b[8:] {
		h = bits.RotateLeft64(h^xxRound(0, binary.LittleEndian.Uint64(b)), 27)*xxPrime1 + xxPrime4
	}
	var tail uint64
	for i, c := range b {
		tail |= uint64(c) << (8 * i)
	}
	return pairHash{h: h, tail: tail, n: uint8(len(b))}
}

// sum returns xxhash64(name || uint32_be(shard)).
func (p *pairHash) sum(shard uint32) uint64 {
	if p.whole != nil {
		binary.BigEndian.PutUint32(p.whole[len(p.whole)-4:], shard)
		return xxhash.Sum64(p.whole)
	}
	// The last n+4 input bytes as a little-endian 128-bit value lo|hi: the name's
	// tail, then the shard's big-endian bytes.
	s := uint64(bits.ReverseBytes32(shard))
	shift := 8 * uint(p.n)
	lo := p.tail | s<<shift
	hi := s >> (64 - shift) // a shift of 64 yields 0 in Go
	h := p.h
	left := int(p.n) + 4
	if left >= 8 {
		h = bits.RotateLeft64(h^xxRound(0, lo), 27)*xxPrime1 + xxPrime4
		lo, left = hi, left-8
	} else {
		h = bits.RotateLeft64(h^uint64(uint32(lo))*xxPrime1, 23)*xxPrime2 + xxPrime3
		lo, left = lo>>32, left-4
	}
	for ; left > 0; left-- {
		h = bits.RotateLeft64(h^(lo&0xff)*xxPrime5, 11) * xxPrime1
		lo >>= 8
	}
	h ^= h >> 33
	h *= xxPrime2
	h ^= h >> 29
	h *= xxPrime3
	h ^= h >> 32
	return h
}
