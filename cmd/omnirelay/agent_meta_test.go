package main

import (
	"bytes"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentMetaAndRoles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	os.WriteFile(path, []byte(`{"name": "a", "bind": "127.0.0.1:0", "meta": {"zone": "eu-1", "tier": "gold"},
		"roles": ["db"]}`), 0o600)
	for _, tc := range []struct {
		args []string
		want map[string]string
	}{
		{nil, map[string]string{"zone": "eu-1", "tier": "gold", "roles": "db"}},
		{[]string{"--meta", "zone=us-2", "--meta", "note=a=b,c", "--role", "api,web", "--role", "edge"},
			map[string]string{"zone": "us-2", "tier": "gold", "note": "a=b,c", "roles": "api,web,edge"}},
	} {
		s, err := parseAgent(append([]string{"--config", path, "--key-file", keyFile(t, dir)}, tc.args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(s.cfg.Meta, tc.want) {
			t.Errorf("%v: meta %v, want %v", tc.args, s.cfg.Meta, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--meta", "novalue"}, "KEY=VALUE"},
		{[]string{"--meta", "=v"}, "KEY=VALUE"},
		{[]string{"--meta", strings.Repeat("k", 200) + "=v"}, "Meta["},
	} {
		var errOut bytes.Buffer
		args := append([]string{"agent", "--name", "x", "--bind", "127.0.0.1:0"}, tc.args...)
		if code := run(args, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}
