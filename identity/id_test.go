package identity

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIDRoundTrip(t *testing.T) {
	for _, id := range []ID{
		{"example.org", "prod-eu", RoleNode, "n4"},
		{"mesh.test", DefaultCluster, RoleOperator, "alice"},
		{"a.b-c_d", "C.1", RoleAdmin, "x_y-z.0"},
	} {
		s := id.String()
		if !strings.HasPrefix(s, "spiffe://"+id.TrustDomain+"/mesh/") {
			t.Fatalf("%#v formats as %q", id, s)
		}
		got, err := Parse(s)
		if err != nil || got != id {
			t.Fatalf("Parse(%q) = %#v, %v; want %#v", s, got, err, id)
		}
	}
}

func TestParseRefusesOtherShapes(t *testing.T) {
	for _, s := range []string{
		"",
		"spiffe://example.org",
		"spiffe://example.org/mesh/prod/n4", // no role segment
		"spiffe://example.org/mesh/prod/node/n4/extra", // too many
		"spiffe://example.org/other/prod/node/n4",      // not under /mesh
		"spiffe://example.org/mesh/prod/root/n4",       // unknown role
		"spiffe://example.org/mesh/prod/node/-n4",      // leading dash
		"spiffe://example.org/mesh/prod/node/..",       // dot segment
		"spiffe://Example.org/mesh/prod/node/n4",       // upper-case trust domain
		"https://example.org/mesh/prod/node/n4",        // not SPIFFE
		"spiffe://example.org/mesh/prod/node/n%34",     // escapes are not names
		"spiffe://example.org/mesh//node/n4",           // empty cluster
		"spiffe://example.org/mesh/prod/node/n4?x=1",   // query
		"spiffe://user@example.org/mesh/prod/node/n4",  // userinfo
		"spiffe://example.org:8443/mesh/prod/node/n4",  // port
		"spiffe://example.org/mesh/prod/node/" + strings.Repeat("a", MaxNameLen+1),
	} {
		if id, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted it as %#v", s, id)
		}
	}
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"n1": true, "N-1.a_b": true, "0": true, strings.Repeat("a", MaxNameLen): true,
		"": false, "-n": false, ".n": false, "_n": false, "n/1": false, "n 1": false,
		"né": false, "n:1": false, strings.Repeat("a", MaxNameLen+1): false,
	} {
		if err := ValidateName(name); (err == nil) != ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", name, err, ok)
		}
		if err := ValidateName(name); err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, not ErrInvalidName", name, err)
		}
	}
}

func TestCAIssuesOnlyItsTrustDomain(t *testing.T) {
	ca := newTestCA(t, testTD)
	if ca.Cert.NotAfter.Sub(time.Now()) < DefaultCATTL-time.Hour {
		t.Fatalf("CA expires at %s, want about %v from now", ca.Cert.NotAfter, DefaultCATTL)
	}
	if !ca.Cert.IsCA || ca.Cert.PermittedURIDomains[0] != testTD {
		t.Fatalf("CA: IsCA=%v constraints=%v", ca.Cert.IsCA, ca.Cert.PermittedURIDomains)
	}
	_, err := ca.Issue(IssueRequest{ID: ID{"other.test", "prod", RoleNode, "n1"}})
	if !errors.Is(err, ErrWrongTrustDomain) {
		t.Fatalf("Issue for another trust domain: %v", err)
	}
	if _, err := ca.Issue(IssueRequest{ID: nodeID("prod", "n1"), TTL: 2 * DefaultCATTL}); !errors.Is(err, ErrInvalidTTL) {
		t.Fatalf("Issue outliving the CA: %v", err)
	}
	if _, err := ca.Issue(IssueRequest{ID: nodeID("prod", "n/1")}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Issue for a bad name: %v", err)
	}
	leaf, err := ca.Issue(IssueRequest{ID: nodeID("prod", "n1"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.Cert
	if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 || len(c.URIs) != 1 {
		t.Fatalf("leaf SANs: dns %v ip %v uri %v", c.DNSNames, c.IPAddresses, c.URIs)
	}
	if len(c.ExtKeyUsage) != 2 || c.IsCA {
		t.Fatalf("leaf usages %v, IsCA %v", c.ExtKeyUsage, c.IsCA)
	}
	if id, err := FromCertificate(c); err != nil || id != nodeID("prod", "n1") {
		t.Fatalf("FromCertificate: %v %v", id, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
}

func TestSaveLoadCAAndRefuseOverwrite(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, testTD)
	if err := ca.Save(dir, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st, err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err := newTestCA(t, testTD).Save(dir, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second Save: %v, want %v", err, ErrExists)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, CAKeyFile)); string(after) != string(before) {
		t.Fatal("the refused Save changed the key")
	}
	got, err := LoadCA(dir)
	if err != nil || !got.Cert.Equal(ca.Cert) || got.TrustDomain != testTD {
		t.Fatalf("LoadCA: %v", err)
	}
	other := newTestCA(t, testTD)
	key, _ := EncodeKeyPEM(other.Key)
	os.WriteFile(filepath.Join(dir, CAKeyFile), key, 0o600)
	if _, err := LoadCA(dir); !errors.Is(err, ErrNotCA) {
		t.Fatalf("LoadCA with another CA's key: %v", err)
	}
	if err := other.Save(dir, true); err != nil {
		t.Fatalf("Save with force: %v", err)
	}
	if got, err := LoadCA(dir); err != nil || !got.Cert.Equal(other.Cert) {
		t.Fatalf("LoadCA after forced Save: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("dir holds %d entries, want the 2 files and no temporaries", len(entries))
	}
}

func TestParsePEMIsStrict(t *testing.T) {
	ca := newTestCA(t, testTD)
	good := EncodeCertsPEM(ca.Cert)
	key, _ := EncodeKeyPEM(ca.Key)
	for name, data := range map[string][]byte{
		"empty": nil, "trailing garbage": append(append([]byte{}, good...), "junk"...),
		"key in a cert file": key, "truncated": good[:len(good)-30],
	} {
		if _, err := ParseCertsPEM(data); !errors.Is(err, ErrInvalidPEM) {
			t.Errorf("ParseCertsPEM(%s): %v", name, err)
		}
	}
	if _, err := ParseKeyPEM(append(append([]byte{}, key...), key...)); !errors.Is(err, ErrInvalidPEM) {
		t.Errorf("ParseKeyPEM(two keys): %v", err)
	}
	if _, err := ParseKeyPEM(good); !errors.Is(err, ErrInvalidPEM) {
		t.Errorf("ParseKeyPEM(a certificate): %v", err)
	}
}
