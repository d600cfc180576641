package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/control"
)

func TestParseShards(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want shardsCmd // zero timeout/addr are not compared
		err  string
	}{
		{args: []string{"list", "--owner", "n1", "--state", "draining,rebalancing", "-o", "json"},
			want: shardsCmd{sub: "list", owner: "n1", states: []string{"draining", "rebalancing"}, out: "json"}},
		{args: []string{"owner", "user-42", "--addr", "10.0.0.1:7070"},
			want: shardsCmd{sub: "owner", arg: "user-42", out: "table", addr: "http://10.0.0.1:7070"}},
		{args: []string{"drain", "--undo", "n3"}, want: shardsCmd{sub: "drain", arg: "n3", undo: true, out: "table"}},
		{args: []string{"rebalance"}, want: shardsCmd{sub: "rebalance", out: "table"}},
		{args: []string{"list", "--state", "parked"}, err: `--state "parked"`},
		{args: []string{"owner"}, err: "want exactly one KEY"},
		{args: []string{"drain", "a", "b"}, err: "want exactly one NODE"},
		{args: []string{"rebalance", "x"}, err: `unexpected argument "x"`},
		{args: []string{"list", "-o", "yaml"}, err: "want table or json"},
		{args: []string{"owner", "k", "--undo"}, err: "not defined"},
		{args: []string{"move"}, err: `unknown subcommand "move"`},
		{args: nil, err: "want a subcommand"},
	} {
		got, err := parseShards(tc.args, io.Discard)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if tc.want.addr == "" {
			got.addr = ""
		}
		got.timeout, got.hc = 0, nil
		if strings.Join(got.states, ",") != strings.Join(tc.want.states, ",") {
			t.Errorf("%v: states %v, want %v", tc.args, got.states, tc.want.states)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%v: %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestAgentShardsSetting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	os.WriteFile(path, []byte(`{"voters": ["b", "c", "d"], "shards": 256}`), 0o600)
	key := keyFile(t, dir)
	s, err := parseAgent([]string{"--config", path, "--name", "a", "--bind", "127.0.0.1:0", "--key-file", key}, io.Discard)
	if err != nil || s.cfg.Shards != 256 {
		t.Fatalf("from the file: shards %d, %v", s.cfg.Shards, err)
	}
	s, err = parseAgent([]string{"--config", path, "--name", "a", "--bind", "127.0.0.1:0", "--shards", "64", "--key-file", key}, io.Discard)
	if err != nil || s.cfg.Shards != 64 {
		t.Fatalf("flag over file: shards %d, %v", s.cfg.Shards, err)
	}
	if _, err := parseAgent([]string{"--name", "a", "--bind", "127.0.0.1:0", "--shards", "64"}, io.Discard); err == nil || !strings.Contains(err.Error(), "Shards") {
		t.Fatalf("shards without voters: %v", err)
	}
}

func TestPublicControlURL(t *testing.T) {
	for _, tc := range [][3]string{
		{"127.0.0.1:7070", "10.0.0.1:7946", "http://127.0.0.1:7070"},
		{"0.0.0.0:7070", "10.0.0.1:7946", "http://10.0.0.1:7070"},
		{"[::]:7070", "[fd00::1]:7946", "http://[fd00::1]:7070"},
		{"", "10.0.0.1:7946", ""},
	} {
		if got, want := publicControlURL(tc[0], tc[1], true), strings.Replace(tc[2], "http:", "https:", 1); got != want {
			t.Errorf("publicControlURL(%q, %q, tls) = %q, want %q", tc[0], tc[1], got, want)
		}
		if got := publicControlURL(tc[0], tc[1], false); got != tc[2] {
			t.Errorf("publicControlURL(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

// TestShardsDrainFollowsTheLeader: a non-leader's 409 names the leader's control
// URL; the CLI retries there once.
func TestShardsDrainFollowsTheLeader(t *testing.T) {
	var got []control.DrainRequest
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req control.DrainRequest
		json.NewDecoder(r.Body).Decode(&req)
		got = append(got, req)
		w.Write([]byte(`{}`))
	}))
	defer leader.Close()
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(control.NotLeaderReply{Error: control.ErrorBody{Code: "not_leader", Message: "no"},
			Leader: "n0", LeaderControl: leader.URL})
	}))
	defer follower.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"mesh", "shards", "drain", "n3", "--addr", follower.URL}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if len(got) != 1 || got[0] != (control.DrainRequest{Node: "n3", Drain: true}) || !strings.Contains(errb.String(), "asking n0") {
		t.Fatalf("leader got %v; stderr %q", got, errb.String())
	}
}

func TestShardsOwnerPrintsOwnerAndLeader(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/control/v1/shards/lookup" || r.URL.Query().Get("key") != "user 42" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(control.ShardLookup{Key: "user 42", Shard: 12, Owner: "node-b", State: "steady", Leader: "node-a", Epoch: 7, Version: 3})
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"mesh", "shards", "owner", "user 42", "--addr", srv.URL}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"SHARD   12", "OWNER   node-b (steady)", "LEADER  node-a", "epoch 7 version 3"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}
