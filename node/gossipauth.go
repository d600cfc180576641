package node

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Signed self-claims in a cluster with node certificates (PROTOCOL.md 10.10):
// certStore is swim's Authenticator. It signs this node's claims with its
// certificate's key and verifies other members' against their certificates,
// which it collects from the peers of mutual-TLS streams and from push-pulls.

// certsPerName is how many certificates of one member are held: the newest
// and the one it replaced, so the claims signed before a rotation still verify
// until that certificate expires.
const certsPerName = 2

// maxCertNames bounds the members whose certificates are held. Certificates of
// members that are gone are not collected as they go: a full store first drops
// the names whose certificates all expired, then any other name but ours (its
// certificate is fetched again if that member speaks), so new members are
// never locked out over a cluster's life.
const maxCertNames = 2 * swim.DefaultMaxMembers

// heldCert is one member certificate: its chain as carried (DER, leaf first,
// concatenated), the chain's hash (wire.CertHash) and the parsed leaf.
type heldCert struct {
	chain []byte
	hash  uint64
	leaf  *x509.Certificate
}

// certStore is safe for concurrent use: TLS handshakes add to it from stream
// goroutines, swim reads it on the loop.
type certStore struct {
	src *identity.Source
	now func() time.Time
	// policy is whom the store holds certificates of, nameOf the member name a
	// certificate gives (Config.memberName): a node of this cluster by its
	// name, or in the WAN pool a gateway of any cluster as NAME@CLUSTER.
	policy identity.Policy
	nameOf func(identity.ID) string
	// refused counts carried chains that did not verify
	// (omnirelay_certs_refused_total); evicted, names dropped from a full store
	// while their certificates were still valid.
	refused, evicted atomic.Uint64

	mu      sync.Mutex
	byName  map[string][]heldCert // newest (NotBefore) first
	hashes  map[uint64]struct{}   // of every held chain
	ownTLS  *tls.Certificate      // the Source's certificate addOwn last took: we sign with its key
	ownHash uint64                // wire.CertHash of its chain
}

// A signature of this node is the hash (wire.CertHash, 8 bytes big-endian) of
// the chain whose key made it, then the signature itself (PROTOCOL.md 10.10):
// the verifier knows which certificate to check, and one it does not hold yet
// (the member rotated) is an unknown signer, fetched, not a forgery.
const sigKeyID = 8

// newCertStore is the store of a node of config c (Config.memberName).
func newCertStore(c Config, src *identity.Source, now func() time.Time) *certStore {
	s := &certStore{src: src, now: now, policy: c.meshPolicy(""), nameOf: c.memberName, byName: map[string][]heldCert{}, hashes: map[uint64]struct{}{}}
	s.addOwn()
	return s
}

// addOwn adds this node's current certificate and reports whether it changed
// since the last call (a rotation: the node then re-signs its Alive). An
// unchanged one costs a pointer comparison (a reload swaps the pointer).
func (s *certStore) addOwn() bool {
	c := s.src.Certificate()
	s.mu.Lock()
	same := c == s.ownTLS
	s.mu.Unlock()
	if same {
		return false
	}
	chain := make([]*x509.Certificate, 0, len(c.Certificate))
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return false // the Source parsed it: cannot happen
		}
		chain = append(chain, x)
	}
	if len(chain) == 0 {
		return false
	}
	h := s.addVerified(s.nameOf(s.src.Identity()), chain)
	s.mu.Lock()
	s.ownTLS, s.ownHash = c, h
	s.mu.Unlock()
	return true
}

// addPeer adds the certificate of a mutual-TLS stream's peer, which the
// handshake verified with the mesh policy.
func (s *certStore) addPeer(chain []*x509.Certificate) {
	if len(chain) == 0 {
		return
	}
	id, err := identity.FromCertificate(chain[0])
	if err != nil || id.Role != identity.RoleNode {
		return
	}
	s.addVerified(s.nameOf(id), chain)
}

// addVerified holds a verified chain as name's and returns its hash. Of two
// certificates with the same NotBefore the one added last counts as newer.
func (s *certStore) addVerified(name string, chain []*x509.Certificate) uint64 {
	var raw []byte
	for _, c := range chain {
		raw = append(raw, c.Raw...)
	}
	h := heldCert{chain: raw, hash: wire.CertHash(raw), leaf: chain[0]}
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.byName[name]
	if slices.ContainsFunc(held, func(c heldCert) bool { return c.hash == h.hash }) {
		return h.hash
	}
	if !ok && len(s.byName) >= maxCertNames {
		s.makeRoom()
	}
	held = append([]heldCert{h}, held...)
	slices.SortStableFunc(held, func(a, b heldCert) int { return b.leaf.NotBefore.Compare(a.leaf.NotBefore) })
	for _, c := range held[min(len(held), certsPerName):] {
		delete(s.hashes, c.hash)
	}
	held = held[:min(len(held), certsPerName)]
	for _, c := range held {
		s.hashes[c.hash] = struct{}{}
	}
	s.byName[name] = held
	return h.hash
}

// makeRoom frees at least one name of a full store (under s.mu).
func (s *certStore) makeRoom() {
	now := s.now()
	own := s.nameOf(s.src.Identity())
	drop := func(name string) {
		for _, c := range s.byName[name] {
			delete(s.hashes, c.hash)
		}
		delete(s.byName, name)
	}
	for name, held := range s.byName {
		if name != own && now.After(held[0].leaf.NotAfter) {
			drop(name)
		}
	}
	for name := range s.byName {
		if len(s.byName) < maxCertNames {
			return
		}
		if name != own {
			s.evicted.Add(1)
			drop(name)
		}
	}
}

// Sign implements swim.Authenticator with the key of the certificate addOwn
// last took.
func (s *certStore) Sign(claim []byte) []byte {
	s.mu.Lock()
	c, h := s.ownTLS, s.ownHash
	s.mu.Unlock()
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil
	}
	var sig []byte
	var err error
	switch key.Public().(type) {
	case ed25519.PublicKey:
		sig, err = key.Sign(crand.Reader, claim, crypto.Hash(0))
	default:
		d := sha256.Sum256(claim)
		sig, err = key.Sign(crand.Reader, d[:], crypto.SHA256)
	}
	if err != nil {
		return nil
	}
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, sigKeyID+len(sig)), h), sig...)
}

// Verify implements swim.Authenticator: sig must be made by the key of the
// certificate it names, held as name's and valid now. A certificate held as
// another member's is a forgery; one not held at all (yet: the member rotated)
// an unknown signer; an expired one verifies nothing.
func (s *certStore) Verify(name string, claim, sig []byte) swim.Verdict {
	if len(sig) <= sigKeyID {
		return swim.VerdictBad
	}
	id := binary.BigEndian.Uint64(sig)
	s.mu.Lock()
	i := slices.IndexFunc(s.byName[name], func(c heldCert) bool { return c.hash == id })
	var leaf *x509.Certificate
	if i >= 0 {
		leaf = s.byName[name][i].leaf
	}
	_, another := s.hashes[id] // a certificate held, of another member
	s.mu.Unlock()
	if leaf == nil && !another {
		return swim.VerdictUnknown
	}
	if leaf == nil {
		return swim.VerdictBad
	}
	if now := s.now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) || !checkSig(leaf.PublicKey, claim, sig[sigKeyID:]) {
		return swim.VerdictBad
	}
	return swim.VerdictOK
}

// checkSig verifies sig over claim with pub, in the schemes of PROTOCOL.md 10.10.
func checkSig(pub crypto.PublicKey, claim, sig []byte) bool {
	d := sha256.Sum256(claim)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, d[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, claim, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig) == nil
	}
	return false
}

// Have implements swim.Authenticator.
func (s *certStore) Have() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, 0, min(len(s.hashes), wire.MaxCertHave))
	for h := range s.hashes {
		if len(out) == wire.MaxCertHave {
			break
		}
		out = append(out, h)
	}
	return out
}

// Missing implements swim.Authenticator: the chains of names not in have, newest
// first per name, within the frame limits of PROTOCOL.md section 4.
func (s *certStore) Missing(have []uint64, names []string) [][]byte {
	known := make(map[uint64]struct{}, len(have))
	for _, h := range have {
		known[h] = struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]byte
	total := 0
	for _, name := range names {
		for _, c := range s.byName[name] {
			if _, ok := known[c.hash]; ok || len(c.chain) > wire.MaxCertChain {
				continue
			}
			if len(out) == wire.MaxCerts || total+len(c.chain) > wire.MaxCertBytes {
				return out
			}
			total += len(c.chain)
			out = append(out, c.chain)
		}
	}
	return out
}

// Learn implements swim.Authenticator: each chain is verified against the trust
// bundle with the mesh policy (a node of our trust domain and cluster) before it
// is held under the name its SPIFFE ID gives. It runs on the loop: a push-pull
// carries at most wire.MaxCerts chains, and a chain held already costs a hash.
func (s *certStore) Learn(creds [][]byte) {
	for _, raw := range creds {
		s.mu.Lock()
		_, dup := s.hashes[wire.CertHash(raw)]
		s.mu.Unlock()
		if dup {
			continue
		}
		chain, err := x509.ParseCertificates(raw)
		if err != nil || len(chain) == 0 || len(chain) > identity.MaxPeerChain {
			s.refused.Add(1)
			continue
		}
		id, err := s.src.VerifyPeer(chain, s.policy, x509.ExtKeyUsageClientAuth)
		if err != nil {
			s.refused.Add(1)
			continue
		}
		s.addVerified(s.nameOf(id), chain)
	}
}

// certOf is name's newest held leaf, nil if none (tests).
func (s *certStore) certOf(name string) *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held := s.byName[name]; len(held) > 0 {
		return held[0].leaf
	}
	return nil
}

// auditForged audits and logs gossip self-claims refused for a signature that
// is not their member's: the first of the batch, at most one line a logEvery
// (omnirelay_claims_refused_total{reason="forged"} counts them all). The packet
// source is the address of the key holder that sent or relayed the forgery.
func (n *Node) auditForged(now time.Time, forged []swim.Forgery) {
	f := forged[0]
	kind := "alive"
	if f.Leave {
		kind = "leave"
	}
	held, ok := n.forgedLog.allow(now)
	if !ok {
		return
	}
	inc := f.Incarnation
	n.audit(auditRecord{Time: now, Event: "claim_forged", ID: control.NewEventID(), Member: f.Member, Addr: f.Addr,
		Incarnation: &inc, Remote: f.From, Reason: fmt.Sprintf("%s not signed by %s (%d more since the last line)", kind, f.Member, held+len(forged)-1)})
	n.log.Warn("refusing a gossip claim not signed by its member (a packet-key holder speaking as another member)",
		"member", f.Member, "claim", kind, "addr", f.Addr, "incarnation", f.Incarnation, "from", f.From, "suppressed", held+len(forged)-1)
}

// addPacketAuth counts the lease and shard packets refused for their sender
// signature (PROTOCOL.md 10.11) in st's claim counters: they never reach swim,
// and omnirelay_claims_refused_total{reason} has one series per reason for
// every signed thing a member says.
func addPacketAuth(st *swim.Stats, ps ...stack.PacketAuthStats) {
	for _, p := range ps {
		st.ClaimsForged += p.Forged
		st.ClaimsUnsigned += p.Unsigned
		st.ClaimsUnknownSigner += p.UnknownSigner
		st.SignFailures += p.SignFailures
	}
}

// auditForgedPackets audits and logs lease and shard packets refused for a
// signature that is not their sender's or for speaking for another member
// (audit event packet_forged), sharing auditForged's rate limit: the first of
// the batch, at most one line a logEvery.
func (n *Node) auditForgedPackets(now time.Time, forged []stack.PacketForgery) {
	held, ok := n.forgedLog.allow(now)
	if !ok {
		return
	}
	f := forged[0]
	member, why := f.Sender, fmt.Sprintf("type %d packet not signed by %s for this node", f.Type, f.Sender)
	if f.Misnamed {
		member = f.Claimed
		why = fmt.Sprintf("type %d message for %q sent by %s", f.Type, f.Claimed, f.Sender)
	}
	more := held + len(forged) - 1
	n.audit(auditRecord{Time: now, Event: "packet_forged", ID: control.NewEventID(), Member: member, Remote: f.From,
		Reason: fmt.Sprintf("%s (%d more since the last line)", why, more)})
	n.log.Warn("refusing a lease or shard packet that speaks for another member (a packet-key holder's forgery)",
		"member", member, "signer", f.Sender, "type", int(f.Type), "from", f.From, "suppressed", more)
}

// auditMetaForged audits and logs metadata cells refused for a signature that is
// not their map writer's (PROTOCOL.md section 13), as auditForged does for
// self-claims: event claim_forged, the writer as member, the source as remote,
// the first of the batch, at most one line a logEvery.
func (n *Node) auditMetaForged(now time.Time, forged []stack.MetaForgery) {
	f := forged[0]
	held, ok := n.metaForgedLog.allow(now)
	if !ok {
		return
	}
	what := fmt.Sprintf("meta cell %q at %v of map %q", f.Key, f.Version, f.Map)
	if f.Key == "" {
		what = fmt.Sprintf("meta head at %v of map %q", f.Version, f.Map)
	}
	writer := f.Writer
	if writer == "" {
		writer = "the holder of epoch " + strconv.FormatUint(f.Version.Epoch, 10)
	}
	n.audit(auditRecord{Time: now, Event: "claim_forged", ID: control.NewEventID(), Member: f.Writer, Remote: f.From,
		Epoch: f.Version.Epoch, Reason: fmt.Sprintf("%s not signed by %s (%d more since the last line)", what, writer, held+len(forged)-1)})
	n.log.Warn("refusing metadata not signed by its writer (a packet-key holder writing another member's map)",
		"map", f.Map, "key", f.Key, "version", f.Version.String(), "writer", f.Writer, "from", f.From, "suppressed", held+len(forged)-1)
}
