package main

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
)

// TestKeyringRotationThroughTheCLI: three loopback nodes probing every 250 ms
// (lan) rotate their packet key with mesh keyring install, use and remove, each
// asking every member through its published control URL. Every node answers ok at
// every step, ends with the new key alone, and no probe fails and no packet fails
// to open during the rotation.
func TestKeyringRotationThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	oldKey := keyFile(t, dir)
	newKey := filepath.Join(dir, "new.key")
	if code, _, e := runCLI(t, "keygen", "-o", newKey); code != 0 {
		t.Fatal(e)
	}
	k1, _ := base64.StdEncoding.DecodeString(testKey)
	var nodes []*node.Node
	for i := range 3 {
		cfg := node.Config{Name: fmt.Sprintf("k%d", i), Bind: "127.0.0.1:0", Control: "127.0.0.1:0",
			Keys: [][]byte{k1}, Logger: slog.New(slog.DiscardHandler)}
		if i > 0 {
			cfg.Join = []string{nodes[0].Addr()}
		}
		n, err := node.Start(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if err := n.SetMeta(node.ControlMetaKey, "http://"+n.ControlAddr()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	addr := "http://" + nodes[0].ControlAddr()
	poll(t, 10*time.Second, "every node sees three members with control URLs", func() bool {
		for _, n := range nodes {
			for _, m := range n.Members() {
				if n.Meta(m.Name)[node.ControlMetaKey] == "" {
					return false
				}
			}
			if len(n.Members()) != 3 {
				return false
			}
		}
		return true
	})
	failed := func() (probes uint64, decrypt int) {
		for _, n := range nodes {
			probes += n.Stats().ProbesFailed
			rec := httptest.NewRecorder()
			n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if !strings.Contains(rec.Body.String(), "\nomnirelay_decrypt_failures_total 0\n") {
				decrypt++
			}
		}
		return probes, decrypt
	}
	probesBefore, _ := failed()
	fp := func(path string) string {
		ks, _ := readKeyFile(path)
		b, _ := base64.StdEncoding.DecodeString(ks[0])
		return control.KeyFingerprint(b)
	}
	for _, step := range [][]string{
		{"install", newKey}, {"use", newKey}, {"remove", oldKey},
	} {
		code, o, e := runCLI(t, "mesh", "keyring", step[0], "--key-file", step[1], "--addr", addr)
		if code != 0 || strings.Count(o, " ok ") != 3 {
			t.Fatalf("keyring %s: exit %d:\n%s%s", step[0], code, o, e)
		}
		time.Sleep(time.Second) // four probe rounds with the keyring of this step
	}
	code, o, e := runCLI(t, "mesh", "keyring", "list", "--addr", addr)
	if code != 0 || strings.Count(o, fp(newKey)) != 6 || strings.Contains(o, fp(oldKey)) {
		t.Fatalf("keyring list after the rotation: exit %d:\n%s%s", code, o, e)
	}
	if p, d := failed(); p != probesBefore || d != 0 {
		t.Errorf("during the rotation %d probes failed; %d nodes had packets that did not open", p-probesBefore, d)
	}
	// The primary cannot be removed; the node says so and the CLI exits 1.
	code, o, _ = runCLI(t, "mesh", "keyring", "remove", "--key-file", newKey, "--addr", addr)
	if code != 1 || strings.Count(o, "primary_key") != 3 {
		t.Errorf("removing the primary: exit %d:\n%s", code, o)
	}
}
