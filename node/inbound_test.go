package node

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/swim"
)

// netErrorsOf is n's omnirelay_network_errors_total{op=op}.
func netErrorsOf(t *testing.T, n *Node, op string) float64 {
	t.Helper()
	mfs, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_network_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no omnirelay_network_errors_total{op=%q}", op)
	return 0
}

// TestInboundAdmission: no one stranger IP holds more than maxPerSource slots,
// strangers together no more than maxInbound-memberReserve, and a stream that finds
// its share full takes the slot of a stream of that share that has sent nothing yet
// (the oldest of the source holding most), or is refused when every one is sending.
func TestInboundAdmission(t *testing.T) {
	attacker := netip.MustParseAddr("192.0.2.1")
	member := netip.MustParseAddr("192.0.2.200")
	stranger := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }
	// mustAdmit admits c and starts its read, as its goroutine would.
	mustAdmit := func(t *testing.T, in *inbound, c *inConn) *inConn {
		t.Helper()
		victim, v, _ := in.admit(c, false)
		if v != admitted {
			t.Fatalf("stream from %v (member %v) not admitted: verdict %d", c.ip, c.member, v)
		}
		in.startRead(c)
		return victim
	}

	t.Run("one source", func(t *testing.T) {
		in := newInbound()
		var held []*inConn
		for range maxPerSource {
			c := &inConn{ip: attacker}
			if v := mustAdmit(t, in, c); v != nil {
				t.Fatalf("evicted %v below the per-source cap", v.seq)
			}
			held = append(held, c)
		}
		// The joiner shares the attacker's IP: it takes the oldest idle slot.
		joiner := &inConn{ip: attacker}
		if v := mustAdmit(t, in, joiner); v != held[0] {
			t.Fatalf("evicted %+v, want the oldest idle stream %+v", v, held[0])
		}
		in.release(held[0]) // its goroutine ends later: a no-op
		if got := in.perSource[attacker]; got != maxPerSource {
			t.Fatalf("source holds %d slots, want %d", got, maxPerSource)
		}
		// Once the joiner sends, it is never the victim, however many follow.
		in.markActive(joiner)
		for i := range 3 * maxPerSource {
			if v := mustAdmit(t, in, &inConn{ip: attacker}); v == joiner {
				t.Fatalf("arrival %d evicted the active joiner", i)
			}
		}
		// Every slot sending: the next one waits, not let over the cap.
		for c := range in.conns {
			in.markActive(c)
		}
		if _, v, _ := in.admit(&inConn{ip: attacker}, false); v != mustWait {
			t.Fatalf("verdict %d for a 17th stream from one source while 16 are sending, want to wait", v)
		}
		in.giveUp()
		// Another stranger IP is not affected.
		mustAdmit(t, in, &inConn{ip: stranger(1)})
	})

	t.Run("burst before the reads begin", func(t *testing.T) {
		// Joins arriving faster than their goroutines start: a stream not yet read
		// may have its request waiting in the socket, so it is never the victim.
		in := newInbound()
		var unread []*inConn
		for range maxPerSource {
			c := &inConn{ip: attacker}
			if _, v, _ := in.admit(c, false); v != admitted {
				t.Fatal("not admitted below the per-source cap")
			}
			unread = append(unread, c)
		}
		next := &inConn{ip: attacker}
		victim, v, room := in.admit(next, false)
		if v != mustWait {
			t.Fatalf("verdict %d (evicted %+v, whose request was never read), want to wait", v, victim)
		}
		in.startRead(unread[3])
		select {
		case <-room:
		default:
			t.Fatal("a stream became evictable and the waiter was not woken")
		}
		if victim, v, _ := in.admit(next, true); v != admitted || victim != unread[3] {
			t.Fatalf("verdict %d evicting %+v, want admitted evicting the one stream that waited for its request", v, victim)
		}
		if in.waiting != 0 {
			t.Fatalf("%d waiting after the waiter got in", in.waiting)
		}
	})

	t.Run("biggest holder first", func(t *testing.T) {
		in := newInbound()
		joiner := &inConn{ip: stranger(200)}
		mustAdmit(t, in, joiner) // the oldest idle stream of all
		for i := 1; in.strangers < maxInbound-memberReserve; i++ {
			mustAdmit(t, in, &inConn{ip: stranger(i%4 + 1)})
		}
		// Four flood IPs hold 47 slots between them: every arrival, however many,
		// evicts one of theirs, never the joiner's single stream.
		for i := range 10 * maxInbound {
			if v := mustAdmit(t, in, &inConn{ip: stranger(i%4 + 1)}); v == nil || v == joiner {
				t.Fatalf("arrival %d evicted %+v, want a flood stream", i, v)
			}
		}
	})

	t.Run("room kept for members", func(t *testing.T) {
		in := newInbound()
		for i := range maxInbound - memberReserve {
			c := &inConn{ip: stranger(i)}
			mustAdmit(t, in, c)
			in.markActive(c)
		}
		if _, v, _ := in.admit(&inConn{ip: stranger(250)}, false); v != mustWait {
			t.Fatal("strangers took more than their share")
		}
		in.giveUp()
		for range memberReserve {
			c := &inConn{ip: member, member: true}
			if v := mustAdmit(t, in, c); v != nil {
				t.Fatalf("a member evicted %+v from free slots", v)
			}
			in.markActive(c)
		}
		if _, v, _ := in.admit(&inConn{ip: member, member: true}, false); v != mustWait {
			t.Fatalf("admitted a stream beyond %d", maxInbound)
		}
		in.giveUp()
		if got := len(in.conns); got != maxInbound {
			t.Fatalf("%d streams held, want %d", got, maxInbound)
		}
	})

	t.Run("waiters bounded", func(t *testing.T) {
		in := newInbound()
		for range maxInbound {
			c := &inConn{ip: member, member: true}
			mustAdmit(t, in, c)
			in.markActive(c)
		}
		var room <-chan struct{}
		for i := range maxWaiting {
			var v verdict
			if _, v, room = in.admit(&inConn{ip: member, member: true}, false); v != mustWait {
				t.Fatalf("waiter %d: verdict %d, want to wait", i, v)
			}
		}
		if _, v, _ := in.admit(&inConn{ip: member, member: true}, false); v != refused {
			t.Fatalf("verdict %d with %d waiting, want refused", v, maxWaiting)
		}
		for c := range in.conns {
			in.release(c)
			break
		}
		select {
		case <-room:
		default:
			t.Fatal("a slot freed and the waiters were not woken")
		}
	})

	t.Run("transports without addresses", func(t *testing.T) {
		in := newInbound()
		for range maxInbound - memberReserve {
			mustAdmit(t, in, &inConn{}) // MemNetwork pipes: no per-source cap
		}
	})

	t.Run("closed", func(t *testing.T) {
		in := newInbound()
		in.close()
		if _, v, _ := in.admit(&inConn{ip: attacker}, false); v != refused {
			t.Fatal("admitted a stream after close")
		}
	})
}

// TestByteBudget: reservations beyond the limit wait for a release or are refused
// after the wait; the peak never exceeds the limit.
func TestByteBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newByteBudget(100)
		if !b.reserve(60, time.Second, nil) || !b.reserve(40, time.Second, nil) {
			t.Fatal("reservations within the limit refused")
		}
		if b.reserve(101, time.Hour, nil) {
			t.Fatal("a reservation over the whole limit was granted")
		}
		start := time.Now()
		if b.reserve(1, time.Second, nil) {
			t.Fatal("a reservation over a full budget was granted")
		}
		if waited := time.Since(start); waited != time.Second {
			t.Fatalf("refused after %v, want the 1s wait", waited)
		}
		got := make(chan bool)
		go func() { got <- b.reserve(50, time.Second, nil) }()
		time.Sleep(100 * time.Millisecond)
		b.release(60)
		if !<-got {
			t.Fatal("a waiting reservation was refused after room was released")
		}
		if used, peak := b.inUse(); used != 90 || peak != 100 {
			t.Fatalf("used %d peak %d, want 90 and 100", used, peak)
		}
		done := make(chan struct{})
		close(done)
		if b.reserve(50, time.Hour, done) {
			t.Fatal("a reservation was granted after done")
		}
	})
}

// TestIdleStreamClosedAfterFirstFrameTimeout: a connection that sends nothing is
// closed after FirstFrameTimeout, not after the whole StreamTimeout, and counted.
func TestIdleStreamClosedAfterFirstFrameTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfg := memConfig(t, mn, "a", "10.0.0.1:7946")
		cfg.StreamTimeout = time.Minute
		n := startMem(t, cfg)
		defer n.Close()
		client, err := mn.Listen("10.0.0.9:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		conn, err := client.Dial(t.Context(), n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("read a byte from a stream that sent no request")
		}
		if took := time.Since(start); took != DefaultFirstFrame {
			t.Errorf("idle stream closed after %v, want FirstFrameTimeout (%v)", took, DefaultFirstFrame)
		}
		synctest.Wait()
		if got := netErrorsOf(t, n, "stream_idle"); got != 1 {
			t.Errorf("stream_idle = %v, want 1", got)
		}
	})
}

// TestMemberIPsPublished: the accept goroutine's view of member IPs follows the
// loop's membership, without the node's own IP.
func TestMemberIPsPublished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		a := startMem(t, memConfig(t, mn, "a", "10.0.0.1:7946"))
		defer a.Close()
		b := startMem(t, memConfig(t, mn, "b", "10.0.0.2:7946", "10.0.0.1:7946"))
		waitFor(t, 5*time.Second, "b joined", allSee([]*Node{a}, "b", swim.StatusAlive))
		if !a.isMemberIP(netip.MustParseAddr("10.0.0.2")) || a.isMemberIP(netip.MustParseAddr("10.0.0.1")) {
			t.Fatalf("member IPs %v, want b's only", a.live.ips)
		}
		b.Close()
		waitFor(t, 30*time.Second, "b dead", allSee([]*Node{a}, "b", swim.StatusDead))
		if a.isMemberIP(netip.MustParseAddr("10.0.0.2")) {
			t.Fatal("a dead member's IP still counts as a member's")
		}
	})
}

// TestJoinThroughIdleConnectionFlood: while the test holds 80 idle connections to
// the seed's gossip port from four other loopback IPs (127.0.0.2-5; the joiner is on
// 127.0.0.1) and reopens each as soon as it is closed, a join through that port
// still succeeds. Before, 64 idle connections held every inbound slot for the 10 s
// stream timeout and every join failed while they were held.
func TestJoinThroughIdleConnectionFlood(t *testing.T) {
	seed, err := Start(t.Context(), loopbackConfig("seed", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var opened, open atomic.Int64
	full := make(chan struct{})
	var fullOnce sync.Once
	const idle = 80
	for i := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%4))}}
			for ctx.Err() == nil {
				conn, err := d.DialContext(ctx, "tcp", seed.Addr())
				if err != nil {
					continue
				}
				opened.Add(1)
				if open.Add(1) >= maxInbound {
					fullOnce.Do(func() { close(full) })
				}
				unhook := context.AfterFunc(ctx, func() { conn.Close() })
				conn.Read(make([]byte, 1)) // until the seed closes it
				unhook()
				open.Add(-1)
				conn.Close()
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()
	select {
	case <-full:
	case <-time.After(10 * time.Second):
		t.Fatal("the flood never held its connections open")
	}

	// Within the 10 s stream timeout, so that before the fix no held slot ever
	// came free during the join.
	jctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	cfg := loopbackConfig("joiner", nil, seed.Addr())
	start := time.Now()
	j, err := Start(jctx, cfg)
	if err != nil {
		t.Fatalf("join through the flooded port: %v (seed refused %v, evicted %v, idle %v; %d connections opened)",
			err, netErrorsOf(t, seed, "stream_refused"), netErrorsOf(t, seed, "stream_evicted"),
			netErrorsOf(t, seed, "stream_idle"), opened.Load())
	}
	defer j.Close()
	t.Logf("joined in %v; the seed evicted %v idle streams and refused %v; %d connections opened", time.Since(start),
		netErrorsOf(t, seed, "stream_evicted"), netErrorsOf(t, seed, "stream_refused"), opened.Load())
	if netErrorsOf(t, seed, "stream_evicted")+netErrorsOf(t, seed, "stream_refused") == 0 {
		t.Fatal("the flood never filled the seed's slots: the test proved nothing")
	}
}

// TestInboundFrameBytesBounded: 32 peers each sending an 8 MiB frame at once (256
// MiB, unauthenticated) get at most frameBudget bytes reserved at any time, every
// frame's reservation is released, and the ones that found no room are refused and
// counted. Before, all 32 were read at once: 64 such frames took RSS to 0.9 GB.
func TestInboundFrameBytesBounded(t *testing.T) {
	seed, err := Start(t.Context(), loopbackConfig("seed", [][]byte{key(t)}))
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	const senders, size = 32, 8 << 20
	frame := make([]byte, 4+size) // a length prefix, then junk that never opens
	frame[1] = size >> 16
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", seed.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			conn.Write(frame)          // fails once the seed refuses the frame
			conn.Read(make([]byte, 1)) // until the seed is done with it
		}()
	}
	wg.Wait()
	eventually(t, 10*time.Second, "every reservation released", func() bool { used, _ := seed.budget.inUse(); return used == 0 })
	_, peak := seed.budget.inUse()
	if peak > frameBudget {
		t.Fatalf("%d bytes of inbound frames reserved at once, budget %d", peak, frameBudget)
	}
	if peak < 2*size {
		t.Fatalf("peak reservation %d: frames were not accounted (or never concurrent)", peak)
	}
	t.Logf("peak %d MiB reserved of %d MiB claimed; %v frames refused over budget", peak>>20, senders*size>>20,
		netErrorsOf(t, seed, "frame_budget"))
}
