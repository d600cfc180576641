package compare

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// mlTransport counts what a memberlist node sends. It wraps NetTransport and
// overrides every sending path (memberlist prefers the NodeAware methods) and wraps
// inbound streams, so replies on accepted connections are counted too.
type mlTransport struct {
	*memberlist.NetTransport
	c       *counters
	streams chan net.Conn
	stopped chan struct{}
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*mlTransport)(nil)

func newMLTransport(c *counters) (*mlTransport, error) {
	var nt *memberlist.NetTransport
	var err error
	// Port 0 binds TCP first and then UDP on the same port, which another socket may
	// hold; retry as memberlist itself does.
	for range 10 {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{"127.0.0.1"},
			Logger:    log.New(io.Discard, "", 0),
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	t := &mlTransport{NetTransport: nt, c: c, streams: make(chan net.Conn), stopped: make(chan struct{})}
	go t.forward()
	return t, nil
}

func (t *mlTransport) forward() {
	in := t.NetTransport.StreamCh()
	for {
		select {
		case conn := <-in:
			select {
			case t.streams <- countingConn{conn, t.c}:
			case <-t.stopped:
				conn.Close()
				return
			}
		case <-t.stopped:
			return
		}
	}
}

func (t *mlTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *mlTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.c.packet(len(b))
	return t.NetTransport.WriteTo(b, addr)
}

func (t *mlTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t.c.packet(len(b))
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *mlTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *mlTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	t.c.streams.Add(1)
	return countingConn{conn, t.c}, nil
}

func (t *mlTransport) Shutdown() error {
	t.once.Do(func() { close(t.stopped) })
	return t.NetTransport.Shutdown()
}

// mlEvents feeds memberlist's callbacks to the tracker. NotifyLeave fires for a
// graceful leave and for a death alike.
type mlEvents struct {
	name string
	tr   *tracker
}

func (e mlEvents) NotifyJoin(n *memberlist.Node)   { e.tr.up(e.name, n.Name, time.Now()) }
func (e mlEvents) NotifyLeave(n *memberlist.Node)  { e.tr.down(e.name, n.Name, time.Now()) }
func (e mlEvents) NotifyUpdate(n *memberlist.Node) {}

// mlImpl runs hashicorp/memberlist v0.7.0 with DefaultLANConfig, untouched but for
// addresses, logging and the counting transport.
type mlImpl struct{}

func (mlImpl) pushPullInterval() time.Duration {
	return memberlist.DefaultLANConfig().PushPullInterval
}

type mlMember struct {
	ml *memberlist.Memberlist
}

func (mlImpl) start(name string, c *counters, tr *tracker) (member, error) {
	t, err := newMLTransport(c)
	if err != nil {
		return nil, err
	}
	port := t.GetAutoBindPort()
	conf := memberlist.DefaultLANConfig()
	conf.Name = name
	conf.BindAddr, conf.BindPort = "127.0.0.1", port
	conf.AdvertiseAddr, conf.AdvertisePort = "127.0.0.1", port
	conf.Transport = t
	conf.LogOutput = io.Discard
	conf.Events = mlEvents{name, tr}
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Shutdown()
		return nil, err
	}
	return &mlMember{ml}, nil
}

func (m *mlMember) addr() string {
	ln := m.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// join retries like our node does (memberlist's Join tries once), until ctx ends.
func (m *mlMember) join(ctx context.Context, seed string) error {
	wait := 200 * time.Millisecond
	for {
		_, err := m.ml.Join([]string{seed})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("memberlist join %s: %w", seed, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// crash shuts down without Leave: peers must detect it by probing.
func (m *mlMember) crash() { m.ml.Shutdown() }

func (m *mlMember) stop() { m.ml.Shutdown() }

func (m *mlMember) check() error { return nil }

// queued: memberlist keeps its broadcast queue unexported.
func (m *mlMember) queued() int { return -1 }
