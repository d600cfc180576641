package sim

import (
	"math"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/swim"
)

// Metrics are counters taken from ground truth as the simulation runs.
type Metrics struct {
	Events        uint64 // queue entries fired (inputs, timers, actions, stale timers)
	MessagesSent  uint64 // datagrams handed to the network by live nodes, lost or not
	BytesSent     uint64 // their bytes
	StreamsOpened uint64
	StreamsFailed uint64
	StreamBytes   uint64 // request and reply frame bytes

	DroppedLoss      uint64 // by the link's loss probability
	DroppedPartition uint64
	DroppedMTU       uint64
	DroppedDown      uint64 // to an address whose process is down
	DroppedUnknown   uint64 // to an address no node ever had
	Duplicated       uint64

	// A fact (member, incarnation, suspect or dead) is judged once, when the first
	// node emits it: false if the member's process was then running at the address
	// the fact names, not leaving, not paused and not stalled; "paused" if it was
	// paused or stalled (Stall); true otherwise. Every later event carrying the same fact counts as the first was
	// judged, so a death declared during a pause and still spreading after the wake
	// stays a death of a paused node. Partitions are not excluded: across a
	// partition a suspicion is "false" too.
	//
	// FalseSuspicions counts suspect events, at any node, of false facts;
	// SuspectedPaused those of paused ones.
	FalseSuspicions uint64
	SuspectedPaused uint64
	// FalseDeaths counts dead events of false facts; DeadPaused of paused ones.
	// Claims about a node made slow (SetSlow above 1) count in SuspectedSlow and
	// DeadSlow, so the false ones are those about healthy nodes.
	FalseDeaths   uint64
	DeadPaused    uint64
	SuspectedSlow uint64
	DeadSlow      uint64
	// FalseSuspicionsAtDegraded and FalseDeathsAtDegraded are the part of
	// FalseSuspicions and FalseDeaths emitted by observers that were themselves
	// slow, paused or stalled at the time: a degraded node's own view going wrong,
	// as opposed to healthy nodes believing (or reaching) a wrong claim.
	FalseSuspicionsAtDegraded uint64
	FalseDeathsAtDegraded     uint64
	Suspicions                uint64 // every suspect event
	Deaths                    uint64 // every dead event
	// FalseSuspectFacts and FalseDeadFacts count distinct false facts (member,
	// incarnation) rather than the events every node emits on learning one: one
	// wrong suspicion that reaches 200 nodes is 200 FalseSuspicions and 1 fact.
	FalseSuspectFacts uint64
	FalseDeadFacts    uint64
}

// Sub is m minus an earlier snapshot, for a measured phase.
func (m Metrics) Sub(o Metrics) Metrics {
	return Metrics{
		Events: m.Events - o.Events, MessagesSent: m.MessagesSent - o.MessagesSent,
		BytesSent: m.BytesSent - o.BytesSent, StreamsOpened: m.StreamsOpened - o.StreamsOpened,
		StreamsFailed: m.StreamsFailed - o.StreamsFailed, StreamBytes: m.StreamBytes - o.StreamBytes,
		DroppedLoss: m.DroppedLoss - o.DroppedLoss, DroppedPartition: m.DroppedPartition - o.DroppedPartition,
		DroppedMTU: m.DroppedMTU - o.DroppedMTU, DroppedDown: m.DroppedDown - o.DroppedDown,
		SuspectedSlow: m.SuspectedSlow - o.SuspectedSlow, DeadSlow: m.DeadSlow - o.DeadSlow,
		FalseSuspicionsAtDegraded: m.FalseSuspicionsAtDegraded - o.FalseSuspicionsAtDegraded,
		FalseDeathsAtDegraded:     m.FalseDeathsAtDegraded - o.FalseDeathsAtDegraded,
		DroppedUnknown:            m.DroppedUnknown - o.DroppedUnknown, Duplicated: m.Duplicated - o.Duplicated,
		FalseSuspicions: m.FalseSuspicions - o.FalseSuspicions, SuspectedPaused: m.SuspectedPaused - o.SuspectedPaused,
		FalseDeaths: m.FalseDeaths - o.FalseDeaths, DeadPaused: m.DeadPaused - o.DeadPaused,
		Suspicions: m.Suspicions - o.Suspicions, Deaths: m.Deaths - o.Deaths,
		FalseSuspectFacts: m.FalseSuspectFacts - o.FalseSuspectFacts, FalseDeadFacts: m.FalseDeadFacts - o.FalseDeadFacts,
	}
}

// liveInstance reports whether ev's member is, in ground truth, the running
// instance at the address ev names; ok is false when it is not (crashed, left,
// restarted elsewhere, unknown).
func (s *Sim) liveInstance(m *swim.Member) (i int32, ok bool) {
	i, found := s.byName[m.Name]
	if !found {
		return -1, false
	}
	n := s.nodes[i]
	return i, n.up && !n.leaving && s.addrs[n.addr] == m.Addr
}

// account takes one membership event emitted by node obs against ground truth.
func (s *Sim) account(obs int32, ev swim.Event) {
	s.recordHash(evKind(100+ev.Kind), obs, -1, xxhash.Sum64String(ev.Member.Name), len(ev.Member.Name))
	switch ev.Kind {
	case swim.EventSuspect:
		s.m.Suspicions++
		switch v, first := s.judge(&ev.Member, swim.StatusSuspect); v {
		case verdictFalse:
			s.m.FalseSuspicions++
			if s.nodes[obs].degraded(s.now) {
				s.m.FalseSuspicionsAtDegraded++
			}
			if first {
				s.m.FalseSuspectFacts++
			}
		case verdictPaused:
			s.m.SuspectedPaused++
		case verdictSlow:
			s.m.SuspectedSlow++
		}
	case swim.EventDead:
		s.m.Deaths++
		switch v, first := s.judge(&ev.Member, swim.StatusDead); v {
		case verdictFalse:
			s.m.FalseDeaths++
			if s.nodes[obs].degraded(s.now) {
				s.m.FalseDeathsAtDegraded++
			}
			if first {
				s.m.FalseDeadFacts++
			}
		case verdictPaused:
			s.m.DeadPaused++
		case verdictSlow:
			s.m.DeadSlow++
		}
	}
	if s.observe != nil {
		s.observe(int(obs), ev)
	}
}

// fact identifies one claim about one instance (name and address) of a member.
type fact struct {
	name, addr string
	inc        uint64
	status     swim.Status
}

type verdict uint8

const (
	verdictTrue   verdict = iota // the member was down or leaving: the claim is right
	verdictFalse                 // the member was up and running
	verdictPaused                // the member was up but paused or stalled
	verdictSlow                  // the member was up but made slow
)

// judge returns the verdict on the fact (m, st), deciding it now if this is its
// first sighting (first is then true).
func (s *Sim) judge(m *swim.Member, st swim.Status) (v verdict, first bool) {
	f := fact{m.Name, m.Addr, m.Incarnation, st}
	if v, ok := s.facts[f]; ok {
		return v, false
	}
	v = verdictTrue
	if i, ok := s.liveInstance(m); ok {
		switch n := s.nodes[i]; {
		case n.paused > s.now || n.stall > s.now:
			v = verdictPaused
		case n.slow > 1:
			v = verdictSlow
		default:
			v = verdictFalse
		}
	}
	if s.facts == nil {
		s.facts = make(map[fact]verdict)
	}
	s.facts[f] = v
	return v, true
}

// Percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of d, in
// milliseconds; 0 for no samples. d is sorted in place.
func Percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	k := int(math.Ceil(float64(len(d))*p/100)) - 1
	k = max(0, min(k, len(d)-1))
	return float64(d[k]) / float64(time.Millisecond)
}
