package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// ErrNoSVID means the SPIFFE Workload API offered no X.509-SVID of the wanted name,
// or none that passes the checks of a mesh identity.
var ErrNoSVID = errors.New("identity: no usable X.509-SVID from the SPIFFE Workload API")

// NewWorkloadSource is a Source fed by the SPIFFE Workload API at socket (a path;
// "unix://" is added). Of the SVIDs the API offers this workload, it takes the one
// whose mesh identity is named name (any, the API's default first, when name is
// empty), and the X.509 bundle of that SVID's trust domain. It waits, within ctx,
// for a first usable SVID; after that, every SVID or bundle the API pushes becomes
// current at once if it passes the same checks as a file's (key matches, valid
// now, chains to the bundle, same identity), and a bad push is reported to onErr
// (which may be nil) and ignored. Close stops the watch. Reload does nothing: the
// API pushes.
func NewWorkloadSource(ctx context.Context, socket, name string, now func() time.Time, onErr func(error)) (*Source, error) {
	if now == nil {
		now = time.Now
	}
	if onErr == nil {
		onErr = func(error) {}
	}
	wctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(wctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("identity: SPIFFE Workload API at %s: %w", socket, err)
	}
	s := &Source{now: now, workload: socket}
	w := &svidWatcher{s: s, name: name, first: make(chan error, 1), onErr: onErr, stopped: wctx.Done()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// It returns when wctx ends; errors in between are retried with backoff and
		// reported through OnX509ContextWatchError.
		client.WatchX509Context(wctx, w)
	}()
	s.stop = func() {
		cancel()
		<-done
		client.Close()
	}
	select {
	case err := <-w.first:
		if err == nil {
			return s, nil
		}
		s.stop()
		return nil, err
	case <-ctx.Done():
		s.stop()
		last := w.lastErr()
		return nil, fmt.Errorf("%w: at %s within the wait (%v); last error: %v", ErrNoSVID, socket, ctx.Err(), last)
	}
}

// svidWatcher receives the Workload API's pushes.
type svidWatcher struct {
	s     *Source
	name  string
	first chan error // the first usable SVID (nil), buffered
	onErr func(error)
	// stopped is closed by Close: the watch's errors from then on are its ending.
	stopped <-chan struct{}
}

func (w *svidWatcher) lastErr() error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.workloadErr
}

func (w *svidWatcher) fail(err error) {
	w.s.mu.Lock()
	w.s.workloadErr = err
	w.s.mu.Unlock()
	w.onErr(err)
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (w *svidWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	m, err := w.material(c)
	if err != nil {
		w.fail(err)
		return
	}
	s := w.s
	s.mu.Lock()
	old := s.cur.Load()
	switch {
	case old != nil && old.id != m.id:
		err = fmt.Errorf("%w: %s, was %s", ErrIdentityChanged, m.id, old.id)
	case old == nil || old.digest != m.digest:
		s.cur.Store(m)
	}
	s.mu.Unlock()
	if err != nil {
		w.fail(err)
		return
	}
	if old == nil {
		w.first <- nil
	}
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher.
func (w *svidWatcher) OnX509ContextWatchError(err error) {
	select {
	case <-w.stopped:
		return
	default:
	}
	w.fail(fmt.Errorf("identity: SPIFFE Workload API at %s: %w", w.s.workload, err))
}

// material picks the SVID and bundle of c and checks them as load checks files.
func (w *svidWatcher) material(c *workloadapi.X509Context) (*material, error) {
	var why []string
	for _, svid := range c.SVIDs {
		id, err := FromSPIFFEID(svid.ID)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		if w.name != "" && id.Name != w.name {
			why = append(why, fmt.Sprintf("%s is not named %q", id, w.name))
			continue
		}
		b, err := c.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrNoSVID, id, err)
		}
		m := &material{id: id, roots: x509.NewCertPool()}
		h := sha256.New()
		cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
		for _, c := range svid.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
			h.Write(c.Raw)
		}
		for _, ca := range b.X509Authorities() {
			m.roots.AddCert(ca)
			h.Write(ca.Raw)
		}
		h.Sum(m.digest[:0])
		m.cert = cert
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := verifyChain(svid.Certificates, m, w.s.now(), usage); err != nil {
				return nil, fmt.Errorf("%w: own SVID %s: %v", ErrNoSVID, id, err)
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("%w: %d SVIDs offered: %v", ErrNoSVID, len(c.SVIDs), why)
}
