package node

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
)

// Enrollment (PROTOCOL.md, "Enrollment stream"; docs/security.md, "Enrollment"):
// a TLS 1.3 stream on the gossip TCP port that offers the ALPN protocol
// EnrollALPN. A client with a node certificate of the cluster is answered with the
// packet keyring; a client without a certificate presents a join token and a
// public key, and a signing member (Config.Signer) answers with a node certificate
// and, for role node, the keyring. Nothing else is ever sent to a client without a
// certificate. It runs on the stream's goroutine, never on the loop.

// EnrollALPN names the enrollment stream in the TLS handshake.
const EnrollALPN = "omnirelay-enroll/1"

// maxEnrollMsg bounds an enrollment request or reply: a name, a token, a public key,
// a short chain and at most a few keys fit in a few KiB.
const maxEnrollMsg = 64 << 10

// Errors of enrollment, as the joiner sees them.
var (
	// ErrEnrollRefused means a member refused the enrollment; the text says why.
	ErrEnrollRefused = errors.New("node: enrollment refused")
	// ErrNotSigner means a member was forwarded a token but holds no CA key:
	// forwarded tokens are redeemed, never forwarded again.
	ErrNotSigner = errors.New("node: this member holds no CA key and cannot redeem a forwarded join token")
)

// Signer makes a member a signing member: it redeems join tokens of Tokens and
// signs node certificates with CA (docs/security.md, "Who holds the signing key").
type Signer struct {
	CA     *identity.CA
	Tokens identity.TokenStore
	// CertTTL is the validity of the certificates it signs; 0 means
	// identity.DefaultLeafTTL.
	CertTTL time.Duration
}

// enrollRequest is the client's one message.
type enrollRequest struct {
	Name      string `json:"name"`
	Token     string `json:"token,omitempty"`      // without a client certificate
	PublicKey []byte `json:"public_key,omitempty"` // PKIX DER, with Token
	// Joiner is the token holder's address, set by a member that forwards the
	// token to a signer (with its own node certificate); for the audit trail.
	Joiner string `json:"joiner,omitempty"`
}

// enrollReply is the server's one message.
type enrollReply struct {
	Error string   `json:"error,omitempty"`
	Chain [][]byte `json:"chain,omitempty"` // DER, leaf first, with a token
	Keys  [][]byte `json:"keys,omitempty"`  // primary first; empty: the cluster runs without keys
	// Elsewhere, with Error: this signer holds no token of that id; a forwarder
	// tries the next signer.
	Elsewhere bool `json:"elsewhere,omitempty"`
}

func writeEnrollMsg(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxEnrollMsg {
		return fmt.Errorf("node: enrollment message of %d bytes, at most %d", len(b), maxEnrollMsg)
	}
	_, err = w.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
	return err
}

func readEnrollMsg(r io.Reader, v any) error {
	var p [4]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(p[:])
	if size > maxEnrollMsg { // checked before the buffer is allocated
		return fmt.Errorf("node: enrollment message of %d bytes, at most %d", size, maxEnrollMsg)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// enrollConfig is the server configuration of an enrollment stream: a client
// certificate is asked for but not required (a token holder has none); one that is
// presented must pass the mesh policy.
func (n *Node) enrollConfig(mesh *tls.Config) *tls.Config {
	cfg := mesh.Clone()
	cfg.ClientAuth = tls.RequestClientCert
	cfg.NextProtos = []string{EnrollALPN}
	verify := mesh.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return verify(cs)
	}
	return cfg
}

// serveEnroll answers one enrollment stream. peer is the verified client identity,
// nil for a token holder.
func (n *Node) serveEnroll(conn *tls.Conn, peer *identity.ID) {
	remote := conn.RemoteAddr().String()
	var req enrollRequest
	if err := readEnrollMsg(conn, &req); err != nil {
		n.metrics.enrollments.WithLabelValues("refused").Inc()
		n.log.Debug("reading an enrollment request", "from", remote, "err", err)
		return
	}
	reply, rec := n.enroll(req, peer, remote)
	rec.Time, rec.Remote = time.Now(), remote
	if reply.Error != "" {
		rec.Reason = reply.Error
		n.metrics.enrollments.WithLabelValues("refused").Inc()
		n.log.Warn("refused an enrollment", "event", rec.Event, "from", remote, "identity", rec.Identity, "why", reply.Error)
	}
	n.audit(rec)
	if err := writeEnrollMsg(conn, reply); err != nil {
		n.log.Debug("writing an enrollment reply", "to", remote, "err", err)
	}
}

// enroll decides an enrollment request and names its audit record. A token from
// a token holder is redeemed here at a signing member that holds it, else
// forwarded to one (forwardToken); a token from a member's certificate is a
// forwarded one and is redeemed here or refused, never forwarded again.
func (n *Node) enroll(req enrollRequest, peer *identity.ID, remote string) (enrollReply, auditRecord) {
	if peer != nil && req.Token == "" {
		who := peer.String()
		if req.Name != peer.Name {
			return refuseEnroll("enroll_refused", who, fmt.Errorf("%w: the certificate names %q, the request %q", ErrStreamIdentity, peer.Name, req.Name))
		}
		n.metrics.enrollments.WithLabelValues("keys").Inc()
		return enrollReply{Keys: n.keys()}, auditRecord{Event: "enroll_keys", Identity: who, Member: req.Name}
	}
	who := "token holder " + req.Name
	if id, _, err := identity.ParseToken(req.Token); err == nil {
		who = "token:" + id + " for " + req.Name
	}
	if peer != nil {
		return n.redeemForwarded(req, peer, who)
	}
	req.Joiner = ""
	pub, err := n.checkTokenRequest(req)
	if err != nil {
		return refuseEnroll("token_refused", who, err)
	}
	if n.cfg.Signer != nil {
		r, rec := n.redeem(req, pub, req.Name+" from "+remote, who)
		if !r.Elsewhere || len(n.signers()) == 0 {
			r.Elsewhere = false // for relays only
			return r, rec
		}
	}
	return n.forwardToken(req, remote, who)
}

func refuseEnroll(event, who string, err error) (enrollReply, auditRecord) {
	return enrollReply{Error: err.Error()}, auditRecord{Event: event, Identity: who}
}

// checkTokenRequest checks what a member can check of a token request before the
// token itself: the name (valid, not a live member's) and the public key.
func (n *Node) checkTokenRequest(req enrollRequest) (crypto.PublicKey, error) {
	if err := identity.ValidateName(req.Name); err != nil {
		return nil, err
	}
	if n.nameTaken(req.Name) {
		return nil, fmt.Errorf("%w: %q is the name of a live member: a token cannot buy a member's identity", ErrEnrollRefused, req.Name)
	}
	pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrEnrollRefused, err)
	}
	return pub, nil
}

// redeem spends the token at this signing member and signs the certificate. A
// token this member's store does not hold is answered Elsewhere: another signer
// may hold it.
func (n *Node) redeem(req enrollRequest, pub crypto.PublicKey, usedBy, who string) (enrollReply, auditRecord) {
	s := n.cfg.Signer
	cluster := ClusterOf(n.cfg.ClusterLabel)
	tok, err := identity.Redeem(s.Tokens, req.Token, cluster, time.Now(), usedBy)
	if err != nil {
		r, rec := refuseEnroll("token_refused", who, err)
		r.Elsewhere = errors.Is(err, identity.ErrTokenUnknown)
		return r, rec
	}
	id := identity.ID{TrustDomain: s.CA.TrustDomain, Cluster: cluster, Role: tok.Role, Name: req.Name}
	leaf, err := s.CA.Issue(identity.IssueRequest{ID: id, TTL: s.CertTTL, PublicKey: pub})
	if err != nil {
		return refuseEnroll("token_refused", who, err)
	}
	n.metrics.enrollments.WithLabelValues("certificate").Inc()
	r := enrollReply{Chain: [][]byte{leaf.Cert.Raw}}
	if tok.Role == identity.RoleNode {
		r.Keys = n.keys()
	}
	return r, auditRecord{Event: "token_redeemed", Identity: id.String(), Member: req.Name, Role: string(tok.Role)}
}

// redeemForwarded answers a token that member peer forwards for a joiner at
// req.Joiner. Only a live member may forward; the token and the name are checked
// here as for a token holder, so a forwarder can spend a token only for what its
// holder could have had. The audit record names the forwarder (From) and the
// joiner's address as it reports it (Addr).
func (n *Node) redeemForwarded(req enrollRequest, peer *identity.ID, who string) (enrollReply, auditRecord) {
	r, rec := func() (enrollReply, auditRecord) {
		if n.cfg.Signer == nil { // it publishes "signer" by mistake: try the next
			r, rec := refuseEnroll("token_refused", who, ErrNotSigner)
			r.Elsewhere = true
			return r, rec
		}
		if !n.nameTaken(peer.Name) || peer.Name == n.cfg.Name {
			return refuseEnroll("token_refused", who, fmt.Errorf("%w: %s forwards a token but is not a live member", ErrEnrollRefused, peer))
		}
		pub, err := n.checkTokenRequest(req)
		if err != nil {
			return refuseEnroll("token_refused", who, err)
		}
		if len(req.Joiner) > maxJoinerAddr {
			return refuseEnroll("token_refused", who, fmt.Errorf("%w: joiner address of %d bytes, at most %d", ErrEnrollRefused, len(req.Joiner), maxJoinerAddr))
		}
		return n.redeem(req, pub, req.Name+" from "+req.Joiner+" via "+peer.Name, who)
	}()
	rec.From, rec.Addr = peer.Name, req.Joiner
	return r, rec
}

// nameTaken reports whether name is this node's or a live member's.
func (n *Node) nameTaken(name string) bool {
	if name == n.cfg.Name {
		return true
	}
	return n.live.has(name)
}

// keys is the keyring to deliver, primary first; nil without keys.
func (n *Node) keys() [][]byte {
	if n.kr == nil {
		return nil
	}
	return n.kr.Keys()
}

// EnrollRequest asks members for what a joining node needs. Give either TLS (a
// node certificate: the reply is the keyring) or Token, Bundle and Key (the reply
// is a certificate for Key and, for a node token, the keyring).
type EnrollRequest struct {
	Seeds []string // gossip host:port of members, tried in order
	Name  string   // this node's name
	TLS   *identity.Source
	Token string
	// Bundle is the trust bundle file the token holder verifies members with.
	Bundle string
	Key    crypto.Signer // the key to certify, with Token
}

// Enrollment is what a member answered.
type Enrollment struct {
	From  string              // the seed that answered
	Chain []*x509.Certificate // the issued certificate, with a token
	Keys  [][]byte            // the packet keyring, primary first; empty: no keys
}

// Enroll asks each seed in turn until one answers, within ctx. A token is spent by
// the first signing member that accepts it; a member that refuses is named in the
// error, with its reason.
func Enroll(ctx context.Context, req EnrollRequest) (Enrollment, error) {
	var cfg *tls.Config
	msg := enrollRequest{Name: req.Name}
	switch {
	case req.TLS != nil && req.Token == "":
		cfg = req.TLS.ClientConfig(identity.MeshPolicy)
	case req.TLS == nil && req.Token != "" && req.Bundle != "" && req.Key != nil:
		var err error
		if cfg, err = identity.BundleClientConfig(req.Bundle, nil); err != nil {
			return Enrollment{}, err
		}
		if msg.PublicKey, err = x509.MarshalPKIXPublicKey(req.Key.Public()); err != nil {
			return Enrollment{}, err
		}
		msg.Token = req.Token
	default:
		return Enrollment{}, errors.New("node: enrollment needs a certificate, or a token with a trust bundle and a key")
	}
	cfg.NextProtos = []string{EnrollALPN}
	var errs []error
	for _, seed := range req.Seeds {
		e, err := enrollAt(ctx, seed, cfg, msg)
		if err == nil {
			e.From = seed
			return e, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", seed, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return Enrollment{}, errors.New("node: enrollment needs at least one seed (--join)")
	}
	return Enrollment{}, errors.Join(errs...)
}

func enrollAt(ctx context.Context, seed string, cfg *tls.Config, msg enrollRequest) (Enrollment, error) {
	r, err := exchangeEnroll(ctx, seed, cfg, msg)
	if err != nil {
		return Enrollment{}, err
	}
	if r.Error != "" {
		return Enrollment{}, fmt.Errorf("%w: %s", ErrEnrollRefused, r.Error)
	}
	var e Enrollment
	for _, der := range r.Chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return Enrollment{}, fmt.Errorf("node: enrollment reply: certificate: %w", err)
		}
		e.Chain = append(e.Chain, cert)
	}
	if msg.Token != "" && len(e.Chain) == 0 {
		return Enrollment{}, errors.New("node: enrollment reply has no certificate")
	}
	e.Keys = r.Keys
	return e, nil
}

// exchangeEnroll sends msg on an enrollment stream to addr and returns the reply,
// within ctx.
func exchangeEnroll(ctx context.Context, addr string, cfg *tls.Config, msg enrollRequest) (enrollReply, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return enrollReply{}, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	if tc.ConnectionState().NegotiatedProtocol != EnrollALPN {
		return enrollReply{}, fmt.Errorf("%w: the member does not serve enrollment (no TLS on its mesh streams?)", ErrEnrollRefused)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := writeEnrollMsg(tc, msg); err != nil {
		return enrollReply{}, err
	}
	var r enrollReply
	err = readEnrollMsg(tc, &r)
	return r, err
}

// CreateToken implements control.TokenSource: a signing member stores a new join
// token of its cluster and audits token_create (never the token itself).
func (s controlSource) CreateToken(role identity.Role, ttl time.Duration, by control.Caller) (string, identity.Token, error) {
	n := s.n
	if n.cfg.Signer == nil { // not forwarded: a member's certificate must not vouch for an admin
		return "", identity.Token{}, fmt.Errorf("%w; %s", control.ErrNotSigner, n.signersNamed())
	}
	tok, rec, err := identity.NewToken(ClusterOf(n.cfg.ClusterLabel), role, ttl, time.Now())
	if err == nil {
		err = n.cfg.Signer.Tokens.Add(rec)
	}
	r := auditRecord{Time: time.Now(), Event: "token_create", ID: by.ID, Identity: by.Identity, Remote: by.Remote,
		Role: string(role), Member: rec.ID}
	if err != nil {
		r.Event, r.Reason = "token_create_refused", err.Error()
	}
	n.audit(r)
	return tok, rec, err
}
