package crdt

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// entryHash is the xxhash64 of one live entry: map name, key, version and value,
// with lengths so no two entries share an encoding. A map's digest is the sum
// (mod 2^64) of the hashes of its live entries, and a store's the sum over its
// maps: order-independent, so it is kept up to date in O(1) per changed entry, and
// two replicas that show the same live entries at the same versions have the same
// digest. Tombstones are left out: replicas that differ only in which tombstones
// they have already collected look alike, as they are to every reader.
func entryHash(name, key string, c cell) uint64 {
	var d xxhash.Digest
	d.Reset()
	var b [3 * binary.MaxVarintLen64]byte
	n := binary.PutUvarint(b[:], uint64(len(name)))
	_, _ = d.Write(b[:n])
	_, _ = d.WriteString(name)
	n = binary.PutUvarint(b[:], uint64(len(key)))
	_, _ = d.Write(b[:n])
	_, _ = d.WriteString(key)
	n = binary.PutUvarint(b[:], c.version.Epoch)
	n += binary.PutUvarint(b[n:], c.version.Counter)
	n += binary.PutUvarint(b[n:], uint64(len(c.value)))
	_, _ = d.Write(b[:n])
	_, _ = d.Write(c.value)
	return d.Sum64()
}
