package node

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// tapTransport is a working transport that also records what its node sends, as
// an eavesdropper on the path would: every datagram, and the first write (the
// request frame) of every stream it dials.
type tapTransport struct {
	Transport
	mu      sync.Mutex
	packets []sent
	frames  []sent
}

type sent struct {
	data []byte
	to   string
}

func (t *tapTransport) WriteTo(b []byte, addr string) error {
	t.mu.Lock()
	t.packets = append(t.packets, sent{append([]byte(nil), b...), addr})
	t.mu.Unlock()
	return t.Transport.WriteTo(b, addr)
}

func (t *tapTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := t.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, t: t, to: addr}, nil
}

type tapConn struct {
	net.Conn
	t     *tapTransport
	to    string
	wrote bool
}

func (c *tapConn) Write(b []byte) (int, error) {
	if !c.wrote {
		c.wrote = true
		c.t.mu.Lock()
		c.t.frames = append(c.t.frames, sent{append([]byte(nil), b...), c.to})
		c.t.mu.Unlock()
	}
	return c.Conn.Write(b)
}

// last returns the last recorded item of list sent to addr for which keep holds.
func (t *tapTransport) last(list *[]sent, addr string, keep func([]byte) bool) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(*list) - 1; i >= 0; i-- {
		if s := (*list)[i]; s.to == addr && (keep == nil || keep(s.data)) {
			return s.data
		}
	}
	return nil
}

func count(t *testing.T, n *Node, name string) int {
	t.Helper()
	v, err := strconv.ParseFloat(counter(t, n, name), 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return int(v)
}

// Issue 12, item 1, on real sockets: a sealed packet and a sealed stream request
// frame captured on their way from a to b, replayed to b later from another
// socket, are dropped (the frame's stream closed without a reply) and counted in
// omnirelay_replayed_total, while the cluster carries on.
func TestLoopbackReplayedSealedPacketAndFrameDropped(t *testing.T) {
	keys := [][]byte{key(t)}
	nt, err := ListenNet("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &tapTransport{Transport: nt}
	cfgA := loopbackConfig("a", keys)
	cfgA.Transport = tap
	a, err := Start(t.Context(), cfgA)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Start(t.Context(), loopbackConfig("b", keys, a.AdvertiseAddr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	eventually(t, 10*time.Second, "cluster formed", allSee([]*Node{a, b}, "b", swim.StatusAlive))

	// A packet and a stream request a sent to b, then newer ones (so b has had
	// the captured ones and moved on).
	var pkt, frame []byte
	eventually(t, 10*time.Second, "a packet and a push-pull request captured", func() bool {
		pkt = tap.last(&tap.packets, b.AdvertiseAddr(), nil)
		frame = tap.last(&tap.frames, b.AdvertiseAddr(), nil)
		return pkt != nil && frame != nil
	})
	eventually(t, 10*time.Second, "newer traffic", func() bool {
		p, f := tap.last(&tap.packets, b.AdvertiseAddr(), nil), tap.last(&tap.frames, b.AdvertiseAddr(), nil)
		return &p[0] != &pkt[0] && &f[0] != &frame[0]
	})
	decryptBefore := count(t, b, "omnirelay_decrypt_failures_total")

	conn, err := net.Dial("udp", b.AdvertiseAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 3 {
		if _, err := conn.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "three replayed packets counted", func() bool {
		return count(t, b, "omnirelay_replayed_total") >= 3
	})

	sc, err := net.Dial("tcp", b.AdvertiseAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := sc.Write(frame); err != nil {
		t.Fatal(err)
	}
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if reply, err := io.ReadAll(sc); len(reply) != 0 {
		t.Fatalf("the replayed push-pull request got a %d-byte reply (%v)", len(reply), err)
	}
	eventually(t, 5*time.Second, "the replayed frame counted", func() bool {
		return count(t, b, "omnirelay_replayed_total") >= 4
	})
	if got := count(t, b, "omnirelay_decrypt_failures_total"); got != decryptBefore {
		t.Errorf("replays counted as decrypt failures (%d -> %d): they open, they are refused after", decryptBefore, got)
	}
	eventually(t, 5*time.Second, "the cluster still pushes and pulls", func() bool {
		return b.Stats().PushPulls > 0 && a.Stats().PushPulls > 0
	})
}

// The scenario in virtual time: three voters with a key; the leader is
// killed; an outsider replays the last sealed packet carrying the leader's
// LeaseRenew to one follower every 500 ms. The survivors elect a new leader within
// the normal failover time (TestLeaderElectionFencingAndFailover: under 5 s),
// instead of keeping the dead one in office while the replays go on.
func TestReplayedRenewDoesNotKeepDeadLeaderInOffice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		k := key(t)
		kr, err := wire.NewKeyring(k)
		if err != nil {
			t.Fatal(err)
		}
		nodes := make([]*Node, 3)
		taps := make([]*tapTransport, 3)
		for i := range nodes {
			cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
			cfg.Keys = [][]byte{k}
			taps[i] = &tapTransport{Transport: cfg.Transport}
			cfg.Transport = taps[i]
			nodes[i] = startMem(t, cfg)
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		var holder string
		waitFor(t, 10*time.Second, "a leader", func() bool { holder, _ = agreed(nodes); return holder != "" })
		time.Sleep(3 * time.Second) // a few renewal rounds
		li := int(holder[1] - '0')
		fi := (li + 1) % 3
		follower := nodes[fi]
		renew := taps[li].last(&taps[li].packets, follower.AdvertiseAddr(), func(b []byte) bool {
			return carries(kr, b, lease.TypeRenew)
		})
		if renew == nil {
			t.Fatalf("captured no Renew of the leader %s", holder)
		}
		replayer, err := mn.Listen("10.0.9.9:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer replayer.Close()

		nodes[li].Close()
		crashed := time.Now()
		const replayFor = 30 * time.Second
		survivors := []*Node{nodes[(li+1)%3], nodes[(li+2)%3]}
		var newHolder string
		for time.Since(crashed) < replayFor {
			replayer.WriteTo(renew, follower.AdvertiseAddr())
			time.Sleep(500 * time.Millisecond)
			synctest.Wait()
			if h, _ := agreed(survivors); h != "" && h != holder {
				newHolder = h
				break
			}
		}
		took := time.Since(crashed)
		if newHolder == "" {
			t.Fatalf("the dead leader %s stayed in office for all %v of replays: no new leader", holder, replayFor)
		}
		t.Logf("new leader %s %v (virtual) after %s was killed, with its Renew replayed every 500 ms; %d replays counted",
			newHolder, took, holder, count(t, follower, "omnirelay_replayed_total"))
		if took >= 5*time.Second {
			t.Errorf("failover under replay took %v, want < 5 s", took)
		}
		if count(t, follower, "omnirelay_replayed_total") == 0 {
			t.Errorf("the follower counted no replay")
		}
	})
}

// carries reports whether sealed opens with kr into a packet holding a message of
// type typ.
func carries(kr *wire.Keyring, sealed []byte, typ wire.MsgType) bool {
	plain, err := wire.Open(kr, sealed)
	if err != nil {
		return false
	}
	var r wire.PacketReader
	if _, err := r.Reset(plain); err != nil {
		return false
	}
	for r.Next() {
		if r.Type() == typ {
			return true
		}
	}
	return false
}
