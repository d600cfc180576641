package wire

import (
	"math"
	"testing"
	"time"

	"github.com/omnirelay/mesh/internal/msgp"
)

// sampleShardMessages has one shard message of every type, with every field set.
func sampleShardMessages() []Message {
	return []Message{
		&ShardAnnounce{Epoch: 7, Leader: "node-a", Version: 300, Checksum: 0xdeadbeefcafef00d},
		&ShardMapRequest{Node: "node-b", Epoch: 7, Version: 299},
		&ShardMap{
			Epoch: 7, Version: 300, Checksum: 1 << 63, Shards: 5, Replicas: 2,
			Nodes:  []ShardNode{{Name: "node-a", Weight: 1}, {Name: "node-b", Weight: 2.5}},
			Names:  []string{"node-a", "node-b", "node-z"},
			Owners: []uint32{1, 2, 0, 3, 200},
			States: []uint8{0, 0, 1, 1, 2},
		},
		&ShardRenew{Epoch: 7, Node: "node-b", Boot: 1 << 40, Seq: 12, Applied: 11, Held: []uint32{0, 3, 1023, 1<<20 - 1}},
		&ShardGrant{Epoch: 7, Node: "node-b", Boot: 1 << 40, Seq: 12, Duration: 3 * time.Second,
			Shards: []uint32{3, 1023}, Confirm: []uint32{0}, Version: 300, Checksum: 42},
		&ShardRelease{Epoch: 7, Node: "node-b", Shards: []uint32{1, 2, 3}},
	}
}

func TestShardMessagesRoundTrip(t *testing.T) {
	msgs := sampleShardMessages()
	p := NewPacker(DefaultMTU, 0)
	for _, m := range msgs {
		check(t, p.Add(m), "%T does not fit", m)
	}
	var r PacketReader
	var d Decoder
	_, err := r.Reset(p.Bytes())
	noErr(t, err)
	i := 0
	for r.Next() {
		got := NewMessage(r.Type())
		check(t, got != nil, "type %d unknown", r.Type())
		noErr(t, d.Decode(r.Body(), got))
		equal(t, msgs[i], got)
		i++
	}
	noErr(t, r.Err())
	equal(t, len(msgs), i)
	for _, m := range msgs {
		f, err := EncodeFrame(m, 0)
		noErr(t, err)
		_, got, err := DecodeFrame(f, 0, &d)
		noErr(t, err)
		equal(t, m, got)
	}
}

func TestShardTypesInTheirRange(t *testing.T) {
	for _, m := range sampleShardMessages() {
		check(t, m.Type() >= RangeShardFirst && m.Type() < RangeCoreFirst, "%T has type %d outside 64..95", m, m.Type())
	}
}

// The shardset encoding of PROTOCOL.md, byte for byte: first number, then
// differences, as uvarints in a bin.
func TestShardSetEncoding(t *testing.T) {
	got := appendShardSet(nil, []uint32{3, 5, 300})
	equal(t, []byte{0xc4, 4, 3, 2, 0xa7, 0x02}, got)
	equal(t, []byte{0xc4, 0}, appendShardSet(nil, nil))
	defer func() { check(t, recover() != nil, "an unsorted list was encoded") }()
	appendShardSet(nil, []uint32{5, 5})
}

func decodeBody(t *testing.T, m Message, body []byte) error {
	t.Helper()
	var d Decoder
	return d.Decode(body, m)
}

func TestShardDecodeRejectsMalformed(t *testing.T) {
	held := func(set ...byte) []byte {
		b := msgp.AppendMapHeader(nil, 1)
		b = msgp.AppendStr(b, keyShardHeld)
		return msgp.AppendBin(b, set)
	}
	isErr(t, decodeBody(t, new(ShardRenew), held(3, 0)), ErrMalformed)             // repeated shard
	isErr(t, decodeBody(t, new(ShardRenew), held(0x80, 0x80, 0x40)), ErrMalformed) // 2^20
	isErr(t, decodeBody(t, new(ShardRenew), held(0x80)), ErrMalformed)             // truncated uvarint
	var r ShardRenew
	noErr(t, decodeBody(t, &r, held(0, 1, 0xfe, 0xff, 0x3f)))
	equal(t, []uint32{0, 1, 1<<20 - 1}, r.Held)

	weight := func(w []byte) []byte {
		b := msgp.AppendMapHeader(nil, 1)
		b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyShardNodes), 1)
		b = msgp.AppendMapHeader(b, 1)
		return append(msgp.AppendStr(b, keyShardWeight), w...)
	}
	var m ShardMap
	noErr(t, decodeBody(t, &m, weight([]byte{0xca, 0x40, 0x20, 0, 0}))) // float 32 2.5
	equal(t, 2.5, m.Nodes[0].Weight)
	noErr(t, decodeBody(t, &m, weight([]byte{3}))) // integer
	equal(t, 3.0, m.Nodes[0].Weight)
	isErr(t, decodeBody(t, &m, weight(msgp.AppendFloat64(nil, math.NaN()))), ErrMalformed)
	isErr(t, decodeBody(t, &m, weight(msgp.AppendFloat64(nil, math.Inf(1)))), ErrMalformed)

	count := msgp.AppendUint(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyShardCount), MaxShardCount+1)
	isErr(t, decodeBody(t, &m, count), ErrMalformed)
	dur := msgp.AppendUint(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyDuration), math.MaxUint64)
	isErr(t, decodeBody(t, new(ShardGrant), dur), ErrMalformed)
	nodes := msgp.AppendArrayHeader(msgp.AppendStr(msgp.AppendMapHeader(nil, 1), keyShardNodes), MaxShardMapNodes+1)
	for range MaxShardMapNodes + 1 {
		nodes = append(nodes, 0x80)
	}
	isErr(t, decodeBody(t, &m, nodes), ErrOversized)
}

// Unknown keys are skipped and missing ones read as zero, as for every message.
func TestShardDecodeSkipsUnknownKeys(t *testing.T) {
	b := msgp.AppendMapHeader(nil, 2)
	b = msgp.AppendUint(msgp.AppendStr(b, "zz"), 9)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), 4)
	var a ShardAnnounce
	noErr(t, decodeBody(t, &a, b))
	equal(t, ShardAnnounce{Epoch: 4}, a)
}

func FuzzShardDecode(f *testing.F) {
	for _, m := range sampleShardMessages() {
		f.Add(uint8(m.Type()), appendBody(nil, m))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m := newShardMessage(MsgType(typ))
		if m == nil {
			return
		}
		var d Decoder
		if d.Decode(body, m) == nil {
			reencodeStable(t, &d, m)
		}
	})
}
