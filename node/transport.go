package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Transport carries a node's traffic: datagrams (probes and gossip) and streams (one
// request frame, one reply frame: push-pull and join). Both are reachable at Addr.
// NetTransport is UDP plus TCP; MemNetwork provides an in-memory one for tests.
// Methods are safe for concurrent use; ReadFrom and Accept return net.ErrClosed
// (wrapped) after Close.
type Transport interface {
	// Addr is the bound host:port, the same for packets and streams.
	Addr() string
	// WriteTo sends one datagram to addr, an IP-literal host:port; delivery is best
	// effort. It is called on the node's loop, so it must never block on a name:
	// NetTransport refuses any other address (ErrNotIPLiteral) instead of resolving.
	WriteTo(b []byte, addr string) error
	// ReadFrom blocks for the next datagram, copies it into b and reports its
	// length and sender address.
	ReadFrom(b []byte) (int, string, error)
	// Dial opens a stream to addr (an IP-literal host:port for NetTransport).
	Dial(ctx context.Context, addr string) (net.Conn, error)
	// Accept waits for the next inbound stream.
	Accept() (net.Conn, error)
	// Close releases the sockets and unblocks ReadFrom and Accept.
	Close() error
}

// ErrNotIPLiteral means NetTransport was asked to send to or dial an address whose
// host is not an IP literal. Addresses on the wire are IP literals (PROTOCOL.md,
// section 3.4) and configured names are resolved at Start and Join, so the loop
// never waits for a name server.
var ErrNotIPLiteral = errors.New("node: address is not an IP-literal host:port")

// maxBindAttempts bounds the retries when binding port 0: TCP picks a free port, and
// UDP may find that port taken by someone else.
const maxBindAttempts = 10

// NetTransport is UDP for packets and TCP for streams on one host:port.
type NetTransport struct {
	udp  *net.UDPConn
	tcp  *net.TCPListener
	addr string
}

// ListenNet binds UDP and TCP on bind (host:port; port 0 picks a free port shared by
// both).
func ListenNet(bind string) (*NetTransport, error) {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range maxBindAttempts {
		tl, err := net.Listen("tcp", bind)
		if err != nil {
			return nil, err
		}
		tcp := tl.(*net.TCPListener)
		p := tcp.Addr().(*net.TCPAddr).Port
		udpAddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			tcp.Close()
			return nil, err
		}
		udp, err := net.ListenUDP("udp", udpAddr)
		if err != nil {
			tcp.Close()
			lastErr = err
			if port != "0" {
				return nil, err
			}
			continue
		}
		// A larger receive buffer rides out bursts while the loop is busy.
		_ = udp.SetReadBuffer(2 << 20)
		return &NetTransport{udp: udp, tcp: tcp, addr: tcp.Addr().String()}, nil
	}
	return nil, fmt.Errorf("binding UDP and TCP on one port of %s: %w", bind, lastErr)
}

func (t *NetTransport) Addr() string { return t.addr }

// parseAddr is addr as a socket address; it never resolves a name.
func parseAddr(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %q", ErrNotIPLiteral, addr)
	}
	return ap, nil
}

func (t *NetTransport) WriteTo(b []byte, addr string) error {
	ap, err := parseAddr(addr)
	if err != nil {
		return err
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return err
}

func (t *NetTransport) ReadFrom(b []byte) (int, string, error) {
	n, from, err := t.udp.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, "", err
	}
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()).String(), nil
}

func (t *NetTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", ap.String())
}

func (t *NetTransport) Accept() (net.Conn, error) { return t.tcp.Accept() }

func (t *NetTransport) Close() error {
	return errors.Join(t.udp.Close(), t.tcp.Close())
}
