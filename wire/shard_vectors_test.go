package wire

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/internal/msgp"
	"github.com/omnirelay/mesh/rendezvous"
)

// Shard test vectors (PROTOCOL.md section 12): wire/testdata/shard/messages.hex
// holds one encoded message per line (type, length, body), messages.json its
// decoded form keyed by the wire keys; shardsets.json the shardset edge cases;
// frames.hex the MapRequest and the ShardMap as the frames of a map fetch
// (cluster label "omnirelay-test"), the worked example of PROTOCOL.md section 14.
// TestShardVectors checks both directions; -rewrite regenerates the files.
const shardVectorDir = "testdata/shard"

// shardKeys maps Go field names to wire keys (a second statement of the key table
// of shard.go and PROTOCOL.md); "Type.Field" entries override a plain name.
var shardKeys = map[string]string{
	"Epoch": "e", "Leader": "l", "Version": "vn", "Checksum": "cs", "Node": "n",
	"Boot": "b", "Seq": "q", "Applied": "ap", "Held": "hd", "Duration": "d",
	"Shards": "sh", "Confirm": "cf", "ShardMap.Shards": "sc", "Replicas": "r",
	"Nodes": "en", "Names": "nm", "Owners": "ow", "States": "ss",
	"ShardNode.Name": "n", "Weight": "w",
}

// vectorShardMap is the map of the non-voting member's worked example (PROTOCOL.md
// section 14): 8 shards on node-a (weight 1) and node-b (weight 2), one replica;
// every shard owned by its target primary, except shard 6, which is being drained
// from its owner, and shard 7, which has none.
func vectorShardMap(t *testing.T) *ShardMap {
	nodes := []ShardNode{{Name: "node-a", Weight: 1}, {Name: "node-b", Weight: 2}}
	m := &ShardMap{Epoch: 7, Version: 3, Shards: 8, Replicas: 1, Nodes: nodes}
	tab, err := rendezvous.BuildTable([]rendezvous.Node{{Name: "node-a", Weight: 1}, {Name: "node-b", Weight: 2}}, 8, 1)
	noErr(t, err)
	m.Names = []string{"node-a", "node-b"}
	for s := range uint32(8) {
		owner := uint32(1)
		if tab.Primary(s) == "node-b" {
			owner = 2
		}
		m.Owners = append(m.Owners, owner)
		m.States = append(m.States, 0)
	}
	m.States[5] = 2 // rebalancing: granted to its owner, not confirmed yet
	m.States[6] = 1 // draining from its owner
	m.Owners[7], m.States[7] = 0, 1
	m.Checksum = docMapChecksum(tab.Checksum(), m)
	return m
}

// docMapChecksum is the map checksum exactly as PROTOCOL.md section 12 defines it,
// written from the document: shard.DecodeMap must agree (shard's tests check the
// vector with it).
func docMapChecksum(placement uint64, m *ShardMap) uint64 {
	b := []byte{0x01}
	b = binary.AppendUvarint(b, uint64(m.Shards))
	b = binary.BigEndian.AppendUint64(b, placement)
	b = binary.AppendUvarint(b, uint64(len(m.Names)))
	for _, n := range m.Names {
		b = append(binary.AppendUvarint(b, uint64(len(n))), n...)
	}
	for s := range m.Owners {
		b = append(binary.AppendUvarint(b, uint64(m.Owners[s])), m.States[s])
	}
	return xxhash.Sum64(b)
}

// shardVectorMessages are the published shard vectors, in file order.
func shardVectorMessages(t *testing.T) []Message {
	m := vectorShardMap(t)
	return []Message{
		&ShardAnnounce{Epoch: 7, Leader: "node-a", Version: 3, Checksum: m.Checksum},
		&ShardMapRequest{Node: "node-c", Epoch: 0, Version: 0},
		m,
		&ShardRenew{Epoch: 7, Node: "node-b", Boot: 0x5eed0f0b00710001, Seq: 12, Applied: 11, Held: []uint32{0, 3, 300, 1<<20 - 1}},
		&ShardGrant{Epoch: 7, Node: "node-b", Boot: 0x5eed0f0b00710001, Seq: 12, Duration: 3 * time.Second,
			Shards: []uint32{3, 300}, Confirm: []uint32{0}, Version: 3, Checksum: m.Checksum},
		&ShardRelease{Epoch: 7, Node: "node-b", Shards: []uint32{1, 2, 3}},
		&ShardRelease{Epoch: 7, Node: "node-c"}, // empty: only "renew now"
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

// shardSetBody wraps a shardset value as the body of a ShardRelease {"sh": value}.
func shardSetBody(value []byte) []byte {
	return append(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyShardShards), value...)
}

func TestShardVectors(t *testing.T) {
	msgs := shardVectorMessages(t)
	checkMessageVectors(t, shardVectorDir, msgs, vectorJSON(shardKeys))

	// The frames of a map fetch, both ways.
	fetch := []Message{msgs[1], msgs[2]} // the MapRequest and the ShardMap
	var frameLines []string
	for _, m := range fetch {
		f, err := EncodeFrame(m, ClusterHash("omnirelay-test"))
		noErr(t, err)
		frameLines = append(frameLines, hex.EncodeToString(f))
	}
	frames := publishedFile(t, filepath.Join(shardVectorDir, "frames.hex"), []byte(strings.Join(frameLines, "\n")+"\n"))
	var d Decoder
	for i, f := range strings.Fields(string(frames)) {
		hdr, got, err := DecodeFrame(mustHex(f), DefaultMaxFrame, &d)
		noErr(t, err)
		noErr(t, hdr.CheckCluster(ClusterHash("omnirelay-test")))
		equal(t, fetch[i], got)
	}

	// Shardsets, from the published file: each decodes as stated, and a canonical
	// one is what our sender writes.
	sets, err := json.MarshalIndent(shardSetCases(), "", "  ")
	noErr(t, err)
	setFile := publishedFile(t, filepath.Join(shardVectorDir, "shardsets.json"), append(sets, '\n'))
	var cases []shardSetCase
	noErr(t, json.Unmarshal(setFile, &cases))
	equal(t, shardSetCases(), cases)
	for _, c := range cases {
		var r ShardRelease
		err := d.Decode(shardSetBody(mustHex(c.Hex)), &r)
		if c.Malformed {
			isErr(t, err, ErrMalformed)
			continue
		}
		noErr(t, err)
		check(t, len(r.Shards) == len(c.Shards) && (len(c.Shards) == 0 || reflect.DeepEqual(c.Shards, r.Shards)),
			"%s (%s): decoded %v, want %v", c.Hex, c.Why, r.Shards, c.Shards)
		if c.Canonical {
			equal(t, c.Hex, hex.EncodeToString(appendShardSet(nil, c.Shards)))
		}
	}
}
