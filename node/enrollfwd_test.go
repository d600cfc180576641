package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/swim"
)

// auditFrom waits for an audit record of event, forwarded by member from, whose
// reason contains reason.
func auditFrom(t *testing.T, audit *syncBuffer, event, from, reason string) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("%s from %s (%q) in the audit log", event, from, reason), func() bool {
		for _, r := range audit.records(t) {
			if r.Event == event && r.From == from && strings.Contains(r.Reason, reason) && r.Addr != "" {
				return true
			}
		}
		return false
	})
}

// TestJoinTokenRedeemedAtAnyMember: a token made at the signing member A is
// redeemed by a fresh node through member B, which relays it to A over its own
// certificate: the node gets a certificate and the keyring, joins through B and is
// in every member's view. The same token again through C is refused (A's store
// decides), and audited at C and at A; an expired token through B is refused; and
// with A down, B answers a token with a clear error and audits it.
func TestJoinTokenRedeemedAtAnyMember(t *testing.T) {
	pki := newTestPKI(t)
	store := identity.NewMemTokenStore()
	auditA, auditB, auditC := &syncBuffer{}, &syncBuffer{}, &syncBuffer{}
	a, err := Start(t.Context(), signerConfig(t, pki, store, auditA))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	member := func(name string, audit *syncBuffer) *Node {
		cfg := loopbackConfig(name, [][]byte{testKey}, a.Addr())
		cfg.TLS, cfg.AuditLog = pki.source(identity.RoleNode, name), audit
		n, err := Start(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	b, c := member("b", auditB), member("c", auditC)
	eventually(t, 5*time.Second, "b and c know the signer", func() bool {
		return len(b.signers()) == 1 && len(c.signers()) == 1 && len(a.signers()) == 0
	})
	bundle := filepath.Join(pki.dir, identity.CACertFile)
	enroll := func(via *Node, name, tok string) (Enrollment, *identity.Source, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		key := newKey(t)
		e, err := Enroll(ctx, EnrollRequest{Seeds: []string{via.Addr()}, Name: name, Token: tok, Bundle: bundle, Key: key})
		if err != nil {
			return e, nil, err
		}
		return e, enrolledSource(t, pki, name, e, key), nil
	}

	tok := addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour)
	e, src, err := enroll(b, "d", tok)
	if err != nil {
		t.Fatalf("a token made at the signer was not redeemed through b: %v", err)
	}
	if len(e.Keys) != 1 || string(e.Keys[0]) != string(testKey) {
		t.Fatalf("keyring delivered through b: %d keys", len(e.Keys))
	}
	if id := src.Identity(); id.Name != "d" || id.Role != identity.RoleNode {
		t.Fatalf("issued identity %v", id)
	}
	cfg := loopbackConfig("d", e.Keys, b.Addr())
	cfg.TLS = src
	d, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("the node enrolled through b did not join: %v", err)
	}
	defer d.Close()
	eventually(t, 5*time.Second, "four members in every view", func() bool {
		for _, n := range []*Node{a, b, c, d} {
			if alive(n.Members()) != 4 {
				return false
			}
		}
		return true
	})
	auditHas(t, auditB, "token_forwarded", "")
	auditFrom(t, auditA, "token_redeemed", "b", "")

	if _, _, err := enroll(c, "e", tok); !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the same token again through c: %v", err)
	}
	auditHas(t, auditC, "token_refused", "already used")
	auditFrom(t, auditA, "token_refused", "c", "already used")

	expired := addToken(t, store, identity.DefaultCluster, time.Now().Add(-2*time.Hour), time.Hour)
	if _, _, err := enroll(b, "e", expired); !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token through b: %v", err)
	}
	auditHas(t, auditB, "token_refused", "expired")

	// A member cannot spend a token for a live member's name by forwarding it.
	if _, _, err := enroll(b, "c", addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour)); err == nil || !strings.Contains(err.Error(), "live member") {
		t.Fatalf("a token for a live member's name through b: %v", err)
	}

	// Tokens are made at a signer only; a member names where.
	if _, _, err := (controlSource{b}).CreateToken(identity.RoleNode, time.Minute, control.Caller{}); !errors.Is(err, control.ErrNotSigner) || !strings.Contains(err.Error(), "ask a signing member: n0") {
		t.Fatalf("a token asked of a member without the CA key: %v", err)
	}

	spare := addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour)
	a.Close()
	e, _, err = enroll(b, "f", spare)
	if !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), "no signing member could redeem") || len(e.Keys) != 0 {
		t.Fatalf("a token through b with the signer down: %d keys, err %v", len(e.Keys), err)
	}
	t.Logf("with the signer down the joiner is told: %v", err)
	auditHas(t, auditB, "token_refused", "no signing member could redeem")
}

// alive counts the alive members of a view.
func alive(ms []Member) int {
	k := 0
	for _, m := range ms {
		if m.Status == swim.StatusAlive {
			k++
		}
	}
	return k
}

// TestForwardedTokenNeedsALiveMember: a signer refuses a token forwarded by a
// node certificate that is not a live member's, and a member without the CA key
// refuses a forwarded token rather than forwarding it again; both audited, no
// certificate. A member relaying as many tokens as it may refuses the next.
func TestForwardedTokenNeedsALiveMember(t *testing.T) {
	pki := newTestPKI(t)
	store := identity.NewMemTokenStore()
	audit, auditB := &syncBuffer{}, &syncBuffer{}
	a, err := Start(t.Context(), signerConfig(t, pki, store, audit))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	bc := loopbackConfig("b", [][]byte{testKey}, a.Addr())
	bc.TLS, bc.AuditLog = pki.source(identity.RoleNode, "b"), auditB
	b, err := Start(t.Context(), bc)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pub, err := x509.MarshalPKIXPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	forward := func(to *Node, toName string, as *identity.Source) enrollReply {
		cfg := as.ClientConfig(identity.Policy{Roles: identity.MeshPolicy.Roles, Name: toName})
		cfg.NextProtos = []string{EnrollALPN}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		r, err := exchangeEnroll(ctx, to.Addr(), cfg, enrollRequest{Name: "x", Token: addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour),
			PublicKey: pub, Joiner: "127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := forward(a, "n0", pki.source(identity.RoleNode, "stranger")); !strings.Contains(r.Error, "not a live member") || len(r.Chain) != 0 {
		t.Fatalf("a stranger's forwarded token: %+v", r)
	}
	auditFrom(t, audit, "token_refused", "stranger", "not a live member")
	if r := forward(b, "b", pki.source(identity.RoleNode, "n0")); !strings.Contains(r.Error, ErrNotSigner.Error()) || len(r.Chain) != 0 {
		t.Fatalf("a forwarded token at a member without the CA key: %+v", r)
	}
	auditFrom(t, auditB, "token_refused", "n0", "cannot redeem a forwarded")

	// A member relaying maxForwards tokens refuses the next at once.
	for range maxForwards {
		b.forwards <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = Enroll(ctx, EnrollRequest{Seeds: []string{b.Addr()}, Name: "y", Token: addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour),
		Bundle: filepath.Join(pki.dir, identity.CACertFile), Key: newKey(t)})
	if !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), ErrForwardBusy.Error()) {
		t.Fatalf("a token at a member relaying as many as it may: %v", err)
	}
	for range maxForwards {
		<-b.forwards
	}
	eventually(t, 5*time.Second, "b knows the signer", func() bool { return len(b.signers()) == 1 })
	if _, err := Enroll(ctx, EnrollRequest{Seeds: []string{b.Addr()}, Name: "y", Token: addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour),
		Bundle: filepath.Join(pki.dir, identity.CACertFile), Key: newKey(t)}); err != nil {
		t.Fatalf("a token at b once its relays are free: %v", err)
	}
}

// TestTokenOfAnotherSigner: a signing member that does not hold a token relays
// it to the signer that does, past a member that claims to be a signer and is not
// (it answers elsewhere), and the joiner gets its certificate from that one.
func TestTokenOfAnotherSigner(t *testing.T) {
	pki := newTestPKI(t)
	storeA, storeS := identity.NewMemTokenStore(), identity.NewMemTokenStore()
	auditA, auditS := &syncBuffer{}, &syncBuffer{}
	a, err := Start(t.Context(), signerConfig(t, pki, storeA, auditA))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cfg := loopbackConfig("s2", [][]byte{testKey}, a.Addr())
	cfg.TLS, cfg.AuditLog = pki.source(identity.RoleNode, "s2"), auditS
	cfg.Signer = &Signer{CA: pki.ca, Tokens: storeS}
	s2, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// m0 publishes "signer" by mistake and sorts first: n0 tries it, then s2.
	mc := loopbackConfig("m0", [][]byte{testKey}, a.Addr())
	mc.TLS, mc.Meta = pki.source(identity.RoleNode, "m0"), map[string]string{SignerMetaKey: "1"}
	m0, err := Start(t.Context(), mc)
	if err != nil {
		t.Fatal(err)
	}
	defer m0.Close()
	eventually(t, 5*time.Second, "n0 knows m0 and s2 as signers", func() bool {
		return len(a.signers()) == 2 && len(s2.signers()) == 2
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tok := addToken(t, storeS, identity.DefaultCluster, time.Now(), time.Hour)
	e, err := Enroll(ctx, EnrollRequest{Seeds: []string{a.Addr()}, Name: "d", Token: tok,
		Bundle: filepath.Join(pki.dir, identity.CACertFile), Key: newKey(t)})
	if err != nil || len(e.Chain) != 1 {
		t.Fatalf("a token of s2 presented at n0: %v", err)
	}
	auditFrom(t, auditS, "token_redeemed", "n0", "")
	auditHas(t, auditA, "token_forwarded", "")
}
