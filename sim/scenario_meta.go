package sim

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/swim"
)

// ErrNoMeta means a node's stack has no metadata layer (an engine-test fake).
var ErrNoMeta = errors.New("sim: stack has no metadata store")

// metaStack is the metadata side of stack.Stack.
type metaStack interface {
	SetMeta(now time.Time, key string, value []byte) error
	DeleteMeta(now time.Time, key string) error
	Meta() *crdt.Store
	Swim() *swim.Machine
}

func (s *Sim) metaOf(i int) (metaStack, error) {
	n := s.nodes[i]
	if !n.up {
		return nil, fmt.Errorf("sim: node %s is down", n.name)
	}
	ms, ok := n.stack.(metaStack)
	if !ok {
		return nil, ErrNoMeta
	}
	return ms, nil
}

// SetMeta has node i set key = value in its own metadata now, as its application
// would, and sends what that produces.
func (s *Sim) SetMeta(i int, key string, value []byte) error {
	ms, err := s.metaOf(i)
	if err != nil {
		return err
	}
	err = ms.SetMeta(s.localTime(s.nodes[i]), key, value)
	s.afterInput(int32(i), s.now)
	return err
}

// DeleteMeta has node i delete key from its own metadata now.
func (s *Sim) DeleteMeta(i int, key string) error {
	ms, err := s.metaOf(i)
	if err != nil {
		return err
	}
	err = ms.DeleteMeta(s.localTime(s.nodes[i]), key)
	s.afterInput(int32(i), s.now)
	return err
}

// MetaStore is node i's metadata store, for reads; nil if the node is down or its
// stack has none.
func (s *Sim) MetaStore(i int) *crdt.Store {
	ms, err := s.metaOf(i)
	if err != nil {
		return nil
	}
	return ms.Meta()
}

// MetaConverged reports whether every live node's metadata store has the same
// digest (the same live entries at the same versions).
func (s *Sim) MetaConverged() bool {
	live := s.LiveNodes()
	var d0 uint64
	for k, i := range live {
		st := s.MetaStore(i)
		if st == nil {
			return false
		}
		if k == 0 {
			d0 = st.Digest()
		} else if st.Digest() != d0 {
			return false
		}
	}
	return true
}

// quiet reports whether no live node has gossip queued: only probes are on the
// wire, whose volume per window is nearly constant.
func (s *Sim) quiet() bool {
	for _, i := range s.LiveNodes() {
		ms, err := s.metaOf(i)
		if err != nil || ms.Swim().Stats().QueueLen > 0 {
			return false
		}
	}
	return true
}

// metaBaseline is the quiet window measured before the update, so the update's own
// bytes are the difference of two equal windows.
const metaBaseline = 10 * time.Second

// runMeta: one random node sets a key; meta_*_ms is when each other live node's
// store first holds the value (polled every virtual millisecond).
// meta_bytes_per_node is the bytes the update cost per node: bytes sent in the
// metaBaseline window after the update minus those of the equal window before it,
// which starts once formation's gossip has drained (at most 60 s later).
func runMeta(r *runner) error {
	s := r.s
	s.RunFor(time.Second)
	s.RunUntilTrue(60*time.Second, 100*time.Millisecond, s.quiet)
	live := s.LiveNodes()
	w := live[r.rng.IntN(len(live))]
	name := s.Name(w)
	const key = "zone"
	value := []byte("eu-west-1a")

	m0 := s.Metrics()
	s.RunFor(metaBaseline)
	base := s.Metrics().Sub(m0).BytesSent

	m1, t0 := s.Metrics(), s.now
	if err := s.SetMeta(w, key, value); err != nil {
		return err
	}
	d, _ := s.MetaStore(w).DeltaSince(name, crdt.Version{})
	seen := make(map[int]time.Duration, len(live))
	all := func() bool {
		for _, i := range live {
			if _, ok := seen[i]; ok || i == w || !s.Up(i) {
				continue
			}
			if v, ok := s.MetaStore(i).Get(name, key); ok && bytes.Equal(v, value) {
				seen[i] = time.Duration(s.now - t0)
			}
		}
		return len(seen) == len(live)-1
	}
	s.RunUntilTrue(min(r.o.Duration, metaBaseline), time.Millisecond, all)
	var times []time.Duration
	for _, i := range live {
		if t, ok := seen[i]; ok {
			times = append(times, t)
		}
	}
	r.res.MetaP50, r.res.MetaP99, r.res.MetaMax = pct(times, 50), pct(times, 99), pct(times, 100)
	r.res.Missing = intp(len(live) - 1 - len(times))
	s.RunUntil(t0 + int64(metaBaseline))
	cost := float64(int64(s.Metrics().Sub(m1).BytesSent)-int64(base)) / float64(len(live))
	r.res.MetaBytesPerNode = &cost
	r.res.MetaDeltaBytes = intp(len(crdt.AppendDelta(nil, d)))
	if rest := r.o.Duration - metaBaseline; rest > 0 {
		s.RunFor(rest)
	}
	conv := s.MetaConverged()
	r.res.MetaConverged = &conv
	return nil
}
