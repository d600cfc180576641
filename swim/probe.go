package swim

import (
	"errors"
	"slices"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// HandlePacket processes one received plain (unsealed) packet: every membership
// message in it, in order. Packets of another cluster, and malformed packets or
// messages, are counted and dropped; unknown message types are skipped.
func (m *Machine) HandlePacket(now time.Time, from string, data []byte) {
	m.stats.PacketsIn++
	m.stats.BytesIn += uint64(len(data))
	h, err := m.reader.Reset(data)
	if err != nil {
		m.stats.Malformed++
		return
	}
	if h.CheckCluster(m.clusterHash) != nil {
		m.stats.ForeignPackets++
		return
	}
	m.capVersion(h.Version)
	defer m.capVersion(0)
	m.eagerOK = true
	m.curFrom, m.claimFrom = from, from
	m.verifies, m.forgedInput = maxVerifiesPerPacket, false
	m.limited, m.budget = true, maxRepliesPerInput
	m.proven, m.wantSync = false, false
	for m.reader.Next() {
		if err := m.handleMessage(now, from, m.reader.Type(), m.reader.Body()); err != nil {
			m.stats.Malformed++
		}
	}
	m.curFrom, m.claimFrom = "", ""
	m.limited = false
	m.echoDigest = false
	if m.reader.Err() != nil {
		m.stats.Malformed++
	}
	if m.wantSync && m.proven {
		// A digest sync opens a stream to the packet's source: only to a member
		// that proved itself there in this packet (its Ping after the Digest, or
		// the Ack before an echoed one), never on a Digest alone.
		m.lastDigestSync = now
		m.mismatchSince = time.Time{}
		m.stats.DigestSyncs++
		m.startPushPull(from, false)
	} else {
		m.certSync(now, from)
	}
	m.wantCerts = false
	m.flushEager(now, from)
}

func (m *Machine) handleMessage(now time.Time, from string, typ wire.MsgType, body []byte) error {
	in := &m.in
	switch typ {
	case wire.TypePing:
		if err := m.dec.Decode(body, &in.ping); err != nil {
			return err
		}
		if !m.addrOK(in.ping.SourceAddr) {
			return errBadAddr
		}
		m.onPing(from, &in.ping)
	case wire.TypeIndirectPing:
		if err := m.dec.Decode(body, &in.iping); err != nil {
			return err
		}
		if !m.addrOK(in.iping.SourceAddr) || !m.addrOK(in.iping.TargetAddr) {
			return errBadAddr
		}
		m.onIndirectPing(now, from, &in.iping)
	case wire.TypeAck:
		if err := m.dec.Decode(body, &in.ack); err != nil {
			return err
		}
		m.onAck(now, from, &in.ack)
	case wire.TypeNack:
		if err := m.dec.Decode(body, &in.nack); err != nil {
			return err
		}
		if m.probe.active && in.nack.Seq == m.probe.seq {
			m.probe.nacks++
			m.stats.NacksReceived++
		}
	case wire.TypeAlive:
		if err := m.dec.Decode(body, &in.alive); err != nil {
			return err
		}
		a := &in.alive
		if !m.addrOK(a.Addr) {
			return errBadAddr
		}
		m.applyAlive(now, a.Node, a.Addr, a.Incarnation, a.ProtoMin, a.ProtoMax, a.Features, a.Sig)
		if a.Addr == from {
			m.vouch(m.members.get(a.Node), from) // a member announcing itself
		}
	case wire.TypeSuspect:
		if err := m.dec.Decode(body, &in.susp); err != nil {
			return err
		}
		m.applySuspect(now, in.susp.Node, in.susp.Incarnation, in.susp.From)
	case wire.TypeDead:
		if err := m.dec.Decode(body, &in.dead); err != nil {
			return err
		}
		m.applyDead(now, in.dead.Node, in.dead.Incarnation, in.dead.From, false, nil)
	case wire.TypeLeave:
		if err := m.dec.Decode(body, &in.leave); err != nil {
			return err
		}
		m.applyDead(now, in.leave.Node, in.leave.Incarnation, in.leave.Node, true, in.leave.Sig)
	case wire.TypeUser:
		if err := m.dec.Decode(body, &in.user); err != nil {
			return err
		}
		m.out.User = append(m.out.User, Payload{From: from, Data: slices.Clone(in.user.Payload)})
	case wire.TypeMetaDelta:
		if err := m.dec.Decode(body, &in.meta); err != nil {
			return err
		}
		m.out.Meta = append(m.out.Meta, Payload{From: from, Data: slices.Clone(in.meta.Payload)})
	case wire.TypeDigest:
		if err := m.dec.Decode(body, &in.dig); err != nil {
			return err
		}
		m.onDigest(now, from, in.dig)
	}
	// Other types (push-pull belongs on streams; lease, shard and extensions are for
	// other machines) are skipped.
	return nil
}

// errBadAddr makes handleMessage count a message whose address Config.CheckAddr
// refused.
var errBadAddr = errors.New("swim: address refused by Config.CheckAddr")

// replyAddr is where an answer to a request that arrived from the packet source
// from goes: the address the request names (addr, for member name) only when the
// view already holds it, verified, as that member's address, else from. An address taken from
// the body alone is never sent to: anyone could name a victim there and use us as
// a reflector.
func (m *Machine) replyAddr(from, name, addr string) string {
	if addr != "" && addr != from {
		if mem := m.members.get(name); mem != nil && mem != m.self && mem.Addr == addr && mem.verified {
			return addr
		}
	}
	return from
}

// onPing answers a ping for us with an ack carrying gossip, sent to the packet's
// source (replyAddr). A ping for another name reached an address that node no
// longer holds: answering would vouch for it.
func (m *Machine) onPing(from string, p *wire.Ping) {
	if p.Target != m.self.Name {
		m.stats.MisdirectedPings++
		return
	}
	m.vouch(m.members.get(p.Source), from)
	if !m.mayAnswer() {
		return
	}
	to := m.replyAddr(from, p.Source, p.SourceAddr)
	m.packer.Reset()
	ack := wire.Ack{Seq: p.Seq}
	if m.enabled.Has(wire.FeatureAckHealth) {
		ack.LocalHealth = uint8(m.health + 1)
	}
	m.packer.Add(&ack)
	if m.echoDigest {
		// The prober's digest, earlier in this packet, disagreed with ours: tell
		// it, so that it too sees the disagreement (and keeps sending digests)
		// whichever side's view is the odd one.
		m.echoDigest = false
		d := m.digest.d
		m.packer.Add(&d)
	}
	if src := m.members.get(p.Source); src != nil && src.Status == StatusDead && src.Addr == to {
		// A member we hold dead is pinging us, so it is running and does not know:
		// tell it, so it refutes (and sends us its new Alive). Otherwise each side
		// of a healed split can keep the other dead, nobody probing the dead.
		m.packer.Add(&wire.Dead{Node: src.Name, Incarnation: src.Incarnation, From: m.self.Name})
	}
	m.queues.fill(m.packer)
	m.send(to)
}

// onIndirectPing probes the target on the requester's behalf (SWIM §4.3): only a
// member we know, at the address we hold for it, never the request's TargetAddr
// (which could name anyone); the answer goes where replyAddr says.
func (m *Machine) onIndirectPing(now time.Time, from string, ip *wire.IndirectPing) {
	m.vouch(m.members.get(ip.Source), from)
	replyTo := m.replyAddr(from, ip.Source, ip.SourceAddr)
	if ip.Target == m.self.Name {
		// Asked to probe ourselves: we are evidently alive.
		if !m.mayAnswer() {
			return
		}
		m.packer.Reset()
		m.packer.Add(&wire.Ack{Seq: ip.Seq})
		m.send(replyTo)
		return
	}
	t := m.members.get(ip.Target)
	if t == nil {
		m.stats.IndirectRefused++
		return
	}
	if len(m.relays) >= maxRelays || !m.mayAnswer() {
		return
	}
	m.seq++
	if !t.verified {
		// Not held to the allowance: a relay answers one request of a peer, within
		// the input's answer budget, and holding relays to it raised false
		// suspicions by 15-65% (sim loss, 200 nodes, 10%, memberlist, seeds 1-3).
		// Its Ack verifies t.
		m.challenge(t.Addr, t.Name, m.seq)
	}
	m.relays = append(m.relays, relay{
		seq: m.seq, origSeq: ip.Seq, replyTo: replyTo, wantNack: ip.WantNack,
		nackAt: now.Add(m.cfg.ProbeTimeout * 4 / 5), deadline: now.Add(m.cfg.ProbeTimeout),
	})
	m.packer.Reset()
	m.packer.Add(&wire.Ping{Seq: m.seq, Target: t.Name, Source: m.self.Name, SourceAddr: m.self.Addr})
	m.send(t.Addr)
}

// onAck completes our probe, or relays the ack of an indirect probe we ran. An Ack
// of a Ping we sent, from the address we sent it to, verifies its target there.
func (m *Machine) onAck(now time.Time, from string, ack *wire.Ack) {
	seq := ack.Seq
	if c, ok := m.challenges[from]; ok && c.seq == seq {
		m.vouch(m.members.get(c.name), from) // the entry stays: other names there keep their allowance
	}
	for i := range m.finals {
		if f := m.finals[i]; f.seq == seq {
			m.finals = slices.Delete(m.finals, i, i+1)
			if f.target.gen == f.gen {
				m.vouch(f.target, from)
			}
			m.finalAnswered(now, f)
			return
		}
	}
	if m.probe.active && seq == m.probe.seq {
		if from == m.probe.target.Addr { // direct: a relayed ack times the helper's path too
			m.out.RTTs = append(m.out.RTTs, RTT{Member: m.probe.target.Name, Sample: now.Sub(m.probe.sent)})
			m.vouch(m.probe.target, from)
			if ack.LocalHealth > 0 && m.enabled.Has(wire.FeatureAckHealth) {
				m.probe.target.health = ack.LocalHealth
				m.stats.HealthReports++
			}
		}
		m.probe = probeState{}
		if m.cfg.Lifeguard.LocalHealth {
			m.health = ApplyHealthDelta(m.health, -1, m.cfg.AwarenessMaxMultiplier)
		}
		return
	}
	for i := range m.relays {
		if m.relays[i].seq == seq {
			r := m.relays[i]
			m.relays = slices.Delete(m.relays, i, i+1)
			if !m.mayAnswer() {
				return
			}
			m.packer.Reset()
			m.packer.Add(&wire.Ack{Seq: r.origSeq})
			m.send(r.replyTo)
			return
		}
	}
	// A late ack, after its probe ended: ignored, as in SWIM.
}

// onDigest compares a peer's digest with ours. When they have disagreed for
// DigestSyncInterval while our own view stood still (so gossip in flight is not
// the reason), we push-pull with that peer, at most once per scaled interval.
func (m *Machine) onDigest(now time.Time, from string, d wire.Digest) {
	iv := m.cfg.DigestSyncInterval
	if iv == 0 || m.leaving {
		return
	}
	if d == m.digest.d {
		m.mismatchSince = time.Time{}
		return
	}
	m.lastMismatch = now
	m.echoDigest = true
	if m.mismatchSince.IsZero() {
		m.mismatchSince = now
	}
	if now.Sub(m.mismatchSince) < iv || now.Sub(m.viewChanged) < iv {
		return
	}
	if !m.lastDigestSync.IsZero() && now.Sub(m.lastDigestSync) < PushPullScale(iv, m.live) {
		return
	}
	m.wantSync = true // run by HandlePacket if the packet proves its sender
}

// tickRelays sends the Lifeguard nack of indirect probes we run for others whose
// target stayed silent, and drops expired ones. The nack tells the requester that
// we, at least, can hear it. It goes out at 4/5 of ProbeTimeout, not at its end:
// the requester sent its request after its own ProbeTimeout and gives up at
// ProbeInterval, and memberlist's timings (500 ms + 500 ms = 1 s) would otherwise
// make every nack arrive just too late.
func (m *Machine) tickRelays(now time.Time) {
	n := 0
	for i := range m.relays {
		r := &m.relays[i]
		if r.wantNack && !r.nacked && !now.Before(r.nackAt) {
			r.nacked = true
			m.packer.Reset()
			m.packer.Add(&wire.Nack{Seq: r.origSeq})
			m.send(r.replyTo)
		}
		if now.Before(r.deadline) {
			m.relays[n] = *r
			n++
		}
	}
	clear(m.relays[n:])
	m.relays = m.relays[:n]
}

// tickProbe drives the probe state machine: direct ping, indirect probes after the
// (health-scaled) timeout, failure at the end of the (health-scaled) interval, and
// the next probe.
func (m *Machine) tickProbe(now time.Time) {
	p := &m.probe
	if p.active && !p.indirectSent && !now.Before(p.indirectAt) {
		m.sendIndirect(now)
	}
	if p.active && !now.Before(p.end) {
		m.probeFailed(now)
	}
	if !p.active && !m.leaving && !now.Before(m.nextProbe) {
		m.startProbe(now)
	}
}

// nextTarget walks the probe order, reshuffling at the end of each round (SWIM §4.3:
// round-robin over a random permutation bounds the time to first detection), and
// returns the next alive or suspect member, or nil.
func (m *Machine) nextTarget() *member {
	for range len(m.plist) {
		if m.pidx >= len(m.plist) {
			m.rng.Shuffle(len(m.plist), func(i, j int) {
				m.plist[i], m.plist[j] = m.plist[j], m.plist[i]
				m.plist[i].probeIdx, m.plist[j].probeIdx = int32(i), int32(j)
			})
			m.pidx = 0
		}
		t := m.plist[m.pidx]
		m.pidx++
		if t.Status == StatusAlive || t.Status == StatusSuspect {
			return t
		}
	}
	return nil
}

func (m *Machine) healthScore() int {
	if !m.cfg.Lifeguard.LocalHealth {
		return 0
	}
	return m.health
}

// startProbe pings the next member. The ping carries gossip, and our digest when
// digestDue; with the buddy system, a suspect target also gets its suspicion first
// so it can refute.
func (m *Machine) startProbe(now time.Time) {
	interval := ScaleByHealth(m.cfg.ProbeInterval, m.healthScore())
	t := m.nextTarget()
	if t == nil {
		m.nextProbe = now.Add(interval)
		return
	}
	m.seq++
	m.probe = probeState{
		active: true, target: t, seq: m.seq, sent: now,
		indirectAt: now.Add(ScaleByHealth(m.cfg.ProbeTimeout, m.healthScore())),
		end:        now.Add(interval),
	}
	m.nextProbe = m.probe.end
	m.packer.Reset()
	if m.digestDue(now) {
		// Before the ping: the target has compared it by the time it acks, and
		// echoes its own digest in the ack if they disagree (onPing).
		d := m.digest.d
		m.packer.Add(&d)
		m.probesNoDigest = 0
	} else {
		m.probesNoDigest++
	}
	m.packer.Add(&wire.Ping{Seq: m.seq, Target: t.Name, Source: m.self.Name, SourceAddr: m.self.Addr})
	if m.cfg.Lifeguard.Buddy && t.Status == StatusSuspect {
		m.packer.Add(&wire.Suspect{Node: t.Name, Incarnation: t.Incarnation, From: m.self.Name})
	}
	m.queues.fill(m.packer)
	m.stats.ProbesSent++
	m.send(t.Addr)
}

// digestDue says whether the probe being sent carries our digest: always while a
// divergence is possible (our view changed, or a peer's digest disagreed, within
// two DigestSyncIntervals: long enough for onDigest's wait to run out), else on
// every DigestEvery-th probe, which is what finds a divergence no change announced.
func (m *Machine) digestDue(now time.Time) bool {
	iv := m.cfg.DigestSyncInterval
	if iv == 0 {
		return false
	}
	return m.probesNoDigest+1 >= m.cfg.DigestEvery ||
		now.Sub(m.viewChanged) < 2*iv ||
		!m.lastMismatch.IsZero() && now.Sub(m.lastMismatch) < 2*iv
}

// sendIndirect asks IndirectChecks random members to probe the silent target.
func (m *Machine) sendIndirect(now time.Time) {
	p := &m.probe
	p.indirectSent = true
	t := p.target
	peers := m.randomPeers(now, m.cfg.IndirectChecks, "", t, allowedAddr)
	wantNack := m.cfg.Lifeguard.LocalHealth
	asked := 0
	for _, peer := range peers {
		if !m.reach(now, peer) {
			continue
		}
		asked++
		m.packer.Add(&wire.IndirectPing{
			Seq: p.seq, Target: t.Name, TargetAddr: t.Addr,
			Source: m.self.Name, SourceAddr: m.self.Addr, WantNack: wantNack,
		})
		m.queues.fill(m.packer)
		m.stats.IndirectProbesSent++
		m.send(peer.Addr)
	}
	if wantNack {
		p.expectedNacks = asked
	}
}

// probeFailed ends a probe with no ack: the local health score rises by the nacks
// that did not come (or by one when none were expected) and the target becomes
// suspect.
func (m *Machine) probeFailed(now time.Time) {
	p := m.probe
	m.probe = probeState{}
	m.stats.ProbesFailed++
	if m.cfg.Lifeguard.LocalHealth {
		delta := 1
		if p.expectedNacks > 0 {
			delta = p.expectedNacks - p.nacks
		}
		m.health = ApplyHealthDelta(m.health, delta, m.cfg.AwarenessMaxMultiplier)
	}
	t := p.target
	if t.Status == StatusAlive || t.Status == StatusSuspect {
		m.applySuspect(now, t.Name, t.Incarnation, m.self.Name)
	}
}

// startFinalProbe gives a suspect whose suspicion timed out a last chance: a ping
// that carries the suspicion (so the suspect refutes, or answers with its newer
// Alive if it already did) and IndirectChecks indirect pings, all at once.
func (m *Machine) startFinalProbe(now time.Time, t *member) {
	m.seq++
	m.finals = append(m.finals, finalProbe{
		seq: m.seq, target: t, gen: t.gen,
		deadline: now.Add(ScaleByHealth(m.cfg.ProbeInterval, m.healthScore())),
	})
	m.stats.FinalProbes++
	// Unverified, it is pinged within its address's allowance, or right after our
	// own probe of it spent that: the final probe is of the same member.
	if c, ok := m.challenges[t.Addr]; t.verified || m.allow(now, t.Addr, t.Name, m.seq, ok && c.name == t.Name) {
		m.packer.Reset()
		m.packer.Add(&wire.Ping{Seq: m.seq, Target: t.Name, Source: m.self.Name, SourceAddr: m.self.Addr})
		m.packer.Add(&wire.Suspect{Node: t.Name, Incarnation: t.Incarnation, From: m.self.Name})
		m.send(t.Addr)
	}
	// Twice the usual witnesses: this probe decides a death, and under loss a
	// node that missed a refutation for a whole suspicion timeout is not rare
	// (sim loss 200/0.1/300 s, lan, seed 5: one false death with IndirectChecks).
	for _, peer := range m.randomPeers(now, 2*m.cfg.IndirectChecks, "", t, allowedAddr) {
		if !m.reach(now, peer) {
			continue
		}
		m.packer.Add(&wire.IndirectPing{
			Seq: m.seq, Target: t.Name, TargetAddr: t.Addr,
			Source: m.self.Name, SourceAddr: m.self.Addr,
		})
		m.send(peer.Addr)
	}
}

// finalAnswered: the suspect answered its final probe, so it is not dead. Its
// suspicion restarts at the minimum timeout; the refutation it was prompted to
// send normally arrives well before that.
func (m *Machine) finalAnswered(now time.Time, f finalProbe) {
	t := f.target
	if t.gen != f.gen || t.Status != StatusSuspect || t.susp == nil {
		return
	}
	s := t.susp
	s.checked = false
	s.start = now
	s.deadline = now.Add(s.lo)
	m.timers.push(timerEntry{at: s.deadline, kind: timerSuspicion, name: t.Name, gen: t.gen})
}

// tickFinals declares dead the suspects whose final probe went unanswered.
func (m *Machine) tickFinals(now time.Time) {
	n := 0
	for _, f := range m.finals {
		if now.Before(f.deadline) {
			m.finals[n] = f
			n++
			continue
		}
		t := f.target
		if t.gen == f.gen && t.Status == StatusSuspect && m.members.get(t.Name) == t {
			m.declareDead(now, t, t.Incarnation, m.self.Name, false)
		}
	}
	clear(m.finals[n:])
	m.finals = m.finals[:n]
}
