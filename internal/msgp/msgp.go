// Package msgp is the module's one MessagePack codec
// (https://github.com/msgpack/msgpack/blob/master/spec.md), shared by wire's
// message bodies and crdt's metadata, so that there is one parser of untrusted
// msgpack to fuzz.
//
// The writer emits the shortest standard encoding of each value. The reader accepts
// every standard encoding of the types it reads and can skip any value, so bytes
// written by a generic msgpack library in another language decode here too. It is
// written by hand so that decoding allocates nothing, every length and count is
// checked against the input left before it is used, and skipped values nest at most
// MaxDepth deep. Failures match ErrTruncated or ErrMalformed (errors.Is); the
// packages above turn them into their own sentinels.
package msgp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// MaxDepth is the nesting a skipped value may have (PROTOCOL.md 3.3: unknown keys);
// deeper is ErrMalformed, so hostile input cannot recurse without bound.
const MaxDepth = 16

var (
	// ErrTruncated means the input ended before a value, or a length or count it
	// announced, was complete.
	ErrTruncated = errors.New("msgpack: input ends inside a value")
	// ErrMalformed means the input is not the msgpack type asked for, or is a value
	// that no field accepts (a negative or too large integer, a non-finite float,
	// nesting deeper than MaxDepth, the reserved type 0xc1).
	ErrMalformed = errors.New("msgpack: malformed")
)

// Errors that say what was refused, made once so that refusing allocates nothing.
var (
	errWantMap   = refuse("want a map")
	errWantArray = refuse("want an array")
	errWantStr   = refuse("want a string")
	errWantBin   = refuse("want a binary")
	errWantBytes = refuse("want a string or a binary")
	errWantUint  = refuse("want an unsigned integer")
	errNegative  = refuse("negative integer")
	errTooLarge  = refuse("integer above the field's maximum")
	errWantBool  = refuse("want a boolean")
	errNotFinite = refuse("float is NaN or infinite")
	errTooDeep   = refuse(fmt.Sprintf("nesting deeper than %d", MaxDepth))
	errReserved  = refuse("reserved type 0xc1")
)

// refusal is an ErrMalformed that names what was refused.
type refusal string

// refuse boxes a refusal once, at init, so that returning it costs nothing.
func refuse(what string) error { return refusal(what) }

func (e refusal) Error() string { return "msgpack: " + string(e) }

// Is makes errors.Is(err, ErrMalformed) true for every refusal.
func (e refusal) Is(target error) bool { return target == ErrMalformed }

// AppendMapHeader appends the header of a map of n entries.
func AppendMapHeader(b []byte, n int) []byte { return appendHeader(b, n, 0x80, 0xde) }

// AppendArrayHeader appends the header of an array of n elements.
func AppendArrayHeader(b []byte, n int) []byte { return appendHeader(b, n, 0x90, 0xdc) }

// appendHeader appends a map or array header: fix is its fix form's high nibble,
// c16 its 16-bit type byte (the 32-bit one follows).
func appendHeader(b []byte, n int, fix, c16 byte) []byte {
	switch {
	case n < 16:
		return append(b, fix|byte(n))
	case n <= math.MaxUint16:
		return append(b, c16, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, c16+1), uint32(n))
	}
}

// AppendStr appends s as a msgpack str.
func AppendStr(b []byte, s string) []byte {
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

// AppendBin appends v as a msgpack bin.
func AppendBin(b []byte, v []byte) []byte {
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

// AppendUint appends v in the shortest unsigned integer encoding.
func AppendUint(b []byte, v uint64) []byte {
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

// AppendBool appends v as msgpack true or false.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// AppendNil appends a msgpack nil.
func AppendNil(b []byte) []byte { return append(b, 0xc0) }

// AppendFloat64 appends v as a msgpack float 64.
func AppendFloat64(b []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(v))
}

// NilRule says what a Reader makes of a msgpack nil where it expects a value.
type NilRule bool

const (
	// NilRefused makes nil ErrMalformed wherever a value is expected (crdt: its
	// encoding leaves zero fields out and never writes nil).
	NilRefused NilRule = false
	// NilIsZero reads nil as the zero value of the type asked for: an empty map,
	// array, string or binary, 0 or false (PROTOCOL.md 3.3).
	NilIsZero NilRule = true
)

// Reader reads msgpack values from a byte slice. Every method checks bounds before
// slicing and returns an error, never panics; results that are bytes alias the
// input. The zero Reader has no input.
type Reader struct {
	b       []byte
	i       int
	nilZero NilRule
}

// NewReader returns a Reader of b that treats nil as rule says.
func NewReader(b []byte, rule NilRule) Reader { return Reader{b: b, nilZero: rule} }

// Remaining returns the number of bytes not yet read.
func (r *Reader) Remaining() int { return len(r.b) - r.i }

func (r *Reader) byte1() (byte, error) {
	if r.i >= len(r.b) {
		return 0, ErrTruncated
	}
	c := r.b[r.i]
	r.i++
	return c, nil
}

// uintN reads an n-byte big-endian unsigned integer (n is 1, 2, 4 or 8).
func (r *Reader) uintN(n int) (uint64, error) {
	if r.Remaining() < n {
		return 0, ErrTruncated
	}
	var v uint64
	for _, c := range r.b[r.i : r.i+n] {
		v = v<<8 | uint64(c)
	}
	r.i += n
	return v, nil
}

// take returns the next n bytes after checking they exist.
func (r *Reader) take(n uint64) ([]byte, error) {
	if n > uint64(r.Remaining()) {
		return nil, ErrTruncated
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

// nilValue is what a read that met nil returns: nothing, or errWant.
func (r *Reader) nilValue(errWant error) error {
	if r.nilZero {
		return nil
	}
	return errWant
}

// Nil reads a nil if the next value is one, and reports whether it did.
func (r *Reader) Nil() bool {
	if r.i < len(r.b) && r.b[r.i] == 0xc0 {
		r.i++
		return true
	}
	return false
}

// MapLen reads a map header and returns its number of entries, which the input
// left can hold (each entry takes at least two bytes).
func (r *Reader) MapLen() (int, error) { return r.header(0x80, 0xde, 2, errWantMap) }

// ArrayLen reads an array header and returns its number of elements, which the
// input left can hold (each element takes at least one byte).
func (r *Reader) ArrayLen() (int, error) { return r.header(0x90, 0xdc, 1, errWantArray) }

// header reads a map or array header: fix is the high nibble of its fix form, c16
// its 16-bit type byte (the 32-bit one follows), min the bytes an element takes at
// least, so that a count the input cannot hold is refused before anyone loops on it.
func (r *Reader) header(fix, c16 byte, min uint64, errWant error) (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == fix:
		return int(c & 0x0f), nil
	case c == 0xc0:
		return 0, r.nilValue(errWant)
	case c == c16:
		n, err = r.uintN(2)
	case c == c16+1:
		n, err = r.uintN(4)
	default:
		return 0, errWant
	}
	if err != nil {
		return 0, err
	}
	if n*min > uint64(r.Remaining()) { // n < 2^32: no overflow
		return 0, ErrTruncated
	}
	return int(n), nil
}

// Kinds of byte strings a read accepts.
const (
	kindStr = 1 << iota
	kindBin
)

// bytesOf reads a value of one of kinds; nil is read by the NilRule if nilOK.
func (r *Reader) bytesOf(kinds int, nilOK bool, errWant error) ([]byte, error) {
	c, err := r.byte1()
	if err != nil {
		return nil, err
	}
	str, bin := kinds&kindStr != 0, kinds&kindBin != 0
	var n uint64
	switch {
	case c&0xe0 == 0xa0 && str:
		n = uint64(c & 0x1f)
	case c == 0xd9 && str || c == 0xc4 && bin:
		n, err = r.uintN(1)
	case c == 0xda && str || c == 0xc5 && bin:
		n, err = r.uintN(2)
	case c == 0xdb && str || c == 0xc6 && bin:
		n, err = r.uintN(4)
	case c == 0xc0 && nilOK:
		return nil, r.nilValue(errWant)
	default:
		return nil, errWant
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// Key reads a map key, which must be a str (never nil).
func (r *Reader) Key() ([]byte, error) { return r.bytesOf(kindStr, false, errWantStr) }

// Str reads a str.
func (r *Reader) Str() ([]byte, error) { return r.bytesOf(kindStr, true, errWantStr) }

// Bin reads a bin.
func (r *Reader) Bin() ([]byte, error) { return r.bytesOf(kindBin, true, errWantBin) }

// Bytes reads a str or a bin: msgpack libraries differ in which they emit for byte
// slices, and strings are sent as either.
func (r *Reader) Bytes() ([]byte, error) { return r.bytesOf(kindStr|kindBin, true, errWantBytes) }

// Uint reads a non-negative integer in any msgpack integer encoding, signed ones
// included; a negative value is ErrMalformed.
func (r *Reader) Uint() (uint64, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c < 0x80:
		return uint64(c), nil
	case c == 0xc0:
		return 0, r.nilValue(errWantUint)
	case c >= 0xcc && c <= 0xcf: // uint8..uint64
		return r.uintN(1 << (c - 0xcc))
	case c >= 0xd0 && c <= 0xd3: // int8..int64
		v, err := r.uintN(1 << (c - 0xd0))
		if err != nil {
			return 0, err
		}
		if v>>(8<<(c-0xd0)-1) != 0 { // the sign bit
			return 0, errNegative
		}
		return v, nil
	default:
		return 0, errWantUint
	}
}

// UintMax reads an unsigned integer no larger than max.
func (r *Reader) UintMax(max uint64) (uint64, error) {
	v, err := r.Uint()
	if err == nil && v > max {
		err = errTooLarge
	}
	return v, err
}

// Bool reads a boolean.
func (r *Reader) Bool() (bool, error) {
	c, err := r.byte1()
	if err != nil {
		return false, err
	}
	switch c {
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xc0:
		return false, r.nilValue(errWantBool)
	}
	return false, errWantBool
}

// Float64 reads a float 64 or float 32, or a non-negative integer as Uint does.
// NaN and infinities are ErrMalformed: no field accepts them.
func (r *Reader) Float64() (float64, error) {
	if r.Remaining() == 0 {
		return 0, ErrTruncated
	}
	var f float64
	switch r.b[r.i] {
	case 0xcb:
		r.i++
		v, err := r.uintN(8)
		if err != nil {
			return 0, err
		}
		f = math.Float64frombits(v)
	case 0xca:
		r.i++
		v, err := r.uintN(4)
		if err != nil {
			return 0, err
		}
		f = float64(math.Float32frombits(uint32(v)))
	default:
		v, err := r.Uint()
		return float64(v), err
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errNotFinite
	}
	return f, nil
}

// Skip passes over one value of any type, nested at most MaxDepth deep.
func (r *Reader) Skip() error { return r.skip(0) }

// Raw skips one value as Skip does and returns its encoding.
func (r *Reader) Raw() ([]byte, error) {
	start := r.i
	if err := r.skip(0); err != nil {
		return nil, err
	}
	return r.b[start:r.i], nil
}

func (r *Reader) skip(depth int) error {
	if depth > MaxDepth {
		return errTooDeep
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
		return errReserved
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
	if n > uint64(r.Remaining()) {
		return ErrTruncated
	}
	for ; n > 0; n-- {
		if err := r.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// EachKey reads n map keys, handing each to f, which reads (or skips) its value.
// A decoder is one switch on the key inside f whose default skips: that is what
// keeps old readers compatible with fields added later.
func (r *Reader) EachKey(n int, f func(k []byte) error) error {
	for ; n > 0; n-- {
		k, err := r.Key()
		if err != nil {
			return err
		}
		if err := f(k); err != nil {
			return err
		}
	}
	return nil
}
