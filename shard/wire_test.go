package shard

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/internal/msgp"
	"github.com/omnirelay/mesh/internal/wiretest"
	"github.com/omnirelay/mesh/rendezvous"
	"github.com/omnirelay/mesh/wire"
)

var rewrite = flag.Bool("rewrite", false, "regenerate wire/testdata/shard from the vector messages")

// sampleMessages has one shard message of every type, with every field set.
func sampleMessages() []Message {
	return []Message{
		&Announce{Epoch: 7, Leader: "node-a", Version: 300, Checksum: 0xdeadbeefcafef00d},
		&MapRequest{Node: "node-b", Epoch: 7, Version: 299},
		&MapState{
			Epoch: 7, Version: 300, Checksum: 1 << 63, Shards: 5, Replicas: 2,
			Nodes:  []NodeWeight{{Name: "node-a", Weight: 1}, {Name: "node-b", Weight: 2.5}},
			Names:  []string{"node-a", "node-b", "node-z"},
			Owners: []uint32{1, 2, 0, 3, 200},
			States: []uint8{0, 0, 1, 1, 2},
		},
		&Renew{Epoch: 7, Node: "node-b", Boot: 1 << 40, Seq: 12, Applied: 11, Held: []uint32{0, 3, 1023, 1<<20 - 1}},
		&Grant{Epoch: 7, Node: "node-b", Boot: 1 << 40, Seq: 12, Duration: 3 * time.Second,
			Shards: []uint32{3, 1023}, Confirm: []uint32{0}, Version: 300, Checksum: 42},
		&Release{Epoch: 7, Node: "node-b", Shards: []uint32{1, 2, 3}},
	}
}

func sameMessage(t wiretest.TB, want, got any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("\nwant %#v\ngot  %#v", want, got)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

// registry knows the membership and shard ranges, as a stack running shards does.
func registry() *wire.Registry {
	reg, err := wire.NewRegistry(wire.Membership(), Messages())
	if err != nil {
		panic(err)
	}
	return reg
}

// Every shard message survives a packet and a frame round trip, in the shard range.
func TestMessagesRoundTrip(t *testing.T) {
	msgs := sampleMessages()
	p := wire.NewPacker(wire.DefaultMTU, 0)
	for _, m := range msgs {
		if !p.Add(m) {
			t.Fatalf("%T does not fit", m)
		}
		if !Messages().Owns(m.Type()) {
			t.Fatalf("%T has type %d outside 64..95", m, m.Type())
		}
	}
	var r wire.PacketReader
	var d wire.Decoder
	d.Use(registry())
	if _, err := r.Reset(p.Bytes()); err != nil {
		t.Fatal(err)
	}
	i := 0
	for r.Next() {
		got := NewMessage(r.Type())
		if got == nil {
			t.Fatalf("type %d unknown", r.Type())
		}
		if err := d.Decode(r.Body(), got); err != nil {
			t.Fatal(err)
		}
		sameMessage(t, msgs[i], got)
		i++
	}
	if r.Err() != nil || i != len(msgs) {
		t.Fatalf("read %d messages of %d: %v", i, len(msgs), r.Err())
	}
	for _, m := range msgs {
		f, err := wire.EncodeFrame(m, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := wire.DecodeFrame(f, 0, &d)
		if err != nil {
			t.Fatal(err)
		}
		sameMessage(t, m, got)
	}
	// A Decoder without the shard range refuses the frame as of an unknown type.
	f, _ := wire.EncodeFrame(msgs[0], 0)
	_, _, err := wire.DecodeFrame(f, 0, new(wire.Decoder))
	wantErr(t, err, wire.ErrUnknownType)
}

// The shardset encoding of PROTOCOL.md, byte for byte: first number, then
// differences, as uvarints in a bin.
func TestShardSetEncoding(t *testing.T) {
	sameMessage(t, []byte{0xc4, 4, 3, 2, 0xa7, 0x02}, appendShardSet(nil, []uint32{3, 5, 300}))
	sameMessage(t, []byte{0xc4, 0}, appendShardSet(nil, nil))
	defer func() {
		if recover() == nil {
			t.Fatal("an unsorted list was encoded")
		}
	}()
	appendShardSet(nil, []uint32{5, 5})
}

func decodeBody(m Message, body []byte) error {
	var d wire.Decoder
	return d.Decode(body, m)
}

func TestDecodeRejectsMalformed(t *testing.T) {
	held := func(set ...byte) []byte {
		b := msgp.AppendMapHeader(nil, 1)
		b = msgp.AppendStr(b, keyHeld)
		return msgp.AppendBin(b, set)
	}
	wantErr(t, decodeBody(new(Renew), held(3, 0)), wire.ErrMalformed)             // repeated shard
	wantErr(t, decodeBody(new(Renew), held(0x80, 0x80, 0x40)), wire.ErrMalformed) // 2^20
	wantErr(t, decodeBody(new(Renew), held(0x80)), wire.ErrMalformed)             // truncated uvarint
	var r Renew
	if err := decodeBody(&r, held(0, 1, 0xfe, 0xff, 0x3f)); err != nil {
		t.Fatal(err)
	}
	sameMessage(t, []uint32{0, 1, 1<<20 - 1}, r.Held)

	weight := func(w []byte) []byte {
		b := msgp.AppendMapHeader(nil, 1)
		b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyNodes), 1)
		b = msgp.AppendMapHeader(b, 1)
		return append(msgp.AppendStr(b, keyWeight), w...)
	}
	var m MapState
	if err := decodeBody(&m, weight([]byte{0xca, 0x40, 0x20, 0, 0})); err != nil { // float 32 2.5
		t.Fatal(err)
	}
	sameMessage(t, 2.5, m.Nodes[0].Weight)
	if err := decodeBody(&m, weight([]byte{3})); err != nil { // integer
		t.Fatal(err)
	}
	sameMessage(t, 3.0, m.Nodes[0].Weight)
	wantErr(t, decodeBody(&m, weight(msgp.AppendFloat64(nil, math.NaN()))), wire.ErrMalformed)
	wantErr(t, decodeBody(&m, weight(msgp.AppendFloat64(nil, math.Inf(1)))), wire.ErrMalformed)

	count := msgp.AppendUint(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyCount), maxShards+1)
	wantErr(t, decodeBody(&m, count), wire.ErrMalformed)
	dur := msgp.AppendUint(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyDuration), math.MaxUint64)
	wantErr(t, decodeBody(new(Grant), dur), wire.ErrMalformed)
	nodes := msgp.AppendArrayHeader(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyNodes), MaxMapNodes+1)
	for range MaxMapNodes + 1 {
		nodes = append(nodes, 0x80)
	}
	wantErr(t, decodeBody(&m, nodes), wire.ErrOversized)
}

// Unknown keys are skipped and missing ones read as zero, as for every message.
func TestDecodeSkipsUnknownKeys(t *testing.T) {
	b := msgp.AppendMapHeader(nil, 2)
	b = msgp.AppendUint(msgp.AppendStr(b, "zz"), 9)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), 4)
	var a Announce
	if err := decodeBody(&a, b); err != nil {
		t.Fatal(err)
	}
	sameMessage(t, Announce{Epoch: 4}, a)
}

// FuzzDecode feeds arbitrary bodies to every shard message decoder: no panic, and
// whatever decodes re-encodes to the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		_, body := wiretest.Split(f, wire.AppendMessage(nil, m))
		f.Add(uint8(m.Type()), body)
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m := NewMessage(wire.MsgType(typ))
		if m == nil {
			return
		}
		var d wire.Decoder
		if d.Decode(body, m) == nil {
			wiretest.ReencodeStable(t, &d, Messages(), m)
		}
	})
}

// Shard test vectors (PROTOCOL.md section 12): wire/testdata/shard/messages.hex
// holds one encoded message per line (type, length, body), messages.json its
// decoded form keyed by the wire keys; shardsets.json the shardset edge cases;
// frames.hex the MapRequest and the MapState as the frames of a map fetch
// (cluster label "omnirelay-test"), the worked example of PROTOCOL.md section 14.
// TestVectors checks both directions; -rewrite regenerates the files.
const vectorDir = "../wire/testdata/shard"

// shardKeys maps Go field names to wire keys (a second statement of the key table
// of messages.go and PROTOCOL.md); "Type.Field" entries override a plain name.
var shardKeys = map[string]string{
	"Epoch": "e", "Leader": "l", "Version": "vn", "Checksum": "cs", "Node": "n",
	"Boot": "b", "Seq": "q", "Applied": "ap", "Held": "hd", "Duration": "d",
	"Shards": "sh", "Confirm": "cf", "MapState.Shards": "sc", "Replicas": "r",
	"Nodes": "en", "Names": "nm", "Owners": "ow", "States": "ss",
	"NodeWeight.Name": "n", "Weight": "w",
}

// protocolName is a message's name in PROTOCOL.md's tables.
func protocolName(m Message) string {
	if _, ok := m.(*MapState); ok {
		return "ShardMap"
	}
	return "Shard" + reflect.TypeOf(m).Elem().Name()
}

// vectorMap is the map of the non-voting member's worked example (PROTOCOL.md
// section 14): 8 shards on node-a (weight 1) and node-b (weight 2), one replica;
// every shard owned by its target primary, except shard 6, which is being drained
// from its owner, and shard 7, which has none. Its checksum is this package's
// (wire's TestNonVotingMemberExample recomputes it from the document alone).
func vectorMap(t *testing.T) *MapState {
	tab, err := rendezvous.BuildTable([]rendezvous.Node{{Name: "node-a", Weight: 1}, {Name: "node-b", Weight: 2}}, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	owners := make([]string, 8)
	states := make([]State, 8)
	for s := range uint32(8) {
		owners[s] = tab.Primary(s)
	}
	states[5] = 2 // rebalancing: granted to its owner, not confirmed yet
	states[6] = 1 // draining from its owner
	owners[7], states[7] = "", 1
	m, err := NewMap(7, 3, 8, tab, owners, states)
	if err != nil {
		t.Fatal(err)
	}
	return m.Wire()
}

// vectorMessages are the published shard vectors, in file order.
func vectorMessages(t *testing.T) []Message {
	m := vectorMap(t)
	return []Message{
		&Announce{Epoch: 7, Leader: "node-a", Version: 3, Checksum: m.Checksum},
		&MapRequest{Node: "node-c", Epoch: 0, Version: 0},
		m,
		&Renew{Epoch: 7, Node: "node-b", Boot: 0x5eed0f0b00710001, Seq: 12, Applied: 11, Held: []uint32{0, 3, 300, 1<<20 - 1}},
		&Grant{Epoch: 7, Node: "node-b", Boot: 0x5eed0f0b00710001, Seq: 12, Duration: 3 * time.Second,
			Shards: []uint32{3, 300}, Confirm: []uint32{0}, Version: 3, Checksum: m.Checksum},
		&Release{Epoch: 7, Node: "node-b", Shards: []uint32{1, 2, 3}},
		&Release{Epoch: 7, Node: "node-c"}, // empty: only "renew now"
	}
}

// shardSetCase is one shardset edge case: the msgpack value of a shardset field in
// hex, and the shards it decodes to, or "malformed". Canonical cases are what our
// sender writes for those shards; the others are only read.
type shardSetCase struct {
	Hex       string   `json:"hex"`
	Shards    []uint32 `json:"shards"`
	Malformed bool     `json:"malformed,omitempty"`
	Canonical bool     `json:"canonical,omitempty"`
	Why       string   `json:"why"`
}

func shardSetCases() []shardSetCase {
	return []shardSetCase{
		{Hex: "c400", Shards: []uint32{}, Canonical: true, Why: "empty set: bin8 of length 0"},
		{Hex: "c0", Shards: []uint32{}, Why: "nil reads as empty"},
		{Hex: "c40100", Shards: []uint32{0}, Canonical: true, Why: "shard 0: the first number may be 0"},
		{Hex: "c403030200", Malformed: true, Why: "a zero difference after the first entry (5 twice)"},
		{Hex: "c405030201a702", Shards: []uint32{3, 5, 6, 301}, Canonical: true, Why: "3, then differences 2, 1, 295 (uvarint a7 02)"},
		{Hex: "c403ffff3f", Shards: []uint32{1<<20 - 1}, Canonical: true, Why: "the largest shard number, 2^20-1"},
		{Hex: "c404ffff3f01", Malformed: true, Why: "the running sum reaches 2^20"},
		{Hex: "c403808040", Malformed: true, Why: "a number of 2^20"},
		{Hex: "c40180", Malformed: true, Why: "a truncated uvarint"},
		{Hex: "c40b" + strings.Repeat("ff", 10) + "01", Malformed: true, Why: "a uvarint of more than 64 bits"},
		{Hex: "c4028000", Shards: []uint32{0}, Why: "a non-minimal uvarint (2 bytes for 0) is read"},
		{Hex: "a20302", Shards: []uint32{3, 5}, Why: "a str instead of a bin is read, as for every bytes field"},
		{Hex: "03", Malformed: true, Why: "an integer is not a shardset"},
	}
}

// shardSetBody wraps a shardset value as the body of a Release {"sh": value}.
func shardSetBody(value []byte) []byte {
	return append(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyShards), value...)
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	msgs := vectorMessages(t)
	wiretest.Vectors{
		Dir:      vectorDir,
		Messages: msgs,
		Render:   wiretest.VectorJSON(shardKeys),
		Name:     protocolName,
		Protocol: Messages(),
		Rewrite:  *rewrite,
	}.Check(t)

	// The frames of a map fetch, both ways.
	fetch := []Message{msgs[1], msgs[2]} // the MapRequest and the map
	var frameLines []string
	for _, m := range fetch {
		f, err := wire.EncodeFrame(m, wire.ClusterHash("omnirelay-test"))
		if err != nil {
			t.Fatal(err)
		}
		frameLines = append(frameLines, hex.EncodeToString(f))
	}
	frames := wiretest.PublishedFile(t, filepath.Join(vectorDir, "frames.hex"), []byte(strings.Join(frameLines, "\n")+"\n"), *rewrite)
	var d wire.Decoder
	d.Use(registry())
	for i, f := range strings.Fields(string(frames)) {
		hdr, got, err := wire.DecodeFrame(mustHex(t, f), wire.DefaultMaxFrame, &d)
		if err != nil {
			t.Fatal(err)
		}
		if err := hdr.CheckCluster(wire.ClusterHash("omnirelay-test")); err != nil {
			t.Fatal(err)
		}
		sameMessage(t, fetch[i], got)
	}

	// Shardsets, from the published file: each decodes as stated, and a canonical
	// one is what our sender writes.
	sets, err := json.MarshalIndent(shardSetCases(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	setFile := wiretest.PublishedFile(t, filepath.Join(vectorDir, "shardsets.json"), append(sets, '\n'), *rewrite)
	var cases []shardSetCase
	if err := json.Unmarshal(setFile, &cases); err != nil {
		t.Fatal(err)
	}
	sameMessage(t, shardSetCases(), cases)
	for _, c := range cases {
		var r Release
		err := d.Decode(shardSetBody(mustHex(t, c.Hex)), &r)
		if c.Malformed {
			wantErr(t, err, wire.ErrMalformed)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Shards) != len(c.Shards) || (len(c.Shards) > 0 && !reflect.DeepEqual(c.Shards, r.Shards)) {
			t.Fatalf("%s (%s): decoded %v, want %v", c.Hex, c.Why, r.Shards, c.Shards)
		}
		if c.Canonical {
			sameMessage(t, c.Hex, hex.EncodeToString(appendShardSet(nil, c.Shards)))
		}
	}
}
