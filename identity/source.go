package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdentityChanged means reloaded files name another identity than the one the
// Source started with: a running node cannot change who it is.
var ErrIdentityChanged = errors.New("identity: reloaded certificate names another identity")

// Files names the PEM files a Source reads.
type Files struct {
	Cert   string // this identity's certificate (then any intermediates)
	Key    string // its PKCS #8 private key
	Bundle string // the trust bundle: the CA certificates peers must chain to
}

// material is one consistent, verified set of certificate, key and bundle. It is
// never changed after it is built; a reload swaps the pointer.
type material struct {
	cert   *tls.Certificate
	id     ID
	roots  *x509.CertPool
	digest [sha256.Size]byte
}

// Source holds the current certificate, key and trust bundle, and builds TLS
// configurations that read them at every handshake, so a Reload takes effect on the
// next handshake with no listener restart, while established connections go on.
// It is safe for concurrent use.
type Source struct {
	files Files
	now   func() time.Time
	mu    sync.Mutex // serialises Reload and Workload API updates
	cur   atomic.Pointer[material]
	// workload is the Workload API socket of a NewWorkloadSource ("" for files);
	// stop ends its watch, workloadErr is its latest failure (under mu).
	workload    string
	stop        func()
	workloadErr error
}

// NewSource loads files. now is the clock certificates are checked against; nil
// means the wall clock.
func NewSource(files Files, now func() time.Time) (*Source, error) {
	if now == nil {
		now = time.Now
	}
	s := &Source{files: files, now: now}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	return s, nil
}

// Identity returns the identity of the current certificate.
func (s *Source) Identity() ID { return s.cur.Load().id }

// Certificate returns the current certificate and key.
func (s *Source) Certificate() *tls.Certificate { return s.cur.Load().cert }

// Close stops a Workload API source's watch; a no-op for files.
func (s *Source) Close() {
	if s.stop != nil {
		s.stop()
	}
}

// Reload reads the files again. If their content changed and is valid (the key
// matches the certificate, the certificate is current, names the same identity and
// chains to the new bundle) it becomes current and changed is true. If anything is
// wrong, the old material stays and err says what: a rotation caught half-written
// is retried by the next Reload. It does file I/O: never call it on an event loop.
func (s *Source) Reload() (changed bool, err error) {
	if s.workload != "" {
		return false, nil // the Workload API pushes its changes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	m, err := s.load()
	if err != nil {
		return false, err
	}
	if m.digest == old.digest {
		return false, nil
	}
	if m.id != old.id {
		return false, fmt.Errorf("%w: %s, was %s", ErrIdentityChanged, m.id, old.id)
	}
	s.cur.Store(m)
	return true, nil
}

// Watch calls Reload every interval until ctx ends, and reports each change or
// failure to report (which may be nil). The caller runs it on its own goroutine.
func (s *Source) Watch(ctx context.Context, every time.Duration, report func(changed bool, err error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := s.Reload()
			if report != nil && (changed || err != nil) {
				report(changed, err)
			}
		}
	}
}

func (s *Source) load() (*material, error) {
	var raw [3][]byte
	for i, p := range []string{s.files.Cert, s.files.Key, s.files.Bundle} {
		b, err := readLimited(p, MaxPEMFile)
		if err != nil {
			return nil, err
		}
		raw[i] = b
	}
	h := sha256.New()
	for _, b := range raw {
		fmt.Fprintf(h, "%d:", len(b)) // lengths keep the concatenation unambiguous
		h.Write(b)
	}
	m := &material{}
	h.Sum(m.digest[:0])
	if old := s.cur.Load(); old != nil && old.digest == m.digest {
		return old, nil
	}
	chain, err := ParseCertsPEM(raw[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.files.Cert, err)
	}
	if _, err := ParseKeyPEM(raw[1]); err != nil {
		return nil, fmt.Errorf("%s: %w", s.files.Key, err)
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", s.files.Cert, s.files.Key, err)
	}
	if m.id, err = FromCertificate(cert.Leaf); err != nil {
		return nil, fmt.Errorf("%s: %w", s.files.Cert, err)
	}
	if m.roots, _, err = parseBundle(s.files.Bundle, raw[2]); err != nil {
		return nil, err
	}
	m.cert = &cert
	// Our own certificate must pass the checks peers will make, or we would present
	// one they refuse.
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := verifyChain(chain, m, s.now(), usage); err != nil {
			return nil, fmt.Errorf("%s: own certificate: %w", s.files.Cert, err)
		}
	}
	return m, nil
}

// parseBundle reads a trust bundle: one or more CA certificates, each a CA.
func parseBundle(path string, raw []byte) (*x509.CertPool, []*x509.Certificate, error) {
	cas, err := ParseCertsPEM(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		if !ca.IsCA {
			return nil, nil, fmt.Errorf("%w: %s holds %q, which is not a CA", ErrNotCA, path, ca.Subject.CommonName)
		}
		roots.AddCert(ca)
	}
	return roots, cas, nil
}
