package node

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// Limits of inbound streams, all applied before the request is authenticated, so
// that neither one source nor a crowd of strangers can hold every slot (issue 12: 64
// idle connections made every join, push-pull and shard-map fetch fail while held).
const (
	// maxInbound is how many inbound streams are served at once.
	maxInbound = 64
	// memberReserve of the maxInbound slots are kept for connections from the IP of
	// a current member: strangers (joiners, clients, attackers) share the rest.
	memberReserve = 16
	// maxPerSource is how many streams one stranger IP may hold at once. A node dials
	// a peer for one push-pull or join at a time; 16 leaves room for several agents
	// behind one address (NAT, tests on 127.0.0.1) and keeps one source to a quarter
	// of the slots.
	maxPerSource = 16
	// frameBudget bounds the bytes of all inbound request frames being read or
	// waiting for the loop at once: four frames of the largest size
	// (wire.DefaultMaxFrame, 8 MiB, plus a KiB for prefix and envelope), while a
	// push-pull of a 10,000-member cluster is well under one. 64 streams of 8 MiB
	// would otherwise hold 512 MiB (0.9 GB RSS measured) before anything was
	// authenticated.
	frameBudget = 4 * (wire.DefaultMaxFrame + 1<<10)
	// maxWaiting is how many accepted streams may wait for a slot at once when
	// every slot of their share is taken by streams already being read or served. A
	// burst of joins (a deploy starting 100 nodes) would otherwise be refused and
	// retry after a backoff; waiting, each is served as soon as one before it ends.
	// A waiter gives up after FirstFrameTimeout.
	maxWaiting = maxInbound
	// budgetWait is how long a frame waits for room in frameBudget before it is
	// refused: long enough to ride out a burst of large push-pulls, short enough that
	// a refused peer retries well within its stream timeout.
	budgetWait = time.Second
)

// Errors of inbound streams, logged at debug level and counted.
var (
	errEvicted    = errors.New("node: stream closed to make room: no request had arrived")
	errOverBudget = errors.New("node: stream request refused: inbound frame byte budget full")
)

// inConn is one inbound stream being served.
type inConn struct {
	conn   net.Conn
	ip     netip.Addr // source IP; invalid for transports without one (MemNetwork pipes)
	member bool       // ip belonged to a current member when accepted
	seq    uint64     // order of admission: lower is older
	// idle is true until the request's length prefix has arrived. Guarded by
	// inbound.mu.
	idle bool
	// reading is true once the stream's goroutine waits for the request. Only
	// streams both idle and reading are evicted: one whose goroutine has not run yet
	// may have its request waiting in the socket (a burst of joins arrives faster
	// than their goroutines start; evicting those made 127 loopback joins retry, and
	// formation took seconds). Guarded by inbound.mu.
	reading bool
}

// inbound is the table of inbound streams, shared by the accept goroutine and the
// stream goroutines. When a new stream finds its share full it evicts an idle one of
// that share (victim) instead of being refused: a real peer writes its request as
// soon as it connects, so only connections found to have sent nothing when read are
// ever evicted, and a
// joiner gets in however many idle connections an attacker on other IPs keeps
// reopening. An attacker on the joiner's own IP can still evict the joiner's stream
// before its request is read; the joiner's retry then competes again.
type inbound struct {
	mu        sync.Mutex
	conns     map[*inConn]struct{}
	perSource map[netip.Addr]int // streams of strangers, by IP
	strangers int
	seq       uint64
	closed    bool
	waiting   int           // accepted streams waiting for a slot, at most maxWaiting
	changed   chan struct{} // closed, and replaced, when a slot frees or a stream becomes evictable
}

func newInbound() *inbound {
	return &inbound{conns: map[*inConn]struct{}{}, perSource: map[netip.Addr]int{}, changed: make(chan struct{})}
}

// verdict is what admit decided for a stream.
type verdict int

const (
	admitted verdict = iota
	// mustWait: every slot of the stream's share is busy with streams being read or
	// served; wait on the room channel admit returned, then call admit again.
	mustWait
	refused
)

// sourceIP is the IP of a stream's remote address (the port is the peer's ephemeral
// one, so only the IP identifies it); invalid when the address is not IP:port.
func sourceIP(a net.Addr) netip.Addr {
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admit takes c into the table. When c's share is full it evicts the oldest idle
// stream of that share and returns it for the caller to close; when there is none, c
// must wait on room for a change and try again (waiting true), or is refused once
// maxWaiting others wait. A waiter that gives up calls giveUp. Everything is
// refused once the table is closed.
func (in *inbound) admit(c *inConn, waiting bool) (victim *inConn, v verdict, room <-chan struct{}) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		if waiting {
			in.waiting--
		}
		return nil, refused, nil
	}
	var share func(*inConn) bool // the streams c competes with for the full slots
	switch {
	case !c.member && c.ip.IsValid() && in.perSource[c.ip] >= maxPerSource:
		share = func(o *inConn) bool { return !o.member && o.ip == c.ip }
	case !c.member && in.strangers >= maxInbound-memberReserve:
		share = func(o *inConn) bool { return !o.member }
	case len(in.conns) >= maxInbound:
		share = func(*inConn) bool { return true }
	}
	if share != nil {
		if victim = in.victim(share); victim == nil {
			switch {
			case waiting:
			case in.waiting < maxWaiting:
				in.waiting++
			default:
				return nil, refused, nil
			}
			return nil, mustWait, in.changed
		}
		in.remove(victim)
	}
	if waiting {
		in.waiting--
	}
	in.seq++
	c.seq, c.idle = in.seq, true
	in.conns[c] = struct{}{}
	if !c.member {
		in.strangers++
		if c.ip.IsValid() {
			in.perSource[c.ip]++
		}
	}
	return victim, admitted, nil
}

// giveUp ends the wait of a stream that admit told to wait.
func (in *inbound) giveUp() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.waiting--
}

// signal wakes the waiters. in.mu is held.
func (in *inbound) signal() {
	close(in.changed)
	in.changed = make(chan struct{})
}

// victim picks the idle stream of share to evict: the oldest of the source that
// holds the most idle streams of the share. Taking from the biggest holder first
// means a joiner with one stream is evicted only once every source is down to one,
// however fast a flood from other IPs reopens its connections; by age alone, a flood
// opening a share's worth of connections before the joiner's request was read (a
// few microseconds on a busy machine) evicted the joiner every time. in.mu is held.
func (in *inbound) victim(share func(*inConn) bool) *inConn {
	idle := map[netip.Addr]int{}
	evictable := func(o *inConn) bool { return o.idle && o.reading && share(o) }
	for o := range in.conns {
		if evictable(o) {
			idle[o.ip]++
		}
	}
	var victim *inConn
	for o := range in.conns {
		if !evictable(o) {
			continue
		}
		if victim == nil || idle[o.ip] > idle[victim.ip] || idle[o.ip] == idle[victim.ip] && o.seq < victim.seq {
			victim = o
		}
	}
	return victim
}

// remove drops c from the table; it must be there. in.mu is held.
func (in *inbound) remove(c *inConn) {
	delete(in.conns, c)
	in.signal()
	if c.member {
		return
	}
	in.strangers--
	if c.ip.IsValid() {
		if in.perSource[c.ip]--; in.perSource[c.ip] == 0 {
			delete(in.perSource, c.ip)
		}
	}
}

// release drops c when its stream ends; a no-op if it was evicted.
func (in *inbound) release(c *inConn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.conns[c]; ok {
		in.remove(c)
	}
}

// startRead records that c's goroutine now waits for its request, which makes c
// evictable while idle. Nothing evicts c before this, so c is still in the table.
func (in *inbound) startRead(c *inConn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	c.reading = true
	in.signal()
}

// markActive records that c's request has begun to arrive, so it is no longer
// evicted; false if it was evicted already.
func (in *inbound) markActive(c *inConn) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.conns[c]; !ok {
		return false
	}
	c.idle = false
	return true
}

// close refuses every later admission and closes the streams being served.
func (in *inbound) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	for c := range in.conns {
		c.conn.Close()
	}
}

// byteBudget bounds the bytes held by inbound frames at once. A frame reserves its
// size before its buffer is allocated and releases it when the loop has answered.
type byteBudget struct {
	mu    sync.Mutex
	limit int
	used  int
	peak  int           // highest used so far (tests, and the reason for a limit)
	freed chan struct{} // closed, and replaced, whenever bytes are released
}

func newByteBudget(limit int) *byteBudget {
	return &byteBudget{limit: limit, freed: make(chan struct{})}
}

// reserve takes size bytes of the budget, waiting until others release enough or
// until done is closed or wait has passed (false then). A size over the whole limit
// never fits and is refused at once.
func (b *byteBudget) reserve(size int, wait time.Duration, done <-chan struct{}) bool {
	if size > b.limit {
		return false
	}
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		if b.used+size <= b.limit {
			b.used += size
			b.peak = max(b.peak, b.used)
			b.mu.Unlock()
			return true
		}
		freed := b.freed
		b.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-freed:
		case <-timeout:
			return false
		case <-done:
			return false
		}
	}
}

// release gives size reserved bytes back and wakes the frames waiting for room.
func (b *byteBudget) release(size int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= size
	close(b.freed)
	b.freed = make(chan struct{})
}

// inUse is the bytes reserved now and the most ever reserved at once.
func (b *byteBudget) inUse() (used, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}
