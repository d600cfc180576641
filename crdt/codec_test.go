package crdt

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"
)

func genDelta(t *rapid.T, label string) Delta {
	lim := DefaultLimits()
	d := Delta{
		Node:  rapid.SampledFrom([]string{Cluster, "n", "node-17", strings.Repeat("x", lim.MaxNameBytes)}).Draw(t, label+".node"),
		Since: Version{rapid.Uint64().Draw(t, "se"), rapid.Uint64().Draw(t, "sc")},
		Floor: Version{rapid.Uint64Range(0, 1<<40).Draw(t, "fe"), rapid.Uint64().Draw(t, "fc")},
	}
	d.Have = maxVersion(d.Floor, Version{rapid.Uint64().Draw(t, "he"), rapid.Uint64().Draw(t, "hc")})
	keys := rapid.SliceOfNDistinct(rapid.StringN(1, lim.MaxKeyBytes, lim.MaxKeyBytes), 0, 20, rapid.ID[string]).Draw(t, "keys")
	slicesSortStrings(keys)
	for _, k := range keys {
		e := Entry{Key: k, Deleted: rapid.Bool().Draw(t, "del")}
		if rapid.Bool().Draw(t, "sameEpoch") {
			e.Version = Version{d.Have.Epoch, rapid.Uint64().Draw(t, "c")}
		} else {
			e.Version = Version{rapid.Uint64().Draw(t, "e"), rapid.Uint64().Draw(t, "c")}
		}
		if !e.Deleted {
			if v := rapid.SliceOfN(rapid.Byte(), 0, lim.MaxValueBytes).Draw(t, "v"); len(v) > 0 {
				e.Value = v
			}
		}
		d.Entries = append(d.Entries, e)
	}
	return d
}

func slicesSortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestDeltaRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := genDelta(t, "d")
		b := AppendDelta(nil, d)
		got, err := DecodeDelta(b, DefaultLimits())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, d) {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, d)
		}
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s Snapshot
		for _, name := range []string{Cluster, "a", "b", "c"} {
			if rapid.Bool().Draw(t, "has") {
				d := genDelta(t, "m")
				d.Node = name
				s.Maps = append(s.Maps, d)
			}
		}
		got, err := DecodeSnapshot(AppendSnapshot(nil, s), DefaultLimits())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, s)
		}
	})
}

// Our bytes are standard MessagePack, and we read what a generic encoder writes:
// fields in another order, signed integers, wider encodings, unknown fields.
func TestMsgpackCompatibility(t *testing.T) {
	d := Delta{Node: "n1", Since: Version{2, 7}, Have: Version{2, 9}, Floor: Version{2, 0}, Entries: []Entry{
		{Key: "role", Value: []byte("voter"), Version: Version{2, 8}},
		{Key: "zone", Version: Version{1, 3}, Deleted: true},
	}}
	var generic map[string]any
	if err := msgpack.Unmarshal(AppendDelta(nil, d), &generic); err != nil {
		t.Fatal(err)
	}
	x := generic["x"].([]any)
	if generic["n"] != "n1" || len(x) != 2 || x[1].(map[string]any)["d"] != true || !bytes.Equal(x[0].(map[string]any)["v"].([]byte), []byte("voter")) {
		t.Fatalf("generic decoder sees %#v", generic)
	}

	foreign, err := msgpack.Marshal(map[string]any{
		"future": map[string]any{"nested": []any{1.5, "s", nil, []byte{1}, map[string]any{"k": int64(-3)}}},
		"x": []any{
			map[string]any{"v": []byte("voter"), "c": int64(8), "k": "role", "new": true},
			map[string]any{"d": true, "e": uint32(1), "c": int8(3), "k": "zone"},
		},
		"f": map[string]any{"e": int16(2)},
		"h": map[string]any{"c": uint64(9), "e": 2},
		"s": map[string]any{"e": 2, "c": 7},
		"n": "n1",
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDelta(foreign, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("from a generic encoder\n got %+v\nwant %+v", got, d)
	}
}

func TestDecodeErrors(t *testing.T) {
	lim := DefaultLimits()
	one := AppendDelta(nil, Delta{Node: "n", Have: Version{0, 1}, Entries: []Entry{{Key: "k", Value: []byte("v"), Version: Version{0, 1}}}})
	for i := range one {
		if _, err := DecodeDelta(one[:i], lim); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	entry := func(k string, v []byte) map[string]any {
		if v == nil {
			return map[string]any{"k": k}
		}
		return map[string]any{"k": k, "v": v}
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"not a map", enc([]any{1}), ErrMalformed},
		{"trailing bytes", append(bytes.Clone(one), 0xc0), ErrMalformed},
		{"node not a string", enc(map[string]any{"n": 7}), ErrMalformed},
		{"negative counter", enc(map[string]any{"h": map[string]any{"c": -1}}), ErrMalformed},
		{"counter as float", enc(map[string]any{"h": map[string]any{"c": 1.0}}), ErrMalformed},
		{"repeated field", []byte{0x82, 0xa1, 'n', 0xa1, 'a', 0xa1, 'n', 0xa1, 'b'}, ErrMalformed},
		{"entry without key", enc(map[string]any{"x": []any{map[string]any{"v": []byte("v")}}}), ErrMalformed},
		{"key too long", enc(map[string]any{"x": []any{entry(strings.Repeat("k", lim.MaxKeyBytes+1), nil)}}), ErrKeyTooLong},
		{"value too large", enc(map[string]any{"x": []any{entry("k", make([]byte, lim.MaxValueBytes+1))}}), ErrValueTooLarge},
		{"name too long", enc(map[string]any{"n": strings.Repeat("n", lim.MaxNameBytes+1)}), ErrNameTooLong},
		{"value as string", enc(map[string]any{"x": []any{map[string]any{"k": "k", "v": "str"}}}), ErrMalformed},
		{"unsorted keys", enc(map[string]any{"x": []any{entry("b", nil), entry("a", nil)}}), ErrMalformed},
		{"floor above have", enc(map[string]any{"f": map[string]any{"c": 2}, "h": map[string]any{"c": 1}}), ErrMalformed},
		{"tombstone with value", enc(map[string]any{"x": []any{map[string]any{"k": "k", "v": []byte("v"), "d": true}}}), ErrMalformed},
		{"array longer than input", []byte{0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff}, ErrTruncated},
		{"map longer than input", []byte{0xdf, 0x7f, 0xff, 0xff, 0xff}, ErrTruncated},
		{"string longer than input", []byte{0x81, 0xa1, 'n', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'}, ErrTruncated},
		{"unknown field nested too deep", append([]byte{0x81, 0xa1, 'z'}, append(bytes.Repeat([]byte{0x91}, 40), 0xc0)...), ErrMalformed},
		{"reserved type 0xc1", []byte{0x81, 0xa1, 'z', 0xc1}, ErrMalformed},
		// PROTOCOL.md section 13, where it is stricter than the membership bodies.
		{"nil for a known field", []byte{0x81, 0xa1, 'n', 0xc0}, ErrMalformed},
		{"a key that is not a str", []byte{0x81, 0x01, 0x01}, ErrMalformed},
		{"deleted not a bool", enc(map[string]any{"x": []any{map[string]any{"k": "k", "d": 1}}}), ErrMalformed},
		{"empty key", enc(map[string]any{"x": []any{entry("", nil)}}), ErrEmptyKey},
	}
	for _, tt := range tests {
		if _, err := DecodeDelta(tt.in, lim); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}

	small := lim
	small.MaxMapBytes = lim.MaxKeyBytes + lim.MaxValueBytes + EntryOverhead
	many := make([]any, small.maxEntries()+1)
	for i := range many {
		many[i] = entry(string(rune('a'+i%26))+strings.Repeat("z", i/26), nil)
	}
	if _, err := DecodeDelta(enc(map[string]any{"x": many}), small); !errors.Is(err, ErrMapTooLarge) {
		t.Errorf("too many entries: %v", err)
	}
	small.MaxNodes = 1
	if _, err := DecodeSnapshot(enc(map[string]any{"m": []any{map[string]any{}, map[string]any{"n": "a"}, map[string]any{"n": "b"}}}), small); !errors.Is(err, ErrTooManyNodes) {
		t.Errorf("too many maps: %v", err)
	}
	if _, err := DecodeSnapshot(enc(map[string]any{"m": []any{map[string]any{"n": "b"}, map[string]any{"n": "a"}}}), lim); !errors.Is(err, ErrMalformed) {
		t.Errorf("unsorted maps: %v", err)
	}
}

// A one-key update of the largest allowed key and value fits in a gossip packet.
func TestLargestOneKeyDeltaFitsAPacket(t *testing.T) {
	lim := DefaultLimits()
	s, _ := NewStore(strings.Repeat("n", 64), lim)
	d, err := s.Set(strings.Repeat("k", lim.MaxKeyBytes), make([]byte, lim.MaxValueBytes))
	if err != nil {
		t.Fatal(err)
	}
	d.Since, d.Have = Version{1 << 40, 1 << 40}, Version{1 << 40, 1<<40 + 1}
	if n := len(AppendDelta(nil, d)); n > 1300 {
		t.Fatalf("largest one-key delta is %d bytes", n)
	}
}

func fuzzSeeds(f *testing.F) {
	s, _ := NewStore("node-1", DefaultLimits())
	d1, _ := s.Set("zone", []byte("eu-west-1a"))
	d2, _ := s.Delete("zone")
	d3, _ := s.SetCluster(1, "shards", []byte("v1"))
	d4, _ := s.SetIncarnation(7)
	for _, d := range []Delta{d1, d2, d3, d4, {}} {
		f.Add(AppendDelta(nil, d))
	}
	f.Add(AppendSnapshot(nil, s.Snapshot()))
	signed := fuzzSignedStore()
	f.Add(AppendSnapshot(nil, signed.Snapshot()))
	d5, _ := signed.DeltaSince("node-2", Version{})
	f.Add(AppendDelta(nil, d5))
	f.Add([]byte{0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xc1})
}

// FuzzDecodeDelta: peer bytes never panic the decoder or the store, and whatever
// decodes re-encodes to something that decodes the same.
func FuzzDecodeDelta(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDelta(b, DefaultLimits())
		if err != nil {
			return
		}
		again, err := DecodeDelta(AppendDelta(nil, d), DefaultLimits())
		if err != nil || !reflect.DeepEqual(again, d) {
			t.Fatalf("re-encoding: %v\n got %+v\nwant %+v", err, again, d)
		}
		s, _ := NewStore("node-1", DefaultLimits())
		s.Apply(d)
		checkInvariants(t, s)
		signed := fuzzSignedStore()
		signed.Apply(d)
		checkInvariants(t, signed)
	})
}

// fuzzSignedStore is a store that checks signatures (the test authority, which
// knows node-1 and node-2, and the holder of epoch 3), with a signed map of
// node-2 and a signed cluster map, so fuzzed input meets every check.
func fuzzSignedStore() *Store {
	auth := func(self string) *simAuthority {
		return &simAuthority{self: self, known: map[string]bool{"node-1": true, "node-2": true}, holders: map[uint64]string{3: "node-2"}}
	}
	s, _ := NewStore("node-1", DefaultLimits())
	s.SetAuthority("", auth("node-1"))
	w, _ := NewStore("node-2", DefaultLimits())
	w.SetAuthority("", auth("node-2"))
	w.Set("zone", []byte("a"))
	w.Delete("zone")
	w.Set("grpc", []byte("b"))
	w.SetCluster(3, "lease.leader", []byte("node-2"))
	s.Merge(w.Snapshot())
	return s
}

// FuzzDecodeSnapshot: the same for push-pull payloads.
func FuzzDecodeSnapshot(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		sn, err := DecodeSnapshot(b, DefaultLimits())
		if err != nil {
			return
		}
		again, err := DecodeSnapshot(AppendSnapshot(nil, sn), DefaultLimits())
		if err != nil || !reflect.DeepEqual(again, sn) {
			t.Fatalf("re-encoding: %v", err)
		}
		s, _ := NewStore("node-1", DefaultLimits())
		s.Merge(sn)
		checkInvariants(t, s)
		signed := fuzzSignedStore()
		signed.Merge(sn)
		checkInvariants(t, signed)
	})
}

// Decoding a delta allocates its result only (the node name, the entries, each key
// and value): gossip decodes one per MetaDelta, so the decoder's own state stays on
// the stack.
func TestDecodeDeltaAllocatesOnlyItsResult(t *testing.T) {
	b := AppendDelta(nil, Delta{Node: "node-17", Since: Version{3, 41}, Have: Version{3, 42},
		Entries: []Entry{{Key: "zone", Value: []byte("eu-west-1a"), Version: Version{3, 42}}}})
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeDelta(b, DefaultLimits()); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 4 {
		t.Fatalf("%v allocations, want at most 4", allocs)
	}
}
