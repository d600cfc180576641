package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
)

// signerConfig is a loopback node n0 with a certificate of pki, the packet key and
// pki's CA as its Signer.
func signerConfig(t *testing.T, pki *testPKI, tokens identity.TokenStore, audit *syncBuffer) Config {
	cfg := loopbackConfig("n0", [][]byte{testKey})
	cfg.TLS = pki.source(identity.RoleNode, "n0")
	cfg.Signer = &Signer{CA: pki.ca, Tokens: tokens}
	cfg.AuditLog = audit
	return cfg
}

// token stores a new token of cluster made at made for ttl and returns it.
func addToken(t *testing.T, store identity.TokenStore, cluster string, made time.Time, ttl time.Duration) string {
	t.Helper()
	tok, rec, err := identity.NewToken(cluster, identity.RoleNode, ttl, made)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Add(rec); err != nil {
		t.Fatal(err)
	}
	return tok
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// enrolledSource writes an enrollment's certificate and key as files and loads
// them with pki's bundle, as the agent does.
func enrolledSource(t *testing.T, pki *testPKI, name string, e Enrollment, key *ecdsa.PrivateKey) *identity.Source {
	t.Helper()
	dir := t.TempDir()
	keyPEM, _ := identity.EncodeKeyPEM(key)
	os.WriteFile(filepath.Join(dir, name+".pem"), identity.EncodeCertsPEM(e.Chain...), 0o644)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), keyPEM, 0o600)
	src, err := identity.NewSource(identity.Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem"),
		Bundle: filepath.Join(pki.dir, identity.CACertFile)}, nil)
	if err != nil {
		t.Fatalf("the issued certificate does not load: %v", err)
	}
	return src
}

// auditHas waits for an audit record of event whose reason contains reason.
func auditHas(t *testing.T, audit *syncBuffer, event, reason string) {
	t.Helper()
	eventually(t, 5*time.Second, event+" "+reason+" in the audit log", func() bool {
		for _, r := range audit.records(t) {
			if r.Event == event && strings.Contains(r.Reason, reason) && r.Remote != "" {
				return true
			}
		}
		return false
	})
}

// TestJoinTokenEnrollment: a fresh node with only a join token and the trust
// bundle gets a node certificate and the keyring from a signing member and joins
// with them; the same token again, an expired token, a token of another cluster, a
// wrong secret and a live member's name are refused, audited, and given no key.
func TestJoinTokenEnrollment(t *testing.T) {
	pki := newTestPKI(t)
	store := identity.NewMemTokenStore()
	audit := &syncBuffer{}
	s0, err := Start(t.Context(), signerConfig(t, pki, store, audit))
	if err != nil {
		t.Fatal(err)
	}
	defer s0.Close()
	bundle := filepath.Join(pki.dir, identity.CACertFile)
	enroll := func(name, tok string) (Enrollment, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return Enroll(ctx, EnrollRequest{Seeds: []string{s0.Addr()}, Name: name, Token: tok, Bundle: bundle, Key: newKey(t)})
	}

	tok := addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour)
	key := newKey(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	e, err := Enroll(ctx, EnrollRequest{Seeds: []string{s0.Addr()}, Name: "n1", Token: tok, Bundle: bundle, Key: key})
	if err != nil {
		t.Fatalf("a fresh node with a token did not enroll: %v", err)
	}
	if len(e.Keys) != 1 || !bytes.Equal(e.Keys[0], testKey) {
		t.Fatalf("keyring delivered: %d keys, want the cluster's one", len(e.Keys))
	}
	id, err := identity.FromCertificate(e.Chain[0])
	if err != nil || id.Name != "n1" || id.Role != identity.RoleNode || id.Cluster != identity.DefaultCluster {
		t.Fatalf("issued identity %v, %v", id, err)
	}
	auditHas(t, audit, "token_redeemed", "")

	// The certificate works: the node joins with it and the delivered keys.
	cfg := loopbackConfig("n1", e.Keys, s0.Addr())
	cfg.TLS = enrolledSource(t, pki, "n1", e, key)
	n1, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("the enrolled node did not join: %v", err)
	}
	defer n1.Close()
	eventually(t, 5*time.Second, "two members on both", func() bool {
		return len(s0.Members()) == 2 && len(n1.Members()) == 2
	})

	refused := []struct {
		name, tok, reason string
	}{
		{"n2", tok, "already used"},
		{"n2", addToken(t, store, identity.DefaultCluster, time.Now().Add(-2*time.Hour), time.Hour), "expired"},
		{"n2", addToken(t, store, "other", time.Now(), time.Hour), "another cluster"},
		{"n2", tok[:identity.TokenIDLen+1] + strings.Repeat("0", identity.TokenSecretLen), "wrong join token secret"},
		{"n1", addToken(t, store, identity.DefaultCluster, time.Now(), time.Hour), "live member"},
		{"n2", "zzzzzz.0123456789abcdef", "unknown join token"}, // the only signer: nowhere to relay
	}
	for _, c := range refused {
		e, err := enroll(c.name, c.tok)
		if !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("token for %s (%s) not refused as it should be: %v", c.name, c.reason, err)
		}
		if len(e.Keys) != 0 || len(e.Chain) != 0 {
			t.Errorf("a refused token holder got %d keys and %d certificates", len(e.Keys), len(e.Chain))
		}
		auditHas(t, audit, "token_refused", c.reason)
	}
}

// TestKeysDeliveredByEnrollment: a node with a node certificate and no key file
// takes the keyring from its seed and joins; one with a certificate of another CA
// never learns the key, and the seed audits the refusal.
func TestKeysDeliveredByEnrollment(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	audit := &syncBuffer{}
	cfg := loopbackConfig("n0", [][]byte{testKey})
	cfg.TLS, cfg.AuditLog = pki.source(identity.RoleNode, "n0"), audit
	n0, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n0.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	c1 := loopbackConfig("n1", nil, n0.Addr())
	c1.TLS, c1.KeysFromJoin = pki.source(identity.RoleNode, "n1"), true
	n1, err := Start(ctx, c1)
	if err != nil {
		t.Fatalf("a node with a certificate and no key did not join: %v", err)
	}
	defer n1.Close()
	if n1.kr == nil || !bytes.Equal(n1.kr.Keys()[0], testKey) {
		t.Fatal("the joined node has not the cluster's key")
	}
	eventually(t, 5*time.Second, "two members on both", func() bool {
		return len(n0.Members()) == 2 && len(n1.Members()) == 2
	})
	auditHas(t, audit, "enroll_keys", "")

	e, err := Enroll(ctx, EnrollRequest{Seeds: []string{n0.Addr()}, Name: "n2", TLS: other.source(identity.RoleNode, "n2")})
	if err == nil || len(e.Keys) != 0 {
		t.Fatalf("a certificate of another CA got the keyring (%d keys, err %v)", len(e.Keys), err)
	}
	auditHas(t, audit, "tls_refused", "bad certificate")

	// A token holder in a cluster without a signing member learns nothing either.
	e, err = Enroll(ctx, EnrollRequest{Seeds: []string{n0.Addr()}, Name: "n3", Token: "abcdef.0123456789abcdef",
		Bundle: filepath.Join(pki.dir, identity.CACertFile), Key: newKey(t)})
	if !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), "no live member publishes") || len(e.Keys) != 0 {
		t.Fatalf("a token was answered without a signer: %d keys, err %v", len(e.Keys), err)
	}
}

// TestTokenRouteIsAdminsAtASigner: POST /control/v1/tokens makes a token an
// admin can hand to a joiner; an operator gets 403, a member without the CA key
// 404 not_signer, and the token made works once.
func TestTokenRouteIsAdminsAtASigner(t *testing.T) {
	pki := newTestPKI(t)
	store := identity.NewMemTokenStore()
	audit := &syncBuffer{}
	cfg := signerConfig(t, pki, store, audit)
	cfg.Control = "127.0.0.1:0"
	s0, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s0.Close()
	url := "https://" + s0.ControlAddr() + "/control/v1/tokens"
	admin, operator := controlClient(pki.source(identity.RoleAdmin, "alice")), controlClient(pki.source(identity.RoleOperator, "bob"))
	if code, ecode, err := callHTTPS(t, operator, "POST", url, `{"ttl": "10m"}`); err != nil || code != 403 || ecode != "forbidden" {
		t.Fatalf("an operator made a token: %d %s %v", code, ecode, err)
	}
	if code, ecode, _ := callHTTPS(t, admin, "POST", url, `{"ttl": "9000h"}`); code != 400 || ecode != "bad_request" {
		t.Fatalf("a TTL over the bound: %d %s", code, ecode)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url, strings.NewReader(`{"ttl": "10m"}`))
	resp, err := admin.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin token create: %v %v", resp, err)
	}
	var rep control.TokenReply
	json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if rep.Role != "node" || rep.Node != "n0" {
		t.Fatalf("token reply %+v", rep)
	}
	auditHas(t, audit, "token_create", "")
	bundle := filepath.Join(pki.dir, identity.CACertFile)
	for i, want := range []string{"", "already used"} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := Enroll(ctx, EnrollRequest{Seeds: []string{s0.Addr()}, Name: fmt.Sprintf("j%d", i), Token: rep.Token, Bundle: bundle, Key: newKey(t)})
		cancel()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Fatalf("redeeming the created token, try %d: %v (want %q)", i+1, err, want)
		}
	}

	plain := loopbackConfig("n9", [][]byte{testKey})
	plain.TLS, plain.Control = pki.source(identity.RoleNode, "n9"), "127.0.0.1:0"
	n9, err := Start(t.Context(), plain)
	if err != nil {
		t.Fatal(err)
	}
	defer n9.Close()
	if code, ecode, err := callHTTPS(t, admin, "POST", "https://"+n9.ControlAddr()+"/control/v1/tokens", `{"ttl": "10m"}`); err != nil || code != 404 || ecode != "not_signer" {
		t.Fatalf("a member without the CA key made a token: %d %s %v", code, ecode, err)
	}
}
