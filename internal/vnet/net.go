package vnet

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Drop says why Send dropped a datagram.
type Drop uint8

const (
	Queued        Drop = iota // on its way
	DropUnknown               // no endpoint has that name
	DropPartition             // a partition blocks the link
	DropLoss                  // lost on the link
)

// sameInstantLimit is how many events may fire at one virtual instant before Run
// calls it a livelock: a protocol answering itself with no delay would otherwise
// hang the test instead of failing it.
const sameInstantLimit = 100000

// Net is a datagram network of messages M between named endpoints in virtual
// time, with timers: the swim, lease and shard test harnesses run their machines
// on it. Send decides a datagram's fate by the Model; Run fires datagrams and
// timers in (time, order of scheduling) and hands each datagram to Deliver. Not
// safe for concurrent use.
type Net[M any] struct {
	*Model
	// Deliver receives every datagram that arrives. Required before Run.
	Deliver func(from, to int, m M)
	// AfterEvent, when set, runs after every event Run fires (invariant checks).
	AfterEvent func()

	q     Queue[netEvent[M]]
	now   time.Duration
	names []string
	index map[string]int
	same  int // events fired at now, for the livelock guard
}

type netEvent[M any] struct {
	fn       func() // timer; nil: datagram
	from, to int32
	msg      M
}

// NewNet returns a network with no endpoints at virtual time 0, every link def,
// drawing from rng.
func NewNet[M any](def Link, rng *rand.Rand) (*Net[M], error) {
	m, err := NewModel(def, rng)
	if err != nil {
		return nil, err
	}
	return &Net[M]{Model: m, index: map[string]int{}}, nil
}

// Add adds an endpoint called name and returns its number; a name already added
// keeps its number (a restarted process on the same address). Endpoints of a Net
// are added here only, never by the Model's AddEndpoint, so names and numbers
// stay in step.
func (n *Net[M]) Add(name string) int {
	if i, ok := n.index[name]; ok {
		return i
	}
	i := n.AddEndpoint()
	n.names = append(n.names, name)
	n.index[name] = i
	return i
}

// Index is the number of the endpoint called name.
func (n *Net[M]) Index(name string) (int, bool) { i, ok := n.index[name]; return i, ok }

// Name is endpoint i's name.
func (n *Net[M]) Name(i int) string { return n.names[i] }

// Now is the virtual time since the start.
func (n *Net[M]) Now() time.Duration { return n.now }

// At schedules fn at virtual time t (now, if t is in the past).
func (n *Net[M]) At(t time.Duration, fn func()) {
	n.q.Push(int64(max(t, n.now)), netEvent[M]{fn: fn})
}

// After schedules fn d from now.
func (n *Net[M]) After(d time.Duration, fn func()) { n.At(n.now+max(d, 0), fn) }

// Send puts one datagram from endpoint from to the endpoint called to on the
// network now, and says whether it was queued or why not.
func (n *Net[M]) Send(from int, to string, m M) Drop {
	j, ok := n.index[to]
	if !ok {
		return DropUnknown
	}
	return n.SendTo(from, j, m)
}

// SendTo is Send to endpoint number to.
func (n *Net[M]) SendTo(from, to int, m M) Drop {
	if !n.Reachable(from, to) {
		return DropPartition
	}
	l := n.Link(from, to)
	if n.Lost(l) {
		return DropLoss
	}
	ev := netEvent[M]{from: int32(from), to: int32(to), msg: m}
	n.q.Push(int64(n.now+n.Delay(l)), ev)
	if n.Duplicated(l) {
		n.q.Push(int64(n.now+n.Delay(l)), ev)
	}
	return Queued
}

// Inject delivers m from from to to at virtual time t, bypassing the link model:
// a test's hand-made datagram.
func (n *Net[M]) Inject(t time.Duration, from, to int, m M) {
	n.q.Push(int64(max(t, n.now)), netEvent[M]{from: int32(from), to: int32(to), msg: m})
}

// NextAt is the time of the next event, and false when none is queued.
func (n *Net[M]) NextAt() (time.Duration, bool) {
	if n.q.Len() == 0 {
		return 0, false
	}
	return time.Duration(n.q.NextAt()), true
}

// Run fires every event due at or before until, in order, then sets the clock to
// until (if later). It panics on a livelock: more than 100000 events at one
// instant.
func (n *Net[M]) Run(until time.Duration) {
	for n.q.Len() > 0 && time.Duration(n.q.NextAt()) <= until {
		at, ev := n.q.Pop()
		if t := time.Duration(at); t != n.now {
			n.now, n.same = t, 0
		} else if n.same++; n.same > sameInstantLimit {
			panic(fmt.Sprintf("vnet: livelock: %d events at %v", n.same, n.now))
		}
		if ev.fn != nil {
			ev.fn()
		} else {
			n.Deliver(int(ev.from), int(ev.to), ev.msg)
		}
		if n.AfterEvent != nil {
			n.AfterEvent()
		}
	}
	if until > n.now {
		n.now, n.same = until, 0
	}
}
