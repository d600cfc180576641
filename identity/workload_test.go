package identity

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// push builds what the Workload API would push: an SVID of each id, signed by
// ca, and ca's bundle.
func push(t *testing.T, ca *CA, ids ...ID) *workloadapi.X509Context {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(ca.TrustDomain)
	c := &workloadapi.X509Context{Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.Cert}))}
	for _, id := range ids {
		leaf, err := ca.Issue(IssueRequest{ID: id, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		sid, _ := id.SPIFFEID()
		c.SVIDs = append(c.SVIDs, &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{leaf.Cert}, PrivateKey: leaf.Key})
	}
	return c
}

// TestWorkloadPushesPickTheNodesSVIDAndRotate: of the SVIDs pushed to the
// workload, a source takes the one named for its node; a later push of a new SVID
// for the same identity becomes current; a push that names another identity, or
// whose SVID does not chain to the pushed bundle, is refused and the current one
// stays.
func TestWorkloadPushesPickTheNodesSVIDAndRotate(t *testing.T) {
	ca, other := newTestCA(t, testTD), newTestCA(t, testTD)
	s := &Source{now: time.Now, workload: "test.sock"}
	var errs []error
	w := &svidWatcher{s: s, name: "n2", first: make(chan error, 1), onErr: func(err error) { errs = append(errs, err) }}

	w.OnX509ContextUpdate(push(t, ca, nodeID("default", "n1"), nodeID("default", "n2")))
	if err := <-w.first; err != nil || s.Identity().Name != "n2" {
		t.Fatalf("first push: %v, identity %s", err, s.Identity())
	}
	serial := s.Certificate().Leaf.SerialNumber

	w.OnX509ContextUpdate(push(t, ca, nodeID("default", "n2")))
	if s.Certificate().Leaf.SerialNumber.Cmp(serial) == 0 || len(errs) != 0 {
		t.Fatalf("a rotated SVID was not taken (errors %v)", errs)
	}
	serial = s.Certificate().Leaf.SerialNumber

	w.OnX509ContextUpdate(push(t, ca, nodeID("default", "n1")))
	if len(errs) != 1 || !errors.Is(errs[0], ErrNoSVID) || !strings.Contains(errs[0].Error(), `not named "n2"`) {
		t.Fatalf("a push without our SVID: %v", errs)
	}
	bad := push(t, other, nodeID("default", "n2"))
	bad.Bundles = push(t, ca).Bundles // the SVID of another CA than the bundle's
	w.OnX509ContextUpdate(bad)
	if len(errs) != 2 || !errors.Is(errs[1], ErrNoSVID) || !strings.Contains(errs[1].Error(), "not signed by a trusted CA") {
		t.Fatalf("an SVID that does not chain to the bundle: %v", errs)
	}
	if s.Certificate().Leaf.SerialNumber.Cmp(serial) != 0 {
		t.Fatal("a refused push replaced the current SVID")
	}
	// Without a name, the first SVID's identity is kept: a push naming another is refused.
	any := &Source{now: time.Now, workload: "test.sock"}
	var anyErr error
	wa := &svidWatcher{s: any, first: make(chan error, 1), onErr: func(err error) { anyErr = err }}
	wa.OnX509ContextUpdate(push(t, ca, nodeID("default", "n1")))
	wa.OnX509ContextUpdate(push(t, ca, nodeID("default", "n3")))
	if !errors.Is(anyErr, ErrIdentityChanged) || any.Identity().Name != "n1" {
		t.Fatalf("a push of another identity: %v, identity %s", anyErr, any.Identity())
	}
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("Reload of a Workload API source: %v %v", changed, err)
	}
}
