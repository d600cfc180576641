package stack

import (
	"fmt"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/wire"
)

// metaCluster is the store of one node of a cluster of n nodes that each publish
// the same ten realistic keys (zone, endpoints, versions, load...).
func metaCluster(tb testing.TB, n int) (*crdt.Store, *wire.PushPull) {
	tb.Helper()
	lim := crdt.DefaultLimits()
	local, err := crdt.NewStore("node-0000", lim)
	if err != nil {
		tb.Fatal(err)
	}
	pp := &wire.PushPull{}
	for i := range n {
		name := fmt.Sprintf("node-%04d", i)
		pp.Nodes = append(pp.Nodes, wire.NodeState{Name: name, Addr: fmt.Sprintf("10.%d.%d.%d:7946", i>>16, (i>>8)&255, i&255),
			Incarnation: 1, Status: wire.StatusAlive, ProtoMin: 1, ProtoMax: 1})
		st := local
		if i > 0 {
			if st, err = crdt.NewStore(name, lim); err != nil {
				tb.Fatal(err)
			}
		}
		kv := [][2]string{
			{"zone", fmt.Sprintf("eu-west-1%c", 'a'+i%3)}, {"region", "eu-west-1"}, {"roles", "api,web"},
			{"version", fmt.Sprintf("v1.%d.%d", 40+i%3, i%7)}, {"grpc", fmt.Sprintf("10.%d.%d.%d:9090", i>>16, (i>>8)&255, i&255)},
			{"http", fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255)}, {"load", fmt.Sprint(i % 100)},
			{"weight", "100"}, {"build", fmt.Sprintf("%08x", uint32(i)*2654435761)}, {"started", fmt.Sprint(1764200000 + i)},
		}
		for _, e := range kv {
			d, err := st.Set(e[0], []byte(e[1]))
			if err != nil {
				tb.Fatal(err)
			}
			if st != local {
				if _, err := local.Apply(d); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
	return local, pp
}

// The push-pull payload of a 1,000-node cluster with ten keys per node: the
// metadata snapshot alone, and the whole frame (membership too), raw and as sent
// (S2-compressed). It must fit the default frame limit and decode to the same
// store.
func TestPushPullMetaPayloadSize(t *testing.T) {
	st, pp := metaCluster(t, 1000)
	snap := crdt.AppendSnapshot(nil, st.Snapshot())
	pp.Meta = snap
	raw := len(wire.AppendMessage(nil, pp))
	frame, err := wire.EncodeFrame(pp, 0)
	if err != nil {
		t.Fatal(err)
	}
	var dec wire.Decoder
	_, msg, err := wire.DecodeFrame(frame, wire.DefaultMaxFrame, &dec)
	if err != nil {
		t.Fatal(err)
	}
	back, err := crdt.DecodeSnapshot(msg.(*wire.PushPull).Meta, crdt.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crdt.NewStore("node-9999", crdt.DefaultLimits())
	if _, err := other.Merge(back); err != nil || other.Digest() != st.Digest() {
		t.Fatalf("snapshot does not carry the store: %v", err)
	}
	if len(frame) >= raw || raw > wire.DefaultMaxFrame {
		t.Fatalf("frame %d bytes, raw %d", len(frame), raw)
	}
	t.Logf("1000 nodes x 10 keys: meta snapshot %d B; push-pull frame raw %d B, compressed %d B (%.0f%%)",
		len(snap), raw, len(frame), 100*float64(len(frame))/float64(raw))
}

// Encoding the snapshot for a push-pull, which the host does at most once per
// push-pull and only after a change.
func BenchmarkMetaSnapshotEncode1000x10(b *testing.B) {
	st, _ := metaCluster(b, 1000)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = crdt.AppendSnapshot(buf[:0], st.Snapshot())
	}
	b.ReportMetric(float64(len(buf)), "bytes")
}

// With signed metadata (PROTOCOL.md section 13) a cell carries its writer's
// signature, at most 80 bytes with P-256: a one-key delta of a 128-byte key and
// a 980-byte value still fits a sealed packet of the default MTU, as the spec
// says, and the largest one (a 1 KiB value) does not.
func TestSignedOneKeyDeltaFitsAPacket(t *testing.T) {
	room := wire.NewPacker(wire.DefaultMTU-wire.SealOverhead, 0).Room()
	size := func(value int) int {
		v := crdt.Version{Epoch: 1 << 40, Counter: 1<<40 + 1}
		d := crdt.Delta{Node: strings.Repeat("n", 64), Since: crdt.Version{Epoch: 1 << 40, Counter: 1 << 40}, Have: v,
			Floor: crdt.Version{Epoch: 1 << 40}, Entries: []crdt.Entry{{Key: strings.Repeat("k", 128),
				Value: make([]byte, value), Version: v, Sig: make([]byte, 8+72)}}}
		return len(wire.AppendMessage(nil, &wire.MetaDelta{Payload: crdt.AppendDelta(nil, d)}))
	}
	if n := size(980); n > room {
		t.Errorf("a signed one-key delta with a 980-byte value is %d bytes, room %d", n, room)
	}
	if n := size(crdt.DefaultLimits().MaxValueBytes); n <= room {
		t.Errorf("the largest signed one-key delta fits (%d bytes, room %d): PROTOCOL.md says it does not", n, room)
	}
}
