package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// DefaultCATTL is how long a new CA is valid.
	DefaultCATTL = 10 * 365 * 24 * time.Hour
	// DefaultLeafTTL is how long an issued certificate is valid when no TTL is asked.
	DefaultLeafTTL = 30 * 24 * time.Hour
	// MaxPEMFile bounds every certificate, key or bundle file read, before it is read.
	MaxPEMFile = 1 << 20
	// backdate is how far before now a certificate's validity starts, so a peer whose
	// clock is a little behind does not refuse a certificate issued a moment ago.
	backdate = time.Minute
)

var (
	// ErrExists means a file to be written exists and overwriting was not asked.
	ErrExists = errors.New("identity: file exists (use force to overwrite)")
	// ErrInvalidPEM means a file is not the PEM content expected of it.
	ErrInvalidPEM = errors.New("identity: invalid PEM")
	// ErrFileTooLarge means a file is larger than what it may hold.
	ErrFileTooLarge = errors.New("identity: file too large")
	// ErrInvalidTTL means a validity period is not positive or would outlive the CA.
	ErrInvalidTTL = errors.New("identity: invalid TTL")
	// ErrNotCA means a certificate loaded as a CA is not one, or does not match its key.
	ErrNotCA = errors.New("identity: not a CA certificate")
)

// CA signs the certificates of one trust domain. Whoever holds it can mint any
// identity of that domain: keep its key off the mesh's nodes (see
// docs/security.md, "Enrollment").
type CA struct {
	Cert        *x509.Certificate
	Key         crypto.Signer
	TrustDomain string
}

// CAOptions configure NewCA. Zero values take the defaults.
type CAOptions struct {
	TrustDomain string        // required, e.g. "example.org"
	TTL         time.Duration // default DefaultCATTL
	Now         time.Time     // default the wall clock
}

// NewCA creates a self-signed ECDSA P-256 CA for a trust domain. The trust domain is
// its URI SAN, its subject's organisation and a critical URI name constraint, so the
// CA can sign only IDs of its own domain.
func NewCA(opts CAOptions) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("%w: trust domain %q: %v", ErrInvalidID, opts.TrustDomain, err)
	}
	ttl, now, err := validity(opts.TTL, DefaultCATTL, opts.Now)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{CommonName: "OmniRelay Mesh CA", Organization: []string{td.Name()}},
		NotBefore:                   now.Add(-backdate),
		NotAfter:                    now.Add(ttl),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLenZero:              true, // it signs leaves only, no intermediates
		URIs:                        []*url.URL{td.ID().URL()},
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, TrustDomain: td.Name()}, nil
}

// IssueRequest asks the CA for a certificate.
type IssueRequest struct {
	ID  ID
	TTL time.Duration // default DefaultLeafTTL; must end before the CA does
	Now time.Time     // default the wall clock
	// PublicKey, if set, is certified (an enrolling node keeps its private key);
	// otherwise a new P-256 key is generated and returned.
	PublicKey crypto.PublicKey
	// DNSNames and IPAddresses are added only when asked: peers verify the SPIFFE
	// ID, not a host name, so mesh certificates need neither.
	DNSNames    []string
	IPAddresses []net.IP
}

// Leaf is an issued certificate and, when the CA generated it, its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer // nil when IssueRequest.PublicKey was given
}

// Issue signs a certificate for req.ID, usable for both TLS client and server
// authentication, with the SPIFFE ID as its only URI SAN.
func (ca *CA) Issue(req IssueRequest) (*Leaf, error) {
	sid, err := req.ID.SPIFFEID()
	if err != nil {
		return nil, err
	}
	if req.ID.TrustDomain != ca.TrustDomain {
		return nil, fmt.Errorf("%w: %s is not in the CA's trust domain %q", ErrWrongTrustDomain, sid, ca.TrustDomain)
	}
	ttl, now, err := validity(req.TTL, DefaultLeafTTL, req.Now)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("%w: %v would end at %s, after the CA expires (%s)", ErrInvalidTTL, ttl,
			notAfter.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	leaf := &Leaf{}
	pub := req.PublicKey
	if pub == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		leaf.Key, pub = k, k.Public()
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.ID.Name, Organization: []string{ca.TrustDomain}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{sid.URL()},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	if leaf.Cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	return leaf, nil
}

// validity applies the defaults of a requested period: def for a zero TTL, the wall
// clock for a zero now.
func validity(ttl, def time.Duration, now time.Time) (time.Duration, time.Time, error) {
	if ttl == 0 {
		ttl = def
	}
	if ttl < 0 {
		return 0, time.Time{}, fmt.Errorf("%w: %v is negative", ErrInvalidTTL, ttl)
	}
	if now.IsZero() {
		now = time.Now()
	}
	return ttl, now, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// EncodeCertsPEM returns certs as concatenated CERTIFICATE blocks.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// EncodeKeyPEM returns key as one PKCS #8 PRIVATE KEY block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM reads one or more CERTIFICATE blocks and nothing else.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) > 0 {
				return nil, fmt.Errorf("%w: %d bytes that are not PEM", ErrInvalidPEM, len(bytes.TrimSpace(data)))
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: a %q block where only CERTIFICATE belongs", ErrInvalidPEM, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrInvalidPEM, len(certs)+1, err)
		}
		certs = append(certs, c)
		data = rest
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrInvalidPEM)
	}
	return certs, nil
}

// ParseKeyPEM reads exactly one PKCS #8 PRIVATE KEY block.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: want exactly one PKCS #8 PRIVATE KEY block", ErrInvalidPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrInvalidPEM, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key of type %T cannot sign", ErrInvalidPEM, k)
	}
	return s, nil
}

// readLimited reads a file of at most max bytes, refusing a larger one before
// reading it all.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrFileTooLarge, path, max)
	}
	return b, nil
}

// writePair writes a certificate (0644) and its key (0600), each atomically (a
// temporary file in the same directory, then a link or rename). Unless force is set,
// it refuses with ErrExists, before writing anything, if either exists. The key goes
// first: a crash in between leaves no certificate without its key.
func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte, force bool) error {
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%w: %s", ErrExists, p)
			}
		}
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600, force); err != nil {
		return err
	}
	return writeAtomic(certPath, certPEM, 0o644, force)
}

func writeAtomic(path string, data []byte, mode os.FileMode, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed; drops the extra link otherwise
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if force {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		// A link, unlike a rename, fails if path appeared since the check.
		err = fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CA file names inside a CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Save writes dir/ca.pem (0644) and dir/ca-key.pem (0600).
func (ca *CA) Save(dir string, force bool) error {
	key, err := EncodeKeyPEM(ca.Key)
	if err != nil {
		return err
	}
	return writePair(filepath.Join(dir, CACertFile), EncodeCertsPEM(ca.Cert), filepath.Join(dir, CAKeyFile), key, force)
}

// LoadCA reads dir/ca.pem and dir/ca-key.pem and checks they are a CA and its key.
func LoadCA(dir string) (*CA, error) {
	return LoadCAFiles(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
}

// LoadCAFiles reads a CA key and the CA certificate of certFile that matches it
// (certFile may be a trust bundle of several CAs, as during a re-keying).
func LoadCAFiles(certFile, keyFile string) (*CA, error) {
	cb, err := readLimited(certFile, MaxPEMFile)
	if err != nil {
		return nil, err
	}
	kb, err := readLimited(keyFile, MaxPEMFile)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertsPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := ParseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	var cert *x509.Certificate
	for _, c := range certs {
		if ok && c.IsCA && pub.Equal(c.PublicKey) {
			cert = c
		}
	}
	if cert == nil {
		return nil, fmt.Errorf("%w: %s holds no CA certificate of the key in %s", ErrNotCA, certFile, keyFile)
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("%w: %s has no trust domain URI SAN", ErrNotCA, certFile)
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotCA, certFile, err)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: td.Name()}, nil
}

// SaveLeaf writes dir/NAME.pem (0644) and dir/NAME-key.pem (0600), NAME being the
// identity's name.
func SaveLeaf(dir string, leaf *Leaf, force bool) error {
	id, err := FromCertificate(leaf.Cert)
	if err != nil {
		return err
	}
	if leaf.Key == nil {
		return errors.New("identity: the leaf has no private key to save")
	}
	key, err := EncodeKeyPEM(leaf.Key)
	if err != nil {
		return err
	}
	return writePair(filepath.Join(dir, id.Name+".pem"), EncodeCertsPEM(leaf.Cert), filepath.Join(dir, id.Name+"-key.pem"), key, force)
}
