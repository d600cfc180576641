package control

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/omnirelay/mesh/identity"
)

// TestEveryRouteHasARole: every route of the table names a role that grants
// something (or Public), so that none is refused to everyone by a typo.
func TestEveryRouteHasARole(t *testing.T) {
	for _, r := range Routes() {
		if r.Role != Public && rank(r.Role) == 0 {
			t.Errorf("route %q needs role %q, which no caller can hold", r.Pattern(), r.Role)
		}
	}
}

// auditSink collects audit events.
type auditSink struct {
	mu  sync.Mutex
	evs []AuditEvent
}

func (s *auditSink) add(e AuditEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evs = append(s.evs, e)
}

func (s *auditSink) events() []AuditEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AuditEvent(nil), s.evs...)
}

func testTokens() []BearerToken {
	return []BearerToken{
		{Hash: HashToken("r-secret"), Role: identity.RoleReader, Name: "grafana"},
		{Hash: HashToken("o-secret"), Role: identity.RoleOperator, Name: "ci"},
		{Hash: HashToken("a-secret"), Role: identity.RoleAdmin, Name: "root"},
	}
}

// certState is a connection state whose peer certificate names id.
func certState(t *testing.T, id identity.ID) *tls.ConnectionState {
	t.Helper()
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: id.TrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(identity.IssueRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
}

func TestRBACByRole(t *testing.T) {
	src := newShardFake(8, "a", "b")
	sink := &auditSink{}
	// The handshake's verification is node's (tested there); here a certificate
	// counts as the identity it names.
	verify := func(chain []*x509.Certificate) (identity.ID, error) { return identity.FromCertificate(chain[0]) }
	h := NewHandler(src, Options{Auth: &Auth{Verify: verify, Tokens: testTokens(), Audit: sink.add}})
	do := func(method, path, auth string, cs *tls.ConnectionState) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(`{"node":"b","drain":true}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.TLS = cs
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	const (
		get   = "GET /control/v1/peers"
		drain = "POST /control/v1/shards/drain"
	)
	nodeCert := certState(t, identity.ID{TrustDomain: "example.org", Cluster: "default", Role: identity.RoleNode, Name: "n1"})
	opCert := certState(t, identity.ID{TrustDomain: "example.org", Cluster: "default", Role: identity.RoleOperator, Name: "alice"})
	for _, c := range []struct {
		name, route, auth string
		cs                *tls.ConnectionState
		want              int
		code              string
	}{
		{"no credentials, read", get, "", nil, 401, CodeUnauthenticated},
		{"no credentials, drain", drain, "", nil, 401, CodeUnauthenticated},
		{"unknown token", get, "Bearer nope", nil, 401, CodeUnauthenticated},
		{"not a bearer header", get, "Basic YTpi", nil, 401, CodeUnauthenticated},
		{"no credentials, probe", "GET /healthz", "", nil, 200, ""},
		{"reader reads", get, "Bearer r-secret", nil, 200, ""},
		{"reader drains", drain, "Bearer r-secret", nil, 403, CodeForbidden},
		{"reader lists keys", "GET /control/v1/keyring", "Bearer r-secret", nil, 403, CodeForbidden},
		{"operator lists keys", "GET /control/v1/keyring", "Bearer o-secret", nil, 404, CodeKeyringOff},
		{"operator drains", drain, "Bearer o-secret", nil, 200, ""},
		{"admin drains", drain, "Bearer a-secret", nil, 200, ""},
		{"node certificate reads", get, "", nodeCert, 200, ""},
		{"node certificate drains", drain, "", nodeCert, 403, CodeForbidden},
		{"operator certificate drains", drain, "", opCert, 200, ""},
		{"certificate wins over a token", drain, "Bearer r-secret", opCert, 200, ""},
	} {
		method, path, _ := strings.Cut(c.route, " ")
		rec := do(method, path, c.auth, c.cs)
		if rec.Code != c.want {
			t.Errorf("%s: %s: %d %s, want %d", c.name, c.route, rec.Code, rec.Body, c.want)
			continue
		}
		if c.code != "" {
			if got := decode[ErrorReply](t, rec).Error.Code; got != c.code {
				t.Errorf("%s: code %q, want %q", c.name, got, c.code)
			}
		}
		if c.want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
	}
	// Every refusal and every allowed change is audited, with who and the route.
	var refused, changes int
	for _, e := range sink.events() {
		if e.ID == "" || e.Route == "" {
			t.Errorf("audit event without id or route: %+v", e)
		}
		switch e.Event {
		case "control_unauthenticated", "control_forbidden":
			refused++
		case "control_request":
			changes++
			if e.Route != drain || e.Identity == "" {
				t.Errorf("change audited as %+v", e)
			}
		}
	}
	if refused != 7 || changes != 4 {
		t.Errorf("audited %d refusals and %d changes, want 7 and 4: %+v", refused, changes, sink.events())
	}
}

func TestRouteWithoutRoleIsRefusedToAll(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /control/v1/new", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	h := jsonErrors(mux, &Auth{Tokens: testTokens()})
	req := httptest.NewRequest("POST", "/control/v1/new", nil)
	req.Header.Set("Authorization", "Bearer a-secret")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 403 || decode[ErrorReply](t, rec).Error.Code != CodeForbidden {
		t.Fatalf("admin on a route without a role: %d %s, want 403 forbidden", rec.Code, rec.Body)
	}
}

func TestNoAuthServesEveryone(t *testing.T) {
	h := NewHandler(newShardFake(4, "a"), Options{})
	req := httptest.NewRequest("POST", "/control/v1/shards/rebalance", strings.NewReader("{}"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("rebalance without Auth: %d %s", rec.Code, rec.Body)
	}
}

func TestParseTokens(t *testing.T) {
	hash := "sha256:" + strings.Repeat("ab", 32)
	ts, err := ParseTokens([]byte("# ci\n\n" + hash + " operator ci-bot\n"))
	if err != nil || len(ts) != 1 || ts[0].Role != identity.RoleOperator || ts[0].Name != "ci-bot" || ts[0].Hash[0] != 0xab {
		t.Fatalf("ParseTokens: %+v, %v", ts, err)
	}
	for _, bad := range []string{
		hash + " operator",                                 // no name
		"sha256:abcd operator ci",                          // short hash
		strings.Repeat("ab", 32) + " operator ci",          // no prefix
		hash + " node n1",                                  // nodes use certificates
		hash + " root ci",                                  // no such role
		hash + " operator -x",                              // bad name
		"sha256:" + strings.Repeat("zz", 32) + " reader r", // not hex
	} {
		if _, err := ParseTokens([]byte(bad + "\n")); !errors.Is(err, ErrTokenFile) || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseTokens(%q): %v, want ErrTokenFile naming line 1", bad, err)
		}
	}
}
