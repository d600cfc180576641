package crdt

import "fmt"

// EntryOverhead is the number of bytes an entry costs in Limits.MaxMapBytes on top
// of its key and value: it stands for the version, flags and bookkeeping, and makes
// tombstones (which have no value) count, so deletes cannot grow a map without bound
// between two GCs.
const EntryOverhead = 32

// Limits bound what one store accepts, from its own writes and from peers. All
// nodes of a cluster must share them: a peer's map that exceeds ours is rejected
// (and pushed again at every anti-entropy round), it is never truncated.
type Limits struct {
	// MaxKeyBytes bounds a key's length in bytes. Default 128. Raising it lets keys
	// carry more structure at the cost of gossip room; keys are sent with every
	// update of their value.
	MaxKeyBytes int
	// MaxValueBytes bounds a value's length in bytes. Default 1024. A one-key delta
	// must fit in a gossip packet (1400 bytes MTU) next to a probe: keep it well
	// under the MTU.
	MaxValueBytes int
	// MaxKeys bounds the live keys of one map (node or cluster). Default 64.
	MaxKeys int
	// MaxMapBytes bounds the sum, over a map's entries including tombstones, of
	// len(key)+len(value)+EntryOverhead. Default 16 KiB. A push-pull carries every
	// map, so n nodes cost at most n*MaxMapBytes of state; lower it for large
	// clusters.
	MaxMapBytes int
	// MaxNodes bounds the node maps of a store (the cluster map not counted) and of
	// a decoded snapshot. Default 10,000. It caps memory against a peer that invents
	// node names; raise it for larger clusters.
	MaxNodes int
	// MaxNameBytes bounds a node name's length in bytes. Default 255.
	MaxNameBytes int
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:   128,
		MaxValueBytes: 1024,
		MaxKeys:       64,
		MaxMapBytes:   16 << 10,
		MaxNodes:      10_000,
		MaxNameBytes:  255,
	}
}

// Validate reports the first field out of range. Every field must be positive, and
// one maximal entry must fit in a map.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxKeyBytes", l.MaxKeyBytes},
		{"MaxValueBytes", l.MaxValueBytes},
		{"MaxKeys", l.MaxKeys},
		{"MaxMapBytes", l.MaxMapBytes},
		{"MaxNodes", l.MaxNodes},
		{"MaxNameBytes", l.MaxNameBytes},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %d", ErrInvalidLimits, f.name, f.v)
		}
	}
	if need := l.MaxKeyBytes + l.MaxValueBytes + EntryOverhead; l.MaxMapBytes < need {
		return fmt.Errorf("%w: MaxMapBytes %d below one maximal entry (%d)", ErrInvalidLimits, l.MaxMapBytes, need)
	}
	return nil
}

// maxEntries bounds the entries (tombstones included) a map of these limits can
// hold; decoders refuse longer arrays before allocating them.
func (l Limits) maxEntries() int { return l.MaxMapBytes / (EntryOverhead + 1) }

// entrySize is what an entry costs against MaxMapBytes.
func entrySize(key string, value []byte) int { return len(key) + len(value) + EntryOverhead }

func (l Limits) checkKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if len(key) > l.MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, max %d", ErrKeyTooLong, len(key), l.MaxKeyBytes)
	}
	return nil
}

func (l Limits) checkValue(key string, value []byte) error {
	if len(value) > l.MaxValueBytes {
		return fmt.Errorf("%w: key %q: %d bytes, max %d", ErrValueTooLarge, key, len(value), l.MaxValueBytes)
	}
	return nil
}

func (l Limits) checkName(name string) error {
	if len(name) > l.MaxNameBytes {
		return fmt.Errorf("%w: %d bytes, max %d", ErrNameTooLong, len(name), l.MaxNameBytes)
	}
	return nil
}
