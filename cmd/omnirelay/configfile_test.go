package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/node"
)

// TestConfigErrorsNameLineColumnAndKey: a bad config file is refused with the
// position and the file's own key, never a Go type or field name, and a second
// object after the first is refused rather than ignored.
func TestConfigErrorsNameLineColumnAndKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ file, want string }{
		{"{\"name\": \"a\",\n  \"swim\": {\"probe_interval\": \"fast\"}}", `line 2, column 12: "swim.probe_interval": want a duration string like "250ms", got "fast"`},
		{"{\"name\": \"a\",\n  \"mtu\": \"big\"}", `line 2, column 3: "mtu": want an integer, got string`},
		{`{"name": "a", "swim": {"probe_intervl": "1s"}}`, `line 1, column 24: unknown key "swim.probe_intervl"`},
		{`{"name": "a"} {"name": "b"}`, "line 1, column 16: data after the config object"},
		{"{\"name\": \"a\",\n \"join\": [\"x\" \"y\"]}", `line 2, column 16: after "join": invalid character`},
		{`{"name": "a",`, "the file ends before its JSON object does"},
	} {
		path := filepath.Join(dir, "c.json")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadAgentFile(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "agentFile") {
			t.Errorf("%q: %v\nwant %s", tc.file, err, tc.want)
		}
	}
}

// TestJoinFailureSaysTimedOutOrInterrupted: an agent whose seeds never answer
// stops at --join-timeout saying so; a signal while joining says interrupted.
func TestJoinFailureSaysTimedOutOrInterrupted(t *testing.T) {
	var errb strings.Builder
	code := run([]string{"agent", "--name", "a", "--bind", "127.0.0.1:0", "--control", "off", "--insecure",
		"--join", "127.0.0.1:9", "--join-timeout", "300ms"}, io.Discard, &errb)
	if code != 1 || !strings.Contains(errb.String(), "timed out after 300ms, --join-timeout") || strings.Contains(errb.String(), "context deadline") {
		t.Fatalf("exit %d, stderr:\n%s", code, errb.String())
	}
	err := fmt.Errorf("%w (%v): seed x: refused", node.ErrNoSeedAnswered, context.Canceled)
	if got := joinFailure(err, context.Canceled, context.Canceled, time.Second); !strings.Contains(got, "(interrupted while joining)") || strings.Contains(got, "context") {
		t.Fatalf("interrupted: %s", got)
	}
}
