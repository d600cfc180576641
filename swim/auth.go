package swim

import (
	"math"
	"slices"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// Signed self-claims (PROTOCOL.md 10.10). With Config.Auth a member's Alive and
// Leave say something only that member may say: where it lives, that it refutes a
// suspicion, that it left. So each carries the member's signature of its claim
// (wire.AliveClaim, wire.LeaveClaim), and third parties relay it with the claim,
// in gossip and in push-pull records, proofs they cannot forge. Accusations
// (Suspect, Dead) stay unsigned: any member may make one, and the accused refutes
// it with a signed Alive nobody else can make.
//
// A claim is verified only when it would change the view (a new member, a
// higher incarnation, a leave of a live member): the records a push-pull brings
// again and again are held already and cost nothing, which is the cache of
// verified (name, incarnation, address).

// Verdict is an Authenticator's judgement of a signature.
type Verdict uint8

const (
	// VerdictOK: the member's key signed the claim.
	VerdictOK Verdict = iota
	// VerdictUnknown: no key is known for the member yet (its certificate has not
	// reached us). The claim is dropped; the member arrives with its
	// certificate through a push-pull.
	VerdictUnknown
	// VerdictBad: the signature is not the member's (forged, or of another
	// claim), or it is missing.
	VerdictBad
)

// Authenticator signs this node's self-claims and judges other members'. The
// host implements it (node: the certificates of the mesh's trust bundle); it
// must be deterministic for a given state and must not block: it runs inside
// the machine's inputs.
type Authenticator interface {
	// Sign returns this node's signature of claim, nil if it cannot sign (the
	// claim then leaves unsigned and Stats.SignFailures counts it).
	Sign(claim []byte) []byte
	// Verify judges sig as member name's signature of claim.
	Verify(name string, claim, sig []byte) Verdict
	// Have lists the hashes (wire.CertHash) of the credentials held, for a
	// push-pull we send (PushPull.CertHave).
	Have() []uint64
	// Missing returns the credentials of members names that are not among have,
	// within the limits of wire.MaxCerts and wire.MaxCertBytes, for our answer
	// to a push-pull (PushPull.Certs).
	Missing(have []uint64, names []string) [][]byte
	// Learn takes credentials a push-pull carried; invalid ones are the
	// host's to count and drop.
	Learn(creds [][]byte)
}

// Forgery is a self-claim about Member (an Alive at Addr or a Leave, at
// Incarnation) refused because its signature is not Member's, received from
// From (a packet's source or a push-pull peer).
type Forgery struct {
	Member, Addr, From string
	Incarnation        uint64
	Leave              bool
}

// proof is the member's own signature of the record we hold about it: of its
// Alive at inc (left false) or of its Leave at inc (left true).
type proof struct {
	inc  uint64
	left bool
	sig  []byte
}

// maxVerifiesPerPacket bounds the signatures one received packet makes us
// verify (about 0.1-0.2 ms each for P-256): a full packet of honest gossip
// carries at most 11 signed Alives, but a receiver reads datagrams up to 65 KB,
// which could carry 500. Push-pulls are not bounded by it (a join reply
// verifies every member of the view once); both stop verifying at the first
// forgery of the input (verdict).
const maxVerifiesPerPacket = 16

// mayVerify says whether the input being handled may verify one more
// signature, counting the claim refused if not.
func (m *Machine) mayVerify() bool {
	switch {
	case m.forgedInput:
		// An honest member relays only claims it verified: an input that carried
		// a forgery is hostile, and the rest of it is refused unverified.
		m.stats.ClaimsForged++
		return false
	case m.verifies == 0:
		m.stats.ClaimsOverBudget++
		return false
	case m.verifies > 0:
		m.verifies--
	}
	return true
}

// checkAlive says whether an Alive about name may be applied: always without
// Auth, else only with name's valid signature, which is then kept as the record's
// proof. Refusals are counted; a forged one is reported (Ready.Forged), an
// unknown signer asks for a certificate sync with the packet's source.
func (m *Machine) checkAlive(name, addr string, inc uint64, pmin, pmax uint8, feat wire.Features, sig []byte) bool {
	a := m.cfg.Auth
	if a == nil {
		return true
	}
	v := VerdictBad
	if len(sig) > 0 {
		if !m.mayVerify() {
			return false
		}
		v = a.Verify(name, wire.AliveClaim(m.cfg.ClusterLabel, name, addr, inc, pmin, pmax, feat), sig)
	}
	if !m.verdict(v, len(sig) > 0, Forgery{Member: name, Addr: addr, From: m.claimFrom, Incarnation: inc}) {
		if v == VerdictUnknown && len(sig) > 0 {
			m.keepPending(pendingAlive{name: name, addr: addr, inc: inc, pmin: pmin, pmax: pmax, feat: feat, sig: sig})
		}
		return false
	}
	m.keepProof(name, proof{inc: inc, sig: sig})
	return true
}

// checkLeave says whether a Leave of live member mem at inc may be applied:
// always without Auth, else only signed by mem. An operator's ForceLeave of a
// dead member, which that member cannot sign, is then dropped by members still
// holding it live: they find it dead by themselves.
func (m *Machine) checkLeave(mem *member, inc uint64, sig []byte) bool {
	a := m.cfg.Auth
	if a == nil {
		return true
	}
	v := VerdictBad
	if len(sig) > 0 {
		if !m.mayVerify() {
			return false
		}
		v = a.Verify(mem.Name, wire.LeaveClaim(m.cfg.ClusterLabel, mem.Name, inc), sig)
	}
	if !m.verdict(v, len(sig) > 0, Forgery{Member: mem.Name, Addr: mem.Addr, From: m.claimFrom, Incarnation: inc, Leave: true}) {
		return false
	}
	m.keepProof(mem.Name, proof{inc: inc, left: true, sig: sig})
	return true
}

// verdict counts a refused claim and says whether v lets it through.
func (m *Machine) verdict(v Verdict, signed bool, f Forgery) bool {
	switch {
	case v == VerdictOK:
		return true
	case !signed:
		m.stats.ClaimsUnsigned++
	case v == VerdictUnknown:
		m.stats.ClaimsUnknownSigner++
		m.wantCerts = true
	default:
		m.stats.ClaimsForged++
		m.forgedInput = true
		if len(m.out.Forged) < MaxRefusedPerReady {
			m.out.Forged = append(m.out.Forged, f)
		}
	}
	return false
}

// keepProof stores the signature that proved name's record (a copy: decode
// buffers are reused).
func (m *Machine) keepProof(name string, p proof) {
	if m.proofs == nil {
		m.proofs = make(map[string]proof)
	}
	p.sig = slices.Clone(p.sig)
	m.proofs[name] = p
}

// proofOf is the signature to relay with mem's current record, nil if we hold
// none for it (our own is made on demand).
func (m *Machine) proofOf(mem *member) []byte {
	if m.cfg.Auth == nil {
		return nil
	}
	left := mem.Status == StatusLeft
	if mem.Status == StatusDead {
		return nil // read as an accusation, which is not signed
	}
	p, ok := m.proofs[mem.Name]
	if ok && p.inc == mem.Incarnation && p.left == left {
		return p.sig
	}
	if mem != m.self {
		return nil
	}
	claim := wire.AliveClaim(m.cfg.ClusterLabel, mem.Name, mem.Addr, mem.Incarnation, mem.protoMin, mem.protoMax, mem.features)
	if left {
		claim = wire.LeaveClaim(m.cfg.ClusterLabel, mem.Name, mem.Incarnation)
	}
	sig := m.cfg.Auth.Sign(claim)
	if len(sig) == 0 {
		m.stats.SignFailures++
		return nil
	}
	m.keepProof(mem.Name, proof{inc: mem.Incarnation, left: left, sig: sig})
	return sig
}

// certSync answers claims of unknown signers in the packet just handled: a
// push-pull with its source, which relayed them, so verified them, so holds the
// certificates (its answer carries those we lack). Only to a live member proved
// at that address, and at most one a GossipInterval (a ProbeInterval made a
// 5-node formation take 250 ms instead of 50): one asked for sooner waits for
// that (tickCertSync), to the latest source that asked.
func (m *Machine) certSync(now time.Time, from string) {
	if !m.wantCerts {
		return
	}
	m.wantCerts = false
	if m.leaving {
		return
	}
	for _, p := range m.plist {
		if p.Addr == from && p.verified && isLive(p.Status) {
			m.certSyncTo = from
			m.tickCertSync(now)
			return
		}
	}
	// The source is not verified here yet (formation: eager pushes from
	// members we have not probed): another verified member, which has likely
	// met the signer too.
	if p := m.randomPeers(now, 1, "", nil, verifiedAddr); len(p) == 1 {
		m.certSyncTo = p[0].Addr
		m.tickCertSync(now)
	}
}

// SyncCerts asks for the certificates the host lacked to verify what came from
// from (a lease or shard packet's sender, PROTOCOL.md 10.11, or metadata signed
// by a member whose certificate we do not hold): a push-pull with from, under
// certSync's rules (a live member verified at that address, else another
// verified one; at most one a GossipInterval). Without Auth it does nothing.
func (m *Machine) SyncCerts(now time.Time, from string) {
	if m.cfg.Auth == nil {
		return
	}
	m.wantCerts = true
	m.certSync(now, from)
	m.wantCerts = false
}

// maxPendingClaims bounds the Alives of unknown signers kept to retry once
// certificates arrive: without them a member whose gossip was spent before its
// certificate reached us waited for a periodic push-pull (a 100-node formation
// in the simulator took 16 s instead of 3.5).
const maxPendingClaims = 64

// maxPendingSyncs is how many certificate syncs a kept Alive waits through
// before it is dropped. A sync can miss: its peer may not hold the signer's
// certificate yet (formation), and once the member's gossip is spent nothing
// else would ask again until a periodic push-pull (TestSignedGossipCost failed
// to form 5 nodes in 30 s that way). Bounded, so a claim signed by a key nobody
// holds costs at most this many push-pulls, one a GossipInterval.
const maxPendingSyncs = 4

// pendingAlive is an Alive of an unknown signer, kept for retryPending.
type pendingAlive struct {
	name, addr string
	inc        uint64
	pmin, pmax uint8
	feat       wire.Features
	sig        []byte
	syncs      int // certificate syncs started since it was first kept
}

// keepPending keeps an Alive of an unknown signer, replacing an older one of
// the same member; when full, the claim is only counted.
func (m *Machine) keepPending(p pendingAlive) {
	for i := range m.pending {
		if m.pending[i].name == p.name {
			if p.inc > m.pending[i].inc {
				p.sig = slices.Clone(p.sig)
				m.pending[i] = p
			}
			return
		}
	}
	if len(m.pending) < maxPendingClaims {
		p.sig = slices.Clone(p.sig)
		m.pending = append(m.pending, p)
	}
}

// retryPending applies the kept Alives again after a push-pull brought
// certificates; those still of unknown signers are kept again.
func (m *Machine) retryPending(now time.Time) {
	ps := m.pending
	m.pending = nil
	for _, p := range ps {
		m.applyAlive(now, p.name, p.addr, p.inc, p.pmin, p.pmax, p.feat, p.sig)
		// Kept again (still of an unknown signer), it keeps its count of syncs.
		if i := slices.IndexFunc(m.pending, func(q pendingAlive) bool { return q.name == p.name }); i >= 0 {
			m.pending[i].syncs = max(m.pending[i].syncs, p.syncs)
		}
	}
}

// certSyncAt is when the pending certificate sync may start.
func (m *Machine) certSyncAt() time.Time { return m.lastCertSync.Add(m.cfg.GossipInterval) }

// tickCertSync starts the pending certificate sync if it is due. With Alives
// still kept and no sync asked for, it asks a random verified member: the last
// sync's peer lacked the certificates.
func (m *Machine) tickCertSync(now time.Time) {
	if m.leaving || (!m.lastCertSync.IsZero() && now.Before(m.certSyncAt())) {
		return
	}
	if m.certSyncTo == "" && len(m.pending) > 0 {
		if p := m.randomPeers(now, 1, "", nil, verifiedAddr); len(p) == 1 {
			m.certSyncTo = p[0].Addr
		}
	}
	if m.certSyncTo == "" {
		if len(m.pending) > 0 {
			m.lastCertSync = now // nobody to ask: look again in a GossipInterval, not at once
		}
		return
	}
	m.lastCertSync = now
	m.stats.CertSyncs++
	m.startPushPull(m.certSyncTo, false)
	m.certSyncTo = ""
	kept := m.pending[:0]
	for _, p := range m.pending {
		if p.syncs++; p.syncs <= maxPendingSyncs {
			kept = append(kept, p)
		}
	}
	clear(m.pending[len(kept):])
	m.pending = kept
}

// Resign raises our incarnation and signs our Alive anew: after a certificate
// rotation the record every member relays is then proved by the current key, not
// by one that will expire. Without Auth, or after Leave, it does nothing.
func (m *Machine) Resign(now time.Time) {
	if m.cfg.Auth == nil || m.leaving {
		return
	}
	if m.self.Incarnation == math.MaxUint64 {
		m.stats.Implausible++
		return
	}
	m.eagerOK = true
	m.setState(now, m.self, m.self.Incarnation+1, StatusAlive)
	m.queueFact(m.aliveMsg(m.self), m.self.Name)
	m.flushEager(now, "")
}
