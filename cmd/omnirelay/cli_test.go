package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
)

func TestKeygenPrintsA32ByteKey(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"keygen"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(k) != 32 {
		t.Fatalf("keygen printed %q (%d bytes, %v)", out.String(), len(k), err)
	}
}

// testKey is the packet key of the agents the tests start: every agent needs one
// (or --insecure), and the tests cover the secure path.
var testKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// keyFile writes testKey to dir/key, readable only by its owner, and returns its path.
func keyFile(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "key")
	if err := os.WriteFile(path, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAgentFlagsOverrideConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	os.WriteFile(path, []byte(`{"name": "from-file", "bind": "127.0.0.1:7000", "join": ["10.0.0.1:7946"],
		"profile": "memberlist", "keys": ["`+key+`"], "log_format": "json",
		"swim": {"probe_interval": "2s", "probe_timeout": "1s"}}`), 0o600)
	s, err := parseAgent([]string{"--config", path, "--name", "from-flag", "--join", "10.0.0.2:7946,10.0.0.3:7946"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.Name != "from-flag" || c.Bind != "127.0.0.1:7000" || c.Profile != "memberlist" || len(c.Keys) != 1 ||
		strings.Join(c.Join, " ") != "10.0.0.2:7946 10.0.0.3:7946" || s.logFormat != "json" || c.Control != defaultControl {
		t.Fatalf("merged settings %+v / %+v", c, s)
	}
	sc := swim.MemberlistProfile("x", "y")
	c.Tune(&sc)
	if sc.ProbeInterval != 2*time.Second || sc.ProbeTimeout != time.Second || sc.GossipInterval != 200*time.Millisecond {
		t.Fatalf("swim overrides: %v %v %v", sc.ProbeInterval, sc.ProbeTimeout, sc.GossipInterval)
	}
}

func TestAgentRejectsBadSettingsNamingThem(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"name": "x", "probe_intervall": "1s"}`), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bind", "127.0.0.1:0"}, "Name"},
		{[]string{"--name", "x", "--bind", "127.0.0.1:0", "--key", "!!"}, "key 1"},
		{[]string{"--name", "x", "--bind", "127.0.0.1:0", "--key", "AAAA"}, "Keys[0]"},
		{[]string{"--name", "x", "--bind", "127.0.0.1:0", "--profile", "wan"}, "Profile"},
		{[]string{"--name", "x", "--bind", "127.0.0.1:0", "--log-format", "xml"}, "log format"},
		{[]string{"--config", bad}, "probe_intervall"},
	} {
		var errOut bytes.Buffer
		if code := run(append([]string{"agent"}, tc.args...), io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

func TestAgentReportsUnreachableSeeds(t *testing.T) {
	var errOut bytes.Buffer
	code := run([]string{"agent", "--name", "x", "--bind", "127.0.0.1:0", "--control", "off", "--key-file", keyFile(t, t.TempDir()),
		"--join", "127.0.0.1:1", "--join-timeout", "500ms", "--log-level", "error"}, io.Discard, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "no seed answered") || !strings.Contains(errOut.String(), "127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestMeshPeersAgainstARealNode(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	a, err := node.Start(t.Context(), node.Config{Name: "alpha", Bind: "127.0.0.1:0", Control: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := node.Start(t.Context(), node.Config{Name: "beta", Bind: "127.0.0.1:0", Join: []string{a.AdvertiseAddr()}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	addr := a.ControlAddr() // no scheme: the CLI adds http://
	poll(t, 5*time.Second, "alpha sees beta", func() bool { return len(a.Members()) == 2 })

	var out, errOut bytes.Buffer
	if code := run([]string{"mesh", "peers", "list", "--addr", addr}, &out, &errOut); code != 0 {
		t.Fatalf("list: %d %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "alpha (self)") ||
		!strings.Contains(lines[2], "beta") || !strings.Contains(lines[2], b.AdvertiseAddr()) {
		t.Fatalf("table:\n%s", out.String())
	}
	out.Reset()
	run([]string{"mesh", "peers", "list", "--addr", addr, "--status", "dead"}, &out, &errOut)
	if n := len(strings.Split(strings.TrimSpace(out.String()), "\n")); n != 1 {
		t.Fatalf("--status dead listed %d lines:\n%s", n, out.String())
	}
	out.Reset()
	if code := run([]string{"mesh", "peers", "get", "beta", "--addr", addr, "-o", "json"}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), `"name": "beta"`) {
		t.Fatalf("get: %d %s %s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"mesh", "peers", "get", "--addr", addr, "gamma"}, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "unknown_peer") {
		t.Fatalf("get unknown: %d %s", code, errOut.String())
	}
	if code := run([]string{"mesh", "peers", "list", "--addr", addr, "-o", "yaml"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("-o yaml: exit %d, want 2", code)
	}
	errOut.Reset()
	if code := run([]string{"mesh", "peers", "list", "--addr", "127.0.0.1:1"}, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "cannot reach") {
		t.Fatalf("unreachable: %d %s", code, errOut.String())
	}
}

// TestDemoNarratesCrashAndRestart runs the demo with three nodes and checks the
// story it tells, in order: formation, leader, shards, crash, failover or not,
// shards moved, restart.
func TestDemoNarratesCrashAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real-time demo")
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--nodes", "3"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exit %d: %s\n%s", code, errOut.String(), out.String())
	}
	s := out.String()
	last := 0
	for _, want := range []string{
		"Every node now sees all 3 nodes alive",
		"holds the lease at epoch",
		"SHARDS: all 64 placed",
		"CRASH: node-2",
		"suspects node-2",
		"All 2 survivors agree node-2 is dead",
		"node-2  127.0.0.1:",
		"SHARDS: all 64 served again",
		"RESTART: node-2",
		"All 3 nodes agree node-2 is back",
		"Summary",
	} {
		i := strings.Index(s[last:], want)
		if i < 0 {
			t.Fatalf("demo output lacks %q after offset %d:\n%s", want, last, s)
		}
		last += i
	}
}

func TestVersionPrintsBuildAndProtocol(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "omnirelay ") ||
		!strings.Contains(out.String(), "protocol 1-1") || !strings.Contains(out.String(), runtime.Version()) {
		t.Fatalf("exit %d, printed %q", code, out.String())
	}
	out.Reset()
	var b node.Build
	if code := run([]string{"version", "-o", "json"}, &out, io.Discard); code != 0 || json.Unmarshal(out.Bytes(), &b) != nil || b.ProtocolMax != 1 {
		t.Fatalf("exit %d, printed %q", code, out.String())
	}
}
