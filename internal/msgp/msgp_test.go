package msgp

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"
)

// Shapes a value has once read by value(), the reference decoder the tests hold
// the Reader's methods to.
type (
	pair     struct{ k, v any }
	nilValue struct{}
	str      string // a str, told apart from a bin
	raw      []byte // a value with no typed read: negative integer, ext, non-finite float
)

// value reads one value of any type, dispatching on its first byte to the typed
// method a decoder would call. Skip must agree with it on every input: the same
// values accepted, the same bytes consumed.
func value(r *Reader, depth int) (any, error) {
	if depth > MaxDepth {
		return nil, errTooDeep
	}
	if r.Remaining() == 0 {
		return nil, ErrTruncated
	}
	start := r.i
	opaque := func() (any, error) {
		r.i = start
		b, err := r.Raw()
		return raw(b), err
	}
	switch c := r.b[r.i]; {
	case r.Nil():
		return nilValue{}, nil
	case c&0xf0 == 0x80 || c == 0xde || c == 0xdf:
		n, err := r.MapLen()
		if err != nil {
			return nil, err
		}
		m := []pair{}
		for range n {
			k, err := value(r, depth+1)
			if err != nil {
				return nil, err
			}
			v, err := value(r, depth+1)
			if err != nil {
				return nil, err
			}
			m = append(m, pair{k, v})
		}
		return m, nil
	case c&0xf0 == 0x90 || c == 0xdc || c == 0xdd:
		n, err := r.ArrayLen()
		if err != nil {
			return nil, err
		}
		a := []any{}
		for range n {
			v, err := value(r, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case strLen(c):
		s, err := r.Str()
		return str(s), err
	case c >= 0xc4 && c <= 0xc6:
		b, err := r.Bin()
		return bytes.Clone(b), err
	case c == 0xc2 || c == 0xc3:
		return r.Bool()
	case c == 0xca || c == 0xcb:
		f, err := r.Float64()
		if errors.Is(err, errNotFinite) {
			return opaque()
		}
		return f, err
	case c < 0x80 || c >= 0xcc && c <= 0xd3:
		v, err := r.Uint()
		if errors.Is(err, errNegative) {
			return opaque()
		}
		return v, err
	}
	return opaque() // negative fixint, ext, 0xc1
}

func strLen(c byte) bool { return c&0xe0 == 0xa0 || c >= 0xd9 && c <= 0xdb }

// appendValue writes what value() read, in the writer's shortest forms.
func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nilValue:
		return AppendNil(b)
	case []pair:
		b = AppendMapHeader(b, len(v))
		for _, p := range v {
			b = appendValue(appendValue(b, p.k), p.v)
		}
		return b
	case []any:
		b = AppendArrayHeader(b, len(v))
		for _, e := range v {
			b = appendValue(b, e)
		}
		return b
	case str:
		return AppendStr(b, string(v))
	case []byte:
		return AppendBin(b, v)
	case bool:
		return AppendBool(b, v)
	case float64:
		return AppendFloat64(b, v)
	case uint64:
		return AppendUint(b, v)
	case raw:
		return append(b, v...)
	}
	panic("unexpected value")
}

// fataler is what checkAgreement needs of *testing.T and *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

// checkAgreement holds Skip, Raw and value() to one answer on data, under rule.
func checkAgreement(t fataler, data []byte, rule NilRule) (any, int, error) {
	r := NewReader(data, rule)
	v, err := value(&r, 0)
	used := r.i
	s := NewReader(data, rule)
	serr := s.Skip()
	if (err == nil) != (serr == nil) || err == nil && s.i != used {
		t.Fatalf("% x: typed reads say (%d bytes, %v), Skip says (%d bytes, %v)", data, used, err, s.i, serr)
	}
	if err != nil {
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("% x: error %v is neither ErrTruncated nor ErrMalformed", data, err)
		}
		return nil, 0, err
	}
	rr := NewReader(data, rule)
	if b, err := rr.Raw(); err != nil || !bytes.Equal(b, data[:used]) {
		t.Fatalf("% x: Raw returned % x, %v; want the %d bytes Skip passed", data, b, err, used)
	}
	return v, used, nil
}

// FuzzReader is the fuzz target of the one msgpack parser behind wire and crdt:
// no input panics it; Skip and the typed reads agree; what is read re-encodes to
// bytes that read the same; the strict rule accepts nothing the lenient one
// refuses; and a generic library (vmihailenco/msgpack) skips what we skip, the
// same bytes.
func FuzzReader(f *testing.F) {
	for _, s := range [][]byte{
		{0x80}, {0xc0}, {0xc1}, {0x91, 0xc0}, {0xa1, 'a'}, {0xc4, 0x01, 0x00},
		{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'q'}, {0xdd, 0xff, 0xff, 0xff, 0xff, 0x80},
		{0xdb, 0x40, 0, 0, 0}, {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, {0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0},
		{0xc7, 0x01, 0x05, 0x00}, {0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		append(bytes.Repeat([]byte{0x91}, MaxDepth+1), 0xc0),
		mustMarshal(f, map[string]any{"a": []any{1.5, "x", nil, []byte{1}, map[string]any{"y": -7}}, "b": uint64(1) << 40}),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lv, used, lerr := checkAgreement(t, data, NilIsZero)
		sv, _, serr := checkAgreement(t, data, NilRefused)
		if serr == nil && (lerr != nil || !reflect.DeepEqual(sv, lv)) {
			t.Fatalf("% x: NilRefused reads %v, NilIsZero %v, %v", data, sv, lv, lerr)
		}

		lib := msgpack.NewDecoder(bytes.NewReader(data))
		libRest := bytes.NewReader(data)
		lib.Reset(libRest)
		libErr := lib.Skip()
		libUsed := len(data) - libRest.Len()
		switch {
		case lerr == nil && (libErr != nil || libUsed != used):
			t.Fatalf("% x: we skip %d bytes, the library %d (%v)", data, used, libUsed, libErr)
		case lerr != nil && libErr == nil && !errors.Is(lerr, errTooDeep):
			t.Fatalf("% x: the library skips %d bytes, we refuse: %v", data, libUsed, lerr)
		}
		if lerr != nil {
			return
		}

		again := appendValue(nil, lv)
		r := NewReader(again, NilIsZero)
		v2, err := value(&r, 0)
		if err != nil || r.Remaining() != 0 || !reflect.DeepEqual(v2, lv) {
			t.Fatalf("% x re-encoded as % x reads %v, %v", data, again, v2, err)
		}
	})
}

func mustMarshal(t testing.TB, v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every refusal the two codecs this one replaces made (wire's and crdt's), under
// both rules unless the case says.
func TestRefusals(t *testing.T) {
	read := map[string]func(r *Reader) error{
		"MapLen":   func(r *Reader) error { _, err := r.MapLen(); return err },
		"ArrayLen": func(r *Reader) error { _, err := r.ArrayLen(); return err },
		"Key":      func(r *Reader) error { _, err := r.Key(); return err },
		"Str":      func(r *Reader) error { _, err := r.Str(); return err },
		"Bin":      func(r *Reader) error { _, err := r.Bin(); return err },
		"Bytes":    func(r *Reader) error { _, err := r.Bytes(); return err },
		"Uint":     func(r *Reader) error { _, err := r.Uint(); return err },
		"Uint8":    func(r *Reader) error { _, err := r.UintMax(math.MaxUint8); return err },
		"Bool":     func(r *Reader) error { _, err := r.Bool(); return err },
		"Float64":  func(r *Reader) error { _, err := r.Float64(); return err },
		"Skip":     func(r *Reader) error { return r.Skip() },
	}
	const both, strict = 0, 1
	deep := append(bytes.Repeat([]byte{0x91}, MaxDepth+1), 0xc0)
	cases := []struct {
		name, read string
		in         []byte
		rules      int
		want       error
	}{
		{"empty input", "MapLen", nil, both, ErrTruncated},
		{"map as array", "MapLen", []byte{0x91, 0x01}, both, ErrMalformed},
		{"map claims 4G entries", "MapLen", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'q'}, both, ErrTruncated},
		{"map16 header cut", "MapLen", []byte{0xde, 0x00}, both, ErrTruncated},
		{"map of 2 entries in 2 bytes", "MapLen", []byte{0xde, 0x00, 0x02, 0xa1, 'q'}, both, ErrTruncated},
		{"array of 3 elements in 2 bytes", "ArrayLen", []byte{0xdc, 0x00, 0x03, 0x01, 0x01}, both, ErrTruncated},
		{"nil map", "MapLen", []byte{0xc0}, strict, ErrMalformed},
		{"array as map", "ArrayLen", []byte{0x80}, both, ErrMalformed},
		{"array claims 4G elements", "ArrayLen", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x80}, both, ErrTruncated},
		{"nil array", "ArrayLen", []byte{0xc0}, strict, ErrMalformed},
		{"integer key", "Key", []byte{0x01}, both, ErrMalformed},
		{"bin key", "Key", []byte{0xc4, 0x01, 'k'}, both, ErrMalformed},
		{"nil key", "Key", []byte{0xc0}, both, ErrMalformed},
		{"str claims 1 GiB", "Str", []byte{0xdb, 0x40, 0, 0, 0}, both, ErrTruncated},
		{"bin as str", "Str", []byte{0xc4, 0x01, 'k'}, both, ErrMalformed},
		{"nil str", "Str", []byte{0xc0}, strict, ErrMalformed},
		{"str as bin", "Bin", []byte{0xa1, 'v'}, both, ErrMalformed},
		{"bin claims 4 GiB", "Bin", []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, both, ErrTruncated},
		{"nil bin", "Bin", []byte{0xc0}, strict, ErrMalformed},
		{"integer as bytes", "Bytes", []byte{0x07}, both, ErrMalformed},
		{"nil bytes", "Bytes", []byte{0xc0}, strict, ErrMalformed},
		{"negative fixint", "Uint", []byte{0xff}, both, ErrMalformed},
		{"negative int8", "Uint", []byte{0xd0, 0x80}, both, ErrMalformed},
		{"negative int64", "Uint", []byte{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, both, ErrMalformed},
		{"uint64 cut", "Uint", []byte{0xcf, 0, 0, 0}, both, ErrTruncated},
		{"float as integer", "Uint", []byte{0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, both, ErrMalformed},
		{"nil integer", "Uint", []byte{0xc0}, strict, ErrMalformed},
		{"integer above max", "Uint8", []byte{0xcd, 0x01, 0x00}, both, ErrMalformed},
		{"integer as bool", "Bool", []byte{0x01}, both, ErrMalformed},
		{"nil bool", "Bool", []byte{0xc0}, strict, ErrMalformed},
		{"NaN", "Float64", []byte{0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1}, both, ErrMalformed},
		{"infinity as float 32", "Float64", []byte{0xca, 0x7f, 0x80, 0, 0}, both, ErrMalformed},
		{"negative integer as float", "Float64", []byte{0xff}, both, ErrMalformed},
		{"reserved 0xc1", "Skip", []byte{0xc1}, both, ErrMalformed},
		{"nesting too deep", "Skip", deep, both, ErrMalformed},
		{"skipped map claims 4G entries", "Skip", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'q'}, both, ErrTruncated},
		{"skipped ext cut", "Skip", []byte{0xc7, 0x05, 0x01, 0x00}, both, ErrTruncated},
	}
	for _, c := range cases {
		rules := []NilRule{NilRefused, NilIsZero}
		if c.rules == strict {
			rules = rules[:1]
		}
		for _, rule := range rules {
			r := NewReader(c.in, rule)
			if err := read[c.read](&r); !errors.Is(err, c.want) {
				t.Errorf("%s (%s, NilIsZero=%v): %v, want %v", c.name, c.read, rule, err, c.want)
			}
		}
	}
}

// Under NilIsZero a nil is a missing field (PROTOCOL.md 3.3): it reads as
// the zero value of whatever is asked, and consumes its one byte.
func TestNilIsZero(t *testing.T) {
	for name, read := range map[string]func(r *Reader) (any, error){
		"MapLen":   func(r *Reader) (any, error) { return r.MapLen() },
		"ArrayLen": func(r *Reader) (any, error) { return r.ArrayLen() },
		"Str":      func(r *Reader) (any, error) { b, err := r.Str(); return len(b), err },
		"Bin":      func(r *Reader) (any, error) { b, err := r.Bin(); return len(b), err },
		"Bytes":    func(r *Reader) (any, error) { b, err := r.Bytes(); return len(b), err },
		"Uint":     func(r *Reader) (any, error) { v, err := r.Uint(); return int(v), err },
		"Bool":     func(r *Reader) (any, error) { return r.Bool() },
		"Float64":  func(r *Reader) (any, error) { f, err := r.Float64(); return int(f), err },
	} {
		r := NewReader([]byte{0xc0, 0x07}, NilIsZero)
		v, err := read(&r)
		if err != nil || !reflect.ValueOf(v).IsZero() || r.Remaining() != 1 {
			t.Errorf("%s of nil: %v, %v, %d bytes left", name, v, err, r.Remaining())
		}
	}
}

// The writer picks the shortest encoding at every boundary, and a generic library
// reads each back as the value written.
func TestWriterBoundaries(t *testing.T) {
	for _, v := range []uint64{0, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64} {
		b := AppendUint(nil, v)
		want := map[bool]int{v < 128: 1}[true]
		switch {
		case v >= 128 && v <= math.MaxUint8:
			want = 2
		case v > math.MaxUint8 && v <= math.MaxUint16:
			want = 3
		case v > math.MaxUint16 && v <= math.MaxUint32:
			want = 5
		case v > math.MaxUint32:
			want = 9
		}
		var got uint64
		if err := msgpack.Unmarshal(b, &got); err != nil || got != v || len(b) != want {
			t.Errorf("AppendUint(%d) = % x (%d bytes, want %d): library reads %d, %v", v, b, len(b), want, got, err)
		}
	}
	for _, n := range []int{0, 15, 16, 31, 32, 255, 256, 65535, 65536} {
		s := strings.Repeat("s", n)
		var gotS string
		if err := msgpack.Unmarshal(AppendStr(nil, s), &gotS); err != nil || gotS != s {
			t.Errorf("AppendStr of %d bytes: %v", n, err)
		}
		var gotB []byte
		if err := msgpack.Unmarshal(AppendBin(nil, []byte(s)), &gotB); err != nil || string(gotB) != s {
			t.Errorf("AppendBin of %d bytes: %v", n, err)
		}
		var gotA []any
		arr := AppendArrayHeader(nil, n)
		for range n {
			arr = AppendNil(arr)
		}
		if err := msgpack.Unmarshal(arr, &gotA); err != nil || len(gotA) != n {
			t.Errorf("AppendArrayHeader(%d): %d elements, %v", n, len(gotA), err)
		}
		var gotM map[string]bool
		m := AppendMapHeader(nil, n)
		for i := range n {
			m = AppendBool(AppendStr(m, strconv.Itoa(i)), i%2 == 0)
		}
		if err := msgpack.Unmarshal(m, &gotM); err != nil || len(gotM) != n {
			t.Errorf("AppendMapHeader(%d): %d entries, %v", n, len(gotM), err)
		}
	}
	var f float64
	if err := msgpack.Unmarshal(AppendFloat64(nil, 1.25), &f); err != nil || f != 1.25 {
		t.Errorf("AppendFloat64(1.25): %v, %v", f, err)
	}
}

// What a generic library writes, with or without compact integers, compact floats
// and sorted keys, we read as the library itself does.
func TestPropLibraryValuesRead(t *testing.T) {
	leaf := rapid.OneOf(
		rapid.Map(rapid.Uint64(), func(v uint64) any { return v }),
		rapid.Map(rapid.Int64Max(-1), func(v int64) any { return v }),
		rapid.Map(rapid.String(), func(s string) any { return s }),
		rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) any { return b }),
		rapid.Map(rapid.Bool(), func(b bool) any { return b }),
		rapid.Map(rapid.Float64().Filter(func(f float64) bool { return !math.IsNaN(f) }), func(f float64) any { return f }),
		rapid.Just[any](nil),
	)
	var tree func(depth int) *rapid.Generator[any]
	tree = func(depth int) *rapid.Generator[any] {
		if depth == 0 {
			return leaf
		}
		return rapid.OneOf(leaf,
			rapid.Map(rapid.SliceOfN(tree(depth-1), 0, 5), func(a []any) any { return a }),
			rapid.Map(rapid.MapOfN(rapid.String(), tree(depth-1), 0, 5), func(m map[string]any) any { return m }),
		)
	}
	rapid.Check(t, func(t *rapid.T) {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.SetSortMapKeys(rapid.Bool().Draw(t, "sorted"))
		enc.UseCompactInts(rapid.Bool().Draw(t, "compactInts"))
		enc.UseCompactFloats(rapid.Bool().Draw(t, "compactFloats"))
		if err := enc.Encode(tree(3).Draw(t, "v")); err != nil {
			t.Fatal(err)
		}
		got, used, err := checkAgreement(t, buf.Bytes(), NilRefused)
		if err != nil || used != buf.Len() {
			t.Fatalf("% x: %v after %d of %d bytes", buf.Bytes(), err, used, buf.Len())
		}
		var lib any
		if err := msgpack.Unmarshal(buf.Bytes(), &lib); err != nil {
			t.Fatal(err)
		}
		if g, w := normalize(t, got), normalize(t, lib); !reflect.DeepEqual(g, w) {
			t.Fatalf("% x\n we read      %#v\n library reads %#v", buf.Bytes(), g, w)
		}
	})
}

// normalize brings what value() and the library read to one shape: integers as
// uint64 or (negative) int64, floats as float64, maps keyed by string.
func normalize(t *rapid.T, v any) any {
	switch v := v.(type) {
	case nilValue:
		return nil
	case str:
		return string(v)
	case raw:
		var lib any
		if err := msgpack.Unmarshal(v, &lib); err != nil {
			t.Fatal(err)
		}
		return normalize(t, lib)
	case []pair:
		m := map[string]any{}
		for _, p := range v {
			m[normalize(t, p.k).(string)] = normalize(t, p.v)
		}
		return m
	case map[string]any:
		m := map[string]any{}
		for k, e := range v {
			m[k] = normalize(t, e)
		}
		return m
	case []any:
		out := []any{}
		for _, e := range v {
			out = append(out, normalize(t, e))
		}
		return out
	case float32:
		return float64(v)
	case int8, int16, int32, int64:
		if i := reflect.ValueOf(v).Int(); i < 0 {
			return i
		} else {
			return uint64(i)
		}
	case uint8, uint16, uint32, uint64:
		return reflect.ValueOf(v).Uint()
	}
	return v
}

// Reading, skipping and refusing allocate nothing: wire decodes every packet, and a
// flood of hostile ones must cost no garbage.
func TestReadsAllocateNothing(t *testing.T) {
	var b []byte
	b = AppendMapHeader(b, 7)
	b = AppendUint(AppendStr(b, "u"), math.MaxUint64)
	b = AppendStr(AppendStr(b, "s"), "a string")
	b = AppendBin(AppendStr(b, "b"), []byte{1, 2, 3})
	b = AppendBool(AppendStr(b, "t"), true)
	b = AppendFloat64(AppendStr(b, "f"), 0.5)
	b = AppendNil(AppendStr(b, "z"))
	b = AppendArrayHeader(AppendStr(b, "a"), 2)
	b = AppendMapHeader(AppendUint(b, 1), 0)
	minus128 := []byte{0xd0, 0x80}
	hostile := [][]byte{{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1}, {0xc1}, append(bytes.Repeat([]byte{0x91}, MaxDepth+1), 0xc0)}
	allocs := testing.AllocsPerRun(100, func() {
		r := NewReader(b, NilIsZero)
		n, _ := r.MapLen()
		err := r.EachKey(n, func(k []byte) (err error) {
			switch k[0] {
			case 'u':
				_, err = r.Uint()
			case 's':
				_, err = r.Str()
			case 'b':
				_, err = r.Bytes()
			case 't':
				_, err = r.Bool()
			case 'f':
				_, err = r.Float64()
			case 'z':
				_, err = r.Bin()
			default:
				err = r.Skip()
			}
			return err
		})
		if err != nil || r.Remaining() != 0 {
			t.Fatalf("%v, %d bytes left", err, r.Remaining())
		}
		for _, h := range hostile {
			r := NewReader(h, NilRefused)
			if r.Skip() == nil {
				t.Fatalf("% x skipped", h)
			}
		}
		neg := NewReader(minus128, NilRefused)
		if _, err := neg.Uint(); err == nil {
			t.Fatal("-128 read as an unsigned integer")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
}
