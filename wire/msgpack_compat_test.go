package wire

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"
)

// Our hand-written msgpack must be standard msgpack: what an outside implementer
// decodes with a generic library, and what such a library encodes, must agree with
// us. vmihailenco/msgpack stands in for "a generic library".

// nativeBody renders a message as the generic map a msgpack library should decode
// its body into: wire keys, uint64 numbers, strings, bools, []byte, []any of maps.
func nativeBody(v reflect.Value) map[string]any {
	out := map[string]any{}
	v = reflect.Indirect(v)
	for i := range v.NumField() {
		f, key := v.Field(i), wireKeys[v.Type().Field(i).Name]
		if optionalKeys[key] && f.Kind() == reflect.Slice && f.Len() == 0 {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			out[key] = f.String()
		case reflect.Bool:
			out[key] = f.Bool()
		case reflect.Uint8, reflect.Uint32, reflect.Uint64:
			if optionalKeys[key] && f.Uint() == 0 {
				continue // our sender leaves it out; a library's missing key reads as 0
			}
			out[key] = f.Uint()
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.Uint8 {
				out[key] = append([]byte{}, f.Bytes()...)
				continue
			}
			elems := []any{}
			for j := range f.Len() {
				switch e := f.Index(j); e.Kind() {
				case reflect.Uint64:
					elems = append(elems, e.Uint())
				case reflect.Slice:
					elems = append(elems, append([]byte{}, e.Bytes()...))
				default:
					elems = append(elems, nativeBody(e))
				}
			}
			out[key] = elems
		}
	}
	return out
}

// normalize turns a generically decoded value into nativeBody's shapes: every
// integer as uint64.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = normalize(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = normalize(e)
		}
		return v
	case int8, int16, int32, int64:
		return uint64(reflect.ValueOf(v).Int())
	case uint8, uint16, uint32, uint64:
		return reflect.ValueOf(v).Uint()
	}
	return v
}

func TestPropBodiesAreStandardMsgpack(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t, 2000)
		_, body, _, err := splitMessage(AppendMessage(nil, m))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		dec := msgpack.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("msgpack library cannot decode our body: %v", err)
		}
		want := nativeBody(reflect.ValueOf(m))
		if a, ok := m.(*Ack); ok && len(a.Payload) == 0 {
			delete(want, "p") // the one field our sender leaves out when empty
		}
		equal(t, want, normalize(got))
	})
}

func TestPropLibraryBodiesDecode(t *testing.T) {
	var d Decoder
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t, 2000)
		body := nativeBody(reflect.ValueOf(m))
		// What a newer peer might add: keys this build does not know, of any shape.
		body["zz"] = map[string]any{"deep": []any{1.5, "x", nil, []byte{1}, map[string]any{"y": -7}}}
		body["z9"] = int64(-1 << 40)
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.SetSortMapKeys(rapid.Bool().Draw(t, "sorted"))
		enc.UseCompactInts(rapid.Bool().Draw(t, "compact"))
		if err := enc.Encode(body); err != nil {
			t.Fatal(err)
		}
		got := newMembershipMessage(m.Type())
		if err := d.Decode(buf.Bytes(), got); err != nil {
			t.Fatalf("cannot decode the library's body % x: %v", buf.Bytes(), err)
		}
		equal(t, m, got)
	})
}
