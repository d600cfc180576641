package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/omnirelay/mesh/swim"
)

// The member-table cap is an agent setting (swim.max_members), default 10,000.
func TestAgentMaxMembersSetting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(`{"swim": {"max_members": 50000}}`), 0o600)
	key := keyFile(t, filepath.Dir(path))
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--key-file", key, "--name", "a", "--bind", "127.0.0.1:0"}, swim.DefaultMaxMembers},
		{[]string{"--key-file", key, "--config", path, "--name", "a", "--bind", "127.0.0.1:0"}, 50000},
	} {
		s, err := parseAgent(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		c := swim.LANProfile("a", "127.0.0.1:1")
		s.cfg.Tune(&c)
		if c.MaxMembers != tc.want {
			t.Errorf("%v: MaxMembers %d, want %d", tc.args, c.MaxMembers, tc.want)
		}
	}
}
