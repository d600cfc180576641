package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Refusals of a peer's certificate. Each names what was wrong; the error text adds
// the peer's identity when it could be read.
var (
	// ErrNoPeerCertificate means the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("identity: peer presented no certificate")
	// ErrChainTooLong means the peer sent more than MaxPeerChain certificates.
	ErrChainTooLong = errors.New("identity: peer certificate chain too long")
	// ErrExpired means a certificate of the peer's chain is past its NotAfter.
	ErrExpired = errors.New("identity: certificate expired")
	// ErrNotYetValid means the peer's certificate starts after now.
	ErrNotYetValid = errors.New("identity: certificate not yet valid")
	// ErrUntrusted means the peer's certificate does not chain to the current trust
	// bundle (another CA signed it), or is not valid for the TLS role it is used in.
	ErrUntrusted = errors.New("identity: certificate not signed by a trusted CA")
	// ErrWrongTrustDomain means the peer's SPIFFE ID is of another trust domain.
	ErrWrongTrustDomain = errors.New("identity: wrong trust domain")
	// ErrWrongCluster means the peer's identity is of another cluster.
	ErrWrongCluster = errors.New("identity: wrong cluster")
	// ErrRoleNotAllowed means the peer's role may not use this channel (mesh
	// streams accept only nodes).
	ErrRoleNotAllowed = errors.New("identity: role not allowed on this channel")
	// ErrWrongName means the peer is not the member this side meant to reach.
	ErrWrongName = errors.New("identity: peer name does not match")
)

// MaxPeerChain bounds the certificates a peer may send: a leaf and intermediates.
const MaxPeerChain = 4

// Policy says whom a channel accepts. The trust domain and cluster a peer must have
// are always this side's own (Source.Identity).
type Policy struct {
	// Roles that may use the channel. Empty accepts none.
	Roles []Role
	// Name, if set, is the only peer name accepted: a client dialling a known member
	// checks the certificate names that member.
	Name string
	// AnyCluster accepts peers of every cluster of the trust domain, not only
	// this side's own: the WAN pool of gateways (WANPolicy). Cluster, if set with
	// it, is the only cluster accepted, as Name is the only name.
	AnyCluster bool
	Cluster    string
}

var (
	// MeshPolicy is for join, push-pull, lease and shard streams: nodes only.
	MeshPolicy = Policy{Roles: []Role{RoleNode}}
	// ControlPolicy is for the control API's server: any role of the cluster; the
	// handler maps the role (PeerIdentity) to permissions.
	ControlPolicy = Policy{Roles: Roles}
	// WANPolicy is for the WAN pool's streams among gateways: nodes of any
	// cluster of the trust domain. What a gateway may say there is bound to its
	// certificate's cluster by the pool itself (docs/security.md, "WAN pool").
	WANPolicy = Policy{Roles: []Role{RoleNode}, AnyCluster: true}
)

// ServerConfig returns a TLS 1.3 server configuration that presents the current
// certificate, requires a client certificate, and verifies it against the current
// bundle and p. Every handshake reads the current material, so Reload needs no
// listener restart.
func (s *Source) ServerConfig(p Policy) *tls.Config {
	p.Roles = slices.Clone(p.Roles)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
		// crypto/tls would verify against a fixed ClientCAs pool; asking only for a
		// certificate and verifying it in VerifyConnection uses the current bundle.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.VerifyPeer(cs.PeerCertificates, p, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientConfig returns a TLS 1.3 client configuration that presents the current
// certificate and verifies the server's SPIFFE ID against the current bundle and p,
// not a host name: mesh and control servers are dialled by IP address, and their
// identity, not their address, is what matters (as in SPIFFE's tlsconfig).
func (s *Source) ClientConfig(p Policy) *tls.Config {
	p.Roles = slices.Clone(p.Roles)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
		// Only the host name check is skipped: VerifyConnection, which crypto/tls
		// still calls, verifies the chain and the identity.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.VerifyPeer(cs.PeerCertificates, p, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// VerifyPeer checks a peer's chain against the current bundle, the clock and p, for
// the given key usage, and returns the peer's identity.
func (s *Source) VerifyPeer(chain []*x509.Certificate, p Policy, usage x509.ExtKeyUsage) (ID, error) {
	m := s.cur.Load()
	id, err := verifyPeerChain(chain, m, s.now(), usage)
	if err != nil {
		return ID{}, err
	}
	self := m.id
	switch {
	case p.AnyCluster && p.Cluster != "" && id.Cluster != p.Cluster:
		return ID{}, fmt.Errorf("%w: %s is in cluster %q, expected %q", ErrWrongCluster, id, id.Cluster, p.Cluster)
	case !p.AnyCluster && id.Cluster != self.Cluster:
		return ID{}, fmt.Errorf("%w: %s is in cluster %q, this is %q", ErrWrongCluster, id, id.Cluster, self.Cluster)
	case !slices.Contains(p.Roles, id.Role):
		return ID{}, fmt.Errorf("%w: %s has role %q, this channel accepts %v", ErrRoleNotAllowed, id, id.Role, p.Roles)
	case p.Name != "" && id.Name != p.Name:
		return ID{}, fmt.Errorf("%w: %s, expected %q", ErrWrongName, id, p.Name)
	}
	return id, nil
}

// verifyPeerChain bounds a peer's chain, then verifies it (verifyChain).
func verifyPeerChain(chain []*x509.Certificate, m *material, now time.Time, usage x509.ExtKeyUsage) (ID, error) {
	if len(chain) == 0 {
		return ID{}, ErrNoPeerCertificate
	}
	if len(chain) > MaxPeerChain {
		return ID{}, fmt.Errorf("%w: %d certificates, at most %d", ErrChainTooLong, len(chain), MaxPeerChain)
	}
	return verifyChain(chain, m, now, usage)
}

// verifyChain checks chain[0] is current, chains to m's bundle for usage, and has a
// mesh identity of m's trust domain.
func verifyChain(chain []*x509.Certificate, m *material, now time.Time, usage x509.ExtKeyUsage) (ID, error) {
	leaf := chain[0]
	// The ID is read first only to name the peer in errors; it counts for nothing
	// until the chain is verified.
	id, idErr := FromCertificate(leaf)
	who := leaf.Subject.CommonName
	if idErr == nil {
		who = id.String()
	}
	if now.Before(leaf.NotBefore) {
		return ID{}, fmt.Errorf("%w: %s is valid from %s, now is %s", ErrNotYetValid, who,
			leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return ID{}, fmt.Errorf("%w: %s expired at %s, now is %s", ErrExpired, who,
			leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: m.roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) {
			switch inv.Reason {
			case x509.Expired:
				return ID{}, fmt.Errorf("%w: %s: %v", ErrExpired, who, err)
			case x509.CANotAuthorizedForThisName:
				return ID{}, fmt.Errorf("%w: %s: %v", ErrWrongTrustDomain, who, err)
			}
		}
		return ID{}, fmt.Errorf("%w: %s: %v", ErrUntrusted, who, err)
	}
	if idErr != nil {
		return ID{}, idErr
	}
	if id.TrustDomain != m.id.TrustDomain {
		return ID{}, fmt.Errorf("%w: %s is in %q, this is %q", ErrWrongTrustDomain, id, id.TrustDomain, m.id.TrustDomain)
	}
	return id, nil
}

// PeerIdentity returns the identity of a connection's peer. The connection must
// have been made with a ServerConfig or ClientConfig, which verified it.
func PeerIdentity(cs tls.ConnectionState) (ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ID{}, ErrNoPeerCertificate
	}
	return FromCertificate(cs.PeerCertificates[0])
}

// BundleClientConfig is a TLS 1.3 client configuration for a caller without a
// certificate of its own (a bearer token stands in for it): it verifies that the
// server's certificate chains to the bundle file's CAs and names a node of the
// first CA's trust domain. The cluster is not checked: the caller has no
// identity to take one from. now is the clock; nil means the wall clock.
func BundleClientConfig(bundle string, now func() time.Time) (*tls.Config, error) {
	if now == nil {
		now = time.Now
	}
	raw, err := readLimited(bundle, MaxPEMFile)
	if err != nil {
		return nil, err
	}
	roots, cas, err := parseBundle(bundle, raw)
	if err != nil {
		return nil, err
	}
	m := &material{roots: roots}
	if len(cas[0].URIs) != 1 {
		return nil, fmt.Errorf("%w: %s: the first CA has no single spiffe://TRUST-DOMAIN URI", ErrInvalidID, bundle)
	}
	td, err := spiffeid.TrustDomainFromURI(cas[0].URIs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidID, bundle, err)
	}
	m.id.TrustDomain = td.Name()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // host names only: VerifyConnection checks the chain and the ID
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := verifyPeerChain(cs.PeerCertificates, m, now(), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id.Role != RoleNode {
				return fmt.Errorf("%w: %s has role %q, a server must be a node", ErrRoleNotAllowed, id, id.Role)
			}
			return nil
		},
	}, nil
}
