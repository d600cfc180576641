package node

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// A datagram of pings whose reply address is a host name must not stall the loop
// (before the fix WriteTo resolved each name on the loop: ~10 s per ping, peers
// declared the node dead). The pings are malformed (counted) and the node keeps
// answering probes. The test itself resolves nothing, and the names are under
// .invalid, which no name server may resolve.
func TestHostNameReplyAddressDoesNotStallTheLoop(t *testing.T) {
	n, err := Start(t.Context(), loopbackConfig("a", nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to, err := net.ResolveUDPAddr("udp", n.Addr()) // an IP literal: no lookup
	if err != nil {
		t.Fatal(err)
	}
	const hostile = 3
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(""))
	for i := range hostile {
		p.Add(&wire.Ping{Seq: uint32(100 + i), Target: "a", Source: "evil", SourceAddr: fmt.Sprintf("stall-%d.invalid:7946", i)})
	}
	start := time.Now()
	if _, err := conn.WriteToUDP(p.Bytes(), to); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	p.Add(&wire.Ping{Seq: 7, Target: "a", Source: "probe", SourceAddr: conn.LocalAddr().String()})
	if _, err := conn.WriteToUDP(p.Bytes(), to); err != nil {
		t.Fatal(err)
	}
	// The legitimate probe is answered; a stalled loop would not answer it within
	// a probe period, let alone this bound.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	var r wire.PacketReader
	var d wire.Decoder
	for acked := false; !acked; {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no ack to a probe sent after the hostile pings (after %v): %v", time.Since(start), err)
		}
		if _, err := r.Reset(buf[:k]); err != nil {
			continue
		}
		for r.Next() {
			var a wire.Ack
			if r.Type() == wire.TypeAck && d.Decode(r.Body(), &a) == nil && a.Seq == 7 {
				acked = true
			}
		}
	}
	t.Logf("probe answered %v after %d pings naming host names", time.Since(start), hostile)
	if got := n.Stats().Malformed; got != hostile {
		t.Errorf("Malformed = %d, want %d: a ping whose reply address is a host name is malformed", got, hostile)
	}
}

// NetTransport sends only to IP literals: a name is refused, never resolved.
func TestNetTransportRefusesHostNames(t *testing.T) {
	tr, err := ListenNet("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.WriteTo([]byte("x"), "stall.invalid:7946"); !errors.Is(err, ErrNotIPLiteral) {
		t.Errorf("WriteTo a host name: %v, want ErrNotIPLiteral", err)
	}
	if _, err := tr.Dial(t.Context(), "stall.invalid:7946"); !errors.Is(err, ErrNotIPLiteral) {
		t.Errorf("Dial a host name: %v, want ErrNotIPLiteral", err)
	}
	if err := tr.WriteTo([]byte("x"), tr.Addr()); err != nil {
		t.Errorf("WriteTo an IP literal: %v", err)
	}
}
