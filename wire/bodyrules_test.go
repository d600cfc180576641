package wire

import (
	"bytes"
	"testing"
)

// The body rules PROTOCOL.md 3.3 states for an outside implementation, pinned on an
// Alive body built byte by byte.
func TestBodyRules(t *testing.T) {
	// nest is a value of n one-element arrays around nil: its nil is at level n,
	// counting the skipped value itself as level 0.
	nest := func(n int) []byte { return append(bytes.Repeat([]byte{0x91}, n), 0xc0) }
	var d Decoder
	var a Alive

	// Unknown keys are skipped with values nested up to level 16 inclusive.
	ok := append([]byte{0x82, 0xa1, 'n', 0xa1, 'b', 0xa2, 'z', 'z'}, nest(16)...)
	noErr(t, d.Decode(ok, &a))
	equal(t, "b", a.Node)
	deep := append([]byte{0x82, 0xa1, 'n', 0xa1, 'b', 0xa2, 'z', 'z'}, nest(17)...)
	isErr(t, d.Decode(deep, &a), ErrMalformed)

	// A key that is not a string (here the integer 1) makes the whole message
	// malformed, even after valid keys.
	isErr(t, d.Decode([]byte{0x82, 0xa1, 'n', 0xa1, 'b', 0x01, 0x02}, &a), ErrMalformed)

	// A duplicate key: each occurrence is read (and must be valid), the last wins.
	noErr(t, d.Decode([]byte{0x82, 0xa1, 'i', 0x01, 0xa1, 'i', 0x02}, &a))
	equal(t, uint64(2), a.Incarnation)
	isErr(t, d.Decode([]byte{0x82, 0xa1, 'i', 0xa1, 'x', 0xa1, 'i', 0x02}, &a), ErrMalformed)

	// Non-minimal encodings are accepted: a map16 header, a str8 key and string, a
	// uint64 for a small incarnation.
	long := []byte{0xde, 0x00, 0x02, 0xd9, 0x01, 'n', 0xd9, 0x01, 'b', 0xa1, 'i', 0xcf, 0, 0, 0, 0, 0, 0, 0, 7}
	noErr(t, d.Decode(long, &a))
	equal(t, "b", a.Node)
	equal(t, uint64(7), a.Incarnation)
}
