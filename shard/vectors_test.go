package shard

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/rendezvous"
	"github.com/omnirelay/mesh/wire"
)

// The published shard vectors (wire/testdata/shard, PROTOCOL.md sections 12 and
// 14) hold a map a member must accept: DecodeMap takes it, its checksum is the one
// the Announce and the Grant carry, and the placement checksum inside it is
// computed as the document says.
func TestWireVectorMapIsValid(t *testing.T) {
	raw, err := os.ReadFile("../wire/testdata/shard/messages.hex")
	if err != nil {
		t.Fatal(err)
	}
	var d wire.Decoder
	var announced []uint64
	var ms *MapState
	for _, line := range strings.Fields(string(raw)) {
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		// type (u8) | length (uvarint) | body, as PROTOCOL.md 3.1 frames a message.
		n, w := binary.Uvarint(b[1:])
		if w <= 0 || uint64(len(b)-1-w) != n {
			t.Fatalf("vector %s: bad length", line)
		}
		m := NewMessage(wire.MsgType(b[0]))
		if err := d.Decode(b[1+w:], m); err != nil {
			t.Fatalf("vector %s: %v", line, err)
		}
		switch m := m.(type) {
		case *Announce:
			announced = append(announced, m.Checksum)
		case *Grant:
			announced = append(announced, m.Checksum)
		case *MapState:
			ms = m
		}
	}
	if ms == nil || len(announced) != 2 {
		t.Fatalf("vectors hold no map, or not one Announce and one Grant")
	}
	m, err := DecodeMap(ms, nil)
	if err != nil {
		t.Fatalf("the published map is refused: %v", err)
	}
	for _, cs := range announced {
		if cs != m.Checksum() {
			t.Fatalf("announced checksum %016x, map %016x", cs, m.Checksum())
		}
	}
	// Owner reads as the worked example of PROTOCOL.md section 14 gives them.
	want := []string{"node-b", "node-a", "node-b", "node-b", "node-a", "node-b", "node-b", ""}
	for s, o := range want {
		if got := m.Owner(uint32(s)); got != o {
			t.Fatalf("shard %d: owner %q, want %q", s, got, o)
		}
	}
	if got := docTableChecksum(m.Table()); got != m.Table().Checksum() {
		t.Fatalf("placement checksum by PROTOCOL.md %016x, rendezvous %016x", got, m.Table().Checksum())
	}
	// One changed state byte makes the map's checksum fail.
	ms.States[0] = 1
	if _, err := DecodeMap(ms, nil); err == nil {
		t.Fatal("a map whose content does not match its checksum was accepted")
	}
}

// docTableChecksum is the placement checksum as PROTOCOL.md section 12 writes it.
func docTableChecksum(t *rendezvous.Table) uint64 {
	nodes := t.Nodes()
	b := []byte{0x01}
	b = binary.AppendUvarint(b, uint64(t.Shards()))
	b = binary.AppendUvarint(b, uint64(t.Replicas()))
	b = binary.AppendUvarint(b, uint64(len(nodes)))
	index := map[string]uint32{}
	for i, n := range nodes {
		index[n.Name] = uint32(i)
		b = append(binary.AppendUvarint(b, uint64(len(n.Name))), n.Name...)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(n.Weight))
	}
	for s := range uint32(t.Shards()) {
		for _, o := range t.Owners(s) {
			b = binary.BigEndian.AppendUint32(b, index[o])
		}
	}
	return xxhash.Sum64(b)
}
