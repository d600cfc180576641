package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
)

// issueAll makes a CA in dir/ca and issues name:role pairs into dir/certs with
// the CLI itself; it returns the certs directory.
func issueAll(t *testing.T, dir string, pairs ...string) string {
	t.Helper()
	caDir, out := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	if code, _, e := runCLI(t, "cert", "ca", "--out", caDir, "--trust-domain", "example.org"); code != 0 {
		t.Fatalf("cert ca: %s", e)
	}
	for _, p := range pairs {
		name, role, _ := strings.Cut(p, ":")
		if code, _, e := runCLI(t, "cert", "issue", "--ca", caDir, "--name", name, "--role", role, "--out", out); code != 0 {
			t.Fatalf("cert issue %s: %s", p, e)
		}
	}
	return out
}

// tlsArgs are the --tls-* flags for name's certificate under dir.
func tlsArgs(dir, certs, name string) []string {
	return []string{"--tls-ca", filepath.Join(dir, "ca", "ca.pem"),
		"--tls-cert", filepath.Join(certs, name+".pem"), "--tls-key", filepath.Join(certs, name+"-key.pem")}
}

func TestAgentTLSFlags(t *testing.T) {
	dir := t.TempDir()
	certs := issueAll(t, dir, "a:node", "b:node", "alice:operator")
	base := []string{"--name", "a", "--bind", "127.0.0.1:0", "--insecure"}
	s, err := parseAgent(append(base, tlsArgs(dir, certs, "a")...), io.Discard)
	if err != nil || s.cfg.TLS == nil || s.cfg.TLS.Identity().Name != "a" {
		t.Fatalf("agent with --tls-*: %v", err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", filepath.Join(certs, "a.pem")}, "give all three"},
		{tlsArgs(dir, certs, "b"), `but Name is "a"`},
		{tlsArgs(dir, certs, "alice"), `of role "operator"`},
		{append(tlsArgs(dir, certs, "a")[:5], filepath.Join(certs, "b-key.pem")), "a.pem and"},
	} {
		if _, err := parseAgent(append(base, c.args...), io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("agent %v: %v, want %q", c.args, err, c.want)
		}
	}
	// An unauthenticated control API that others can reach is refused...
	open := []string{"--name", "a", "--bind", "127.0.0.1:0", "--key", testKey, "--control", "0.0.0.0:7070", "--advertise", "127.0.0.1:7946"}
	if _, err := parseAgent(open, io.Discard); err == nil || !strings.Contains(err.Error(), "without TLS") || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("control on 0.0.0.0 without TLS: %v", err)
	}
	// ...unless it has TLS, or the operator says --insecure.
	if _, err := parseAgent(append(open, tlsArgs(dir, certs, "a")...), io.Discard); err != nil {
		t.Fatalf("control on 0.0.0.0 with TLS: %v", err)
	}
	if _, err := parseAgent(append(open, "--insecure"), io.Discard); err != nil {
		t.Fatalf("control on 0.0.0.0 with --insecure: %v", err)
	}
}

// TestMeshCommandsOverMutualTLS: an agent's node with TLS; the mesh CLI with no
// certificate is refused 401, with a reader's (flags, or environment) lists peers
// but may not drain (403), and a bearer token of the token file works.
func TestMeshCommandsOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	certs := issueAll(t, dir, "a:node", "rita:reader")
	tokFile := filepath.Join(dir, "tokens")
	h := control.HashToken("ci-secret")
	if err := os.WriteFile(tokFile, fmt.Appendf(nil, "sha256:%x operator ci\n", h[:]), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := parseAgent(append([]string{"--name", "a", "--bind", "127.0.0.1:0", "--control", "127.0.0.1:0", "--insecure",
		"--control-tokens", tokFile}, tlsArgs(dir, certs, "a")...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := node.Start(t.Context(), s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	addr := []string{"--addr", n.ControlAddr()}

	code, _, e := runCLI(t, append([]string{"mesh", "peers", "list", "--tls-cert", filepath.Join(certs, "rita.pem")}, addr...)...)
	if code != 2 || !strings.Contains(e, "give all three") {
		t.Errorf("--tls-cert alone: exit %d: %s", code, e)
	}
	code, _, e = runCLI(t, append([]string{"mesh", "peers", "list", "--tls-ca", filepath.Join(dir, "ca", "ca.pem")}, addr...)...)
	if code != 1 || !strings.Contains(e, "unauthenticated") {
		t.Errorf("--tls-ca alone, no token: exit %d: %s", code, e)
	}
	// No certificate: plain HTTP to a TLS server is refused by the server.
	if code, _, e := runCLI(t, append([]string{"mesh", "peers", "list"}, addr...)...); code != 1 {
		t.Errorf("no certificate: exit %d: %s", code, e)
	}
	reader := append(tlsArgs(dir, certs, "rita"), addr...)
	code, o, e := runCLI(t, append([]string{"mesh", "peers", "list"}, reader...)...)
	if code != 0 || !strings.Contains(o, "a (self)") {
		t.Errorf("reader lists peers: exit %d: %s%s", code, o, e)
	}
	code, _, e = runCLI(t, append([]string{"mesh", "shards", "drain", "a"}, reader...)...)
	if code != 1 || !strings.Contains(e, "forbidden") || !strings.Contains(e, "needs role operator") {
		t.Errorf("reader drains: exit %d: %s", code, e)
	}
	t.Setenv(envTLSCA, filepath.Join(dir, "ca", "ca.pem"))
	t.Setenv(envTLSCert, filepath.Join(certs, "rita.pem"))
	t.Setenv(envTLSKey, filepath.Join(certs, "rita-key.pem"))
	if code, o, e := runCLI(t, append([]string{"mesh", "peers", "get", "a"}, addr...)...); code != 0 || !strings.Contains(o, "a (self)") {
		t.Errorf("reader from the environment: exit %d: %s%s", code, o, e)
	}
	// A token: the CLI still needs the bundle to check the server, but no certificate.
	t.Setenv(envTLSCert, "")
	t.Setenv(envTLSKey, "")
	t.Setenv(envToken, "ci-secret")
	code, _, e = runCLI(t, append([]string{"mesh", "shards", "drain", "a", "--tls-ca", filepath.Join(dir, "ca", "ca.pem")}, addr...)...)
	if !strings.Contains(e, "shards_off") { // past RBAC: this node routes no shards
		t.Errorf("operator token drains: exit %d: %s", code, e)
	}
}

// A gateway with --tls-* runs its WAN pool on mutual TLS, so it starts; its
// --cluster-id must be its certificate's cluster.
func TestAgentTLSGateway(t *testing.T) {
	dir := t.TempDir()
	certs := issueAll(t, dir)
	if code, _, e := runCLI(t, "cert", "issue", "--ca", filepath.Join(dir, "ca"), "--name", "g1", "--role", "node",
		"--cluster", "east", "--out", certs); code != 0 {
		t.Fatalf("cert issue g1 --cluster east: %s", e)
	}
	gw := func(id string) []string {
		return append([]string{"--name", "g1", "--bind", "127.0.0.1:0", "--key", testKey, "--cluster-label", "east",
			"--voters", "g1", "--voter", "--data-dir", t.TempDir(), "--cluster-id", id, "--clusters", "east,west",
			"--gateway", "--wan-bind", "127.0.0.1:0"}, tlsArgs(dir, certs, "g1")...)
	}
	s, err := parseAgent(gw("east"), io.Discard)
	if err != nil || s.cfg.Federation == nil || s.cfg.Federation.Gateway == nil {
		t.Fatalf("gateway with --tls-* of its cluster: %v", err)
	}
	_, err = parseAgent(gw("west"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `of cluster "east"`) {
		t.Fatalf("gateway of west with a certificate of east: %v, want the certificate's cluster named", err)
	}
	t.Log(err)
}
