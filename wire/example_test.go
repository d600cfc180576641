package wire_test

import (
	"bytes"
	"fmt"

	"github.com/omnirelay/mesh/wire"
)

// A sender packs a probe and queued gossip, seals the packet; the receiver opens
// it, checks the cluster and walks the messages, skipping types it does not know.
func Example() {
	cluster := wire.ClusterHash("prod")
	key := bytes.Repeat([]byte{7}, wire.KeySize)
	ring, _ := wire.NewKeyring(key)

	p := wire.NewPacker(wire.DefaultMTU-wire.SealOverhead, cluster) // room for Seal
	p.Add(&wire.Ping{Seq: 1, Target: "b", Source: "a", SourceAddr: "10.0.0.1:7946"})
	queued := [][]byte{wire.AppendMessage(nil, &wire.Suspect{Node: "c", Incarnation: 4, From: "a"})}
	for _, b := range queued {
		if !p.AddEncoded(b) {
			break
		}
	}
	nonces := bytes.NewReader(make([]byte, wire.NonceSize)) // crypto/rand.Reader in production
	sealed, _ := wire.Seal(ring, p.Bytes(), nonces)

	plain, err := wire.Open(ring, sealed)
	if err != nil {
		fmt.Println("drop:", err)
		return
	}
	// The protocols this receiver runs; a stack adds lease.Messages() and
	// shard.Messages().
	reg, err := wire.NewRegistry(wire.Membership())
	if err != nil {
		panic(err)
	}
	var r wire.PacketReader
	var d wire.Decoder
	h, err := r.Reset(plain)
	if err == nil {
		err = h.CheckCluster(cluster)
	}
	if err != nil {
		fmt.Println("drop:", err)
		return
	}
	for r.Next() {
		m := reg.New(r.Type())
		if m == nil {
			continue // a type of no protocol run here, or of a newer peer: skipped by its length
		}
		if err := d.Decode(r.Body(), m); err != nil {
			continue // count and drop this message
		}
		fmt.Printf("%T %+v\n", m, m)
	}
	fmt.Println("err:", r.Err(), "sealed bytes:", len(sealed))
	// Output:
	// *wire.Ping &{Seq:1 Target:b Source:a SourceAddr:10.0.0.1:7946}
	// *wire.Suspect &{Node:c Incarnation:4 From:a}
	// err: <nil> sealed bytes: 86
}
