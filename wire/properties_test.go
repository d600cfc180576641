package wire

import (
	"bytes"
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// Generators for every message type. Empty byte slices and node lists are nil: the
// decoder reads an empty field as nil, so that is the canonical form.

func genString(t *rapid.T, label string) string {
	// Arbitrary bytes, not only valid UTF-8: the codec must carry them unchanged.
	return string(rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, label))
}

func genBytes(t *rapid.T, label string, max int) []byte {
	b := rapid.SliceOfN(rapid.Byte(), 0, max).Draw(t, label)
	if len(b) == 0 {
		return nil
	}
	return b
}

func genNodeState(t *rapid.T) NodeState {
	return NodeState{
		Name:        genString(t, "name"),
		Addr:        genString(t, "addr"),
		Incarnation: rapid.Uint64().Draw(t, "inc"),
		Status:      NodeStatus(rapid.Uint8().Draw(t, "status")),
		ProtoMin:    rapid.Uint8().Draw(t, "pmin"),
		ProtoMax:    rapid.Uint8().Draw(t, "pmax"),
		Features:    Features(rapid.Uint64().Draw(t, "ft")),
		Sig:         genSig(t),
	}
}

// genSig draws an optional signature (PROTOCOL.md 10.10): often none.
func genSig(t *rapid.T) []byte {
	return genBytes(t, "sig", MaxSig)
}

// genMessage draws a message of any type; maxPayload bounds byte fields so that
// messages stay packet-sized when the caller wants them to.
func genMessage(t *rapid.T, maxPayload int) Message {
	switch typ := MsgType(rapid.IntRange(int(TypePing), int(TypeDigest)).Draw(t, "type")); typ {
	case TypePing:
		return &Ping{Seq: rapid.Uint32().Draw(t, "seq"), Target: genString(t, "t"), Source: genString(t, "s"), SourceAddr: genString(t, "sa")}
	case TypeIndirectPing:
		return &IndirectPing{Seq: rapid.Uint32().Draw(t, "seq"), Target: genString(t, "t"), TargetAddr: genString(t, "ta"),
			Source: genString(t, "s"), SourceAddr: genString(t, "sa"), WantNack: rapid.Bool().Draw(t, "wn")}
	case TypeAck:
		return &Ack{Seq: rapid.Uint32().Draw(t, "seq"), Payload: genBytes(t, "p", maxPayload), LocalHealth: rapid.Uint8().Draw(t, "lh")}
	case TypeNack:
		return &Nack{Seq: rapid.Uint32().Draw(t, "seq")}
	case TypeAlive:
		return &Alive{Node: genString(t, "n"), Addr: genString(t, "a"), Incarnation: rapid.Uint64().Draw(t, "i"),
			ProtoMin: rapid.Uint8().Draw(t, "pn"), ProtoMax: rapid.Uint8().Draw(t, "px"), Features: Features(rapid.Uint64().Draw(t, "ft")), Sig: genSig(t)}
	case TypeSuspect:
		return &Suspect{Node: genString(t, "n"), Incarnation: rapid.Uint64().Draw(t, "i"), From: genString(t, "f")}
	case TypeDead:
		return &Dead{Node: genString(t, "n"), Incarnation: rapid.Uint64().Draw(t, "i"), From: genString(t, "f")}
	case TypeLeave:
		return &Leave{Node: genString(t, "n"), Incarnation: rapid.Uint64().Draw(t, "i"), Sig: genSig(t)}
	case TypePushPull:
		nodes := rapid.SliceOfN(rapid.Custom(genNodeState), 0, maxPayload/40).Draw(t, "nodes")
		if len(nodes) == 0 {
			nodes = nil
		}
		have := rapid.SliceOfN(rapid.Uint64(), 0, 8).Draw(t, "have")
		certs := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 1, 64), 0, 3).Draw(t, "certs")
		if len(have) == 0 {
			have = nil
		}
		if len(certs) == 0 {
			certs = nil
		}
		return &PushPull{Join: rapid.Bool().Draw(t, "j"), Nodes: nodes, Meta: genBytes(t, "m", maxPayload), CertHave: have, Certs: certs}
	case TypeUser:
		return &User{Payload: genBytes(t, "p", maxPayload)}
	case TypeMetaDelta:
		return &MetaDelta{Payload: genBytes(t, "p", maxPayload)}
	case TypeDigest:
		return &Digest{Hash: rapid.Uint64().Draw(t, "h"), Members: rapid.Uint32().Draw(t, "c")}
	default:
		t.Fatalf("no generator for type %d", typ)
		return nil
	}
}

func TestPropMessageRoundTrip(t *testing.T) {
	var d Decoder // shared across runs: interning must not leak between messages
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t, 2000)
		enc := AppendMessage(nil, m)
		typ, body, used, err := splitMessage(enc)
		if err != nil || used != len(enc) || typ != m.Type() {
			t.Fatalf("framing: typ %d used %d of %d, err %v", typ, used, len(enc), err)
		}
		got := newMembershipMessage(typ)
		if err := d.Decode(body, got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		equal(t, m, got)
		// Decoding into a message that already holds other data gives the same result.
		stale := genMessage(t, 200)
		if stale.Type() == m.Type() {
			if err := d.Decode(body, stale); err != nil {
				t.Fatalf("decode into stale: %v", err)
			}
			equal(t, m, stale)
		}
	})
}

func TestPropCompoundPacket(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mtu := rapid.IntRange(HeaderSize+ChecksumSize, 9000).Draw(t, "mtu")
		cluster := rapid.Uint32().Draw(t, "cluster")
		p := NewPacker(mtu, cluster)
		msgs := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Message { return genMessage(t, 300) }), 1, 60).Draw(t, "msgs")
		var added []Message
		for i, m := range msgs {
			before := p.Room()
			var ok bool
			if i%2 == 0 {
				ok = p.Add(m)
			} else {
				ok = p.AddEncoded(AppendMessage(nil, m))
			}
			size := len(AppendMessage(nil, m))
			if ok != (size <= before) {
				t.Fatalf("message of %d bytes, room %d: added=%v", size, before, ok)
			}
			if ok {
				added = append(added, m)
			} else if p.Room() != before {
				t.Fatalf("a refused message changed the room from %d to %d", before, p.Room())
			}
		}
		pkt := p.Bytes()
		if len(pkt) > mtu {
			t.Fatalf("packet of %d bytes exceeds MTU %d", len(pkt), mtu)
		}
		if p.Count() != len(added) {
			t.Fatalf("Count %d, added %d", p.Count(), len(added))
		}
		var r PacketReader
		h, err := r.Reset(pkt)
		if err != nil {
			t.Fatalf("reset: %v", err)
		}
		equal(t, Header{Version: ProtocolVersion, ClusterHash: cluster}, h)
		var d Decoder
		var got []Message
		for r.Next() {
			m := newMembershipMessage(r.Type())
			if err := d.Decode(r.Body(), m); err != nil {
				t.Fatalf("decode %d: %v", r.Type(), err)
			}
			got = append(got, m)
		}
		if r.Err() != nil {
			t.Fatalf("next: %v", r.Err())
		}
		equal(t, added, got)
	})
}

func TestPropFrameRoundTrip(t *testing.T) {
	var d Decoder
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t, 20000)
		cluster := rapid.Uint32().Draw(t, "cluster")
		f, err := EncodeFrame(m, cluster)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		read, err := ReadFrame(bytes.NewReader(append(bytes.Clone(f), 0xee)), DefaultMaxFrame)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		equal(t, f, read)
		h, got, err := DecodeFrame(read, DefaultMaxFrame, &d)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		equal(t, m, got)
		equal(t, cluster, h.ClusterHash)

		// Sealed, the frame reads whole, is refused by DecodeFrame, and opens into
		// exactly the plain frame; any flipped bit after the version is caught.
		k, err := NewKeyring(rapid.SliceOfN(rapid.Byte(), KeySize, KeySize).Draw(t, "key"))
		if err != nil {
			t.Fatal(err)
		}
		nonce := rapid.SliceOfN(rapid.Byte(), NonceSize, NonceSize).Draw(t, "nonce")
		sealed, err := SealFrame(k, f, bytes.NewReader(nonce))
		if err != nil {
			t.Fatalf("seal: %v", err)
		}
		read, err = ReadFrame(bytes.NewReader(sealed), DefaultMaxFrame)
		if err != nil {
			t.Fatalf("read sealed: %v", err)
		}
		equal(t, sealed, read)
		if _, _, err := DecodeFrame(sealed, DefaultMaxFrame, &d); !errors.Is(err, ErrSealed) {
			t.Fatalf("decoding a sealed frame: %v", err)
		}
		opened, err := OpenFrame(k, sealed)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		equal(t, f, opened)
		i := rapid.IntRange(4+3, len(sealed)-1).Draw(t, "flip")
		if i == 4+4 {
			return // the key id: then no key matches, tested elsewhere
		}
		bad := bytes.Clone(sealed)
		bad[i] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
		if _, err := OpenFrame(k, bad); err == nil {
			t.Fatalf("tampered byte %d accepted", i)
		}
	})
}

func TestPropSealOpen(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		key := rapid.SliceOfN(rapid.Byte(), KeySize, KeySize).Draw(t, "key")
		k, err := NewKeyring(key)
		if err != nil {
			t.Fatal(err)
		}
		p := NewPacker(DefaultMTU-SealOverhead, rapid.Uint32().Draw(t, "cluster"))
		for p.Add(genMessage(t, 200)) && rapid.Bool().Draw(t, "more") {
		}
		plain := p.Bytes()
		nonce := rapid.SliceOfN(rapid.Byte(), NonceSize, NonceSize).Draw(t, "nonce")
		sealed, err := Seal(k, plain, bytes.NewReader(nonce))
		if err != nil {
			t.Fatal(err)
		}
		if len(sealed) != len(plain)+SealOverhead || len(sealed) > DefaultMTU {
			t.Fatalf("sealed %d bytes from %d", len(sealed), len(plain))
		}
		opened, err := Open(k, sealed)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, plain, opened)
		// Any single flipped bit after the version byte is caught.
		i := rapid.IntRange(3, len(sealed)-1).Draw(t, "flip")
		if i == 4 {
			return // the key id: then no key matches, tested elsewhere
		}
		bad := bytes.Clone(sealed)
		bad[i] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
		if _, err := Open(k, bad); err == nil {
			t.Fatalf("tampered byte %d accepted", i)
		}
	})
}
