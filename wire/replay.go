package wire

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Anti-replay of sealed packets and frames (PROTOCOL.md section 6, "Replay"). The
// nonce of a sealed packet or frame is its sender's id and counter, authenticated
// by GCM. A receiver keeps, per sender id, the highest counter taken and a bitmap
// of the ReplayWindow counters below it, as IPsec (RFC 4303 section 3.4.3) and
// WireGuard do: a counter above the highest moves the window up; one inside it is
// taken once; one below it is refused. Senders are remembered up to a cap, least
// recently heard evicted first.

const (
	// ReplayWindow is how many counters below a sender's highest a receiver still
	// takes (once each), so packets reordered by that many of the sender's seals
	// are not lost.
	ReplayWindow = 1024
	// DefaultReplaySenders is how many senders a ReplayFilter remembers by
	// default: above the largest cluster we plan for, so that eviction (which
	// lets the evicted sender's old packets be replayed, see ReplayFilter) only
	// happens to ids of senders that restarted long ago.
	DefaultReplaySenders = 16384
)

// ReplayFilter refuses sealed packets and frames whose sender counter it has
// already taken, or which fall below the window of the sender's highest counter.
// It is safe for concurrent use; a check is a map look-up and a few word
// operations under a mutex, never I/O.
//
// What it cannot remember it cannot refuse: a sender evicted to make room (the
// least recently heard, once maxSenders are remembered), or any sender after the
// receiver restarts, starts afresh at the first counter that arrives, so a
// recorded packet of that sender id that arrives first is taken (each at most
// once, and never one below a window already rebuilt by a newer packet).
type ReplayFilter struct {
	mu      sync.Mutex
	max     int
	senders map[uint64]*replayEntry
	lru     replayEntry // sentinel: lru.next is the most recently heard
	evicted uint64
}

type replayEntry struct {
	id         uint64
	top        uint32                    // highest counter taken
	seen       [ReplayWindow / 64]uint64 // bit i: counter top-i taken
	prev, next *replayEntry
}

// NewReplayFilter returns a filter remembering at most maxSenders senders
// (DefaultReplaySenders if maxSenders is 0 or less).
func NewReplayFilter(maxSenders int) *ReplayFilter {
	if maxSenders <= 0 {
		maxSenders = DefaultReplaySenders
	}
	f := &ReplayFilter{max: maxSenders, senders: map[uint64]*replayEntry{}}
	f.lru.next, f.lru.prev = &f.lru, &f.lru
	return f
}

// AdmitPacket takes the sender counter of a sealed packet that Open has
// authenticated, or refuses it with ErrReplay: taken before, below the window,
// or sealed as a frame. Call it only after Open succeeded, so that nothing
// unauthenticated moves a window.
func (f *ReplayFilter) AdmitPacket(sealed []byte) error {
	return f.admit(sealed, chanPackets)
}

// AdmitFrame is AdmitPacket for a sealed stream frame (length prefix included)
// that OpenFrame has authenticated.
func (f *ReplayFilter) AdmitFrame(sealed []byte) error {
	if len(sealed) < frameLen {
		return ErrTruncated
	}
	return f.admit(sealed[frameLen:], chanFrames)
}

// Senders is how many senders the filter remembers.
func (f *ReplayFilter) Senders() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.senders)
}

// Evicted is how many senders the filter forgot to make room for others.
func (f *ReplayFilter) Evicted() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.evicted
}

func (f *ReplayFilter) admit(body []byte, c channel) error {
	if len(body) < HeaderSize+NonceSize {
		return ErrTruncated
	}
	id := binary.BigEndian.Uint64(body[HeaderSize:])
	ctr := binary.BigEndian.Uint32(body[HeaderSize+8:])
	if (id&senderFrames != 0) != (c == chanFrames) {
		return fmt.Errorf("%w: sender %016x sealed a %s", ErrReplay, id, [2]string{"frame, received as a packet", "packet, received as a frame"}[c])
	}
	if ctr == 0 {
		return fmt.Errorf("%w: counter 0 from sender %016x", ErrMalformed, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.senders[id]
	if e == nil {
		if len(f.senders) >= f.max {
			old := f.lru.prev
			f.unlink(old)
			delete(f.senders, old.id)
			f.evicted++
		}
		e = &replayEntry{id: id, top: ctr}
		e.seen[0] = 1
		f.senders[id] = e
		f.pushFront(e)
		return nil
	}
	if err := e.step(ctr); err != nil {
		return err
	}
	f.unlink(e)
	f.pushFront(e)
	return nil
}

// step takes ctr into the window, or refuses it (ErrReplay).
func (e *replayEntry) step(ctr uint32) error {
	switch {
	case ctr > e.top:
		e.shift(ctr - e.top)
		e.top = ctr
		e.seen[0] |= 1
	case e.top-ctr >= ReplayWindow:
		return fmt.Errorf("%w: counter %d from sender %016x is below its window (highest %d)", ErrReplay, ctr, e.id, e.top)
	default:
		d := e.top - ctr
		w, b := d/64, d%64
		if e.seen[w]&(1<<b) != 0 {
			return fmt.Errorf("%w: counter %d from sender %016x taken before", ErrReplay, ctr, e.id)
		}
		e.seen[w] |= 1 << b
	}
	return nil
}

// shift moves the window up by d counters: bit i becomes bit i+d.
func (e *replayEntry) shift(d uint32) {
	if d >= ReplayWindow {
		clear(e.seen[:])
		return
	}
	words, bits := int(d/64), d%64
	for i := len(e.seen) - 1; i >= 0; i-- {
		var v uint64
		if src := i - words; src >= 0 {
			v = e.seen[src] << bits
			if bits > 0 && src > 0 {
				v |= e.seen[src-1] >> (64 - bits)
			}
		}
		e.seen[i] = v
	}
}

func (f *ReplayFilter) unlink(e *replayEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (f *ReplayFilter) pushFront(e *replayEntry) {
	e.prev, e.next = &f.lru, f.lru.next
	f.lru.next.prev = e
	f.lru.next = e
}
