package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/identity"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestCertCAAndIssueWriteAUsableIdentity(t *testing.T) {
	dir := t.TempDir()
	caDir, out := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	if code, _, e := runCLI(t, "cert", "ca", "--out", caDir, "--trust-domain", "example.org"); code != 0 {
		t.Fatalf("cert ca: exit %d: %s", code, e)
	}
	code, o, e := runCLI(t, "cert", "issue", "--ca", caDir, "--name", "n4", "--cluster", "prod", "--out", out, "--ttl", "2h")
	if code != 0 {
		t.Fatalf("cert issue: exit %d: %s", code, e)
	}
	if !strings.Contains(o, "spiffe://example.org/mesh/prod/node/n4") {
		t.Fatalf("cert issue printed %q", o)
	}
	for _, f := range []string{filepath.Join(caDir, "ca-key.pem"), filepath.Join(out, "n4-key.pem")} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	src, err := identity.NewSource(identity.Files{
		Cert: filepath.Join(out, "n4.pem"), Key: filepath.Join(out, "n4-key.pem"), Bundle: filepath.Join(caDir, "ca.pem"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := identity.ID{TrustDomain: "example.org", Cluster: "prod", Role: identity.RoleNode, Name: "n4"}
	if src.Identity() != want {
		t.Fatalf("identity %s, want %s", src.Identity(), want)
	}
	if code, _, e := runCLI(t, "cert", "issue", "--ca", caDir, "--name", "alice", "--role", "operator", "--out", out, "--ip", "127.0.0.1"); code != 0 {
		t.Fatalf("cert issue operator: exit %d: %s", code, e)
	}
	certs, _ := os.ReadFile(filepath.Join(out, "alice.pem"))
	parsed, err := identity.ParseCertsPEM(certs)
	if err != nil || len(parsed[0].IPAddresses) != 1 {
		t.Fatalf("alice.pem: %v", err)
	}
	if id, _ := identity.FromCertificate(parsed[0]); id.Role != identity.RoleOperator || id.Cluster != identity.DefaultCluster {
		t.Fatalf("alice is %s", id)
	}
}

func TestCertRefusesToOverwriteWithoutForce(t *testing.T) {
	dir := t.TempDir()
	if code, _, e := runCLI(t, "cert", "ca", "--out", dir); code != 0 {
		t.Fatalf("cert ca: exit %d: %s", code, e)
	}
	key, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	code, _, e := runCLI(t, "cert", "ca", "--out", dir)
	if code != 1 || !strings.Contains(e, "file exists") || !strings.Contains(e, "ca") {
		t.Fatalf("second cert ca: exit %d: %s", code, e)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem")); !bytes.Equal(now, key) {
		t.Fatal("the refused cert ca replaced the key")
	}
	if code, _, e := runCLI(t, "cert", "ca", "--out", dir, "--force"); code != 0 {
		t.Fatalf("cert ca --force: exit %d: %s", code, e)
	}
	out := filepath.Join(dir, "out")
	args := []string{"cert", "issue", "--ca", dir, "--name", "n1", "--out", out}
	if code, _, e := runCLI(t, args...); code != 0 {
		t.Fatalf("cert issue: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, args...); code != 1 || !strings.Contains(e, "n1") {
		t.Fatalf("second cert issue: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, append(args, "--force")...); code != 0 {
		t.Fatalf("cert issue --force: exit %d: %s", code, e)
	}
}

func TestCertRefusesBadInputNamingIt(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "cert", "ca", "--out", dir)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cert", "issue", "--ca", dir, "--name", "n/1", "--out", dir}, 1, "invalid name"},
		{[]string{"cert", "issue", "--ca", dir, "--name", "n1", "--role", "root", "--out", dir}, 2, "--role"},
		{[]string{"cert", "issue", "--ca", dir, "--name", "n1", "--cluster", "", "--out", dir}, 1, "cluster"},
		{[]string{"cert", "issue", "--ca", dir, "--name", "n1", "--ttl", "-1h", "--out", dir}, 1, "TTL"},
		{[]string{"cert", "issue", "--ca", dir, "--name", "n1", "--ip", "10.0.0.x", "--out", dir}, 2, "--ip"},
		{[]string{"cert", "issue", "--ca", filepath.Join(dir, "none"), "--name", "n1", "--out", dir}, 1, "--ca"},
		{[]string{"cert", "issue", "--name", "n1", "--out", dir}, 2, "--ca"},
		{[]string{"cert", "issue", "--ca", dir, "--name", "ca", "--out", dir, "--force"}, 2, "overwrite the CA"},
		{[]string{"cert", "ca", "--out", filepath.Join(dir, "x"), "--trust-domain", "Bad_TD!"}, 1, "trust domain"},
		{[]string{"cert", "ca"}, 2, "--out"},
		{[]string{"cert", "ca", "--out", dir, "extra"}, 2, "extra"},
		{[]string{"cert", "frobnicate"}, 2, "usage"},
	} {
		code, _, e := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(e, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", tc.args, code, e, tc.code, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("refused commands left files behind: %d entries", len(entries))
	}
}

func TestCertHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{{"cert", "--help"}, {"cert", "ca", "--help"}, {"cert", "issue", "-h"}} {
		code, o, e := runCLI(t, args...)
		if code != 0 || !strings.Contains(o, "usage:") || e != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, o, e)
		}
	}
	if code, o, _ := runCLI(t, "cert", "issue", "--help"); code != 0 || !strings.Contains(o, "-role") {
		t.Errorf("cert issue --help: exit %d, no flags listed: %q", code, o)
	}
	if code := run([]string{"--help"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}
