package crdt

import "errors"

// Errors of local writes. Each is returned wrapped with the offending key or size;
// test with errors.Is.
var (
	// ErrEmptyKey: keys are non-empty strings.
	ErrEmptyKey = errors.New("crdt: empty key")
	// ErrKeyTooLong: the key exceeds Limits.MaxKeyBytes.
	ErrKeyTooLong = errors.New("crdt: key too long")
	// ErrValueTooLarge: the value exceeds Limits.MaxValueBytes.
	ErrValueTooLarge = errors.New("crdt: value too large")
	// ErrTooManyKeys: the map would hold more than Limits.MaxKeys live keys.
	ErrTooManyKeys = errors.New("crdt: too many keys in map")
	// ErrMapTooLarge: the map's entries (tombstones included) would exceed
	// Limits.MaxMapBytes.
	ErrMapTooLarge = errors.New("crdt: map too large")
	// ErrTooManyNodes: the store would hold more than Limits.MaxNodes node maps.
	ErrTooManyNodes = errors.New("crdt: too many node maps")
	// ErrNameTooLong: a node name exceeds Limits.MaxNameBytes.
	ErrNameTooLong = errors.New("crdt: node name too long")
	// ErrNotFound: Delete of a key that has no live value.
	ErrNotFound = errors.New("crdt: no such key")
	// ErrStaleIncarnation: SetIncarnation with an incarnation not above the current.
	ErrStaleIncarnation = errors.New("crdt: incarnation not above current")
	// ErrFenced: a cluster write under a lease epoch lower than one already seen, or
	// under the current epoch by a store that did not open it (another node leads it).
	ErrFenced = errors.New("crdt: cluster write fenced by a newer or foreign epoch")
	// ErrVersionExhausted: an epoch or counter would pass 2^64-1 (only forged input
	// gets there).
	ErrVersionExhausted = errors.New("crdt: version space exhausted")
	// ErrInvalidLimits: a Limits field is out of range; the message names it.
	ErrInvalidLimits = errors.New("crdt: invalid limits")
)

// Errors of peer input: decoding and applying deltas and snapshots. The host counts
// them and drops the input; nothing of a rejected delta is applied.
var (
	// ErrImplausible: a delta's version jumps more than MaxVersionJump above what
	// this store holds for its map (PROTOCOL.md 4.1): forged or corrupt input that
	// would otherwise leave the map's writer no version to out-write it with.
	ErrImplausible = errors.New("crdt: implausible version jump")
	// ErrMalformed: the bytes are not a valid encoding, or the decoded delta breaks
	// an invariant (floor above have, duplicate key, tombstone with a value, ...).
	ErrMalformed = errors.New("crdt: malformed metadata")
	// ErrTruncated: the input ends inside a value.
	ErrTruncated = errors.New("crdt: truncated metadata")
)
