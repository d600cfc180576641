// Package wiretest holds what the tests of the protocol packages that own wire
// message types (lease, shard) share: the published message vectors under
// wire/testdata, checked in both directions, and the re-encoding check of their
// fuzz targets. Only tests import it.
package wiretest

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/wire"
)

// VectorJSON returns a renderer of messages (and the structs nested in them) keyed
// by the wire keys of keys, where a "Type.Field" entry overrides a plain field
// name: numbers as numbers (durations in nanoseconds), lists as arrays (shard lists
// and byte lists as arrays of numbers), a nil pointer as null.
func VectorJSON(keys map[string]string) func(reflect.Value) any {
	var render func(v reflect.Value) any
	value := func(f reflect.Value) any {
		switch f.Kind() {
		case reflect.Uint8, reflect.Uint32, reflect.Uint64:
			return f.Uint()
		case reflect.Int64: // time.Duration
			return f.Int()
		case reflect.Float64:
			return f.Float()
		case reflect.String:
			return f.String()
		case reflect.Struct, reflect.Pointer:
			return render(f)
		}
		panic("unhandled field kind " + f.Kind().String())
	}
	render = func(v reflect.Value) any {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return nil
			}
			v = v.Elem()
		}
		out := map[string]any{}
		for i := range v.NumField() {
			f, name := v.Field(i), v.Type().Field(i).Name
			key, ok := keys[v.Type().Name()+"."+name]
			if !ok {
				key = keys[name]
			}
			if f.Kind() != reflect.Slice {
				out[key] = value(f)
				continue
			}
			elems := []any{}
			for j := range f.Len() {
				elems = append(elems, value(f.Index(j)))
			}
			out[key] = elems
		}
		return out
	}
	return render
}

// messageVector is one entry of a messages.json: {type, name, body}.
type messageVector struct {
	Type wire.MsgType `json:"type"`
	Name string       `json:"name"`
	Body any          `json:"body"`
}

// PublishedFile is one published vector file: with rewrite it writes want to
// path first; the file must then hold exactly want. It returns the file.
func PublishedFile(t *testing.T, path string, want []byte, rewrite bool) []byte {
	t.Helper()
	if rewrite {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s differs from what the codec writes:\nwant %s\ngot  %s", path, want, got)
	}
	return got
}

// Vectors describes the message vectors of one protocol: dir/messages.hex (each
// message encoded, type, length and body, in hex, one per line) and
// dir/messages.json (its decoded form, keyed by wire keys).
type Vectors struct {
	Dir      string
	Messages []wire.Message
	Render   func(reflect.Value) any     // VectorJSON of the protocol's keys
	Name     func(m wire.Message) string // the message's name in PROTOCOL.md's tables
	Protocol wire.Protocol               // makes the messages the vectors decode into
	Rewrite  bool                        // regenerate the files from Messages
}

// Check checks the vectors in both directions: encoding Messages yields the files,
// and decoding the published bytes yields Messages.
func (v Vectors) Check(t *testing.T) {
	t.Helper()
	var hexLines []string
	var vecs []messageVector
	for _, m := range v.Messages {
		hexLines = append(hexLines, hex.EncodeToString(wire.AppendMessage(nil, m)))
		vecs = append(vecs, messageVector{Type: m.Type(), Name: v.Name(m), Body: v.Render(reflect.ValueOf(m))})
	}
	js, err := json.MarshalIndent(vecs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	PublishedFile(t, filepath.Join(v.Dir, "messages.json"), append(js, '\n'), v.Rewrite)
	published := PublishedFile(t, filepath.Join(v.Dir, "messages.hex"), []byte(strings.Join(hexLines, "\n")+"\n"), v.Rewrite)
	var d wire.Decoder
	for i, line := range strings.Fields(string(published)) {
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		typ, body := Split(t, b)
		got := v.Protocol.New(typ)
		if got == nil {
			t.Fatalf("%s vector %d: type %d unknown", v.Dir, i, typ)
		}
		if err := d.Decode(body, got); err != nil {
			t.Fatalf("%s vector %d: %v", v.Dir, i, err)
		}
		if !reflect.DeepEqual(v.Messages[i], got) {
			t.Fatalf("%s vector %d:\nwant %#v\ngot  %#v", v.Dir, i, v.Messages[i], got)
		}
	}
}

// TB is what the helpers need of a *testing.T, *testing.F or *rapid.T.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Split splits one encoded message, `type | uvarint length | body` (PROTOCOL.md
// 3.1), into its type and body; anything else fails t.
func Split(t TB, b []byte) (wire.MsgType, []byte) {
	t.Helper()
	if len(b) < 2 {
		t.Fatalf("message of %d bytes", len(b))
	}
	n, w := binary.Uvarint(b[1:])
	if w <= 0 || uint64(len(b)-1-w) != n {
		t.Fatalf("message % x: bad length", b)
	}
	return wire.MsgType(b[0]), b[1+w:]
}

// ReencodeStable checks that m, decoded from untrusted bytes, encodes to a body
// that p's message of the same type decodes to m again: a fuzz target's property.
func ReencodeStable(t *testing.T, d *wire.Decoder, p wire.Protocol, m wire.Message) {
	t.Helper()
	typ, body := Split(t, wire.AppendMessage(nil, m))
	again := p.New(typ)
	if err := d.Decode(body, again); err != nil {
		t.Fatalf("re-encoded %T does not decode: %v", m, err)
	}
	if !reflect.DeepEqual(m, again) {
		t.Fatalf("re-encoded %T decodes differently:\nwant %#v\ngot  %#v", m, m, again)
	}
}

// BenchBody encodes m's body and decodes it into out, b.N times: the cost of one
// body of a protocol package's codec, framing left out.
func BenchBody(b *testing.B, m, out wire.Body) {
	var d wire.Decoder
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = m.AppendBody(buf[:0])
		if err := d.Decode(buf, out); err != nil {
			b.Fatal(err)
		}
	}
}
