package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Test vectors (PROTOCOL.md, "Test vectors"): wire/testdata/vectors/NAME.hex holds
// a packet or frame in hex, NAME.json its decoded form. TestVectors checks both
// directions from the files alone; `go test ./wire -run TestVectors -rewrite`
// regenerates the files from vectorDefs.

var rewrite = flag.Bool("rewrite", false, "regenerate wire/testdata/vectors from vectorDefs")

const vectorDir = "testdata/vectors"

// The published test key and sender ids of the sealed vectors (a packet sender's
// id has its top bit clear, a frame sender's set); each vector is its sender's
// first seal, counter 1. Never use them for real.
var (
	vectorKey         = mustHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	vectorPacketNonce = mustHex("20a1a2a3a4a5a6a700000001")
	vectorFrameNonce  = mustHex("a0a1a2a3a4a5a6a700000001")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// vectorFile is the JSON form of a vector.
type vectorFile struct {
	Description string `json:"description"`
	Kind        string `json:"kind"` // "packet" or "frame"
	// Header fields, of packets and of frame bodies.
	ClusterLabel string      `json:"cluster_label,omitempty"`
	ClusterHash  string      `json:"cluster_hash,omitempty"` // 8 hex digits, as in the header
	Version      uint8       `json:"version,omitempty"`
	Flags        uint8       `json:"flags"`
	KeyID        uint8       `json:"key_id"`
	Key          string      `json:"key,omitempty"`      // hex; sealed packets and frames
	Nonce        string      `json:"nonce,omitempty"`    // hex; sealed packets and frames
	Sender       string      `json:"sender,omitempty"`   // hex, the nonce's first 8 bytes: the sender id
	Counter      uint32      `json:"counter,omitempty"`  // the nonce's last 4 bytes: the sender's counter
	Plain        string      `json:"plain,omitempty"`    // hex of the packet or frame before sealing
	Checksum     string      `json:"checksum,omitempty"` // 8 hex digits, of the plain packet or frame
	Messages     []vectorMsg `json:"messages"`
}

// vectorMsg is one message: its type, name and body as a JSON object keyed by the
// wire keys (byte fields as hex strings), or the raw body of a type unknown here.
type vectorMsg struct {
	Type    MsgType        `json:"type"`
	Name    string         `json:"name,omitempty"`
	Body    map[string]any `json:"body,omitempty"`
	RawBody string         `json:"raw_body,omitempty"` // hex; types this build does not know
}

// wireKeys maps each message's Go fields to their wire keys: a second, independent
// statement of the key table in body.go and PROTOCOL.md.
var wireKeys = map[string]string{
	"Seq": "q", "Target": "t", "TargetAddr": "ta", "Source": "s", "SourceAddr": "sa",
	"WantNack": "wn", "Payload": "p", "Node": "n", "Addr": "a", "Incarnation": "i",
	"ProtoMin": "pn", "ProtoMax": "px", "From": "f", "Join": "j", "Nodes": "ns",
	"Meta": "m", "Hash": "h", "Members": "c", "Name": "n", "Status": "st",
	"Features": "ft", "LocalHealth": "lh", "Sig": "sg", "CertHave": "ch", "Certs": "cs",
}

// optionalKeys are written only when not zero or empty (PROTOCOL.md 3.4, 10.10): a
// vector leaves them out then, and a missing one reads as zero.
var optionalKeys = map[string]bool{"ft": true, "lh": true, "sg": true, "ch": true, "cs": true}

var msgNames = map[MsgType]string{
	TypePing: "ping", TypeIndirectPing: "indirect-ping", TypeAck: "ack", TypeNack: "nack",
	TypeAlive: "alive", TypeSuspect: "suspect", TypeDead: "dead", TypeLeave: "leave",
	TypePushPull: "push-pull", TypeUser: "user", TypeMetaDelta: "meta-delta", TypeDigest: "digest",
}

// toJSONBody renders a message struct as its wire-keyed JSON object.
func toJSONBody(v reflect.Value) map[string]any {
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
				continue
			}
			out[key] = json.Number(fmt.Sprint(f.Uint()))
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.Uint8 {
				out[key] = hex.EncodeToString(f.Bytes())
				continue
			}
			elems := []any{}
			for j := range f.Len() {
				switch e := f.Index(j); e.Kind() {
				case reflect.Uint64:
					elems = append(elems, json.Number(fmt.Sprint(e.Uint())))
				case reflect.Slice:
					elems = append(elems, hex.EncodeToString(e.Bytes()))
				default:
					elems = append(elems, toJSONBody(e))
				}
			}
			out[key] = elems
		default:
			panic("unhandled field kind " + f.Kind().String())
		}
	}
	return out
}

// fromJSONBody fills the struct v points to from its wire-keyed JSON object.
func fromJSONBody(t *testing.T, body map[string]any, v reflect.Value) {
	v = reflect.Indirect(v)
	for i := range v.NumField() {
		f, key := v.Field(i), wireKeys[v.Type().Field(i).Name]
		val, ok := body[key]
		if !ok && optionalKeys[key] {
			continue
		}
		if !ok {
			t.Fatalf("%s: key %q missing", v.Type().Name(), key)
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString(val.(string))
		case reflect.Bool:
			f.SetBool(val.(bool))
		case reflect.Uint8, reflect.Uint32, reflect.Uint64:
			var n uint64
			_, err := fmt.Sscan(string(val.(json.Number)), &n)
			noErr(t, err)
			f.SetUint(n)
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.Uint8 {
				if b := mustHex(val.(string)); len(b) > 0 {
					f.SetBytes(b)
				}
				continue
			}
			elems := val.([]any)
			if len(elems) == 0 {
				continue
			}
			s := reflect.MakeSlice(f.Type(), len(elems), len(elems))
			for j, e := range elems {
				switch el := s.Index(j); el.Kind() {
				case reflect.Uint64:
					var n uint64
					_, err := fmt.Sscan(string(e.(json.Number)), &n)
					noErr(t, err)
					el.SetUint(n)
				case reflect.Slice:
					el.SetBytes(mustHex(e.(string)))
				default:
					fromJSONBody(t, e.(map[string]any), el)
				}
			}
			f.Set(s)
		}
	}
}

func toVectorMsg(typ MsgType, m Message, raw []byte) vectorMsg {
	if m == nil {
		return vectorMsg{Type: typ, RawBody: hex.EncodeToString(raw)}
	}
	return vectorMsg{Type: typ, Name: msgNames[typ], Body: toJSONBody(reflect.ValueOf(m))}
}

// vectorDef is a vector's source of truth for -rewrite.
type vectorDef struct {
	name, description string
	frame             bool
	sealed            bool
	msgs              []Message
	unknown           [][]byte // encoded messages of unknown types, appended after msgs
}

func vectorDefs() []vectorDef {
	pp := &PushPull{Join: true, Nodes: []NodeState{
		{Name: "node-a", Addr: "10.0.0.1:7946", Incarnation: 3, Status: StatusAlive, ProtoMin: 1, ProtoMax: 1},
		{Name: "node-b", Addr: "10.0.0.2:7946", Incarnation: 9, Status: StatusSuspect, ProtoMin: 1, ProtoMax: 1},
	}, Meta: []byte{0x01, 0x02}}
	compound := []Message{
		&Ping{Seq: 42, Target: "node-b", Source: "node-a", SourceAddr: "10.0.0.1:7946"},
		&Alive{Node: "node-c", Addr: "10.0.0.3:7946", Incarnation: 5, ProtoMin: 1, ProtoMax: 1},
		&Suspect{Node: "node-d", Incarnation: 2, From: "node-a"},
	}
	return []vectorDef{
		{name: "ping", description: "plain packet holding one Ping",
			msgs: []Message{&Ping{Seq: 1, Target: "b", Source: "a", SourceAddr: "127.0.0.1:7946"}}},
		{name: "compound", description: "plain packet: Ping, then piggybacked Alive and Suspect",
			msgs: compound},
		{name: "all-types", description: "plain packet with one message of every membership type",
			msgs: []Message{
				&Ping{Seq: 1, Target: "b", Source: "a", SourceAddr: "127.0.0.1:7946"},
				&IndirectPing{Seq: 2, Target: "c", TargetAddr: "127.0.0.3:7946", Source: "a", SourceAddr: "127.0.0.1:7946", WantNack: true},
				&Ack{Seq: 3, Payload: []byte{0xca, 0xfe}},
				&Nack{Seq: 4},
				&Alive{Node: "a", Addr: "127.0.0.1:7946", Incarnation: 300, ProtoMin: 1, ProtoMax: 1},
				&Suspect{Node: "c", Incarnation: 70000, From: "a"},
				&Dead{Node: "c", Incarnation: 1 << 33, From: "b"},
				&Leave{Node: "d", Incarnation: 7},
				pp,
				&User{Payload: []byte("hello")},
				&MetaDelta{Payload: []byte{0x00}},
				&Digest{Hash: 0x0123456789abcdef, Members: 3},
			}},
		{name: "ack-digest", description: "plain packet: an Ack without payload (its empty p is left out), then the Digest a node echoes when the probe's Digest disagreed with its own",
			msgs: []Message{&Ack{Seq: 7}, &Digest{Hash: 0x9882d9b980acedab, Members: 2}}},
		{name: "features", description: "plain packet: an Alive advertising feature ack-health (ft 1), an Ack carrying local health 2 (lh), as a node with the feature on sends them",
			msgs: []Message{
				&Alive{Node: "node-e", Addr: "10.0.0.5:7946", Incarnation: 4, ProtoMin: 1, ProtoMax: 2, Features: FeatureAckHealth},
				&Ack{Seq: 8, LocalHealth: 2},
			}},
		{name: "unknown-type", description: "plain packet: Nack, a message of extension type 200 a receiver must skip, Nack",
			msgs:    []Message{&Nack{Seq: 1}},
			unknown: [][]byte{{200, 0x04, 0x81, 0xa1, 'x', 0x07}}},
		{name: "sealed-compound", description: "the compound packet sealed with the published test key and nonce",
			sealed: true, msgs: compound},
		{name: "frame-push-pull", description: "uncompressed stream frame holding a PushPull",
			frame: true, msgs: []Message{pp}},
		{name: "frame-sealed-push-pull", description: "the frame-push-pull frame sealed with the published test key and nonce",
			frame: true, sealed: true, msgs: []Message{pp}},
		{name: "signed-claims", description: "plain packet: an Alive and a Leave with their optional sg (PROTOCOL.md 10.10; the signature bytes are placeholders: this vector is about the encoding)",
			msgs: []Message{
				&Alive{Node: "node-c", Addr: "10.0.0.3:7946", Incarnation: 5, ProtoMin: 1, ProtoMax: 1, Sig: sigPlaceholder(0xa0)},
				&Leave{Node: "node-d", Incarnation: 7, Sig: sigPlaceholder(0xb0)},
			}},
		{name: "frame-push-pull-certs", description: "uncompressed stream frame: a PushPull with a signed record, the certificate hashes its sender holds (ch) and one carried chain (cs; placeholder bytes)",
			frame: true, msgs: []Message{&PushPull{Nodes: []NodeState{
				{Name: "node-a", Addr: "10.0.0.1:7946", Incarnation: 3, Status: StatusAlive, ProtoMin: 1, ProtoMax: 1, Sig: sigPlaceholder(0xc0)},
			}, CertHave: []uint64{0x0123456789abcdef, 7}, Certs: [][]byte{{0x30, 0x82, 0x01, 0x00}}}}},
	}
}

// sigPlaceholder is an 80-byte stand-in for a signature field: 8 bytes of key id,
// then 72 bytes counting up from first.
func sigPlaceholder(first byte) []byte {
	b := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	for i := range 72 {
		b = append(b, first+byte(i))
	}
	return b
}

const vectorLabel = "omnirelay-test"

// encodeVector builds the bytes of a vector from its JSON form.
func encodeVector(t *testing.T, v vectorFile) []byte {
	var msgs [][]byte
	for _, vm := range v.Messages {
		if vm.RawBody != "" {
			msgs = append(msgs, AppendRawMessage(nil, vm.Type, mustHex(vm.RawBody)))
			continue
		}
		m := newMembershipMessage(vm.Type)
		check(t, m != nil, "unknown type %d without raw_body", vm.Type)
		fromJSONBody(t, vm.Body, reflect.ValueOf(m))
		msgs = append(msgs, AppendMessage(nil, m))
	}
	var plain []byte
	if v.Kind == "frame" {
		check(t, len(msgs) == 1, "a frame holds one message")
		m := newMembershipMessage(v.Messages[0].Type)
		fromJSONBody(t, v.Messages[0].Body, reflect.ValueOf(m))
		f, err := EncodeFrame(m, ClusterHash(v.ClusterLabel))
		noErr(t, err)
		plain = f
	} else {
		p := NewPacker(DefaultMTU, ClusterHash(v.ClusterLabel))
		for _, m := range msgs {
			check(t, p.AddEncoded(m), "message does not fit")
		}
		plain = p.Bytes()
	}
	if v.Key == "" {
		return plain
	}
	k, err := NewKeyring(mustHex(v.Key))
	noErr(t, err)
	seal := Seal
	if v.Kind == "frame" {
		seal = SealFrame
	}
	// A fresh keyring's first seal reads its sender id (the nonce's first 8
	// bytes) from rand and uses counter 1.
	sealed, err := seal(k, plain, bytes.NewReader(mustHex(v.Nonce)))
	noErr(t, err)
	return sealed
}

// decodeVector decodes vector bytes into their JSON form.
func decodeVector(t *testing.T, data []byte, like vectorFile) vectorFile {
	var d Decoder
	out := vectorFile{Description: like.Description, Kind: like.Kind, Messages: []vectorMsg{}}
	hdr, open := data, Open
	if like.Kind == "frame" {
		hdr, open = data[4:], OpenFrame
	}
	h, err := parseHeader(hdr, DefaultVersions)
	noErr(t, err)
	out.Version, out.Flags, out.KeyID = h.Version, h.Flags, h.KeyID
	out.ClusterLabel = like.ClusterLabel
	out.ClusterHash = fmt.Sprintf("%08x", h.ClusterHash)
	equal(t, ClusterHash(like.ClusterLabel), h.ClusterHash)
	if h.Flags&FlagSealed != 0 {
		k, err := NewKeyring(mustHex(like.Key))
		noErr(t, err)
		data, err = open(k, data)
		noErr(t, err)
		nonce := hdr[HeaderSize : HeaderSize+NonceSize]
		out.Key = like.Key
		out.Nonce = hex.EncodeToString(nonce)
		out.Sender = hex.EncodeToString(nonce[:8])
		out.Counter = binary.BigEndian.Uint32(nonce[8:])
		out.Plain = hex.EncodeToString(data)
	}
	out.Checksum = hex.EncodeToString(data[len(data)-ChecksumSize:])
	if like.Kind == "frame" {
		_, m, err := DecodeFrame(data, DefaultMaxFrame, &d)
		noErr(t, err)
		out.Messages = append(out.Messages, toVectorMsg(m.Type(), m, nil))
		return out
	}
	var r PacketReader
	_, err = r.Reset(data)
	noErr(t, err)
	for r.Next() {
		m := newMembershipMessage(r.Type())
		if m != nil {
			noErr(t, d.Decode(r.Body(), m))
		}
		out.Messages = append(out.Messages, toVectorMsg(r.Type(), m, r.Body()))
	}
	noErr(t, r.Err())
	return out
}

func writeVectors(t *testing.T) {
	noErr(t, os.MkdirAll(vectorDir, 0o755))
	for _, def := range vectorDefs() {
		v := vectorFile{Description: def.description, Kind: "packet", ClusterLabel: vectorLabel}
		if def.frame {
			v.Kind = "frame"
		}
		if def.sealed {
			v.Key, v.Nonce = hex.EncodeToString(vectorKey), hex.EncodeToString(vectorPacketNonce)
			if def.frame {
				v.Nonce = hex.EncodeToString(vectorFrameNonce)
			}
		}
		for _, m := range def.msgs {
			v.Messages = append(v.Messages, toVectorMsg(m.Type(), m, nil))
		}
		for _, u := range def.unknown {
			typ, body, _, err := splitMessage(u)
			noErr(t, err)
			v.Messages = append(v.Messages, toVectorMsg(typ, nil, body))
		}
		if def.unknown != nil { // keep the known message on both sides of the unknown one
			v.Messages = append(v.Messages, toVectorMsg(TypeNack, &Nack{Seq: 2}, nil))
		}
		data := encodeVector(t, roundTripJSON(t, v))
		full := decodeVector(t, data, v) // fills header, checksum and plain fields
		js, err := json.MarshalIndent(full, "", "  ")
		noErr(t, err)
		noErr(t, os.WriteFile(filepath.Join(vectorDir, def.name+".json"), append(js, '\n'), 0o644))
		noErr(t, os.WriteFile(filepath.Join(vectorDir, def.name+".hex"), []byte(hex.EncodeToString(data)+"\n"), 0o644))
	}
}

// roundTripJSON passes v through JSON so numbers become json.Number as when read
// from a file.
func roundTripJSON(t *testing.T, v vectorFile) vectorFile {
	js, err := json.Marshal(v)
	noErr(t, err)
	return parseVector(t, js)
}

func parseVector(t *testing.T, js []byte) vectorFile {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v vectorFile
	noErr(t, dec.Decode(&v))
	return v
}

func TestVectors(t *testing.T) {
	if *rewrite {
		writeVectors(t)
	}
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.hex"))
	noErr(t, err)
	check(t, len(files) == len(vectorDefs()), "%d vector files, want %d (run with -rewrite)", len(files), len(vectorDefs()))
	for _, hexFile := range files {
		name := strings.TrimSuffix(filepath.Base(hexFile), ".hex")
		t.Run(name, func(t *testing.T) {
			hx, err := os.ReadFile(hexFile)
			noErr(t, err)
			data := mustHex(strings.TrimSpace(string(hx)))
			js, err := os.ReadFile(filepath.Join(vectorDir, name+".json"))
			noErr(t, err)
			want := parseVector(t, js)

			// decode(hex) == JSON
			got := roundTripJSON(t, decodeVector(t, data, want))
			equal(t, want, got)
			// encode(JSON) == hex
			equal(t, hex.EncodeToString(data), hex.EncodeToString(encodeVector(t, want)))
		})
	}
}
