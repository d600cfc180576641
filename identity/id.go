// Package identity holds the building blocks of secure enrollment: SPIFFE identities
// for nodes and people, a certificate authority that issues them, TLS configurations
// that verify them against a trust bundle that can rotate, and single-use join tokens.
//
// It is not a protocol package: it reads files and the wall clock. It never imports
// node, control or sim; those import it.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Role is what an identity may do. It is a path segment of the SPIFFE ID, so the CA
// decides it when it signs and no peer can claim another.
type Role string

const (
	// RoleNode is a mesh member: the only role mesh streams accept.
	RoleNode Role = "node"
	// RoleReader may read the control API.
	RoleReader Role = "reader"
	// RoleOperator may also drain, rebalance, force-leave and manage keys.
	RoleOperator Role = "operator"
	// RoleAdmin may also change voters and create join tokens.
	RoleAdmin Role = "admin"
)

// Roles lists every role, in increasing order of power.
var Roles = []Role{RoleNode, RoleReader, RoleOperator, RoleAdmin}

// DefaultCluster is the cluster segment of identities when none is named. A node
// whose cluster label is empty belongs to it.
const DefaultCluster = "default"

// MaxNameLen bounds a name or cluster segment: with the trust domain (at most 255
// bytes) an ID stays far below SPIFFE's 2048-byte limit.
const MaxNameLen = 128

var (
	// ErrInvalidName means a name or cluster is empty, too long, or has a character
	// outside [A-Za-z0-9._-], or does not start with a letter or digit.
	ErrInvalidName = errors.New("identity: invalid name")
	// ErrInvalidRole means a role is not one of node, reader, operator, admin.
	ErrInvalidRole = errors.New("identity: invalid role")
	// ErrInvalidID means a SPIFFE ID is malformed or not of the shape
	// spiffe://<trust-domain>/mesh/<cluster>/<role>/<name>.
	ErrInvalidID = errors.New("identity: invalid SPIFFE ID")
)

// ID is a mesh identity. Its SPIFFE form is
//
//	spiffe://<trust-domain>/mesh/<cluster>/<role>/<name>
//
// for example spiffe://example.org/mesh/prod-eu/node/n4 for the node n4, or
// spiffe://example.org/mesh/prod-eu/operator/alice for a person. Every ID has exactly
// these four path segments, so a certificate's ID yields (trust domain, cluster,
// role, name) with no guessing.
type ID struct {
	TrustDomain string
	Cluster     string
	Role        Role
	Name        string
}

// ValidateName checks a node, person or cluster name: 1..MaxNameLen bytes of
// [A-Za-z0-9._-], starting with a letter or digit. That is SPIFFE's path segment
// charset, minus the "." and ".." segments and a leading "-" that a command line
// would take for a flag.
func ValidateName(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidName, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("%w: %q must start with a letter or digit", ErrInvalidName, s)
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%w: %q has %q, allowed are letters, digits, '.', '_' and '-'", ErrInvalidName, s, c)
		}
	}
	return nil
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w: %q, want node, reader, operator or admin", ErrInvalidRole, s)
}

// Validate reports the first invalid part of id.
func (id ID) Validate() error {
	if _, err := spiffeid.TrustDomainFromString(id.TrustDomain); err != nil {
		return fmt.Errorf("%w: trust domain %q: %v", ErrInvalidID, id.TrustDomain, err)
	}
	if err := ValidateName(id.Cluster); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if _, err := ParseRole(string(id.Role)); err != nil {
		return err
	}
	if err := ValidateName(id.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	return nil
}

// SPIFFEID returns id in SPIFFE form, after validating it.
func (id ID) SPIFFEID() (spiffeid.ID, error) {
	if err := id.Validate(); err != nil {
		return spiffeid.ID{}, err
	}
	td, err := spiffeid.TrustDomainFromString(id.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrInvalidID, err)
	}
	sid, err := spiffeid.FromSegments(td, "mesh", id.Cluster, string(id.Role), id.Name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrInvalidID, err)
	}
	return sid, nil
}

// String returns the SPIFFE form, or a description of why id is invalid.
func (id ID) String() string {
	sid, err := id.SPIFFEID()
	if err != nil {
		return fmt.Sprintf("invalid identity (%v)", err)
	}
	return sid.String()
}

// Parse reads a SPIFFE ID of the shape spiffe://<trust-domain>/mesh/<cluster>/<role>/<name>.
func Parse(s string) (ID, error) {
	sid, err := spiffeid.FromString(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %q: %v", ErrInvalidID, s, err)
	}
	return FromSPIFFEID(sid)
}

// FromSPIFFEID converts a parsed SPIFFE ID, checking its shape and every segment.
func FromSPIFFEID(sid spiffeid.ID) (ID, error) {
	// spiffeid has already refused empty and dot segments, so splitting is exact.
	segs := strings.Split(strings.TrimPrefix(sid.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "mesh" {
		return ID{}, fmt.Errorf("%w: %q: path must be /mesh/<cluster>/<role>/<name>", ErrInvalidID, sid)
	}
	id := ID{TrustDomain: sid.TrustDomain().Name(), Cluster: segs[1], Role: Role(segs[2]), Name: segs[3]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("%q: %w", sid, err)
	}
	return id, nil
}

// FromCertificate returns the identity in cert's URI SAN. A certificate must carry
// exactly one URI SAN: two would let one certificate speak as two identities.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	if len(cert.URIs) != 1 {
		return ID{}, fmt.Errorf("%w: certificate %q has %d URI SANs, want exactly one SPIFFE ID", ErrInvalidID, cert.Subject.CommonName, len(cert.URIs))
	}
	sid, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return ID{}, fmt.Errorf("%w: certificate URI SAN %q: %v", ErrInvalidID, cert.URIs[0], err)
	}
	return FromSPIFFEID(sid)
}
