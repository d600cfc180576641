package compare

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
)

// countingTransport counts what a node sends through its UDP/TCP transport.
type countingTransport struct {
	node.Transport
	c *counters
}

func (t countingTransport) WriteTo(b []byte, addr string) error {
	t.c.packet(len(b))
	return t.Transport.WriteTo(b, addr)
}

func (t countingTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := t.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	t.c.streams.Add(1)
	return countingConn{conn, t.c}, nil
}

func (t countingTransport) Accept() (net.Conn, error) {
	conn, err := t.Transport.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{conn, t.c}, nil
}

// ourImpl runs github.com/omnirelay/mesh/node with one of its profiles, with a
// packet key (keys) and node certificates of one CA (pki) when set.
type ourImpl struct {
	profile string
	keys    [][]byte
	pki     *benchPKI
}

// eventBuffer is large enough that no subscription drops an event while 128 nodes
// form a cluster at once; a drop would make the tracker miss a change.
const eventBuffer = 8192

func (o ourImpl) pushPullInterval() time.Duration {
	if o.profile == node.ProfileMemberlist {
		return swim.MemberlistProfile("x", "x:1").PushPullInterval
	}
	return swim.LANProfile("x", "x:1").PushPullInterval
}

type ourMember struct {
	n    *node.Node
	sub  *node.Subscription
	done chan struct{}
}

func (o ourImpl) start(name string, c *counters, tr *tracker) (member, error) {
	nt, err := node.ListenNet("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := node.Config{
		Name:        name,
		Profile:     o.profile,
		Transport:   countingTransport{nt, c},
		EventBuffer: eventBuffer,
		Logger:      slog.New(slog.DiscardHandler),
		Keys:        o.keys,
	}
	if o.pki != nil {
		if cfg.TLS, err = o.pki.source(name); err != nil {
			nt.Close()
			return nil, err
		}
	}
	n, err := node.Start(context.Background(), cfg)
	if err != nil {
		nt.Close()
		return nil, err
	}
	m := &ourMember{n: n, sub: n.Subscribe(), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for ev := range m.sub.C {
			switch ev.Kind {
			case swim.EventJoin, swim.EventAlive:
				tr.up(name, ev.Member.Name, ev.At)
			case swim.EventDead, swim.EventLeft:
				tr.down(name, ev.Member.Name, ev.At)
			}
		}
	}()
	return m, nil
}

func (m *ourMember) addr() string { return m.n.AdvertiseAddr() }

func (m *ourMember) join(ctx context.Context, seed string) error {
	return m.n.Join(ctx, seed)
}

// crash closes the sockets without a leave: peers must detect it by probing.
func (m *ourMember) crash() { m.stop() }

func (m *ourMember) queued() int { return m.n.Stats().QueueLen }

func (m *ourMember) stop() {
	m.n.Close()
	<-m.done
}

func (m *ourMember) check() error {
	if d := m.sub.Dropped(); d > 0 {
		return fmt.Errorf("%s: subscription dropped %d events", m.n.Name(), d)
	}
	return nil
}
