package wire

import (
	"encoding/binary"
	"math"
)

// A hand-written subset of msgpack (https://github.com/msgpack/msgpack/blob/master/spec.md).
// The writer emits the shortest standard encoding of each value; the reader accepts
// every standard encoding of the types it reads and can skip any value, so bodies
// written by a generic msgpack library in another language decode here too. Written
// by hand so that decoding allocates nothing and every length is bounds-checked
// before it is used.

const maxSkipDepth = 16 // nesting a skipped value may have; deeper is ErrMalformed

func appendMapHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xde, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func appendBin(b []byte, v []byte) []byte {
	n := len(v)
	switch {
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xc5, byte(n>>8), byte(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, v...)
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 128:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return append(b, 0xcd, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// mpReader reads msgpack values from b starting at i. Every method checks bounds
// before slicing and returns ErrTruncated, never panics.
type mpReader struct {
	b []byte
	i int
}

func (r *mpReader) remaining() int { return len(r.b) - r.i }

func (r *mpReader) byte1() (byte, error) {
	if r.i >= len(r.b) {
		return 0, ErrTruncated
	}
	c := r.b[r.i]
	r.i++
	return c, nil
}

// uintN reads an n-byte big-endian unsigned integer (n is 1, 2, 4 or 8).
func (r *mpReader) uintN(n int) (uint64, error) {
	if r.remaining() < n {
		return 0, ErrTruncated
	}
	var v uint64
	for _, c := range r.b[r.i : r.i+n] {
		v = v<<8 | uint64(c)
	}
	r.i += n
	return v, nil
}

// take returns the next n bytes (aliasing the input) after checking they exist.
func (r *mpReader) take(n uint64) ([]byte, error) {
	if n > uint64(r.remaining()) {
		return nil, ErrTruncated
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

// mapLen reads a map header. nil is read as an empty map (a missing body section).
func (r *mpReader) mapLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x80:
		return int(c & 0x0f), nil
	case c == 0xc0:
		return 0, nil
	case c == 0xde:
		n, err = r.uintN(2)
	case c == 0xdf:
		n, err = r.uintN(4)
	default:
		return 0, ErrMalformed
	}
	if err != nil {
		return 0, err
	}
	// Each entry takes at least two bytes: a longer claim cannot be honest.
	if n > uint64(r.remaining())/2 {
		return 0, ErrTruncated
	}
	return int(n), nil
}

// arrayLen reads an array header. nil is read as an empty array.
func (r *mpReader) arrayLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x90:
		return int(c & 0x0f), nil
	case c == 0xc0:
		return 0, nil
	case c == 0xdc:
		n, err = r.uintN(2)
	case c == 0xdd:
		n, err = r.uintN(4)
	default:
		return 0, ErrMalformed
	}
	if err != nil {
		return 0, err
	}
	// Each element takes at least one byte.
	if n > uint64(r.remaining()) {
		return 0, ErrTruncated
	}
	return int(n), nil
}

// bytesVal reads a str or bin value (either is accepted for string and byte fields,
// as msgpack libraries differ in which they emit for byte slices); nil reads as
// empty. The result aliases the input.
func (r *mpReader) bytesVal() ([]byte, error) {
	c, err := r.byte1()
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xc0:
		return nil, nil
	case c == 0xd9 || c == 0xc4:
		n, err = r.uintN(1)
	case c == 0xda || c == 0xc5:
		n, err = r.uintN(2)
	case c == 0xdb || c == 0xc6:
		n, err = r.uintN(4)
	default:
		return nil, ErrMalformed
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// uintVal reads a non-negative integer in any msgpack integer encoding; nil reads
// as 0 and a negative value is ErrMalformed.
func (r *mpReader) uintVal() (uint64, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c < 0x80:
		return uint64(c), nil
	case c == 0xc0:
		return 0, nil
	case c >= 0xcc && c <= 0xcf: // uint8..uint64
		return r.uintN(1 << (c - 0xcc))
	case c >= 0xd0 && c <= 0xd3: // int8..int64
		v, err := r.uintN(1 << (c - 0xd0))
		if err != nil {
			return 0, err
		}
		bits := 8 << (c - 0xd0)
		if bits < 64 && v>>(bits-1) != 0 || bits == 64 && int64(v) < 0 {
			return 0, ErrMalformed
		}
		return v, nil
	default:
		return 0, ErrMalformed
	}
}

// uintMax reads an unsigned integer no larger than max.
func (r *mpReader) uintMax(max uint64) (uint64, error) {
	v, err := r.uintVal()
	if err == nil && v > max {
		err = ErrMalformed
	}
	return v, err
}

// boolVal reads a bool; nil reads as false.
func (r *mpReader) boolVal() (bool, error) {
	c, err := r.byte1()
	if err != nil {
		return false, err
	}
	switch c {
	case 0xc2, 0xc0:
		return false, nil
	case 0xc3:
		return true, nil
	}
	return false, ErrMalformed
}

// skip skips one value of any type, nested at most maxSkipDepth deep.
func (r *mpReader) skip() error { return r.skipDepth(0) }

func (r *mpReader) skipDepth(depth int) error {
	if depth > maxSkipDepth {
		return ErrMalformed
	}
	c, err := r.byte1()
	if err != nil {
		return err
	}
	var n uint64 // bytes to skip, or elements for containers
	elems := false
	switch {
	case c < 0x80 || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return nil // fixint, negative fixint, nil, bool
	case c&0xf0 == 0x80:
		n, elems = 2*uint64(c&0x0f), true
	case c&0xf0 == 0x90:
		n, elems = uint64(c&0x0f), true
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xc4 || c == 0xd9:
		n, err = r.uintN(1)
	case c == 0xc5 || c == 0xda:
		n, err = r.uintN(2)
	case c == 0xc6 || c == 0xdb:
		n, err = r.uintN(4)
	case c == 0xc7 || c == 0xc8 || c == 0xc9: // ext8/16/32: length, type byte, data
		n, err = r.uintN(1 << (c - 0xc7))
		n++
	case c == 0xca:
		n = 4
	case c == 0xcb:
		n = 8
	case c >= 0xcc && c <= 0xcf:
		n = 1 << (c - 0xcc)
	case c >= 0xd0 && c <= 0xd3:
		n = 1 << (c - 0xd0)
	case c >= 0xd4 && c <= 0xd8: // fixext1..16: type byte + data
		n = 1 + 1<<(c-0xd4)
	case c == 0xdc:
		n, err = r.uintN(2)
		elems = true
	case c == 0xdd:
		n, err = r.uintN(4)
		elems = true
	case c == 0xde:
		n, err = r.uintN(2)
		n, elems = 2*n, true
	case c == 0xdf:
		n, err = r.uintN(4)
		n, elems = 2*n, true
	default: // 0xc1, never used
		return ErrMalformed
	}
	if err != nil {
		return err
	}
	if !elems {
		_, err = r.take(n)
		return err
	}
	// Each element takes at least one byte, so a dishonest count fails here
	// instead of looping for billions of iterations.
	if n > uint64(r.remaining()) {
		return ErrTruncated
	}
	for ; n > 0; n-- {
		if err := r.skipDepth(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// eachKey reads n map keys, handing each to f, which reads (or skips) its value.
// Every message decoder is one switch on the key inside it; unknown keys are skipped
// by the decoders' default case, which is what keeps old readers compatible.
func eachKey(r *mpReader, n int, f func(k []byte) error) error {
	for ; n > 0; n-- {
		k, err := r.key()
		if err != nil {
			return err
		}
		if err := f(k); err != nil {
			return err
		}
	}
	return nil
}
