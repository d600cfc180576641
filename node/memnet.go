package node

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// MemNetwork is an in-memory network of Transports: datagrams go through bounded
// channels (dropped when the receiver's queue is full, like UDP), streams through
// net.Pipe. It needs no sockets and no real time, so node's loop, timers and backoff
// run under testing/synctest on it.
type MemNetwork struct {
	mu       sync.Mutex
	eps      map[string]*memTransport
	nextPort int
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{eps: map[string]*memTransport{}, nextPort: 10000}
}

// memQueue is how many datagrams an endpoint holds before dropping.
const memQueue = 1024

type memPacket struct {
	from string
	data []byte
}

type memTransport struct {
	net     *MemNetwork
	addr    string
	packets chan memPacket
	accepts chan net.Conn
	closed  chan struct{}
	once    sync.Once
}

// Listen binds addr (host:port; port 0 picks an unused one).
func (n *MemNetwork) Listen(addr string) (Transport, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if port == "0" {
		n.nextPort++
		addr = net.JoinHostPort(host, strconv.Itoa(n.nextPort))
	}
	if _, ok := n.eps[addr]; ok {
		return nil, fmt.Errorf("memnet: %s: address in use", addr)
	}
	t := &memTransport{net: n, addr: addr, packets: make(chan memPacket, memQueue),
		accepts: make(chan net.Conn), closed: make(chan struct{})}
	n.eps[addr] = t
	return t, nil
}

func (n *MemNetwork) lookup(addr string) *memTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.eps[addr]
}

func (t *memTransport) Addr() string { return t.addr }

func (t *memTransport) WriteTo(b []byte, addr string) error {
	select {
	case <-t.closed:
		return net.ErrClosed
	default:
	}
	dst := t.net.lookup(addr)
	if dst == nil {
		return nil // nobody there: the datagram is lost, as on a real network
	}
	select {
	case dst.packets <- memPacket{from: t.addr, data: append([]byte(nil), b...)}:
	default: // receiver queue full: dropped
	}
	return nil
}

func (t *memTransport) ReadFrom(b []byte) (int, string, error) {
	select {
	case p := <-t.packets:
		return copy(b, p.data), p.from, nil
	case <-t.closed:
		return 0, "", net.ErrClosed
	}
}

func (t *memTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	dst := t.net.lookup(addr)
	if dst == nil {
		return nil, &net.OpError{Op: "dial", Net: "mem", Err: fmt.Errorf("%s: connection refused", addr)}
	}
	client, server := net.Pipe()
	select {
	case dst.accepts <- server:
		return client, nil
	case <-dst.closed:
		return nil, &net.OpError{Op: "dial", Net: "mem", Err: fmt.Errorf("%s: connection refused", addr)}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (t *memTransport) Accept() (net.Conn, error) {
	select {
	case c := <-t.accepts:
		return c, nil
	case <-t.closed:
		return nil, net.ErrClosed
	}
}

func (t *memTransport) Close() error {
	t.once.Do(func() {
		t.net.mu.Lock()
		delete(t.net.eps, t.addr)
		t.net.mu.Unlock()
		close(t.closed)
	})
	return nil
}
