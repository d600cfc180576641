package sim

import (
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// toy is a tiny gossip protocol used to test the engine without swim: every
// period it sends its whole member list to one random member, every fifth period
// it push-pulls with one, and a join push-pulls with the seeds. It has no failure
// detection, so it converges only while nobody crashes.
type toy struct {
	name, addr string
	rng        *rand.Rand
	addrOf     map[string]string
	next       time.Time
	ticks      int
	out        stack.Ready
}

const toyPeriod = 200 * time.Millisecond

func newToy(name, addr string, rng *rand.Rand, now time.Time) (Stack, error) {
	t := &toy{name: name, addr: addr, rng: rng, addrOf: map[string]string{name: addr}}
	t.next = now.Add(time.Duration(rng.Int64N(int64(toyPeriod))))
	return t, nil
}

func (t *toy) encode() []byte {
	var b strings.Builder
	for _, n := range t.sorted() {
		b.WriteString(n + "=" + t.addrOf[n] + ";")
	}
	return []byte(b.String())
}

func (t *toy) sorted() []string {
	names := make([]string, 0, len(t.addrOf))
	for n := range t.addrOf {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (t *toy) merge(now time.Time, data []byte) {
	for _, kv := range strings.Split(string(data), ";") {
		name, addr, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		old, known := t.addrOf[name]
		switch {
		case !known:
			t.addrOf[name] = addr
			t.out.Events = append(t.out.Events, swim.Event{Kind: swim.EventJoin, Member: swim.Member{Name: name, Addr: addr}, At: now})
		case old != addr && name != t.name:
			t.addrOf[name] = addr
			t.out.Events = append(t.out.Events, swim.Event{Kind: swim.EventUpdate, Member: swim.Member{Name: name, Addr: addr}, At: now})
		}
	}
}

func (t *toy) randomPeer() (string, bool) {
	names := t.sorted()
	if len(names) < 2 {
		return "", false
	}
	for {
		n := names[t.rng.IntN(len(names))]
		if n != t.name {
			return t.addrOf[n], true
		}
	}
}

func (t *toy) HandlePacket(now time.Time, from string, data []byte) { t.merge(now, data) }
func (t *toy) HandleStream(now time.Time, from string, req []byte) []byte {
	t.merge(now, req)
	return t.encode()
}
func (t *toy) StreamReply(now time.Time, id uint64, reply []byte) { t.merge(now, reply) }
func (t *toy) StreamFailed(now time.Time, id uint64)              {}
func (t *toy) Tick(now time.Time) {
	if now.Before(t.next) {
		return
	}
	t.next = now.Add(toyPeriod)
	t.ticks++
	if to, ok := t.randomPeer(); ok {
		if t.ticks%5 == 0 {
			t.out.Streams = append(t.out.Streams, stack.Stream{To: to, Data: t.encode()})
		} else {
			t.out.Packets = append(t.out.Packets, swim.Packet{To: to, Data: t.encode()})
		}
	}
}
func (t *toy) Join(now time.Time, seeds []string) {
	for _, s := range seeds {
		t.out.Streams = append(t.out.Streams, stack.Stream{To: s, Data: t.encode()})
	}
}
func (t *toy) Leave(now time.Time)                            {}
func (t *toy) NextDeadline() time.Time                        { return t.next }
func (t *toy) Ready() stack.Ready                             { return t.out }
func (t *toy) HasReady() bool                                 { return false }
func (t *toy) Saved(now time.Time, version uint64, err error) {}
func (t *toy) Advance()                                       { t.out = stack.Ready{} }
func (t *toy) Members() []swim.Member {
	var out []swim.Member
	for _, n := range t.sorted() {
		out = append(out, swim.Member{Name: n, Addr: t.addrOf[n], Status: swim.StatusAlive})
	}
	return out
}
func (t *toy) Digest() wire.Digest {
	return wire.Digest{Hash: xxhash.Sum64(t.encode()), Members: uint32(len(t.addrOf))}
}

// call is one input a recorder saw.
type call struct {
	what string
	at   time.Duration // local time since Epoch
	from string
	data string
}

// recorder logs its inputs and emits whatever the test queues in out; its deadline
// is whatever the test sets.
type recorder struct {
	calls    []call
	deadline time.Time
	out      stack.Ready
	reply    []byte
	opened   map[uint64]string // stream id → peer, so replies and failures log the peer
}

func (r *recorder) log(what string, now time.Time, from string, data []byte) {
	r.calls = append(r.calls, call{what, now.Sub(Epoch()), from, string(data)})
}
func (r *recorder) HandlePacket(now time.Time, from string, data []byte) {
	r.log("packet", now, from, data)
}
func (r *recorder) HandleStream(now time.Time, from string, req []byte) []byte {
	r.log("stream", now, from, req)
	return r.reply
}
func (r *recorder) StreamReply(now time.Time, id uint64, reply []byte) {
	r.log("reply", now, r.opened[id], reply)
}
func (r *recorder) StreamFailed(now time.Time, id uint64) { r.log("failed", now, r.opened[id], nil) }
func (r *recorder) Tick(now time.Time) {
	r.log("tick", now, "", nil)
	r.deadline = time.Time{}
}
func (r *recorder) Join(now time.Time, seeds []string) { r.log("join", now, "", nil) }
func (r *recorder) Leave(now time.Time)                { r.log("leave", now, "", nil) }
func (r *recorder) NextDeadline() time.Time            { return r.deadline }
func (r *recorder) Ready() stack.Ready {
	// The test queues streams without ids: number them (once) as a stack would.
	for i := range r.out.Streams {
		if s := &r.out.Streams[i]; s.ID == 0 {
			if r.opened == nil {
				r.opened = map[uint64]string{}
			}
			s.ID = uint64(len(r.opened) + 1)
			r.opened[s.ID] = s.To
		}
	}
	return r.out
}
func (r *recorder) HasReady() bool                                 { return false }
func (r *recorder) Saved(now time.Time, version uint64, err error) {}
func (r *recorder) Advance()                                       { r.out = stack.Ready{} }
func (r *recorder) Members() []swim.Member                         { return nil }
func (r *recorder) Digest() wire.Digest                            { return wire.Digest{} }
