package wire

import (
	"crypto/rand"
	"fmt"
	"testing"
)

// Benchmarks of the hot paths; figures and the command in docs/benchmarks.md
// ("## wire"). Run with -benchmem.

// fullPacketMessages is a probe followed by the kind of gossip that fills a packet:
// alive, suspect and dead broadcasts about distinct members.
func fullPacketMessages() []Message {
	msgs := []Message{&Ping{Seq: 12345, Target: "orders-00017.eu-west-1a", Source: "orders-00003.eu-west-1b", SourceAddr: "10.0.3.17:7946"}}
	for i := 0; ; i++ {
		name := fmt.Sprintf("orders-%05d.eu-west-1a", i)
		switch i % 3 {
		case 0:
			msgs = append(msgs, &Alive{Node: name, Addr: fmt.Sprintf("10.0.%d.%d:7946", i/250, 1+i%250), Incarnation: uint64(i), ProtoMin: 1, ProtoMax: 1})
		case 1:
			msgs = append(msgs, &Suspect{Node: name, Incarnation: uint64(i), From: "orders-00003.eu-west-1b"})
		default:
			msgs = append(msgs, &Dead{Node: name, Incarnation: uint64(i), From: "orders-00003.eu-west-1b"})
		}
		if len(msgs) > 100 {
			return msgs
		}
	}
}

// decodeState holds one reusable message of each type, as a receive loop would.
type decodeState struct {
	d       Decoder
	r       PacketReader
	ping    Ping
	alive   Alive
	suspect Suspect
	dead    Dead
}

func (s *decodeState) decodePacket(b *testing.B, pkt []byte) int {
	if _, err := s.r.Reset(pkt); err != nil {
		b.Fatal(err)
	}
	n := 0
	for s.r.Next() {
		var m Message
		switch s.r.Type() {
		case TypePing:
			m = &s.ping
		case TypeAlive:
			m = &s.alive
		case TypeSuspect:
			m = &s.suspect
		case TypeDead:
			m = &s.dead
		default:
			b.Fatalf("unexpected type %d", s.r.Type())
		}
		if err := s.d.Decode(s.r.Body(), m); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return n
}

// BenchmarkPacketRoundTrip encodes a full 1400-byte compound packet (a Ping and as
// many broadcasts as fit, each encoded by Add) and decodes every message of it.
func BenchmarkPacketRoundTrip(b *testing.B) {
	msgs := fullPacketMessages()
	p := NewPacker(DefaultMTU, ClusterHash("prod"))
	var s decodeState
	var size, count int
	for b.Loop() {
		p.Reset()
		for _, m := range msgs {
			if !p.Add(m) {
				break
			}
		}
		pkt := p.Bytes()
		count = s.decodePacket(b, pkt)
		size = len(pkt)
	}
	b.ReportMetric(float64(size), "packet-bytes")
	b.ReportMetric(float64(count), "msgs/packet")
}

func BenchmarkPingEncode(b *testing.B) {
	ping := &Ping{Seq: 1, Target: "orders-00017.eu-west-1a", Source: "orders-00003.eu-west-1b", SourceAddr: "10.0.3.17:7946"}
	p := NewPacker(DefaultMTU, 1)
	for b.Loop() {
		p.Reset()
		p.Add(ping)
		p.Bytes()
	}
}

func BenchmarkPingDecode(b *testing.B) {
	p := NewPacker(DefaultMTU, 1)
	p.Add(&Ping{Seq: 1, Target: "orders-00017.eu-west-1a", Source: "orders-00003.eu-west-1b", SourceAddr: "10.0.3.17:7946"})
	pkt := p.Bytes()
	var s decodeState
	for b.Loop() {
		s.decodePacket(b, pkt)
	}
}

// BenchmarkSealedRoundTrip seals a full packet (sender id from crypto/rand) and opens it.
func BenchmarkSealedRoundTrip(b *testing.B) {
	k, err := NewKeyring(testKey(1), testKey(2))
	if err != nil {
		b.Fatal(err)
	}
	p := NewPacker(DefaultMTU-SealOverhead, 1)
	for _, m := range fullPacketMessages() {
		if !p.Add(m) {
			break
		}
	}
	plain := p.Bytes()
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		sealed, err := Seal(k, plain, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Open(k, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFrame encodes (compressing with S2) and decodes push-pull frames, and
// seals and opens the encoded frame.
func BenchmarkFrame(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		pp := benchPushPull(n)
		f, err := EncodeFrame(pp, 7)
		if err != nil {
			b.Fatal(err)
		}
		raw := len(AppendMessage(nil, pp))
		b.Run(fmt.Sprintf("nodes=%d/encode", n), func(b *testing.B) {
			b.SetBytes(int64(raw))
			for b.Loop() {
				if _, err := EncodeFrame(pp, 7); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(raw), "msg-bytes")
			b.ReportMetric(float64(len(f)), "frame-bytes")
		})
		b.Run(fmt.Sprintf("nodes=%d/decode", n), func(b *testing.B) {
			var d Decoder
			b.SetBytes(int64(raw))
			for b.Loop() {
				if _, _, err := DecodeFrame(f, DefaultMaxFrame, &d); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("nodes=%d/seal-open", n), func(b *testing.B) {
			k, err := NewKeyring(make([]byte, KeySize))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(f)))
			for b.Loop() {
				sealed, err := SealFrame(k, f, rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := OpenFrame(k, sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
