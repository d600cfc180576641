package identity

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testTD = "mesh.test"

func newTestCA(t testing.TB, td string) *CA {
	t.Helper()
	ca, err := NewCA(CAOptions{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func nodeID(cluster, name string) ID {
	return ID{TrustDomain: testTD, Cluster: cluster, Role: RoleNode, Name: name}
}

// writeIdentity issues req from ca and writes it, with bundle, under dir.
func writeIdentity(t testing.TB, dir string, ca *CA, req IssueRequest, bundle ...*CA) Files {
	t.Helper()
	leaf, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveLeaf(dir, leaf, true); err != nil {
		t.Fatal(err)
	}
	if len(bundle) == 0 {
		bundle = []*CA{ca}
	}
	var pemBundle []byte
	for _, b := range bundle {
		pemBundle = append(pemBundle, EncodeCertsPEM(b.Cert)...)
	}
	f := Files{
		Cert:   filepath.Join(dir, req.ID.Name+".pem"),
		Key:    filepath.Join(dir, req.ID.Name+"-key.pem"),
		Bundle: filepath.Join(dir, "bundle.pem"),
	}
	if err := os.WriteFile(f.Bundle, pemBundle, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func newSource(t testing.TB, ca *CA, id ID, bundle ...*CA) (*Source, Files) {
	t.Helper()
	f := writeIdentity(t, t.TempDir(), ca, IssueRequest{ID: id}, bundle...)
	s, err := NewSource(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

// result is one side's view of a handshake.
type result struct {
	peer   ID
	serial string // serial of the certificate the peer presented
	err    error
}

// server accepts TLS connections on 127.0.0.1 and echoes what it reads; each
// handshake's result goes to results.
type server struct {
	ln      net.Listener
	results chan result
}

func startServer(t testing.TB, cfg *tls.Config) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, results: make(chan result, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				err := tc.Handshake()
				s.results <- sideResult(tc, err)
				if err == nil {
					io.Copy(tc, tc)
				}
			}()
		}
	}()
	return s
}

func sideResult(tc *tls.Conn, err error) result {
	if err != nil {
		return result{err: err}
	}
	cs := tc.ConnectionState()
	id, err := PeerIdentity(cs)
	return result{peer: id, serial: cs.PeerCertificates[0].SerialNumber.String(), err: err}
}

// dial connects to s, handshakes and round-trips one byte, returning the client's
// and the server's results and the open connection (nil on failure).
func dial(t testing.TB, s *server, cfg *tls.Config) (client, srv result, conn *tls.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	err = tc.Handshake()
	if err == nil {
		// In TLS 1.3 the server judges the client's certificate after the client's
		// handshake returns: a round trip shows its verdict.
		if _, err = tc.Write([]byte{1}); err == nil {
			_, err = io.ReadFull(tc, make([]byte, 1))
		}
	}
	client = sideResult(tc, err)
	select {
	case srv = <-s.results:
	case <-time.After(10 * time.Second):
		t.Fatal("server reported no handshake")
	}
	if client.err != nil || srv.err != nil {
		tc.Close()
		return client, srv, nil
	}
	t.Cleanup(func() { tc.Close() })
	return client, srv, tc
}

func TestMutualTLSBothSidesSeeEachOthersIdentity(t *testing.T) {
	ca := newTestCA(t, testTD)
	srvSrc, _ := newSource(t, ca, nodeID("prod", "n1"))
	cliSrc, _ := newSource(t, ca, nodeID("prod", "n2"))
	s := startServer(t, srvSrc.ServerConfig(MeshPolicy))
	c, sv, conn := dial(t, s, cliSrc.ClientConfig(Policy{Roles: []Role{RoleNode}, Name: "n1"}))
	if c.err != nil || sv.err != nil {
		t.Fatalf("handshake: client %v, server %v", c.err, sv.err)
	}
	if c.peer != nodeID("prod", "n1") || sv.peer != nodeID("prod", "n2") {
		t.Fatalf("client saw %s, server saw %s", c.peer, sv.peer)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated TLS version %x, want 1.3", v)
	}
}

// Each refusal is the server's (or, for the server's own certificate, the client's)
// and carries its own sentinel.
func TestHandshakeRefusals(t *testing.T) {
	ca := newTestCA(t, testTD)
	foreign := newTestCA(t, testTD) // same trust domain, another key
	otherTD := newTestCA(t, "other.test")
	now := time.Now()
	srvSrc, _ := newSource(t, ca, nodeID("prod", "n1"))
	// A server that also trusts otherTD's CA, as a federated bundle would.
	fedSrc, _ := newSource(t, ca, nodeID("prod", "n1"), ca, otherTD)
	mesh := startServer(t, srvSrc.ServerConfig(MeshPolicy))
	fed := startServer(t, fedSrc.ServerConfig(MeshPolicy))

	// A client source whose own certificate may be bad: built without NewSource's
	// self-check, which would refuse it.
	badClient := func(issuer *CA, req IssueRequest) *tls.Config {
		leaf, err := issuer.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
		return &tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		}
	}
	// A leaf the CA signed outside its URI name constraint, as a stolen CA key used
	// carelessly would, or a CA whose constraint is wrong.
	forged := func() *tls.Config {
		u, _ := url.Parse("spiffe://evil.test/mesh/prod/node/n2")
		leaf, err := ca.Issue(IssueRequest{ID: nodeID("prod", "n2")})
		if err != nil {
			t.Fatal(err)
		}
		tmpl := *leaf.Cert
		tmpl.URIs = []*url.URL{u}
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, leaf.Key.Public(), ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: leaf.Key, Leaf: c}
		return &tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		}
	}
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	for _, tc := range []struct {
		name string
		srv  *server
		cfg  *tls.Config
		want error
	}{
		{"no certificate", mesh, noCert, nil}, // crypto/tls refuses it before our hook
		{"foreign CA", mesh, badClient(foreign, IssueRequest{ID: nodeID("prod", "n2")}), ErrUntrusted},
		{"expired", mesh, badClient(ca, IssueRequest{ID: nodeID("prod", "n2"), Now: now.Add(-2 * time.Hour), TTL: time.Hour}), ErrExpired},
		{"not yet valid", mesh, badClient(ca, IssueRequest{ID: nodeID("prod", "n2"), Now: now.Add(time.Hour)}), ErrNotYetValid},
		{"wrong cluster", mesh, badClient(ca, IssueRequest{ID: nodeID("staging", "n2")}), ErrWrongCluster},
		{"operator on mesh channel", mesh, badClient(ca, IssueRequest{ID: ID{testTD, "prod", RoleOperator, "alice"}}), ErrRoleNotAllowed},
		{"outside the CA's name constraint", mesh, forged(), ErrWrongTrustDomain},
		{"wrong trust domain", fed, badClient(otherTD, IssueRequest{ID: ID{"other.test", "prod", RoleNode, "n2"}}), ErrWrongTrustDomain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, sv, _ := dial(t, tc.srv, tc.cfg)
			if sv.err == nil || c.err == nil {
				t.Fatalf("accepted: client %v, server %v", c.err, sv.err)
			}
			if tc.want != nil && !errors.Is(sv.err, tc.want) {
				t.Fatalf("server refused with %v, want %v", sv.err, tc.want)
			}
			t.Logf("refused: %v", sv.err)
		})
	}
}

func TestControlChannelAcceptsEveryRoleAndReportsIt(t *testing.T) {
	ca := newTestCA(t, testTD)
	srvSrc, _ := newSource(t, ca, nodeID("prod", "n1"))
	s := startServer(t, srvSrc.ServerConfig(ControlPolicy))
	for _, r := range Roles {
		cli, _ := newSource(t, ca, ID{testTD, "prod", r, "who"})
		c, sv, _ := dial(t, s, cli.ClientConfig(MeshPolicy))
		if c.err != nil || sv.err != nil {
			t.Fatalf("%s: client %v, server %v", r, c.err, sv.err)
		}
		if sv.peer.Role != r {
			t.Fatalf("server saw role %q, want %q", sv.peer.Role, r)
		}
	}
}

func TestClientRefusesServerOfAnotherName(t *testing.T) {
	ca := newTestCA(t, testTD)
	srvSrc, _ := newSource(t, ca, nodeID("prod", "n5"))
	cliSrc, _ := newSource(t, ca, nodeID("prod", "n2"))
	s := startServer(t, srvSrc.ServerConfig(MeshPolicy))
	c, _, _ := dial(t, s, cliSrc.ClientConfig(Policy{Roles: []Role{RoleNode}, Name: "n4"}))
	if !errors.Is(c.err, ErrWrongName) {
		t.Fatalf("client: %v, want %v", c.err, ErrWrongName)
	}
}

// The WAN pool's policy accepts nodes of every cluster of the trust domain, and
// only nodes; pinned to a cluster, only that one.
func TestWANPolicyAcceptsEveryClusterOfTheTrustDomain(t *testing.T) {
	ca := newTestCA(t, testTD)
	srvSrc, _ := newSource(t, ca, nodeID("east", "g1"))
	s := startServer(t, srvSrc.ServerConfig(WANPolicy))
	for _, tc := range []struct {
		id   ID
		want error
	}{
		{nodeID("west", "g1"), nil},
		{nodeID("east", "g2"), nil},
		{ID{testTD, "west", RoleOperator, "alice"}, ErrRoleNotAllowed},
	} {
		cli, _ := newSource(t, ca, tc.id)
		c, sv, _ := dial(t, s, cli.ClientConfig(WANPolicy))
		if !errors.Is(sv.err, tc.want) || tc.want == nil && c.err != nil {
			t.Fatalf("%s: client %v, server %v, want %v", tc.id, c.err, sv.err, tc.want)
		}
		if tc.want == nil && sv.peer != tc.id {
			t.Fatalf("server saw %s, want %s", sv.peer, tc.id)
		}
	}
	cli, _ := newSource(t, ca, nodeID("west", "g1"))
	pinned := WANPolicy
	pinned.Cluster, pinned.Name = "west", "g1"
	if c, _, _ := dial(t, s, cli.ClientConfig(pinned)); !errors.Is(c.err, ErrWrongCluster) {
		t.Fatalf("client pinned to west/g1 reached east/g1: %v, want %v", c.err, ErrWrongCluster)
	}
}

func TestClientRefusesServerOfForeignCA(t *testing.T) {
	ca, foreign := newTestCA(t, testTD), newTestCA(t, testTD)
	srvSrc, _ := newSource(t, foreign, nodeID("prod", "n1"))
	cliSrc, _ := newSource(t, ca, nodeID("prod", "n2"))
	s := startServer(t, srvSrc.ServerConfig(MeshPolicy))
	c, _, _ := dial(t, s, cliSrc.ClientConfig(MeshPolicy))
	if !errors.Is(c.err, ErrUntrusted) {
		t.Fatalf("client: %v, want %v", c.err, ErrUntrusted)
	}
}

// Rotation: new files and a Reload change what the next handshake presents, and an
// established connection goes on working.
func TestReloadRotatesCertificateWithoutDroppingConnections(t *testing.T) {
	ca := newTestCA(t, testTD)
	dir := t.TempDir()
	files := writeIdentity(t, dir, ca, IssueRequest{ID: nodeID("prod", "n1")})
	srvSrc, err := NewSource(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	cliSrc, _ := newSource(t, ca, nodeID("prod", "n2"))
	s := startServer(t, srvSrc.ServerConfig(MeshPolicy))
	before, _, conn := dial(t, s, cliSrc.ClientConfig(MeshPolicy))
	if before.err != nil {
		t.Fatal(before.err)
	}
	if changed, err := srvSrc.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files: changed=%v err=%v", changed, err)
	}

	writeIdentity(t, dir, ca, IssueRequest{ID: nodeID("prod", "n1")})
	if changed, err := srvSrc.Reload(); !changed || err != nil {
		t.Fatalf("Reload of new files: changed=%v err=%v", changed, err)
	}
	after, _, _ := dial(t, s, cliSrc.ClientConfig(MeshPolicy))
	if after.err != nil {
		t.Fatal(after.err)
	}
	if after.serial == before.serial {
		t.Fatal("the handshake after Reload presented the old certificate")
	}
	if want := srvSrc.Certificate().Leaf.SerialNumber.String(); after.serial != want {
		t.Fatalf("presented serial %s, current is %s", after.serial, want)
	}
	if _, err := conn.Write([]byte{7}); err != nil {
		t.Fatalf("old connection after rotation: %v", err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatalf("old connection after rotation: %v", err)
	}
}

// Bundle rotation: a CA added to the bundle file is trusted from the next handshake.
func TestReloadRotatesTrustBundle(t *testing.T) {
	oldCA, newCA := newTestCA(t, testTD), newTestCA(t, testTD)
	dir := t.TempDir()
	files := writeIdentity(t, dir, oldCA, IssueRequest{ID: nodeID("prod", "n1")})
	srvSrc, err := NewSource(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	cliSrc, _ := newSource(t, newCA, nodeID("prod", "n2"), newCA, oldCA)
	s := startServer(t, srvSrc.ServerConfig(MeshPolicy))
	if _, sv, _ := dial(t, s, cliSrc.ClientConfig(MeshPolicy)); !errors.Is(sv.err, ErrUntrusted) {
		t.Fatalf("before the bundle rotation: server %v, want %v", sv.err, ErrUntrusted)
	}
	if err := os.WriteFile(files.Bundle, EncodeCertsPEM(oldCA.Cert, newCA.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := srvSrc.Reload(); !changed || err != nil {
		t.Fatalf("Reload: changed=%v err=%v", changed, err)
	}
	if c, sv, _ := dial(t, s, cliSrc.ClientConfig(MeshPolicy)); c.err != nil || sv.err != nil {
		t.Fatalf("after the bundle rotation: client %v, server %v", c.err, sv.err)
	}
}

func TestFailedReloadKeepsOldMaterial(t *testing.T) {
	ca, other := newTestCA(t, testTD), newTestCA(t, testTD)
	dir := t.TempDir()
	files := writeIdentity(t, dir, ca, IssueRequest{ID: nodeID("prod", "n1")})
	src, err := NewSource(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	cliSrc, _ := newSource(t, ca, nodeID("prod", "n2"))
	s := startServer(t, src.ServerConfig(MeshPolicy))
	good := src.Certificate()
	certPEM, _ := os.ReadFile(files.Cert)
	keyPEM, _ := os.ReadFile(files.Key)
	otherLeaf, err := ca.Issue(IssueRequest{ID: nodeID("prod", "n1")})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := EncodeKeyPEM(otherLeaf.Key)
	foreignLeaf, _ := other.Issue(IssueRequest{ID: nodeID("prod", "n1")})
	renamed, _ := ca.Issue(IssueRequest{ID: nodeID("prod", "n9")})
	renamedKey, _ := EncodeKeyPEM(renamed.Key)
	foreignKey, _ := EncodeKeyPEM(foreignLeaf.Key)
	for _, tc := range []struct {
		name      string
		cert, key []byte
		want      error
	}{
		{"truncated certificate", certPEM[:len(certPEM)/2], keyPEM, ErrInvalidPEM},
		{"garbage key", certPEM, []byte("not a key"), ErrInvalidPEM},
		{"key of another certificate", certPEM, otherKey, nil},
		{"certificate of a CA not in the bundle", EncodeCertsPEM(foreignLeaf.Cert), foreignKey, ErrUntrusted},
		{"another identity", EncodeCertsPEM(renamed.Cert), renamedKey, ErrIdentityChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(files.Cert, tc.cert, 0o644)
			os.WriteFile(files.Key, tc.key, 0o600)
			changed, err := src.Reload()
			if changed || err == nil {
				t.Fatalf("Reload accepted it: changed=%v err=%v", changed, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Reload: %v, want %v", err, tc.want)
			}
			if src.Certificate() != good {
				t.Fatal("the failed Reload replaced the material")
			}
			if c, sv, _ := dial(t, s, cliSrc.ClientConfig(MeshPolicy)); c.err != nil || sv.err != nil {
				t.Fatalf("handshake after failed Reload: client %v, server %v", c.err, sv.err)
			}
		})
	}
}

func TestNewSourceRefusesExpiredOwnCertificate(t *testing.T) {
	ca := newTestCA(t, testTD)
	f := writeIdentity(t, t.TempDir(), ca, IssueRequest{ID: nodeID("prod", "n1"), Now: time.Now().Add(-2 * time.Hour), TTL: time.Hour})
	if _, err := NewSource(f, nil); !errors.Is(err, ErrExpired) {
		t.Fatalf("NewSource: %v, want %v", err, ErrExpired)
	}
}

func TestVerifyPeerBoundsChain(t *testing.T) {
	ca := newTestCA(t, testTD)
	src, _ := newSource(t, ca, nodeID("prod", "n1"))
	chain := make([]*x509.Certificate, MaxPeerChain+1)
	for i := range chain {
		chain[i] = src.Certificate().Leaf
	}
	if _, err := src.VerifyPeer(chain, MeshPolicy, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrChainTooLong) {
		t.Fatalf("VerifyPeer: %v, want %v", err, ErrChainTooLong)
	}
	if _, err := src.VerifyPeer(nil, MeshPolicy, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrNoPeerCertificate) {
		t.Fatalf("VerifyPeer: %v, want %v", err, ErrNoPeerCertificate)
	}
}

// BenchmarkHandshake is one full TLS 1.3 mutual handshake with identity checks on
// both sides, over net.Pipe (no kernel in the way), and one byte back so the
// client has seen the server accept it.
func BenchmarkHandshake(b *testing.B) {
	ca := newTestCA(b, testTD)
	srvSrc, _ := newSource(b, ca, nodeID("prod", "n1"))
	cliSrc, _ := newSource(b, ca, nodeID("prod", "n2"))
	scfg, ccfg := srvSrc.ServerConfig(MeshPolicy), cliSrc.ClientConfig(MeshPolicy)
	b.ReportAllocs()
	for b.Loop() {
		a, z := net.Pipe()
		done := make(chan error, 1)
		go func() {
			s := tls.Server(z, scfg)
			err := s.Handshake()
			if err == nil {
				_, err = s.Write([]byte{1})
			}
			done <- err
			z.Close() // not s.Close: its close_notify would wait for a reader
		}()
		c := tls.Client(a, ccfg)
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		a.Close()
	}
}

func TestWatchReloadsUntilCancelled(t *testing.T) {
	ca := newTestCA(t, testTD)
	dir := t.TempDir()
	files := writeIdentity(t, dir, ca, IssueRequest{ID: nodeID("prod", "n1")})
	src, err := NewSource(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := src.Certificate()
	ctx, cancel := context.WithCancel(context.Background())
	reports := make(chan error, 16)
	done := make(chan struct{})
	go func() {
		src.Watch(ctx, time.Millisecond, func(changed bool, err error) { reports <- err })
		close(done)
	}()
	os.WriteFile(files.Cert, []byte("half written"), 0o644)
	if err := <-reports; !errors.Is(err, ErrInvalidPEM) {
		t.Fatalf("first report: %v, want %v", err, ErrInvalidPEM)
	}
	writeIdentity(t, dir, ca, IssueRequest{ID: nodeID("prod", "n1")})
	for err := range reports {
		if err == nil {
			break // the change
		}
	}
	if src.Certificate() == old {
		t.Fatal("Watch reported a change but the certificate is the old one")
	}
	cancel()
	<-done
}

func TestPeerIdentityWithoutCertificate(t *testing.T) {
	if _, err := PeerIdentity(tls.ConnectionState{}); !errors.Is(err, ErrNoPeerCertificate) {
		t.Fatalf("PeerIdentity: %v", err)
	}
}
