package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/node"
)

// TestAgentJoinToken: an agent with --tls-ca-key is a signing member; an admin
// makes a token with mesh token create; a fresh agent with --join-token and no key
// file gets a certificate written to its --tls-cert/--tls-key and the packet key,
// and joins; the same token for another agent is refused, naming why; a new
// token given to a member without the CA key (--join b) is relayed to a.
func TestAgentJoinToken(t *testing.T) {
	dir := t.TempDir()
	certs := issueAll(t, dir, "a:node", "root:admin")
	keyPath := filepath.Join(dir, "mesh.key")
	if code, _, e := runCLI(t, "keygen", "-o", keyPath); code != 0 {
		t.Fatal(e)
	}
	log := slog.New(slog.DiscardHandler)
	start := func(args ...string) (*node.Node, error) {
		s, err := parseAgent(args, io.Discard)
		if err != nil {
			return nil, err
		}
		s.cfg.Logger = log
		release, err := s.ident.prepare(t.Context(), &s, log)
		t.Cleanup(release)
		if err != nil {
			return nil, err
		}
		return node.Start(t.Context(), s.cfg)
	}
	a, err := start(append([]string{"--name", "a", "--bind", "127.0.0.1:0", "--control", "127.0.0.1:0", "--key-file", keyPath,
		"--tls-ca-key", filepath.Join(dir, "ca", "ca-key.pem"), "--data-dir", filepath.Join(dir, "a-data")}, tlsArgs(dir, certs, "a")...)...)
	if err != nil {
		t.Fatalf("signing member: %v", err)
	}
	defer a.Close()
	code, tok, e := runCLI(t, append([]string{"mesh", "token", "create", "--ttl", "10m", "--addr", a.ControlAddr()}, tlsArgs(dir, certs, "root")...)...)
	if code != 0 || !strings.Contains(e, "held by a, redeemed through any member") {
		t.Fatalf("mesh token create: exit %d: %s", code, e)
	}
	tok = strings.TrimSpace(tok)
	if code, _, e := runCLI(t, append([]string{"mesh", "token", "create", "--addr", a.ControlAddr()}, tlsArgs(dir, certs, "root")...)...); code != 2 || !strings.Contains(e, "--ttl is required") {
		t.Errorf("token create without --ttl: exit %d: %s", code, e)
	}

	joiner := func(name string) []string {
		return []string{"--name", name, "--bind", "127.0.0.1:0", "--control", "off", "--join", a.Addr(), "--join-token", tok,
			"--tls-ca", filepath.Join(dir, "ca", "ca.pem"), "--tls-cert", filepath.Join(dir, name+".pem"), "--tls-key", filepath.Join(dir, name+"-key.pem")}
	}
	b, err := start(joiner("b")...)
	if err != nil {
		t.Fatalf("a fresh agent with a token did not join: %v", err)
	}
	defer b.Close()
	if len(b.Members()) != 2 {
		t.Fatalf("b sees %d members", len(b.Members()))
	}
	if fi, err := os.Stat(filepath.Join(dir, "b-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("b's key file: %v %v", fi, err)
	}
	if _, err := start(joiner("c")...); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the same token again: %v", err)
	}

	// A new token, presented to b (no CA key): b relays it to a.
	code, tok, e = runCLI(t, append([]string{"mesh", "token", "create", "--ttl", "10m", "--addr", a.ControlAddr()}, tlsArgs(dir, certs, "root")...)...)
	if code != 0 {
		t.Fatalf("mesh token create: exit %d: %s", code, e)
	}
	tok = strings.TrimSpace(tok)
	args := joiner("c")
	args[7] = b.Addr() // --join
	c, err := start(args...)
	if err != nil {
		t.Fatalf("an agent with a token joining through a member without the CA key: %v", err)
	}
	defer c.Close()
	if len(c.Members()) != 3 {
		t.Fatalf("c sees %d members", len(c.Members()))
	}
}
