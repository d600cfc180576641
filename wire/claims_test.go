package wire

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// The signed bytes of PROTOCOL.md 10.10, built here from the text of the spec
// byte by byte, and the example the spec prints.
func TestClaimBytesFollowTheSpec(t *testing.T) {
	var want bytes.Buffer
	want.WriteString("omnirelay-mesh v1 alive")
	want.WriteByte(0)
	for _, s := range []string{"prod", "n4", "10.0.0.4:7946"} {
		want.Write([]byte{0, byte(len(s))})
		want.WriteString(s)
	}
	want.Write([]byte{0, 0, 0, 0, 0, 0, 0x01, 0x02, 1, 2}) // incarnation 258, versions 1..2
	want.Write([]byte{0, 0, 0, 0, 0, 0, 0, 1})             // features: FeatureAckHealth
	got := AliveClaim("prod", "n4", "10.0.0.4:7946", 258, 1, 2, FeatureAckHealth)
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("AliveClaim:\n got %x\nwant %x", got, want.Bytes())
	}
	const spec = "6f6d6e6972656c61792d6d65736820763120616c6976650000047072" +
		"6f6400026e34000d31302e302e302e343a37393436000000000000010201" + "02" +
		"0000000000000001"
	if hex.EncodeToString(got) != spec {
		t.Errorf("AliveClaim is not the example of PROTOCOL.md 10.10:\n got %x", got)
	}
	want.Reset()
	want.WriteString("omnirelay-mesh v1 leave")
	want.WriteByte(0)
	for _, s := range []string{"prod", "n4"} {
		want.Write([]byte{0, byte(len(s))})
		want.WriteString(s)
	}
	want.Write([]byte{0, 0, 0, 0, 0, 0, 0, 9})
	if got := LeaveClaim("prod", "n4", 9); !bytes.Equal(got, want.Bytes()) {
		t.Errorf("LeaveClaim:\n got %x\nwant %x", got, want.Bytes())
	}
	// A claim of one kind never reads as the other, nor as one of another cluster.
	if bytes.Equal(AliveClaim("", "a", "", 0, 0, 0, 0)[:23], LeaveClaim("", "a", 0)[:23]) ||
		bytes.Equal(LeaveClaim("x", "a", 1), LeaveClaim("y", "a", 1)) {
		t.Error("claims are not separated")
	}
}
