package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
)

// TestSIGHUPReloadsAndMeshLeaveStops: SIGHUP applies a new log level and
// metadata, names restart-only settings, refuses a broken file and never stops
// the agent; `mesh leave` makes it leave and exit 0.
func TestSIGHUPReloadsAndMeshLeaveStops(t *testing.T) {
	dir, bin := buildBinary(t)
	cfgPath := filepath.Join(dir, "config.json")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(fastConfig)
	a := startAgent(t, bin, dir, "a")
	meta := func() map[string]string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := (&control.Client{Base: a.addrs.Control}).GetPeer(ctx, "a")
		if err != nil {
			return nil
		}
		return r.Peer.Meta
	}
	hup := func() {
		if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	write(strings.Replace(fastConfig, `"log_format": "json",`, `"log_format": "json", "log_level": "debug", "meta": {"zone": "eu-1"}, "roles": ["api"], "mtu": 1200,`, 1))
	hup()
	poll(t, 5*time.Second, "zone set by reload", func() bool { return meta()["zone"] == "eu-1" && meta()["roles"] == "api" })
	poll(t, 5*time.Second, "reload logged", func() bool { return strings.Contains(a.stderr.String(), `"msg":"configuration reloaded"`) })
	for _, want := range []string{`"settings":"mtu"`, `"to":"DEBUG"`} {
		if !strings.Contains(a.stderr.String(), want) {
			t.Errorf("reload log lacks %s:\n%s", want, a.stderr)
		}
	}
	write(`{"bind": `)
	hup()
	poll(t, 5*time.Second, "broken file refused", func() bool { return strings.Contains(a.stderr.String(), "reload refused") })
	write(fastConfig)
	hup()
	poll(t, 5*time.Second, "zone deleted by reload", func() bool { m := meta(); _, ok := m["zone"]; return m != nil && !ok })
	select {
	case err := <-a.done:
		t.Fatalf("the agent exited after SIGHUP: %v", err)
	default:
	}

	if code := run([]string{"mesh", "leave", "--addr", a.addrs.Control}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("mesh leave: exit %d", code)
	}
	select {
	case err := <-a.done:
		a.done <- err
		if err != nil {
			t.Fatalf("agent after mesh leave: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent still running 10 s after mesh leave")
	}
}
