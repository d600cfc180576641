package sim

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Link describes one direction of a link between two nodes.
type Link struct {
	// Latency is the fixed one-way delay. Default 500µs.
	Latency time.Duration
	// Jitter is added to Latency, drawn uniformly from [0, Jitter) per packet. Packets
	// overtake each other when it exceeds their spacing: that is how reordering
	// arises. Default 1.5ms (so one-way delay is 0.5–2 ms).
	Jitter time.Duration
	// Loss is the probability a datagram is dropped, in [0, 1]. Default 0.
	Loss float64
	// Duplicate is the probability a datagram arrives twice (the copy with its own
	// delay), in [0, 1]. Default 0.
	Duplicate float64
}

// Validate names the first bad field.
func (l Link) Validate() error {
	switch {
	case l.Latency < 0:
		return fmt.Errorf("%w: Link.Latency %v < 0", ErrConfig, l.Latency)
	case l.Jitter < 0:
		return fmt.Errorf("%w: Link.Jitter %v < 0", ErrConfig, l.Jitter)
	case l.Loss < 0 || l.Loss > 1:
		return fmt.Errorf("%w: Link.Loss %v not in [0,1]", ErrConfig, l.Loss)
	case l.Duplicate < 0 || l.Duplicate > 1:
		return fmt.Errorf("%w: Link.Duplicate %v not in [0,1]", ErrConfig, l.Duplicate)
	}
	return nil
}

// DefaultLink is the link every pair of nodes gets unless overridden: a LAN with
// 0.5–2 ms one-way delay, no loss.
func DefaultLink() Link {
	return Link{Latency: 500 * time.Microsecond, Jitter: 1500 * time.Microsecond}
}

// network holds the link model: the default link, per-link overrides, the MTU and
// partitions. Partitions are groups: every node is in one group (0 unless placed),
// and traffic from group a to group b is dropped while (a, b) is blocked.
type network struct {
	def       Link
	mtu       int
	overrides map[uint64]Link // key from<<32 | to (node indexes), one direction
	group     []uint16        // by node index
	blocked   map[uint32]bool // key a<<16 | b
	rng       *rand.Rand
}

func linkKey(from, to int32) uint64 { return uint64(uint32(from))<<32 | uint64(uint32(to)) }

func (n *network) link(from, to int32) *Link {
	if len(n.overrides) > 0 {
		if l, ok := n.overrides[linkKey(from, to)]; ok {
			return &l
		}
	}
	return &n.def
}

// reachable reports whether datagrams from node a reach node b under partitions.
func (n *network) reachable(a, b int32) bool {
	if len(n.blocked) == 0 {
		return true
	}
	return !n.blocked[uint32(n.group[a])<<16|uint32(n.group[b])]
}

// delay draws one one-way delay on l.
func (n *network) delay(l *Link) int64 {
	d := int64(l.Latency)
	if l.Jitter > 0 {
		d += n.rng.Int64N(int64(l.Jitter))
	}
	return d
}

// lost draws whether one datagram is lost on l. No draw when l cannot lose, so
// turning loss on for one link does not shift the stream for the others.
func (n *network) lost(l *Link) bool { return l.Loss > 0 && n.rng.Float64() < l.Loss }

func (n *network) duplicated(l *Link) bool {
	return l.Duplicate > 0 && n.rng.Float64() < l.Duplicate
}
