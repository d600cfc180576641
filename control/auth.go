package control

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/omnirelay/mesh/identity"
)

// Public marks a route anyone may call, without credentials: the probes, which
// kubelets and load balancers call without a client certificate.
const Public identity.Role = "public"

// routeRoles is the least role each route needs, from the one route table
// (routes). A route missing here is refused to everyone (403).
var routeRoles = func() map[string]identity.Role {
	m := map[string]identity.Role{}
	for _, r := range (&handler{}).routes() {
		m[r.Pattern()] = r.Role
	}
	return m
}()

// rank orders roles by power. A node may read: it is a member and learns the
// membership by gossip anyway, and the CLI on a node's host can use its certificate.
func rank(r identity.Role) int {
	switch r {
	case identity.RoleNode, identity.RoleReader:
		return 1
	case identity.RoleOperator:
		return 2
	case identity.RoleAdmin:
		return 3
	}
	return 0
}

// Auth authenticates and authorizes control API requests. A request is made as
// the identity of its verified client certificate (the server's TLS configuration
// verified it at the handshake), else as the bearer token it presents, else it is
// refused 401; a role below the route's is refused 403. A nil *Auth in Options
// serves every request (node allows that only on loopback or when insecure).
type Auth struct {
	// Verify checks a client's certificate chain and returns its identity. It is
	// called per request, so the handler trusts no TLS configuration but this
	// one. Nil: client certificates are ignored (tokens only).
	Verify func(chain []*x509.Certificate) (identity.ID, error)
	// Tokens are the bearer tokens for automation, by their hash.
	Tokens []BearerToken
	// Audit receives every refusal and every request that changes something; nil
	// audits nothing. It must not block.
	Audit func(AuditEvent)
}

// AuditEvent is one authorization decision worth recording.
type AuditEvent struct {
	ID       string // correlation id, also in the refusal's message
	Event    string // control_request, control_unauthenticated or control_forbidden
	Identity string // SPIFFE ID or "token:NAME"; "" when none was presented
	Role     identity.Role
	Remote   string // the client's host:port
	Route    string // the route pattern, e.g. "POST /control/v1/shards/drain"
	Reason   string // why it was refused
}

// BearerToken is one automation token: only the SHA-256 of the token is kept.
type BearerToken struct {
	Hash [sha256.Size]byte
	Role identity.Role
	Name string // who or what holds it, for the audit log
}

// HashToken is what a token file stores for token t.
func HashToken(t string) [sha256.Size]byte { return sha256.Sum256([]byte(t)) }

// MaxTokenFile bounds a token file read into memory.
const MaxTokenFile = 1 << 20

// ErrTokenFile wraps every error of ParseTokens, which names the line.
var ErrTokenFile = errors.New("control: bad token file")

// ParseTokens reads a token file: one token a line as
//
//	sha256:<64 hex digits> <role> <name>
//
// with blank lines and lines starting with # skipped. The role is reader,
// operator or admin (a node authenticates with its certificate).
func ParseTokens(b []byte) ([]BearerToken, error) {
	if len(b) > MaxTokenFile {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTokenFile, len(b), MaxTokenFile)
	}
	var out []BearerToken
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 3 {
			return nil, fmt.Errorf("%w: line %d: want \"sha256:HEX ROLE NAME\"", ErrTokenFile, line)
		}
		var t BearerToken
		h, ok := strings.CutPrefix(f[0], "sha256:")
		if n, err := hex.Decode(t.Hash[:], []byte(h)); !ok || err != nil || n != sha256.Size || len(h) != 2*sha256.Size {
			return nil, fmt.Errorf("%w: line %d: hash %.20q: want sha256: and 64 hex digits", ErrTokenFile, line, f[0])
		}
		role, err := identity.ParseRole(f[1])
		if err != nil || role == identity.RoleNode {
			return nil, fmt.Errorf("%w: line %d: role %q: want reader, operator or admin", ErrTokenFile, line, f[1])
		}
		if err := identity.ValidateName(f[2]); err != nil {
			return nil, fmt.Errorf("%w: line %d: name: %v", ErrTokenFile, line, err)
		}
		t.Role, t.Name = role, f[2]
		out = append(out, t)
	}
	return out, sc.Err()
}

// LoadTokens reads and parses a token file. A file other users can read is
// refused: its hashes are not secret, but a writable one grants any role.
func LoadTokens(path string) ([]BearerToken, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("token file %s is writable by other users (mode %04o): chmod 600 %s", path, perm, path)
	}
	if fi.Size() > MaxTokenFile {
		return nil, fmt.Errorf("%w: %s is %d bytes, at most %d", ErrTokenFile, path, fi.Size(), MaxTokenFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	ts, err := ParseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, nil
}

// caller is who made a request.
type caller struct {
	who  string // SPIFFE ID or token:NAME
	role identity.Role
}

// authenticate returns the request's caller, or why it has none.
func (a *Auth) authenticate(r *http.Request) (caller, string) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && a.Verify != nil {
		id, err := a.Verify(r.TLS.PeerCertificates)
		if err != nil {
			return caller{}, err.Error()
		}
		return caller{who: id.String(), role: id.Role}, ""
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return caller{}, "no client certificate and no bearer token"
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return caller{}, "Authorization header is not \"Bearer TOKEN\""
	}
	sum := HashToken(strings.TrimSpace(tok))
	var found *BearerToken
	for i := range a.Tokens { // constant time per entry: no early exit on a match
		if subtle.ConstantTimeCompare(sum[:], a.Tokens[i].Hash[:]) == 1 {
			found = &a.Tokens[i]
		}
	}
	if found == nil {
		return caller{}, "unknown bearer token"
	}
	return caller{who: "token:" + found.Name, role: found.Role}, ""
}

// authorize answers 401 or 403 and returns false unless the request may run
// route; the request it returns carries its Caller (CallerOf).
func (a *Auth) authorize(w http.ResponseWriter, r *http.Request, route string) (*http.Request, bool) {
	need, known := routeRoles[route]
	r, ref := a.admit(r, route, need, known, r.Method != http.MethodGet && r.Method != http.MethodHead)
	if ref != nil {
		if ref.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="omnirelay"`)
		}
		writeError(w, ref.status, ref.code, ref.msg)
		return r, false
	}
	return r, true
}

// refusal is why admit refused a request: the HTTP status, error code and message.
type refusal struct {
	status    int
	code, msg string
}

// admit decides whether r may run what name names (a route pattern, or a gRPC
// procedure) that needs role need (known false: nothing names its role, so no one
// may), auditing every refusal, and every change that passes (reads are not: a
// scraper would flood the log). The request it returns carries its Caller.
func (a *Auth) admit(r *http.Request, name string, need identity.Role, known, change bool) (*http.Request, *refusal) {
	if a == nil || need == Public {
		return r, nil
	}
	ev := AuditEvent{ID: NewEventID(), Remote: r.RemoteAddr, Route: name}
	c, why := a.authenticate(r)
	ev.Identity, ev.Role = c.who, c.role
	switch {
	case c.role == "":
		ev.Event, ev.Reason = "control_unauthenticated", why
		a.audit(ev)
		return r, &refusal{http.StatusUnauthorized, CodeUnauthenticated,
			fmt.Sprintf("%s needs a client certificate or a bearer token: %s (request %s)", name, why, ev.ID)}
	case !known:
		ev.Event, ev.Reason = "control_forbidden", "the route has no role (a bug: control.routes)"
		a.audit(ev)
		return r, &refusal{http.StatusForbidden, CodeForbidden, fmt.Sprintf("%s is allowed to no one: %s (request %s)", name, ev.Reason, ev.ID)}
	case rank(c.role) < rank(need):
		ev.Event, ev.Reason = "control_forbidden", fmt.Sprintf("role %s, the route needs %s", c.role, need)
		a.audit(ev)
		return r, &refusal{http.StatusForbidden, CodeForbidden,
			fmt.Sprintf("%s needs role %s or above; %s has role %s (request %s)", name, need, c.who, c.role, ev.ID)}
	}
	if change {
		ev.Event = "control_request"
		a.audit(ev)
	}
	return withCaller(r, Caller{ID: ev.ID, Identity: c.who}), nil
}

func (a *Auth) audit(ev AuditEvent) {
	if a.Audit != nil {
		a.Audit(ev)
	}
}

// NewEventID is a correlation id for an event with no shared fact to hash (a
// refusal, a reload), unlike membership events: 16 random hex digits, like theirs.
// Two identical refusals are two events.
func NewEventID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
