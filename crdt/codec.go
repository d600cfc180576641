package crdt

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// The encoding is MessagePack restricted to maps with short string field names,
// unsigned integers, strings, binaries, booleans and arrays, so any MessagePack
// library can read it (docs/metadata.md has the schema). Fields at their zero value
// are left out; a decoder skips fields it does not know, which is how a later
// version adds one. Decoding checks every length against the input left and the
// Limits before allocating, and reports failures as ErrMalformed, ErrTruncated or a
// limit error (ErrKeyTooLong, ErrValueTooLarge, ErrMapTooLarge, ErrTooManyNodes,
// ErrNameTooLong).
//
//	Delta    {"n": node (str), "s": Since, "h": Have, "f": Floor, "x": [Entry]}
//	Version  {"e": epoch (uint), "c": counter (uint)}
//	Entry    {"k": key (str), "v": value (bin), "c": counter (uint),
//	          "e": epoch (uint, omitted when equal to Have's), "d": deleted (true)}
//	Snapshot {"m": [Delta]}

// maxSkipDepth bounds the nesting of unknown fields a decoder skips.
const maxSkipDepth = 16

// AppendDelta appends the encoding of d to dst.
func AppendDelta(dst []byte, d Delta) []byte {
	n := 0
	for _, present := range []bool{d.Node != "", !d.Since.IsZero(), !d.Have.IsZero(), !d.Floor.IsZero(), len(d.Entries) > 0} {
		if present {
			n++
		}
	}
	dst = appendMapLen(dst, n)
	if d.Node != "" {
		dst = appendStr(appendStr(dst, "n"), d.Node)
	}
	for _, f := range []struct {
		name string
		v    Version
	}{{"s", d.Since}, {"h", d.Have}, {"f", d.Floor}} {
		if !f.v.IsZero() {
			dst = appendVersion(appendStr(dst, f.name), f.v)
		}
	}
	if len(d.Entries) > 0 {
		dst = appendArrayLen(appendStr(dst, "x"), len(d.Entries))
		for i := range d.Entries {
			dst = appendEntry(dst, &d.Entries[i], d.Have.Epoch)
		}
	}
	return dst
}

func appendVersion(dst []byte, v Version) []byte {
	n := 0
	if v.Epoch != 0 {
		n++
	}
	if v.Counter != 0 {
		n++
	}
	dst = appendMapLen(dst, n)
	if v.Epoch != 0 {
		dst = appendUint(appendStr(dst, "e"), v.Epoch)
	}
	if v.Counter != 0 {
		dst = appendUint(appendStr(dst, "c"), v.Counter)
	}
	return dst
}

func appendEntry(dst []byte, e *Entry, epoch uint64) []byte {
	hasValue := !e.Deleted && len(e.Value) > 0
	n := 1
	for _, present := range []bool{hasValue, e.Version.Counter != 0, e.Version.Epoch != epoch, e.Deleted} {
		if present {
			n++
		}
	}
	dst = appendStr(appendStr(appendMapLen(dst, n), "k"), e.Key)
	if hasValue {
		dst = appendBin(appendStr(dst, "v"), e.Value)
	}
	if e.Version.Counter != 0 {
		dst = appendUint(appendStr(dst, "c"), e.Version.Counter)
	}
	if e.Version.Epoch != epoch {
		dst = appendUint(appendStr(dst, "e"), e.Version.Epoch)
	}
	if e.Deleted {
		dst = append(appendStr(dst, "d"), 0xc3)
	}
	return dst
}

// AppendSnapshot appends the encoding of s to dst.
func AppendSnapshot(dst []byte, s Snapshot) []byte {
	dst = appendArrayLen(appendStr(appendMapLen(dst, 1), "m"), len(s.Maps))
	for i := range s.Maps {
		dst = AppendDelta(dst, s.Maps[i])
	}
	return dst
}

// DecodeDelta decodes one delta, checked against lim.
func DecodeDelta(b []byte, lim Limits) (Delta, error) {
	r := reader{b: b}
	d, err := r.delta(lim)
	if err != nil {
		return Delta{}, err
	}
	if r.off != len(b) {
		return Delta{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-r.off)
	}
	return d, nil
}

// DecodeSnapshot decodes a snapshot, checked against lim; its maps must be sorted
// by name, each once, as Snapshot makes them.
func DecodeSnapshot(b []byte, lim Limits) (Snapshot, error) {
	r := reader{b: b}
	n, err := r.mapLen()
	if err != nil {
		return Snapshot{}, err
	}
	var s Snapshot
	seen := false
	for range n {
		k, err := r.str()
		if err != nil {
			return Snapshot{}, err
		}
		if string(k) != "m" {
			if err := r.skip(0); err != nil {
				return Snapshot{}, err
			}
			continue
		}
		if seen {
			return Snapshot{}, fmt.Errorf("%w: field %q repeated", ErrMalformed, k)
		}
		seen = true
		cnt, err := r.arrayLen()
		if err != nil {
			return Snapshot{}, err
		}
		if cnt > lim.MaxNodes+1 {
			return Snapshot{}, fmt.Errorf("%w: snapshot of %d maps, max %d", ErrTooManyNodes, cnt, lim.MaxNodes+1)
		}
		if cnt > 0 {
			s.Maps = make([]Delta, cnt)
		}
		for i := range s.Maps {
			if s.Maps[i], err = r.delta(lim); err != nil {
				return Snapshot{}, err
			}
			if i > 0 && strings.Compare(s.Maps[i-1].Node, s.Maps[i].Node) >= 0 {
				return Snapshot{}, fmt.Errorf("%w: maps not sorted or repeated at %q", ErrMalformed, s.Maps[i].Node)
			}
		}
	}
	if r.off != len(b) {
		return Snapshot{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-r.off)
	}
	return s, nil
}

// reader decodes the MessagePack subset over b.
type reader struct {
	b   []byte
	off int
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) next(n int) ([]byte, error) {
	if n < 0 || n > r.left() {
		return nil, ErrTruncated
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, nil
}

func (r *reader) byte() (byte, error) {
	p, err := r.next(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

// be reads an n-byte big-endian unsigned integer, n in {1, 2, 4, 8}.
func (r *reader) be(n int) (uint64, error) {
	p, err := r.next(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(p)), nil
	}
	return binary.BigEndian.Uint64(p), nil
}

// length reads the n-byte length following a type byte, as an int that fits.
func (r *reader) length(n int) (int, error) {
	v, err := r.be(n)
	if err != nil {
		return 0, err
	}
	if v > uint64(len(r.b)) {
		return 0, ErrTruncated // no length can exceed the input
	}
	return int(v), nil
}

func (r *reader) mapLen() (int, error) {
	t, err := r.byte()
	if err != nil {
		return 0, err
	}
	var n int
	switch {
	case t >= 0x80 && t <= 0x8f:
		n = int(t & 0x0f)
	case t == 0xde:
		n, err = r.length(2)
	case t == 0xdf:
		n, err = r.length(4)
	default:
		return 0, fmt.Errorf("%w: want a map, got type 0x%02x", ErrMalformed, t)
	}
	if err == nil && n > r.left()/2 {
		err = ErrTruncated // each pair takes at least two bytes
	}
	return n, err
}

func (r *reader) arrayLen() (int, error) {
	t, err := r.byte()
	if err != nil {
		return 0, err
	}
	var n int
	switch {
	case t >= 0x90 && t <= 0x9f:
		n = int(t & 0x0f)
	case t == 0xdc:
		n, err = r.length(2)
	case t == 0xdd:
		n, err = r.length(4)
	default:
		return 0, fmt.Errorf("%w: want an array, got type 0x%02x", ErrMalformed, t)
	}
	if err == nil && n > r.left() {
		err = ErrTruncated // each element takes at least a byte
	}
	return n, err
}

// str returns a string's bytes, aliasing the input.
func (r *reader) str() ([]byte, error) {
	t, err := r.byte()
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case t >= 0xa0 && t <= 0xbf:
		n = int(t & 0x1f)
	case t == 0xd9:
		n, err = r.length(1)
	case t == 0xda:
		n, err = r.length(2)
	case t == 0xdb:
		n, err = r.length(4)
	default:
		return nil, fmt.Errorf("%w: want a string, got type 0x%02x", ErrMalformed, t)
	}
	if err != nil {
		return nil, err
	}
	return r.next(n)
}

// bin returns a binary's bytes, aliasing the input.
func (r *reader) bin() ([]byte, error) {
	t, err := r.byte()
	if err != nil {
		return nil, err
	}
	var n int
	switch t {
	case 0xc4:
		n, err = r.length(1)
	case 0xc5:
		n, err = r.length(2)
	case 0xc6:
		n, err = r.length(4)
	default:
		return nil, fmt.Errorf("%w: want a binary, got type 0x%02x", ErrMalformed, t)
	}
	if err != nil {
		return nil, err
	}
	return r.next(n)
}

// uint reads a non-negative integer in any MessagePack integer encoding.
func (r *reader) uint() (uint64, error) {
	t, err := r.byte()
	if err != nil {
		return 0, err
	}
	switch {
	case t <= 0x7f:
		return uint64(t), nil
	case t >= 0xcc && t <= 0xcf:
		return r.be(1 << (t - 0xcc))
	case t >= 0xd0 && t <= 0xd3:
		v, err := r.be(1 << (t - 0xd0))
		if err == nil && v>>(8<<(t-0xd0)-1) != 0 {
			err = fmt.Errorf("%w: negative integer", ErrMalformed)
		}
		return v, err
	}
	return 0, fmt.Errorf("%w: want an unsigned integer, got type 0x%02x", ErrMalformed, t)
}

func (r *reader) bool() (bool, error) {
	t, err := r.byte()
	if err != nil {
		return false, err
	}
	switch t {
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	}
	return false, fmt.Errorf("%w: want a boolean, got type 0x%02x", ErrMalformed, t)
}

// skip passes over one value of any MessagePack type.
func (r *reader) skip(depth int) error {
	if depth > maxSkipDepth {
		return fmt.Errorf("%w: nesting deeper than %d", ErrMalformed, maxSkipDepth)
	}
	t, err := r.byte()
	if err != nil {
		return err
	}
	var n, items int // bytes to pass, then values to skip
	switch {
	case t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3:
	case t >= 0x80 && t <= 0x8f:
		items = 2 * int(t&0x0f)
	case t >= 0x90 && t <= 0x9f:
		items = int(t & 0x0f)
	case t >= 0xa0 && t <= 0xbf:
		n = int(t & 0x1f)
	case t == 0xc4 || t == 0xd9:
		n, err = r.length(1)
	case t == 0xc5 || t == 0xda:
		n, err = r.length(2)
	case t == 0xc6 || t == 0xdb:
		n, err = r.length(4)
	case t >= 0xc7 && t <= 0xc9: // ext 8/16/32: length, type, data
		n, err = r.length(1 << (t - 0xc7))
		n++
	case t == 0xca:
		n = 4
	case t == 0xcb:
		n = 8
	case t >= 0xcc && t <= 0xcf:
		n = 1 << (t - 0xcc)
	case t >= 0xd0 && t <= 0xd3:
		n = 1 << (t - 0xd0)
	case t >= 0xd4 && t <= 0xd8: // fixext: type, 1..16 bytes
		n = 1 + 1<<(t-0xd4)
	case t == 0xdc:
		items, err = r.length(2)
	case t == 0xdd:
		items, err = r.length(4)
	case t == 0xde:
		items, err = r.length(2)
		items *= 2
	case t == 0xdf:
		items, err = r.length(4)
		items *= 2
	default: // 0xc1, never used
		return fmt.Errorf("%w: type 0x%02x", ErrMalformed, t)
	}
	if err != nil {
		return err
	}
	if _, err := r.next(n); err != nil {
		return err
	}
	if items > r.left() {
		return ErrTruncated
	}
	for range items {
		if err := r.skip(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) version() (Version, error) {
	n, err := r.mapLen()
	if err != nil {
		return Version{}, err
	}
	var v Version
	var seen uint8
	for range n {
		k, err := r.str()
		if err != nil {
			return Version{}, err
		}
		var bit uint8
		var dst *uint64
		switch string(k) {
		case "e":
			bit, dst = 1, &v.Epoch
		case "c":
			bit, dst = 2, &v.Counter
		default:
			if err := r.skip(0); err != nil {
				return Version{}, err
			}
			continue
		}
		if seen&bit != 0 {
			return Version{}, fmt.Errorf("%w: field %q repeated", ErrMalformed, k)
		}
		seen |= bit
		if *dst, err = r.uint(); err != nil {
			return Version{}, err
		}
	}
	return v, nil
}

func (r *reader) delta(lim Limits) (Delta, error) {
	n, err := r.mapLen()
	if err != nil {
		return Delta{}, err
	}
	var d Delta
	var seen uint8
	entriesAt := -1 // entries are decoded last: their default epoch is Have's
	for range n {
		k, err := r.str()
		if err != nil {
			return Delta{}, err
		}
		var bit uint8
		switch string(k) {
		case "n":
			bit = 1
		case "s":
			bit = 2
		case "h":
			bit = 4
		case "f":
			bit = 8
		case "x":
			bit = 16
		default:
			if err := r.skip(0); err != nil {
				return Delta{}, err
			}
			continue
		}
		if seen&bit != 0 {
			return Delta{}, fmt.Errorf("%w: field %q repeated", ErrMalformed, k)
		}
		seen |= bit
		switch bit {
		case 1:
			name, err := r.str()
			if err != nil {
				return Delta{}, err
			}
			if len(name) > lim.MaxNameBytes {
				return Delta{}, fmt.Errorf("%w: %d bytes, max %d", ErrNameTooLong, len(name), lim.MaxNameBytes)
			}
			d.Node = string(name)
		case 2:
			d.Since, err = r.version()
		case 4:
			d.Have, err = r.version()
		case 8:
			d.Floor, err = r.version()
		case 16:
			entriesAt = r.off
			err = r.skip(0)
		}
		if err != nil {
			return Delta{}, err
		}
	}
	if entriesAt >= 0 {
		end := r.off
		r.off = entriesAt
		if d.Entries, err = r.entries(lim, d.Have.Epoch); err != nil {
			return Delta{}, err
		}
		r.off = end
	}
	if err := d.validate(lim); err != nil {
		return Delta{}, err
	}
	return d, nil
}

func (r *reader) entries(lim Limits, epoch uint64) ([]Entry, error) {
	n, err := r.arrayLen()
	if err != nil {
		return nil, err
	}
	if n > lim.maxEntries() {
		return nil, fmt.Errorf("%w: %d entries, max %d", ErrMapTooLarge, n, lim.maxEntries())
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]Entry, n)
	for i := range out {
		if out[i], err = r.entry(lim, epoch); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r *reader) entry(lim Limits, epoch uint64) (Entry, error) {
	n, err := r.mapLen()
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Version: Version{Epoch: epoch}}
	var seen uint8
	for range n {
		k, err := r.str()
		if err != nil {
			return Entry{}, err
		}
		var bit uint8
		switch string(k) {
		case "k":
			bit = 1
		case "v":
			bit = 2
		case "c":
			bit = 4
		case "e":
			bit = 8
		case "d":
			bit = 16
		default:
			if err := r.skip(0); err != nil {
				return Entry{}, err
			}
			continue
		}
		if seen&bit != 0 {
			return Entry{}, fmt.Errorf("%w: field %q repeated", ErrMalformed, k)
		}
		seen |= bit
		switch bit {
		case 1:
			key, err := r.str()
			if err != nil {
				return Entry{}, err
			}
			if len(key) > lim.MaxKeyBytes {
				return Entry{}, fmt.Errorf("%w: %d bytes, max %d", ErrKeyTooLong, len(key), lim.MaxKeyBytes)
			}
			e.Key = string(key)
		case 2:
			v, err := r.bin()
			if err != nil {
				return Entry{}, err
			}
			if len(v) > lim.MaxValueBytes {
				return Entry{}, fmt.Errorf("%w: %d bytes, max %d", ErrValueTooLarge, len(v), lim.MaxValueBytes)
			}
			e.Value = append([]byte(nil), v...)
		case 4:
			e.Version.Counter, err = r.uint()
		case 8:
			e.Version.Epoch, err = r.uint()
		case 16:
			e.Deleted, err = r.bool()
		}
		if err != nil {
			return Entry{}, err
		}
	}
	if seen&1 == 0 {
		return Entry{}, fmt.Errorf("%w: entry without a key", ErrMalformed)
	}
	return e, nil
}

func appendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
}

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 1<<8:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func appendBin(b []byte, v []byte) []byte {
	switch n := len(v); {
	case n < 1<<8:
		b = append(b, 0xc4, byte(n))
	case n < 1<<16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, v...)
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v < 1<<8:
		return append(b, 0xcc, byte(v))
	case v < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v < 1<<32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}
