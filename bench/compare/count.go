package compare

import (
	"net"
	"sync/atomic"
)

// counters add up what a whole cluster sends. Every byte sent on loopback is received
// once, so sent bytes are the cluster's traffic; UDP payloads and stream payloads
// (TCP, counted on both the dialing and the accepting side) are kept apart.
type counters struct {
	packets     atomic.Int64 // UDP datagrams sent
	packetBytes atomic.Int64 // UDP payload bytes sent
	streams     atomic.Int64 // TCP streams opened
	streamBytes atomic.Int64 // TCP payload bytes written, both directions
}

type traffic struct{ packets, packetBytes, streams, streamBytes int64 }

func (c *counters) snapshot() traffic {
	return traffic{c.packets.Load(), c.packetBytes.Load(), c.streams.Load(), c.streamBytes.Load()}
}

func (c *counters) packet(n int) {
	c.packets.Add(1)
	c.packetBytes.Add(int64(n))
}

// countingConn counts the bytes written to a stream.
type countingConn struct {
	net.Conn
	c *counters
}

func (cc countingConn) Write(b []byte) (int, error) {
	n, err := cc.Conn.Write(b)
	cc.c.streamBytes.Add(int64(n))
	return n, err
}
