package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/swim"
)

// Token forwarding (docs/security.md, "Where tokens live"): a member that does not
// hold a presented token relays the request to the signing members, which publish
// SignerMetaKey, over a stream authenticated by its own node certificate. The
// signer's store alone decides, so single use holds however many members relay.

// SignerMetaKey is the metadata key a signing member publishes ("1") so that
// members know where to forward join tokens.
const SignerMetaKey = "signer"

const (
	// maxForwards bounds the token requests one member relays at once; more are
	// refused (ErrForwardBusy) rather than queued, as a token holder retries.
	maxForwards = 4
	// maxForwardSigners bounds the signers one request is offered to, in name
	// order: each that does not hold the token answers Elsewhere.
	maxForwardSigners = 4
	// maxJoinerAddr bounds the joiner address a forwarder reports (an IPv6
	// host:port is at most 47 bytes).
	maxJoinerAddr = 64
)

var (
	// ErrNoSigner means no signing member could redeem a forwarded token: none is
	// a live member, or none could be reached or held the token; the error names
	// each one tried and why.
	ErrNoSigner = errors.New("node: no signing member could redeem the join token")
	// ErrForwardBusy means the member already relays maxForwards token requests.
	ErrForwardBusy = errors.New("node: this member is relaying as many join tokens as it may; try again or another seed")
)

// withSigner returns a copy of meta that marks a signing member.
func withSigner(meta map[string]string) map[string]string {
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]string{}
	}
	out[SignerMetaKey] = "1"
	return out
}

// signerAddr is a signing member as this node knows it.
type signerAddr struct{ name, addr, control string }

// signers are the live members other than this node that publish SignerMetaKey,
// sorted by name.
func (n *Node) signers() []signerAddr {
	var out []signerAddr
	n.do(func() {
		for _, m := range n.stack.Swim().Members() {
			if m.Name == n.cfg.Name || m.Status != swim.StatusAlive {
				continue
			}
			meta := n.stack.Meta().NodeMap(m.Name)
			if _, ok := meta[SignerMetaKey]; ok {
				out = append(out, signerAddr{m.Name, m.Addr, string(meta[ControlMetaKey])})
			}
		}
	})
	slices.SortFunc(out, func(a, b signerAddr) int { return strings.Compare(a.name, b.name) })
	return out
}

// forwardToken relays a checked token request from the holder at remote to the
// signing members in turn, until one holds the token, within half the stream
// timeout (so the holder's stream, which has the whole of it, still gets the
// answer). A certificate is passed on only if it chains to this node's bundle,
// names the holder and certifies the holder's key, so a member that claims to be
// a signer cannot hand the holder anything else. Audited here as
// token_forwarded, or token_refused with the signer's or the network's reason;
// the signer audits its own decision.
func (n *Node) forwardToken(req enrollRequest, remote, who string) (enrollReply, auditRecord) {
	select {
	case n.forwards <- struct{}{}:
		defer func() { <-n.forwards }()
	default:
		return refuseEnroll("token_refused", who, ErrForwardBusy)
	}
	signers := n.signers()
	if len(signers) == 0 {
		return refuseEnroll("token_refused", who, fmt.Errorf("%w: no live member publishes %q (start a signing member with --tls-ca-key)", ErrNoSigner, SignerMetaKey))
	}
	signers = signers[:min(len(signers), maxForwardSigners)]
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.StreamTimeout/2)
	defer cancel()
	fwd := req
	fwd.Joiner = remote
	var tried []string
	for _, s := range signers {
		cfg := n.cfg.TLS.ClientConfig(identity.Policy{Roles: identity.MeshPolicy.Roles, Name: s.name})
		cfg.NextProtos = []string{EnrollALPN}
		r, err := exchangeEnroll(ctx, s.addr, cfg, fwd)
		switch {
		case err != nil:
			tried = append(tried, fmt.Sprintf("%s at %s: %v", s.name, s.addr, err))
			continue
		case r.Error != "" && r.Elsewhere:
			tried = append(tried, fmt.Sprintf("%s: %s", s.name, r.Error))
			continue
		case r.Error != "":
			rr, rec := refuseEnroll("token_refused", who, fmt.Errorf("signer %s: %s", s.name, r.Error))
			rec.To = s.name
			return rr, rec
		}
		id, err := n.checkIssued(r.Chain, req)
		if err != nil {
			rr, rec := refuseEnroll("token_refused", who, fmt.Errorf("%w: signer %s answered a certificate that does not hold: %v", ErrEnrollRefused, s.name, err))
			rec.To = s.name
			return rr, rec
		}
		n.metrics.enrollments.WithLabelValues("forwarded").Inc()
		return enrollReply{Chain: r.Chain, Keys: r.Keys}, auditRecord{Event: "token_forwarded", Identity: id.String(), Member: req.Name, To: s.name}
	}
	return refuseEnroll("token_refused", who, fmt.Errorf("%w: %s", ErrNoSigner, strings.Join(tried, "; ")))
}

// checkIssued verifies a signer's certificate for req: it chains to this node's
// bundle, is valid now, names req.Name in this cluster and certifies req's key.
func (n *Node) checkIssued(chain [][]byte, req enrollRequest) (identity.ID, error) {
	certs := make([]*x509.Certificate, 0, len(chain))
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return identity.ID{}, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return identity.ID{}, errors.New("no certificate")
	}
	pub, err := x509.MarshalPKIXPublicKey(certs[0].PublicKey)
	if err != nil || !bytes.Equal(pub, req.PublicKey) {
		return identity.ID{}, errors.New("it certifies another key")
	}
	return n.cfg.TLS.VerifyPeer(certs, identity.Policy{Roles: identity.ControlPolicy.Roles, Name: req.Name}, x509.ExtKeyUsageClientAuth)
}

// signersNamed names the signing members for an error: name and control URL.
func (n *Node) signersNamed() string {
	var parts []string
	for _, s := range n.signers() {
		if s.control != "" {
			parts = append(parts, s.name+" ("+s.control+")")
		} else {
			parts = append(parts, s.name+" (no control URL published)")
		}
	}
	if len(parts) == 0 {
		return "no live member is a signing member"
	}
	return "ask a signing member: " + strings.Join(parts, ", ")
}
