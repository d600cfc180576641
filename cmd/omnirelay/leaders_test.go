package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
)

func TestAgentLeadershipSettings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	os.WriteFile(path, []byte(`{"voters": ["a", "b", "c"], "data_dir": "`+dir+`", "audit_log": "/from/file"}`), 0o600)
	s, err := parseAgent([]string{"--config", path, "--name", "a", "--bind", "127.0.0.1:0", "--voter", "--audit-log", "/from/flag",
		"--key-file", keyFile(t, dir)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !s.cfg.Voter || strings.Join(s.cfg.Voters, ",") != "a,b,c" || s.cfg.DataDir != dir || s.auditLog != "/from/flag" {
		t.Fatalf("merged: voter %v voters %v data %q audit %q", s.cfg.Voter, s.cfg.Voters, s.cfg.DataDir, s.auditLog)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "a", "--voter", "--data-dir", dir}, "Voters is empty"},
		{[]string{"--name", "d", "--voter", "--voters", "a,b,c", "--data-dir", dir}, `"d" is not in Voters`},
		{[]string{"--name", "a", "--voter", "--voters", "a,b,c"}, "DataDir is required"},
		{[]string{"--name", "a", "--voters", "a,b,c"}, "Voter is not set"},
	} {
		_, err := parseAgent(append([]string{"--bind", "127.0.0.1:0"}, tc.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestMeshLeadersStatus(t *testing.T) {
	until := time.Now().Add(2 * time.Second)
	body := control.Leaders{Version: "e.2", Leader: &control.Lease{Holder: "b", Epoch: 7, ValidUntil: until},
		Voters: []string{"a", "b", "c"}, Local: control.LocalLeadership{Name: "a", IsVoter: true, EpochSeen: 7}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/control/v1/leaders" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(body)
	}))
	defer srv.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"mesh", "leaders", "status", "--addr", srv.URL}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"LEADER", "b", "EPOCH", "7", "a,b,c", "a (voter, epoch seen 7)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"mesh", "leaders", "status", "--addr", srv.URL, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got control.Leaders
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Leader == nil || got.Leader.Holder != "b" || got.Leader.Epoch != 7 {
		t.Fatalf("json output %q: %v", out.String(), err)
	}

	// An agent without leadership answers 404 leadership_off: exit 1 with its message.
	off := httptest.NewServer(control.NewHandler(nil, control.Options{}))
	defer off.Close()
	errb.Reset()
	if code := run([]string{"mesh", "leaders", "status", "--addr", off.URL}, io.Discard, &errb); code != 1 ||
		!strings.Contains(errb.String(), "leadership_off") {
		t.Fatalf("leadership off: exit %d, stderr %q", code, errb.String())
	}
}
