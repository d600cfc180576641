package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestSpeaks(t *testing.T) {
	for _, c := range []struct {
		v          Versions
		pmin, pmax uint8
		want       bool
	}{
		{DefaultVersions, 1, 1, true},
		{DefaultVersions, 1, 3, true},  // a newer node that still speaks ours
		{DefaultVersions, 0, 1, false}, // 0 is no version
		{DefaultVersions, 0, 0, false}, // also what a missing range reads as
		{DefaultVersions, 2, 2, false}, // no overlap: newer only
		{DefaultVersions, 3, 1, false}, // pn > px
		{DefaultVersions, 2, 1, false},
		{DefaultVersions, 255, 255, false},
		{Versions{1, 2}, 2, 2, true}, // a preview node speaks a 2-only member
		{Versions{1, 2}, 1, 1, true},
		{Versions{1, 2}, 3, 3, false},
		{Versions{2, 2}, 1, 1, false},
	} {
		if got := c.v.Speaks(c.pmin, c.pmax); got != c.want {
			t.Errorf("%v.Speaks(%d, %d) = %v, want %v", c.v, c.pmin, c.pmax, got, c.want)
		}
	}
}

func TestVersionsValidateAndCheck(t *testing.T) {
	for _, v := range []Versions{{1, 1}, {1, 2}, {2, 2}} {
		if err := v.Validate(); err != nil {
			t.Errorf("%v: %v", v, err)
		}
	}
	for _, v := range []Versions{{0, 1}, {2, 1}, {1, 3}, {3, 3}} {
		if v.Validate() == nil {
			t.Errorf("%v validated; this build speaks 1..%d", v, PreviewVersion)
		}
	}
	v := Versions{1, 2}
	var ve *VersionError
	if err := v.Check(3); !errors.As(err, &ve) || *ve != (VersionError{Got: 3, Min: 1, Max: 2}) {
		t.Errorf("Check(3) = %v", err)
	}
	if v.Check(1) != nil || v.Check(2) != nil {
		t.Error("Check refused a version of the range")
	}
}

func TestFeaturesString(t *testing.T) {
	for f, want := range map[Features]string{0: "none", FeatureAckHealth: "ack-health", FeatureAckHealth | 1<<5: "ack-health,bit5"} {
		if got := f.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint64(f), got, want)
		}
	}
}

// TestPreviewPacketsAndFeatureKeys: a Packer set to version 2 builds packets a
// 1..1 reader refuses by version and a 1..2 reader reads; Features and
// LocalHealth round-trip, and leaving them empty writes what version 1 wrote.
func TestPreviewPacketsAndFeatureKeys(t *testing.T) {
	a := &Alive{Node: "n", Addr: "127.0.0.1:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 2, Features: FeatureAckHealth}
	ack := &Ack{Seq: 9, LocalHealth: 3}
	p := NewPacker(0, 7)
	p.SetVersion(2)
	p.Reset()
	check(t, p.Add(a) && p.Add(ack), "packet full")
	pkt := p.Bytes()

	var old PacketReader
	_, err := old.Reset(pkt)
	var ve *VersionError
	check(t, errors.As(err, &ve) && *ve == (VersionError{Got: 2, Min: 1, Max: 1}), "1..1 reader: %v", err)
	isErr(t, PacketVersion(pkt, DefaultVersions), ErrUnsupportedVersion)

	var r PacketReader
	r.Accept(Versions{1, 2})
	h, err := r.Reset(pkt)
	noErr(t, err)
	equal(t, uint8(2), h.Version)
	var d Decoder
	var gotA Alive
	var gotAck Ack
	check(t, r.Next(), "no first message")
	noErr(t, d.Decode(r.Body(), &gotA))
	check(t, r.Next(), "no second message")
	noErr(t, d.Decode(r.Body(), &gotAck))
	equal(t, *a, gotA)
	equal(t, ack.LocalHealth, gotAck.LocalHealth)

	plain := &Alive{Node: "n", Addr: "127.0.0.1:1", Incarnation: 3, ProtoMin: 1, ProtoMax: 1}
	withZero := AppendMessage(nil, plain)
	check(t, !bytes.Contains(withZero, []byte("ft")), "an empty feature set was written")
	check(t, !bytes.Contains(AppendMessage(nil, &Ack{Seq: 9}), []byte("lh")), "a zero LocalHealth was written")
	ns := AppendMessage(nil, &PushPull{Nodes: []NodeState{{Name: "n", Addr: "127.0.0.1:1", ProtoMin: 1, ProtoMax: 2, Features: FeatureAckHealth}}})
	var pp PushPull
	noErr(t, d.Decode(ns[2:], &pp))
	equal(t, FeatureAckHealth, pp.Nodes[0].Features)
}
