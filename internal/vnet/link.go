package vnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrLink is returned (wrapped, naming the field) for an invalid Link.
var ErrLink = errors.New("vnet: invalid link")

// Link describes one direction of a link between two endpoints.
type Link struct {
	// Latency is the fixed one-way delay. Default 500µs.
	Latency time.Duration
	// Jitter is added to Latency, drawn uniformly from [0, Jitter) per datagram.
	// Datagrams overtake each other when it exceeds their spacing: that is how
	// reordering arises. Default 1.5ms (so one-way delay is 0.5–2 ms).
	Jitter time.Duration
	// Loss is the probability a datagram is dropped, in [0, 1]. Default 0.
	Loss float64
	// Duplicate is the probability a datagram arrives twice (the copy with its own
	// delay), in [0, 1]. Default 0.
	Duplicate float64
	// Spike is the probability that a datagram is held up by a further delay drawn
	// uniformly from [0, SpikeMax], in [0, 1]: a queue building up somewhere on the
	// path. Default 0.
	Spike    float64
	SpikeMax time.Duration
}

// Validate names the first bad field.
func (l Link) Validate() error {
	switch {
	case l.Latency < 0:
		return fmt.Errorf("%w: Link.Latency %v < 0", ErrLink, l.Latency)
	case l.Jitter < 0:
		return fmt.Errorf("%w: Link.Jitter %v < 0", ErrLink, l.Jitter)
	case l.Loss < 0 || l.Loss > 1:
		return fmt.Errorf("%w: Link.Loss %v not in [0,1]", ErrLink, l.Loss)
	case l.Duplicate < 0 || l.Duplicate > 1:
		return fmt.Errorf("%w: Link.Duplicate %v not in [0,1]", ErrLink, l.Duplicate)
	case l.Spike < 0 || l.Spike > 1:
		return fmt.Errorf("%w: Link.Spike %v not in [0,1]", ErrLink, l.Spike)
	case l.SpikeMax < 0:
		return fmt.Errorf("%w: Link.SpikeMax %v < 0", ErrLink, l.SpikeMax)
	}
	return nil
}

// DefaultLink is a LAN link: 0.5–2 ms one-way delay, no loss.
func DefaultLink() Link {
	return Link{Latency: 500 * time.Microsecond, Jitter: 1500 * time.Microsecond}
}

// Uniform is a link whose one-way delay is uniform in [lo, hi] (both included),
// without loss.
func Uniform(lo, hi time.Duration) Link { return Link{Latency: lo, Jitter: hi - lo + 1} }

// Model is the link model: a default link, per-link overrides and partitions over
// endpoints numbered in the order AddEndpoint returned them. Partitions are
// groups: every endpoint is in one group (0 unless placed), and traffic from group
// a to group b is dropped while (a, b) is blocked. Not safe for concurrent use.
type Model struct {
	def       Link
	overrides map[uint64]Link // key from<<32 | to, one direction
	group     []uint16        // by endpoint
	groups    int             // groups in use besides 0
	blocked   map[uint32]bool // key a<<16 | b
	rng       *rand.Rand
}

// NewModel returns a model with no endpoints whose draws come from rng.
func NewModel(def Link, rng *rand.Rand) (*Model, error) {
	if err := def.Validate(); err != nil {
		return nil, err
	}
	return &Model{def: def, rng: rng}, nil
}

// AddEndpoint adds one endpoint, in group 0, and returns its number.
func (m *Model) AddEndpoint() int {
	m.group = append(m.group, 0)
	return len(m.group) - 1
}

// Endpoints is the number of endpoints added.
func (m *Model) Endpoints() int { return len(m.group) }

// SetDefault replaces the link used between endpoints without an override.
func (m *Model) SetDefault(l Link) error {
	if err := l.Validate(); err != nil {
		return err
	}
	m.def = l
	return nil
}

// Default is the link in force between endpoints without an override.
func (m *Model) Default() Link { return m.def }

func linkKey(from, to int) uint64 { return uint64(uint32(from))<<32 | uint64(uint32(to)) }

// SetLink overrides the link from a to b (one direction).
func (m *Model) SetLink(a, b int, l Link) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if m.overrides == nil {
		m.overrides = make(map[uint64]Link)
	}
	m.overrides[linkKey(a, b)] = l
	return nil
}

// ClearLinks removes every per-link override.
func (m *Model) ClearLinks() { m.overrides = nil }

// Link is the link from a to b. The pointer is to a copy or to the default: for
// reading only.
func (m *Model) Link(from, to int) *Link {
	if len(m.overrides) > 0 {
		if l, ok := m.overrides[linkKey(from, to)]; ok {
			return &l
		}
	}
	return &m.def
}

// Reachable reports whether datagrams from a reach b under the partitions.
func (m *Model) Reachable(a, b int) bool {
	if len(m.blocked) == 0 {
		return true
	}
	return !m.blocked[uint32(m.group[a])<<16|uint32(m.group[b])]
}

// Partition splits the endpoints symmetrically: each listed side can talk only
// within itself; endpoints not listed form one more side. It replaces any
// partition in force.
func (m *Model) Partition(sides ...[]int) {
	m.Heal()
	for g, side := range sides {
		for _, i := range side {
			m.group[i] = uint16(g + 1)
		}
	}
	m.groups = len(sides)
	m.blocked = make(map[uint32]bool)
	for a := 0; a <= len(sides); a++ {
		for b := 0; b <= len(sides); b++ {
			if a != b {
				m.blocked[uint32(a)<<16|uint32(b)] = true
			}
		}
	}
}

// PartitionOneWay drops traffic from the endpoints in from to those in to, but not
// back. It replaces any partition in force.
func (m *Model) PartitionOneWay(from, to []int) {
	m.Heal()
	for _, i := range from {
		m.group[i] = 1
	}
	for _, i := range to {
		m.group[i] = 2
	}
	m.groups = 2
	m.blocked = map[uint32]bool{1<<16 | 2: true}
}

// Isolate cuts side off from every other endpoint, both ways, on top of the
// partitions in force: the endpoints of side still reach each other, and an
// endpoint isolated earlier stays cut off from them too.
func (m *Model) Isolate(side ...int) {
	m.groups++
	g := uint32(m.groups)
	for _, i := range side {
		m.group[i] = uint16(g)
	}
	if m.blocked == nil {
		m.blocked = make(map[uint32]bool)
	}
	for o := uint32(0); o < g; o++ {
		m.blocked[o<<16|g] = true
		m.blocked[g<<16|o] = true
	}
}

// Heal removes every partition.
func (m *Model) Heal() {
	m.blocked = nil
	m.groups = 0
	clear(m.group)
}

// Delay draws one one-way delay on l.
func (m *Model) Delay(l *Link) time.Duration {
	d := l.Latency
	if l.Jitter > 0 {
		d += time.Duration(m.rng.Int64N(int64(l.Jitter)))
	}
	if l.Spike > 0 && m.rng.Float64() < l.Spike {
		d += time.Duration(m.rng.Int64N(int64(l.SpikeMax) + 1))
	}
	return d
}

// Lost draws whether one datagram is lost on l. No draw when l cannot lose, so
// turning loss on for one link does not shift the stream for the others.
func (m *Model) Lost(l *Link) bool { return l.Loss > 0 && m.rng.Float64() < l.Loss }

// Duplicated draws whether one datagram arrives twice on l (no draw when it cannot).
func (m *Model) Duplicated(l *Link) bool {
	return l.Duplicate > 0 && m.rng.Float64() < l.Duplicate
}
