package swim

import (
	"math"
	"slices"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// The incarnation rules (SWIM §4.2, Lifeguard; memberlist's state.go read for
// reference semantics):
//
//   - Alive(i) replaces what we hold about a member only if i is higher than its
//     incarnation, whatever its status: a tombstone (dead or left at i) beats alive
//     of the same or a lower incarnation, from any source, so a stale view cannot
//     resurrect a departed member.
//   - Suspect(i) of an alive member at incarnation <= i makes it suspect; of a
//     suspect member it is a confirmation.
//   - Dead(i) of a member at incarnation <= i kills it; Left is a Dead whose From is
//     the member itself, or a Leave message.
//   - Any claim about ourselves other than our own current alive is refuted: our
//     incarnation becomes max(ours, claimed) + 1 and the new Alive is broadcast.
//   - A claim more than wire.MaxJump above the incarnation we hold for its member
//     (0 for an unknown one, ours for ourselves) is refused and counted as
//     implausible (PROTOCOL.md "Implausible numbers"): honest incarnations grow by
//     one per refutation, and a forged one near 2^64-1 would leave the member no
//     incarnation to refute it with.

// applyAlive handles "name is alive at addr with incarnation inc".
func (m *Machine) applyAlive(now time.Time, name, addr string, inc uint64, pmin, pmax uint8, feat wire.Features, sig []byte) {
	if name == "" || addr == "" || len(name) > wire.MaxString || len(addr) > wire.MaxString {
		m.stats.Malformed++
		return
	}
	if name == m.self.Name {
		same := addr == m.self.Addr && pmin == m.self.protoMin && pmax == m.self.protoMax && feat == m.self.features
		if m.leaving || inc < m.self.Incarnation || (inc == m.self.Incarnation && same) || !m.plausible(m.self.Incarnation, inc) ||
			!m.checkAlive(name, addr, inc, pmin, pmax, feat, sig) {
			return
		}
		// Someone holds a newer or conflicting claim about us: a previous life of
		// this node, or another node using our name. Out-bid it; at another
		// address it is a conflict the host should name (NameConflict). A claim
		// at our incarnation and address with other versions or features is a
		// previous life of ours on another build (a restart during an upgrade or
		// a rollback, which starts again at incarnation 0): unless we out-bid it,
		// the cluster keeps our old range and features for good.
		if addr != m.self.Addr {
			m.stats.NameConflicts++
			m.conflictAddr = addr
		}
		m.refute(now, inc)
		return
	}
	if !m.versions.Speaks(pmin, pmax) {
		m.refuseVersions(name, addr, pmin, pmax)
		return
	}
	mem := m.members.get(name)
	if !m.plausible(mem.incarnation(), inc) {
		return
	}
	if mem == nil {
		if m.members.Len() >= m.cfg.MaxMembers && !m.evictTomb(now) {
			m.stats.MembersRefused++
			return
		}
		if !m.checkAlive(name, addr, inc, pmin, pmax, feat, sig) {
			return
		}
		mem = m.members.add(name)
		mem.Addr, mem.Incarnation, mem.Status, mem.since = addr, inc, StatusAlive, now.Sub(m.epoch)
		mem.protoMin, mem.protoMax, mem.features, mem.probeIdx, mem.tombIdx = pmin, pmax, feat, -1, -1
		m.digest.add(mem.hash())
		m.viewChanged = now
		m.live++
		m.account(mem, 1)
		// A new member goes to a random place of the probe order (SWIM §4.3), so
		// it is probed within one round wherever it lands.
		m.plist = append(m.plist, mem)
		j := m.rng.IntN(len(m.plist))
		last := len(m.plist) - 1
		m.plist[j], m.plist[last] = m.plist[last], m.plist[j]
		m.plist[j].probeIdx, m.plist[last].probeIdx = int32(j), int32(last)
		m.event(now, EventJoin, mem)
		m.queueFact(m.aliveMsg(mem), name)
		return
	}
	if inc <= mem.Incarnation || !m.checkAlive(name, addr, inc, pmin, pmax, feat, sig) {
		return
	}
	old := mem.Status
	addrChanged := mem.Addr != addr || mem.protoMin != pmin || mem.protoMax != pmax || mem.features != feat
	if mem.Addr != addr {
		mem.verified = false // the new address has not answered as the member yet
	}
	if isLive(old) {
		m.account(mem, -1) // counted again below with what it announces now
	}
	mem.Addr, mem.protoMin, mem.protoMax, mem.features = addr, pmin, pmax, feat
	if isLive(old) {
		m.account(mem, 1)
	}
	m.setState(now, mem, inc, StatusAlive)
	switch {
	case old == StatusDead || old == StatusLeft:
		m.event(now, EventJoin, mem)
	case old == StatusSuspect:
		m.event(now, EventAlive, mem)
	case addrChanged:
		m.event(now, EventUpdate, mem)
	}
	m.queueFact(m.aliveMsg(mem), name)
}

// refuseVersions refuses a claim that name speaks protocol versions pmin..pmax, a
// range that is invalid or shares no version with ours (PROTOCOL.md section 7):
// an unknown member is not added, a known one keeps its state (if it really
// changed versions, it stops answering and is suspected like any other). The
// claim is counted and reported in Ready.Refused for the host to log; it is not
// re-gossiped.
func (m *Machine) refuseVersions(name, addr string, pmin, pmax uint8) {
	m.stats.VersionsRefused++
	if len(m.out.Refused) < MaxRefusedPerReady {
		m.out.Refused = append(m.out.Refused, Refusal{Member: name, Addr: addr, ProtoMin: pmin, ProtoMax: pmax})
	}
}

// applySuspect handles "from suspects name at incarnation inc".
func (m *Machine) applySuspect(now time.Time, name string, inc uint64, from string) {
	if name == m.self.Name {
		m.claimAboutSelf(now, inc)
		return
	}
	mem := m.members.get(name)
	if mem == nil || inc < mem.Incarnation || !m.plausible(mem.Incarnation, inc) {
		return
	}
	switch mem.Status {
	case StatusAlive:
		m.setState(now, mem, inc, StatusSuspect)
		m.startSuspicion(now, mem, from)
		m.stats.Suspicions++
		m.event(now, EventSuspect, mem)
		m.queueFact(&wire.Suspect{Node: name, Incarnation: inc, From: from}, name)
		if from == m.self.Name && m.cfg.Lifeguard.Buddy && m.mayAnswer() && m.reach(now, mem) {
			// Our own probe failed: tell the suspect first-hand, so a live one
			// refutes within a round trip instead of when gossip reaches it.
			m.packer.Add(&wire.Suspect{Node: name, Incarnation: inc, From: from})
			m.send(mem.Addr)
		}
	case StatusSuspect:
		if inc > mem.Incarnation {
			// The member refuted the suspicion we hold (we missed its Alive) and is
			// suspected again in its new incarnation. Our timer's evidence and
			// elapsed time are about a life it has since vouched for: start over,
			// or the missed refutation turns this fresh suspicion into a death at
			// once (memberlist confirms the old timer; the sim's loss scenario
			// showed the false deaths).
			m.setState(now, mem, inc, StatusSuspect)
			m.startSuspicion(now, mem, from)
			m.stats.Suspicions++
			m.queueFact(&wire.Suspect{Node: name, Incarnation: inc, From: from}, name)
			return
		}
		if m.confirm(now, mem, from) {
			// New evidence: pass it on so others' timers shrink too.
			m.queueFact(&wire.Suspect{Node: name, Incarnation: mem.Incarnation, From: from}, name)
		}
	}
}

// applyDead handles "from declared name dead at inc" (left when from is name;
// with Config.Auth only a Leave signed by name, sig, is one).
func (m *Machine) applyDead(now time.Time, name string, inc uint64, from string, left bool, sig []byte) {
	if from == name && m.cfg.Auth == nil {
		left = true
	}
	if name == m.self.Name {
		m.claimAboutSelf(now, inc)
		return
	}
	mem := m.members.get(name)
	if mem == nil || inc < mem.Incarnation || mem.Status == StatusDead || mem.Status == StatusLeft || !m.plausible(mem.Incarnation, inc) ||
		left && !m.checkLeave(mem, inc, sig) {
		return
	}
	m.declareDead(now, mem, inc, from, left)
}

// declareDead marks mem dead (or left) at inc and broadcasts it.
func (m *Machine) declareDead(now time.Time, mem *member, inc uint64, from string, left bool) {
	if left {
		m.setState(now, mem, inc, StatusLeft)
		m.event(now, EventLeft, mem)
		m.queueFact(&wire.Leave{Node: mem.Name, Incarnation: inc, Sig: m.proofOf(mem)}, mem.Name)
		return
	}
	m.setState(now, mem, inc, StatusDead)
	m.stats.Deaths++
	m.event(now, EventDead, mem)
	m.queueFact(&wire.Dead{Node: mem.Name, Incarnation: inc, From: from}, mem.Name)
}

// claimAboutSelf handles a suspicion, death or leave claimed about us at inc: a
// current claim is refuted; a stale one (below our incarnation) means the packet's
// sender still spreads it and so has not got our refutation. Either way, the
// sender of the packet or push-pull reply that carried the claim (curFrom) gets
// our current Alive directly: it holds the claim, and gossip may not reach it soon
// (eager push skips the packet's sender, and a node that holds everyone dead, such
// as one that was cut off, has nobody to gossip to). That reply is one small
// packet per claim received, never more than the claims themselves.
func (m *Machine) claimAboutSelf(now time.Time, inc uint64) {
	if m.leaving || !m.plausible(m.self.Incarnation, inc) {
		return
	}
	if inc >= m.self.Incarnation {
		m.refute(now, inc)
	}
	if m.curFrom != "" && m.mayAnswer() {
		m.packer.Reset()
		m.packer.Add(m.aliveMsg(m.self))
		m.send(m.curFrom)
	}
}

// refute out-bids a claim about us seen at incarnation seen. At 2^64-1 there is
// nothing left to out-bid with: the claim is refused rather than wrapped to 0,
// which would make every earlier claim about us beat our own Alive.
func (m *Machine) refute(now time.Time, seen uint64) {
	top := max(seen, m.self.Incarnation)
	if top == math.MaxUint64 {
		m.stats.Implausible++
		return
	}
	m.setState(now, m.self, top+1, StatusAlive)
	m.stats.Refutations++
	if m.cfg.Lifeguard.LocalHealth {
		// Being suspected hints that we are the slow one (Lifeguard §IV-A).
		m.health = ApplyHealthDelta(m.health, 1, m.cfg.AwarenessMaxMultiplier)
	}
	m.queueFact(m.aliveMsg(m.self), m.self.Name)
}

// plausible reports whether a claimed incarnation got may replace held, and counts
// the claim as implausible if not.
func (m *Machine) plausible(held, got uint64) bool {
	if wire.Plausible(held, got) {
		return true
	}
	m.stats.Implausible++
	return false
}

// startSuspicion arms mem's suspicion timer: at the maximum timeout with
// AwareSuspicion (it shrinks with confirmations), else at the minimum. A suspicion
// from a push-pull (from "") has no first suspecter: the first named one takes
// that place instead of counting as a confirmation.
func (m *Machine) startSuspicion(now time.Time, mem *member, from string) {
	lo := SuspicionMinTimeout(m.cfg.SuspicionMult, m.live, m.cfg.ProbeInterval)
	s := &suspicion{start: now, lo: lo, hi: lo}
	if from != "" {
		s.from = []string{from}
	}
	if m.cfg.Lifeguard.AwareSuspicion {
		s.k = SuspicionConfirmations(m.cfg.SuspicionMult, m.live)
		s.hi = lo * time.Duration(m.cfg.SuspicionMaxTimeoutMult)
	}
	s.deadline = now.Add(SuspicionTimeout(0, s.k, s.lo, s.hi))
	mem.susp = s
	m.timers.push(timerEntry{at: s.deadline, kind: timerSuspicion, name: mem.Name, gen: mem.gen})
}

// confirm counts an independent confirmation of mem's suspicion and reports whether
// it was new (Lifeguard §IV-B). Only a named live member other than the suspect
// confirms, once: our own suspicion gossiped back to us is not independent, nor is
// a push-pull (from ""), which says what its sender holds, not who suspected, so
// one echoed view from many source ports would otherwise count many times.
func (m *Machine) confirm(now time.Time, mem *member, from string) bool {
	s := mem.susp
	if s == nil || s.k < 1 || len(s.from)-1 >= s.k || slices.Contains(s.from, from) {
		return false
	}
	if c := m.members.get(from); c == nil || c == mem || !isLive(c.Status) {
		return false
	}
	s.from = append(s.from, from)
	if len(s.from) == 1 {
		return true // the first suspecter of a push-pull's suspicion: news, no shorter timeout
	}
	d := s.start.Add(SuspicionTimeout(len(s.from)-1, s.k, s.lo, s.hi))
	if d.Before(s.deadline) {
		s.deadline = d
		m.timers.push(timerEntry{at: d, kind: timerSuspicion, name: mem.Name, gen: mem.gen})
	}
	return true
}

// setState moves mem to (inc, status), keeping the digest, live count, tombstone
// list and timers in step.
func (m *Machine) setState(now time.Time, mem *member, inc uint64, status Status) {
	old := mem.Status
	if isLive(old) {
		m.digest.sub(mem.hash())
	}
	mem.Incarnation = inc
	mem.Status = status
	if isLive(status) {
		m.digest.add(mem.hash())
	}
	m.viewChanged = now
	if old == status {
		return
	}
	mem.since = now.Sub(m.epoch)
	mem.gen++
	if status != StatusSuspect {
		mem.susp = nil
	}
	switch wasLive, nowLive := isLive(old), isLive(status); {
	case wasLive && !nowLive:
		m.live--
		m.account(mem, -1)
		if mem != m.self {
			mem.tombIdx = int32(len(m.tombs))
			m.tombs = append(m.tombs, mem)
			m.timers.push(timerEntry{at: now.Add(m.cfg.TombstoneTTL), kind: timerGC, name: mem.Name, gen: mem.gen})
		}
	case !wasLive && nowLive:
		m.live++
		m.account(mem, 1)
		m.dropTomb(mem)
	}
}

func (m *Machine) dropTomb(mem *member) {
	i := mem.tombIdx
	if i < 0 {
		return
	}
	last := int32(len(m.tombs) - 1)
	m.tombs[i] = m.tombs[last]
	m.tombs[i].tombIdx = i
	m.tombs[last] = nil
	m.tombs = m.tombs[:last]
	mem.tombIdx = -1
}

// forget collects a tombstone whose TTL ended. Tombstones are not in the digest,
// so neither it nor viewChanged moves.
func (m *Machine) forget(now time.Time, mem *member) {
	m.dropTomb(mem)
	i, last := mem.probeIdx, int32(len(m.plist)-1)
	m.plist[i] = m.plist[last]
	m.plist[i].probeIdx = i
	m.plist[last] = nil
	m.plist = m.plist[:last]
	if m.probe.target == mem {
		m.probe = probeState{}
	}
	m.members.remove(mem.Name)
	delete(m.proofs, mem.Name)
}

// evictTomb collects a tombstone before its TTL to make room for a new member at
// the MaxMembers cap, and reports whether there was one. Which one does not matter
// for safety: the first of the list, in O(1).
func (m *Machine) evictTomb(now time.Time) bool {
	if len(m.tombs) == 0 {
		return false
	}
	m.forget(now, m.tombs[0])
	return true
}

// isLive says whether a status counts as a live member: probed, gossiped to, and
// in the digest.
func isLive(s Status) bool { return s == StatusAlive || s == StatusSuspect }
