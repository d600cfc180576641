package crdt

import (
	"errors"
	"fmt"
	"strings"

	"github.com/omnirelay/mesh/internal/msgp"
)

// The encoding is MessagePack restricted to maps with short string field names,
// unsigned integers, strings, binaries, booleans and arrays, so any MessagePack
// library can read it (PROTOCOL.md section 13 is the schema); internal/msgp, the codec
// wire uses too, reads and writes it, refusing nil. Fields at their zero value
// are left out; a decoder skips fields it does not know, which is how a later
// version adds one. Decoding checks every length against the input left and the
// Limits before allocating, and reports failures as ErrMalformed, ErrTruncated or a
// limit error (ErrKeyTooLong, ErrValueTooLarge, ErrMapTooLarge, ErrTooManyNodes,
// ErrNameTooLong).
//
//	Delta    {"n": node (str), "s": Since, "h": Have, "f": Floor, "x": [Entry],
//	          "g": head signature (bin)}
//	Version  {"e": epoch (uint), "c": counter (uint)}
//	Entry    {"k": key (str), "v": value (bin), "c": counter (uint),
//	          "e": epoch (uint, omitted when equal to Have's), "d": deleted (true),
//	          "g": signature (bin)}
//	Snapshot {"m": [Delta]}

// AppendDelta appends the encoding of d to dst.
func AppendDelta(dst []byte, d Delta) []byte {
	n := 0
	for _, present := range []bool{d.Node != "", !d.Since.IsZero(), !d.Have.IsZero(), !d.Floor.IsZero(), len(d.Entries) > 0, len(d.Head) > 0} {
		if present {
			n++
		}
	}
	dst = msgp.AppendMapHeader(dst, n)
	if d.Node != "" {
		dst = msgp.AppendStr(msgp.AppendStr(dst, "n"), d.Node)
	}
	for _, f := range []struct {
		name string
		v    Version
	}{{"s", d.Since}, {"h", d.Have}, {"f", d.Floor}} {
		if !f.v.IsZero() {
			dst = appendVersion(msgp.AppendStr(dst, f.name), f.v)
		}
	}
	if len(d.Entries) > 0 {
		dst = msgp.AppendArrayHeader(msgp.AppendStr(dst, "x"), len(d.Entries))
		for i := range d.Entries {
			dst = appendEntry(dst, &d.Entries[i], d.Have.Epoch)
		}
	}
	if len(d.Head) > 0 {
		dst = msgp.AppendBin(msgp.AppendStr(dst, "g"), d.Head)
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
	dst = msgp.AppendMapHeader(dst, n)
	if v.Epoch != 0 {
		dst = msgp.AppendUint(msgp.AppendStr(dst, "e"), v.Epoch)
	}
	if v.Counter != 0 {
		dst = msgp.AppendUint(msgp.AppendStr(dst, "c"), v.Counter)
	}
	return dst
}

func appendEntry(dst []byte, e *Entry, epoch uint64) []byte {
	hasValue := !e.Deleted && len(e.Value) > 0
	n := 1
	for _, present := range []bool{hasValue, e.Version.Counter != 0, e.Version.Epoch != epoch, e.Deleted, len(e.Sig) > 0} {
		if present {
			n++
		}
	}
	dst = msgp.AppendStr(msgp.AppendStr(msgp.AppendMapHeader(dst, n), "k"), e.Key)
	if hasValue {
		dst = msgp.AppendBin(msgp.AppendStr(dst, "v"), e.Value)
	}
	if e.Version.Counter != 0 {
		dst = msgp.AppendUint(msgp.AppendStr(dst, "c"), e.Version.Counter)
	}
	if e.Version.Epoch != epoch {
		dst = msgp.AppendUint(msgp.AppendStr(dst, "e"), e.Version.Epoch)
	}
	if e.Deleted {
		dst = msgp.AppendBool(msgp.AppendStr(dst, "d"), true)
	}
	if len(e.Sig) > 0 {
		dst = msgp.AppendBin(msgp.AppendStr(dst, "g"), e.Sig)
	}
	return dst
}

// decodeSig reads a signature field (bin, at most MaxSigBytes) as a copy.
func decodeSig(r *msgp.Reader) ([]byte, error) {
	b, err := r.Bin()
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSigBytes {
		return nil, fmt.Errorf("%w: signature of %d bytes, max %d", ErrMalformed, len(b), MaxSigBytes)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return append([]byte(nil), b...), nil
}

// AppendSnapshot appends the encoding of s to dst.
func AppendSnapshot(dst []byte, s Snapshot) []byte {
	dst = msgp.AppendArrayHeader(msgp.AppendStr(msgp.AppendMapHeader(dst, 1), "m"), len(s.Maps))
	for i := range s.Maps {
		dst = AppendDelta(dst, s.Maps[i])
	}
	return dst
}

// DecodeDelta decodes one delta, checked against lim.
func DecodeDelta(b []byte, lim Limits) (Delta, error) {
	r := msgp.NewReader(b, msgp.NilRefused)
	d, err := decodeDelta(&r, lim)
	if err = done(&r, err); err != nil {
		return Delta{}, err
	}
	return d, nil
}

// DecodeSnapshot decodes a snapshot, checked against lim; its maps must be sorted
// by name, each once, as Snapshot makes them.
func DecodeSnapshot(b []byte, lim Limits) (Snapshot, error) {
	r := msgp.NewReader(b, msgp.NilRefused)
	s, err := decodeSnapshot(&r, lim)
	if err = done(&r, err); err != nil {
		return Snapshot{}, err
	}
	return s, nil
}

// done ends a decode that returned err: the codec's errors get this package's
// sentinels, and bytes left after the value are malformed. (A generic decodeAll
// taking the decoder as a func value would move the Reader to the heap.)
func done(r *msgp.Reader, err error) error {
	if err != nil {
		return codecErr(err)
	}
	if r.Remaining() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, r.Remaining())
	}
	return nil
}

// codecErr gives the codec's errors this package's sentinels, keeping what they
// say was refused.
func codecErr(err error) error {
	switch {
	case errors.Is(err, msgp.ErrTruncated):
		return fmt.Errorf("%w: %w", ErrTruncated, err)
	case errors.Is(err, msgp.ErrMalformed):
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return err
}

func decodeSnapshot(r *msgp.Reader, lim Limits) (Snapshot, error) {
	n, err := r.MapLen()
	if err != nil {
		return Snapshot{}, err
	}
	var s Snapshot
	seen := false
	for range n {
		k, err := r.Key()
		if err != nil {
			return Snapshot{}, err
		}
		if string(k) != "m" {
			if err := r.Skip(); err != nil {
				return Snapshot{}, err
			}
			continue
		}
		if seen {
			return Snapshot{}, fmt.Errorf("%w: field %q repeated", ErrMalformed, k)
		}
		seen = true
		cnt, err := r.ArrayLen()
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
			if s.Maps[i], err = decodeDelta(r, lim); err != nil {
				return Snapshot{}, err
			}
			if i > 0 && strings.Compare(s.Maps[i-1].Node, s.Maps[i].Node) >= 0 {
				return Snapshot{}, fmt.Errorf("%w: maps not sorted or repeated at %q", ErrMalformed, s.Maps[i].Node)
			}
		}
	}
	return s, nil
}

func decodeVersion(r *msgp.Reader) (Version, error) {
	n, err := r.MapLen()
	if err != nil {
		return Version{}, err
	}
	var v Version
	var seen uint8
	for range n {
		k, err := r.Key()
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
			if err := r.Skip(); err != nil {
				return Version{}, err
			}
			continue
		}
		if seen&bit != 0 {
			return Version{}, fmt.Errorf("%w: field %q repeated", ErrMalformed, k)
		}
		seen |= bit
		if *dst, err = r.Uint(); err != nil {
			return Version{}, err
		}
	}
	return v, nil
}

func decodeDelta(r *msgp.Reader, lim Limits) (Delta, error) {
	n, err := r.MapLen()
	if err != nil {
		return Delta{}, err
	}
	var d Delta
	var seen uint8
	var entries []byte // decoded last: their default epoch is Have's
	for range n {
		k, err := r.Key()
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
		case "g":
			bit = 32
		default:
			if err := r.Skip(); err != nil {
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
			name, err := r.Str()
			if err != nil {
				return Delta{}, err
			}
			if len(name) > lim.MaxNameBytes {
				return Delta{}, fmt.Errorf("%w: %d bytes, max %d", ErrNameTooLong, len(name), lim.MaxNameBytes)
			}
			d.Node = string(name)
		case 2:
			d.Since, err = decodeVersion(r)
		case 4:
			d.Have, err = decodeVersion(r)
		case 8:
			d.Floor, err = decodeVersion(r)
		case 16:
			entries, err = r.Raw()
		case 32:
			d.Head, err = decodeSig(r)
		}
		if err != nil {
			return Delta{}, err
		}
	}
	if entries != nil {
		er := msgp.NewReader(entries, msgp.NilRefused)
		if d.Entries, err = decodeEntries(&er, lim, d.Have.Epoch); err != nil {
			return Delta{}, err
		}
	}
	if err := d.validate(lim); err != nil {
		return Delta{}, err
	}
	return d, nil
}

func decodeEntries(r *msgp.Reader, lim Limits, epoch uint64) ([]Entry, error) {
	n, err := r.ArrayLen()
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
		if out[i], err = decodeEntry(r, lim, epoch); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeEntry(r *msgp.Reader, lim Limits, epoch uint64) (Entry, error) {
	n, err := r.MapLen()
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Version: Version{Epoch: epoch}}
	var seen uint8
	for range n {
		k, err := r.Key()
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
		case "g":
			bit = 32
		default:
			if err := r.Skip(); err != nil {
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
			key, err := r.Str()
			if err != nil {
				return Entry{}, err
			}
			if len(key) > lim.MaxKeyBytes {
				return Entry{}, fmt.Errorf("%w: %d bytes, max %d", ErrKeyTooLong, len(key), lim.MaxKeyBytes)
			}
			e.Key = string(key)
		case 2:
			v, err := r.Bin()
			if err != nil {
				return Entry{}, err
			}
			if len(v) > lim.MaxValueBytes {
				return Entry{}, fmt.Errorf("%w: %d bytes, max %d", ErrValueTooLarge, len(v), lim.MaxValueBytes)
			}
			e.Value = append([]byte(nil), v...)
		case 4:
			e.Version.Counter, err = r.Uint()
		case 8:
			e.Version.Epoch, err = r.Uint()
		case 16:
			e.Deleted, err = r.Bool()
		case 32:
			e.Sig, err = decodeSig(r)
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
