package node

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
)

const testTrustDomain = "example.org"

// testPKI is a CA and the certificates it issued, written under dir.
type testPKI struct {
	t   testing.TB
	ca  *identity.CA
	dir string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: testTrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Save(dir, false); err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, ca: ca, dir: dir}
}

// source issues a certificate for name of role and loads it with this CA's bundle.
func (p *testPKI) source(role identity.Role, name string) *identity.Source {
	p.t.Helper()
	return p.sourceIn(identity.DefaultCluster, role, name)
}

// sourceIn is source for a member of cluster.
func (p *testPKI) sourceIn(cluster string, role identity.Role, name string) *identity.Source {
	p.t.Helper()
	leaf, err := p.ca.Issue(identity.IssueRequest{ID: identity.ID{TrustDomain: testTrustDomain,
		Cluster: cluster, Role: role, Name: name}})
	if err != nil {
		p.t.Fatal(err)
	}
	if err := identity.SaveLeaf(p.dir, leaf, true); err != nil {
		p.t.Fatal(err)
	}
	src, err := identity.NewSource(identity.Files{Cert: filepath.Join(p.dir, name+".pem"),
		Key: filepath.Join(p.dir, name+"-key.pem"), Bundle: filepath.Join(p.dir, "ca.pem")}, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	return src
}

// controlClient is an HTTPS client presenting src's certificate (none when nil)
// and verifying the server against pki's bundle when src is set.
func controlClient(src *identity.Source) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // a caller without a certificate
	if src != nil {
		cfg = src.ClientConfig(identity.Policy{Roles: []identity.Role{identity.RoleNode}})
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// foreign is a client that presents src's certificate and trusts any server.
func foreign(src *identity.Source) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Certificate(), nil }}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// call makes one request and returns its status and error code ("" on success).
func callHTTPS(t *testing.T, hc *http.Client, method, url, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var er control.ErrorReply
	if resp.StatusCode >= 400 {
		if err := json.NewDecoder(resp.Body).Decode(&er); err != nil {
			t.Fatalf("%s %s: %d with a body that is not the error envelope: %v", method, url, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, er.Error.Code, nil
}

func TestControlOffLoopbackNeedsTLSOrInsecure(t *testing.T) {
	pki := newTestPKI(t)
	cfg := loopbackConfig("n1", nil)
	cfg.Control = "0.0.0.0:7070"
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "not a loopback address and TLS is not set") {
		t.Fatalf("control on 0.0.0.0 without TLS: %v", err)
	}
	cfg.Insecure = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with Insecure: %v", err)
	}
	cfg.Insecure, cfg.TLS = false, pki.source(identity.RoleNode, "n1")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with TLS: %v", err)
	}
	for _, c := range []struct {
		src  *identity.Source
		want string
	}{
		{pki.source(identity.RoleNode, "n2"), `but Name is "n1"`},
		{pki.source(identity.RoleOperator, "n1x"), "of role \"operator\""},
	} {
		cfg.TLS = c.src
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("TLS of %s: %v, want %q", c.src.Identity(), err, c.want)
		}
	}
	cfg.TLS = pki.source(identity.RoleNode, "n1")
	cfg.ClusterLabel = "prod"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `cluster "prod"`) {
		t.Errorf("certificate of cluster default, label prod: %v", err)
	}
}

// TestControlMutualTLSAndRoles: three voters with shard routing serve the control
// API over mutual TLS. A caller without a certificate gets 401, a reader reads
// but gets 403 on a drain, an operator drains, and a certificate of another CA
// fails the handshake; each refusal is in the serving node's audit log with the
// caller's identity and address.
func TestControlMutualTLSAndRoles(t *testing.T) {
	pki := newTestPKI(t)
	mn := NewMemNetwork()
	nodes := make([]*Node, 3)
	audits := make([]*syncBuffer, 3)
	for i := range nodes {
		audits[i] = &syncBuffer{}
		cfg := leaderConfig(t, mn, i, t.TempDir(), audits[i])
		cfg.Shards = testShards
		cfg.Control = "127.0.0.1:0"
		cfg.TLS = pki.source(identity.RoleNode, cfg.Name)
		nodes[i] = startMem(t, cfg)
		t.Cleanup(func() { nodes[i].Close() })
	}
	var leader *Node
	eventually(t, 30*time.Second, "a leader with a shard map", func() bool {
		h, _ := agreed(nodes)
		for _, n := range nodes {
			if n.Name() == h && n.ShardMap() != nil {
				leader = n
			}
		}
		return leader != nil
	})
	idx := 0
	for i, n := range nodes {
		if n == leader {
			idx = i
		}
	}
	base := "https://" + leader.ControlAddr()
	peers, drain := base+"/control/v1/peers", base+"/control/v1/shards/drain"
	body := fmt.Sprintf(`{"node":%q,"drain":true}`, nodes[(idx+1)%3].Name())

	anon, reader, operator := controlClient(nil), controlClient(pki.source(identity.RoleReader, "rita")), controlClient(pki.source(identity.RoleOperator, "olga"))
	for _, c := range []struct {
		name         string
		hc           *http.Client
		method, url  string
		status       int
		code         string
		auditedEvent string
	}{
		{"no certificate reads", anon, "GET", peers, 401, control.CodeUnauthenticated, "control_unauthenticated"},
		{"no certificate drains", anon, "POST", drain, 401, control.CodeUnauthenticated, "control_unauthenticated"},
		{"no certificate probes", anon, "GET", base + "/healthz", 200, "", ""},
		{"reader reads", reader, "GET", peers, 200, "", ""},
		{"reader drains", reader, "POST", drain, 403, control.CodeForbidden, "control_forbidden"},
		{"operator drains", operator, "POST", drain, 200, "", "control_request"},
	} {
		status, code, err := callHTTPS(t, c.hc, c.method, c.url, body)
		if err != nil || status != c.status || code != c.code {
			t.Errorf("%s: %d %q (%v), want %d %q", c.name, status, code, err, c.status, c.code)
		}
	}

	// Mallory does not check the server; she presents an admin certificate of her
	// own CA, so the refusal is the server's.
	mallory := foreign(newTestPKI(t).source(identity.RoleAdmin, "mallory"))
	_, _, err := callHTTPS(t, mallory, "GET", peers, "")
	if err == nil {
		t.Fatal("an admin certificate of another CA was accepted")
	}

	want := map[string]string{
		"control_unauthenticated": "",
		"control_forbidden":       "spiffe://example.org/mesh/default/reader/rita",
		"control_request":         "spiffe://example.org/mesh/default/operator/olga",
		"tls_refused":             "spiffe://example.org/mesh/default/admin/mallory",
	}
	// The audit log is written by a goroutine of its own: wait for the records.
	// Count kinds, not records: two control_unauthenticated records must not
	// stand in for a tls_refused one still queued.
	eventually(t, 5*time.Second, "the refusals audited", func() bool {
		kinds := map[string]bool{}
		for _, r := range audits[idx].records(t) {
			if _, ok := want[r.Event]; ok {
				kinds[r.Event] = true
			}
		}
		return len(kinds) == len(want)
	})
	seen := map[string]bool{}
	for _, r := range audits[idx].records(t) {
		who, ok := want[r.Event]
		if !ok {
			continue
		}
		seen[r.Event] = true
		if r.Identity != who || !strings.HasPrefix(r.Remote, "127.0.0.1:") || r.ID == "" {
			t.Errorf("audit %s: identity %q remote %q id %q, want identity %q from 127.0.0.1", r.Event, r.Identity, r.Remote, r.ID, who)
		}
		if r.Event == "tls_refused" && !strings.Contains(r.Reason, "not signed by a trusted CA") {
			t.Errorf("tls_refused reason %q does not say the CA is not trusted", r.Reason)
		}
	}
	for ev := range want {
		if !seen[ev] {
			t.Errorf("no %s record in the audit log: %s", ev, audits[idx].String())
		}
	}
	resp, err := reader.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, w := range []string{`omnirelay_control_refused_total{reason="certificate"} 1`,
		`omnirelay_control_refused_total{reason="forbidden"} 1`, `omnirelay_control_refused_total{reason="unauthenticated"} 2`} {
		if !strings.Contains(string(metrics), w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}
