package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/node"
)

// TestKeyringRotationThroughTheCLI rotates the packet key of a two-node cluster
// with mesh keyring install, use and remove --cluster; the nodes keep talking.
func TestKeyringRotationThroughTheCLI(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	old := []byte("0123456789abcdef0123456789abcdef")
	start := func(name string, join ...string) *node.Node {
		n, err := node.Start(t.Context(), node.Config{Name: name, Bind: "127.0.0.1:0", Control: "127.0.0.1:0", Logger: quiet,
			Keys: [][]byte{old}, Join: join})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		n.SetMeta("control", "http://"+n.ControlAddr())
		return n
	}
	a := start("a")
	b := start("b", a.AdvertiseAddr())
	poll(t, 5*time.Second, "a knows b's control URL", func() bool { return a.Meta("b")["control"] != "" })
	mesh := func(want int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(append([]string{"mesh", "keyring"}, append(args, "--addr", a.ControlAddr())...), &out, &errOut); code != want {
			t.Fatalf("mesh keyring %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	dir := t.TempDir()
	newKey := []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345")
	path := filepath.Join(dir, "new.key")
	os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(newKey)+"\n"), 0o600)
	oldFP, newFP := fingerprintOf(old), fingerprintOf(newKey)

	if out := mesh(0, "list", "--cluster"); strings.Count(out, oldFP) != 2 || !strings.Contains(out, "true") {
		t.Fatalf("list:\n%s", out)
	}
	if out := mesh(0, "install", "--key-file", path, "--cluster"); strings.Count(out, newFP) != 2 {
		t.Fatalf("install:\n%s", out)
	}
	mesh(0, "use", newFP, "--cluster")
	if out := mesh(1, "remove", newFP); !strings.Contains(out, "key_primary") {
		t.Fatalf("removing the primary:\n%s", out)
	}
	if out := mesh(0, "remove", oldFP, "--cluster"); strings.Contains(out, oldFP) {
		t.Fatalf("remove:\n%s", out)
	}
	for _, n := range []*node.Node{a, b} {
		if ks := n.Keyring().Keys(); len(ks) != 1 || !bytes.Equal(ks[0], newKey) {
			t.Fatalf("%s's keyring after the rotation: %d keys", n.Name(), len(ks))
		}
	}
	if err := a.SetMeta("after", "rotation"); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "b hears a under the new key", func() bool { return b.Meta("a")["after"] == "rotation" })
}

// fingerprintOf is the documented fingerprint: 8 bytes of SHA-256, hex.
func fingerprintOf(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}
