package wire

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// promiseN4 is a LeasePromise {e: 7, v: "n4"} as the lease package encodes it
// (type 33, length 9, body): the messages of PROTOCOL.md 10.11's example.
var promiseN4 = []byte{0x21, 0x09, 0x82, 0xa1, 0x65, 0x07, 0xa1, 0x76, 0xa2, 0x6e, 0x34}

func TestPacketClaimBytesFollowTheSpec(t *testing.T) {
	var want bytes.Buffer
	want.WriteString("omnirelay-mesh v1 packet")
	want.WriteByte(0)
	for _, s := range []string{"prod", "n4", "n1"} {
		want.Write([]byte{0, byte(len(s))})
		want.WriteString(s)
	}
	want.Write(promiseN4)
	got := PacketClaim("prod", "n4", "n1", promiseN4)
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("PacketClaim:\n got %x\nwant %x", got, want.Bytes())
	}
	const spec = "6f6d6e6972656c61792d6d657368207631207061636b657400" + "000470726f64" + "00026e34" + "00026e31" +
		"210982a16507a176a26e34"
	if hex.EncodeToString(got) != spec {
		t.Errorf("PacketClaim is not the example of PROTOCOL.md 10.11:\n got %x", got)
	}
	if bytes.Equal(got, PacketClaim("prod", "n4", "n2", promiseN4)) {
		t.Error("the destination is not signed")
	}
}

// A PacketSig after a packet's messages: the Packer's Messages are what it
// signs, a reader finds them again by Pos, and the body round-trips.
func TestPacketSigEndsAPacket(t *testing.T) {
	p := NewPacker(DefaultMTU, ClusterHash("prod"))
	if !p.AddEncoded(promiseN4) {
		t.Fatal("no room")
	}
	signed := bytes.Clone(p.Messages())
	sig := &PacketSig{Sender: "n4", Sig: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}}
	if !p.Add(sig) {
		t.Fatal("no room for the signature")
	}
	var r PacketReader
	data := p.Bytes()
	if _, err := r.Reset(data); err != nil {
		t.Fatal(err)
	}
	var d Decoder
	for {
		at := r.Pos()
		if !r.Next() {
			t.Fatalf("no PacketSig found (%v)", r.Err())
		}
		if r.Type() != TypePacketSig {
			continue
		}
		if !bytes.Equal(data[HeaderSize:at], signed) {
			t.Fatalf("signed bytes %x, want %x", data[HeaderSize:at], signed)
		}
		var got PacketSig
		if err := d.Decode(r.Body(), &got); err != nil {
			t.Fatal(err)
		}
		if got.Sender != sig.Sender || !bytes.Equal(got.Sig, sig.Sig) {
			t.Fatalf("decoded %+v, want %+v", got, sig)
		}
		break
	}
	var big PacketSig
	body := (&PacketSig{Sender: "n4", Sig: make([]byte, MaxSig+1)}).AppendBody(nil)
	if err := d.Decode(body, &big); err != ErrOversized {
		t.Fatalf("a signature over MaxSig: %v, want ErrOversized", err)
	}
}
