package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentKeySources: keys come from --key-file, $OMNIRELAY_KEY, --key or the
// config file's key_file, in that order of precedence; a key file others can read,
// an empty one and two sources of one level are refused by name; without any key
// the agent refuses to start and names the fix, unless --insecure is given.
func TestAgentKeySources(t *testing.T) {
	t.Setenv(keyEnv, "")
	dir := t.TempDir()
	kf := keyFile(t, dir)
	open := filepath.Join(dir, "open.key")
	os.WriteFile(open, []byte(testKey+"\n"), 0o644)
	os.Chmod(open, 0o644) // whatever the umask
	empty := filepath.Join(dir, "empty.key")
	os.WriteFile(empty, []byte("# no key yet\n\n"), 0o600)
	cfgFile := filepath.Join(dir, "c.json")
	os.WriteFile(cfgFile, []byte(`{"key_file": "`+kf+`"}`), 0o600)
	base := []string{"--name", "a", "--bind", "127.0.0.1:0", "--voters", "a,b,c", "--voter", "--data-dir", dir}
	for _, tc := range []struct {
		name     string
		args     []string
		env      string
		keys     int
		insecure bool
		warn     string
		err      string
	}{
		{name: "no key", err: "no packet key"},
		{name: "key file", args: []string{"--key-file", kf}, keys: 1},
		{name: "environment", env: testKey + "," + testKey, keys: 2},
		{name: "--key warns", args: []string{"--key", testKey}, keys: 1, warn: "/proc/PID/cmdline"},
		{name: "config key_file", args: []string{"--config", cfgFile}, keys: 1},
		{name: "flag over environment", args: []string{"--key-file", kf}, env: testKey + "," + testKey, keys: 1},
		{name: "insecure", args: []string{"--insecure"}, insecure: true},
		{name: "world-readable file", args: []string{"--key-file", open}, err: "accessible to other users (mode 0644): chmod 600"},
		{name: "empty file", args: []string{"--key-file", empty}, err: "holds no key"},
		{name: "missing file", args: []string{"--key-file", filepath.Join(dir, "nope")}, err: "no such file"},
		{name: "two flags", args: []string{"--key-file", kf, "--key", testKey}, err: "--key and --key-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(keyEnv, tc.env)
			s, err := parseAgent(append(append([]string{}, base...), tc.args...), io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.cfg.Keys) != tc.keys || s.cfg.Insecure != tc.insecure {
				t.Errorf("%d keys, insecure %v; want %d, %v", len(s.cfg.Keys), s.cfg.Insecure, tc.keys, tc.insecure)
			}
			if w := strings.Join(s.warnings, "\n"); tc.warn == "" && w != "" || !strings.Contains(w, tc.warn) {
				t.Errorf("warnings %q, want %q", w, tc.warn)
			}
		})
	}
	// The refusal names the fix, and the agent exits 2, membership-only or not.
	for _, args := range [][]string{base, {"--name", "x", "--bind", "127.0.0.1:0"}} {
		var errOut bytes.Buffer
		code := run(append([]string{"agent"}, args...), io.Discard, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "set --key-file FILE") || !strings.Contains(errOut.String(), "or pass --insecure") {
			t.Errorf("%v without a key: exit %d, stderr %q", args, code, errOut.String())
		}
	}
}

// TestKeygenWritesAPrivateFile: keygen -o writes a key file only its owner can read,
// which --key-file accepts, and never overwrites one.
func TestKeygenWritesAPrivateFile(t *testing.T) {
	t.Setenv(keyEnv, "")
	path := filepath.Join(t.TempDir(), "mesh.key")
	if code := run([]string{"keygen", "-o", path}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("keygen -o: exit %d", code)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v: want mode 0600", fi.Mode(), err)
	}
	s, err := parseAgent([]string{"--name", "a", "--bind", "127.0.0.1:0", "--key-file", path}, io.Discard)
	if err != nil || len(s.cfg.Keys) != 1 {
		t.Fatalf("--key-file of keygen's file: %d keys, %v", len(s.cfg.Keys), err)
	}
	var errOut bytes.Buffer
	if code := run([]string{"keygen", "-o", path}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "exists") {
		t.Fatalf("keygen -o over an existing file: exit %d, %q", code, errOut.String())
	}
}

// TestAgentsWithKeysFromEachSourceAndInsecure runs agents as processes: one with
// --key-file, one joining it with the key in $OMNIRELAY_KEY, one with --key (which
// warns); they form one cluster and export omnirelay_insecure 0. An agent started
// with --insecure warns and exports omnirelay_insecure 1.
func TestAgentsWithKeysFromEachSourceAndInsecure(t *testing.T) {
	dir, bin := buildBinary(t)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(fastConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, bin, dir, "a")
	b := startAgentArgs(t, bin, dir, "b", []string{keyEnv + "=" + testKey}, "--join", a.addrs.Advertise)
	c := startAgentArgs(t, bin, dir, "c", nil, "--key", testKey, "--join", a.addrs.Advertise)
	d := startAgentArgs(t, bin, dir, "d", nil, "--insecure")
	for _, p := range []*agentProc{a, b, c} {
		for _, name := range []string{"a", "b", "c"} {
			poll(t, 10*time.Second, p.addrs.Name+" sees "+name, func() bool { return statusOn(p, name) == "alive" })
		}
	}
	insecure := func(p *agentProc) string {
		resp, err := http.Get(p.addrs.Control + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(line, "omnirelay_insecure "); ok {
				return strings.TrimSpace(v)
			}
		}
		return "missing"
	}
	for _, tc := range []struct {
		p              *agentProc
		metric         string
		warnKey, plain bool
	}{{a, "0", false, false}, {b, "0", false, false}, {c, "0", true, false}, {d, "1", false, true}} {
		if got := insecure(tc.p); got != tc.metric {
			t.Errorf("%s: omnirelay_insecure %s, want %s", tc.p.addrs.Name, got, tc.metric)
		}
		log := tc.p.stderr.String()
		if got := strings.Contains(log, "/proc/PID/cmdline"); got != tc.warnKey {
			t.Errorf("%s: --key warning logged: %v, want %v", tc.p.addrs.Name, got, tc.warnKey)
		}
		if got := strings.Contains(log, "running without packet keys"); got != tc.plain {
			t.Errorf("%s: insecure warning logged: %v, want %v", tc.p.addrs.Name, got, tc.plain)
		}
	}
}
