package swim

import (
	"encoding/binary"
	"hash/fnv"
	"slices"

	"github.com/omnirelay/mesh/wire"
)

// SimAuthority is a deterministic stand-in for a certificate authority, for the
// simulator and tests: its "signature" of a claim by a member is a keyed hash
// any party can compute, so it proves nothing against an adversary. It lets
// virtual clusters run the strict rules of PROTOCOL.md 10.10 (who may sign what,
// unknown signers, credential carriage in push-pulls) without x509.
type SimAuthority struct {
	// Secret keys the hash; members of authorities with other secrets cannot
	// verify each other (another CA).
	Secret uint64
}

// Node returns the authenticator of member name, which knows only its own
// credential at first and learns others from push-pulls (Learn).
func (a SimAuthority) Node(name string) *SimAuth {
	s := &SimAuth{ca: a, name: name, known: map[string]bool{}}
	s.known[name] = true
	return s
}

// SimAuth is one member's Authenticator of a SimAuthority. Not safe for
// concurrent use, like the Machine it serves.
type SimAuth struct {
	ca    SimAuthority
	name  string
	known map[string]bool // names whose credential we hold
}

// SignAs is name's signature of claim: what Sign returns at name's node. Tests
// use it to forge (sign as one member a claim about another).
func (a SimAuthority) SignAs(name string, claim []byte) []byte {
	h := fnv.New64a()
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], a.Secret)
	h.Write(k[:])
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(claim)
	return h.Sum(nil)
}

// credential is name's credential: its name, bound to the authority's secret.
func (a SimAuthority) credential(name string) []byte {
	return append(a.SignAs(name, nil), name...)
}

// Sign implements Authenticator.
func (s *SimAuth) Sign(claim []byte) []byte { return s.ca.SignAs(s.name, claim) }

// Verify implements Authenticator.
func (s *SimAuth) Verify(name string, claim, sig []byte) Verdict {
	switch {
	case !s.known[name]:
		return VerdictUnknown
	case slices.Equal(sig, s.ca.SignAs(name, claim)):
		return VerdictOK
	}
	return VerdictBad
}

// Have implements Authenticator.
func (s *SimAuth) Have() []uint64 {
	out := make([]uint64, 0, len(s.known))
	for name := range s.known {
		out = append(out, wire.CertHash(s.ca.credential(name)))
	}
	slices.Sort(out) // deterministic frames
	return out
}

// Missing implements Authenticator.
func (s *SimAuth) Missing(have []uint64, names []string) [][]byte {
	var out [][]byte
	held := make(map[uint64]bool, len(have))
	for _, h := range have {
		held[h] = true
	}
	bytes := 0
	for _, name := range names {
		if !s.known[name] {
			continue
		}
		c := s.ca.credential(name)
		if held[wire.CertHash(c)] {
			continue
		}
		if len(out) == wire.MaxCerts || bytes+len(c) > wire.MaxCertBytes {
			break
		}
		bytes += len(c)
		out = append(out, c)
	}
	return out
}

// Learn implements Authenticator: credentials of another authority are dropped.
func (s *SimAuth) Learn(creds [][]byte) {
	for _, c := range creds {
		if len(c) <= 8 {
			continue
		}
		if name := string(c[8:]); slices.Equal(c, s.ca.credential(name)) {
			s.known[name] = true
		}
	}
}

// Knows reports whether s holds name's credential.
func (s *SimAuth) Knows(name string) bool { return s.known[name] }
