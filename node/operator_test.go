package node

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/swim"
)

// call makes one control API request to n and returns the status and error code
// (empty on success), decoding a 200 body into out when given.
func call(t *testing.T, n *Node, method, path, body string, out any) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	if rec.Code == 200 {
		if out != nil {
			if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
				t.Fatalf("%s %s: %v in %s", method, path, err, rec.Body)
			}
		}
		return 200, ""
	}
	var er control.ErrorReply
	json.Unmarshal(rec.Body.Bytes(), &er)
	return rec.Code, er.Error.Code
}

// TestOperatorRoutes drives the operator commands of the control API on a
// three-voter cluster with shards: metadata, status, force-leave, step-down,
// voter changes, and leave.
func TestOperatorRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		nodes := make([]*Node, 4)
		for i := range nodes {
			cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
			cfg.Shards = 8
			nodes[i] = startMem(t, cfg)
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		var holder string
		waitFor(t, 10*time.Second, "a leader", func() bool { holder, _ = agreed(nodes); return holder != "" })
		n0, n3 := nodes[0], nodes[3]

		if code, _ := call(t, n3, "PUT", "/control/v1/meta/zone", `{"value":"eu-1"}`, nil); code != 200 {
			t.Fatalf("meta set: %d", code)
		}
		waitFor(t, 5*time.Second, "zone gossiped", func() bool { return n0.Meta("n3")["zone"] == "eu-1" })
		if code, ec := call(t, n3, "PUT", "/control/v1/meta/zone", `{"value":"`+strings.Repeat("x", 2000)+`"}`, nil); code != 400 || ec != control.CodeBadRequest {
			t.Errorf("oversized value: %d %s", code, ec)
		}
		if code, ec := call(t, n3, "PUT", "/control/v1/meta/zone", `{}`, nil); code != 400 || ec != control.CodeBadRequest {
			t.Errorf("no value: %d %s", code, ec)
		}
		if code, _ := call(t, n3, "DELETE", "/control/v1/meta/zone", "", nil); code != 200 {
			t.Errorf("meta delete: %d", code)
		}
		if code, ec := call(t, n3, "DELETE", "/control/v1/meta/zone", "", nil); code != 404 || ec != control.CodeUnknownKey {
			t.Errorf("second delete: %d %s", code, ec)
		}

		var st control.NodeStatus
		waitFor(t, 10*time.Second, "shards owned", func() bool {
			call(t, n0, "GET", "/control/v1/status", "", &st)
			return st.Owned > 0
		})
		if st.Name != "n0" || !st.IsVoter || st.Shards != 8 || st.Members.Alive != 3 || st.Leader != holder || len(st.Warnings) != 0 || st.Protocol != "1-1" {
			t.Errorf("status %+v", st)
		}

		if code, ec := call(t, n0, "POST", "/control/v1/peers/n3/force-leave", "", nil); code != 409 || ec != control.CodeMemberLive {
			t.Errorf("force-leave of a live member: %d %s", code, ec)
		}
		if code, ec := call(t, n0, "POST", "/control/v1/peers/nobody/force-leave", "", nil); code != 404 || ec != control.CodeUnknownPeer {
			t.Errorf("force-leave of an unknown member: %d %s", code, ec)
		}
		n3.Close()
		waitFor(t, 30*time.Second, "n3 dead", func() bool { s, _ := statusOf(n0, "n3"); return s == swim.StatusDead })
		if code, _ := call(t, n0, "POST", "/control/v1/peers/n3/force-leave", `{"prune": true}`, nil); code != 200 {
			t.Fatalf("force-leave: %d", code)
		}
		var pl control.PeerList
		call(t, n0, "GET", "/control/v1/peers", "", &pl)
		if slices.ContainsFunc(pl.Peers, func(p control.Peer) bool { return p.Name == "n3" }) {
			t.Errorf("n3 still listed after a pruned force-leave: %+v", pl.Peers)
		}
		if s, _ := statusOf(nodes[1], "n3"); s != swim.StatusDead {
			t.Errorf("n1 holds n3 %v: the prune is n0's alone", s)
		}

		var leader, other *Node
		for _, n := range nodes[:3] {
			if n.Name() == holder {
				leader = n
			} else {
				other = n
			}
		}
		if code, ec := call(t, other, "POST", "/control/v1/leaders/step-down", "", nil); code != 409 || ec != control.CodeNotLeader {
			t.Errorf("step-down on a follower: %d %s", code, ec)
		}
		if code, ec := call(t, leader, "POST", "/control/v1/voters", `{"add":["n3"]}`, nil); code != 400 || ec != control.CodeBadVoters {
			t.Errorf("a change to 4 voters: %d %s", code, ec)
		}
		if code, ec := call(t, leader, "POST", "/control/v1/voters", `{"remove":["zz"]}`, nil); code != 400 || ec != control.CodeBadVoters {
			t.Errorf("removing a non-voter: %d %s", code, ec)
		}
		if code, _ := call(t, leader, "POST", "/control/v1/leaders/step-down", "", nil); code != 200 {
			t.Fatalf("step-down: %d", code)
		}
		waitFor(t, 10*time.Second, "a new leader", func() bool { h, _ := agreed(nodes[:3]); return h != "" && h != holder })

		if code, _ := call(t, other, "POST", "/control/v1/leave", "", nil); code != 200 {
			t.Fatalf("leave: %d", code)
		}
		select {
		case <-other.Left():
		default:
			t.Error("Left() not closed after a leave through the API")
		}
	})
}

// TestEvenVoterCountsAndUnwritableDataDir: 2 or 4 voters are refused naming the
// odd counts; a voter whose data dir cannot be written fails at start.
func TestEvenVoterCountsAndUnwritableDataDir(t *testing.T) {
	for _, vs := range [][]string{{"a", "b"}, {"a", "b", "c", "d"}} {
		c := Config{Name: "a", Bind: "127.0.0.1:0", Voters: vs, Voter: true, DataDir: t.TempDir(), Keys: [][]byte{testKey}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "odd number, 3 or 5") {
			t.Errorf("%d voters: %v", len(vs), err)
		}
	}
	if os.Geteuid() == 0 {
		t.Skip("root writes to read-only directories")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		cfg := leaderConfig(t, NewMemNetwork(), 0, dir, nil)
		_, err := Start(t.Context(), cfg)
		if err == nil || !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Start with a read-only data dir: %v", err)
		}
	})
}

// TestSettingMismatchNamed: a node started with another shard count and voter set
// than the cluster's is named on both sides (status warnings, ERROR log, gauge).
func TestSettingMismatchNamed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		logs := &syncBuffer{}
		var nodes []*Node
		for i := range 4 {
			cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
			cfg.Shards = 8
			if i == 0 {
				cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			}
			if i == 3 {
				cfg.Shards, cfg.Voters = 16, []string{"n0", "n1", "n5"}
			}
			nodes = append(nodes, startMem(t, cfg))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		var st0, st3 control.NodeStatus
		waitFor(t, 5*time.Second, "both sides warned", func() bool {
			call(t, nodes[0], "GET", "/control/v1/status", "", &st0)
			call(t, nodes[3], "GET", "/control/v1/status", "", &st3)
			return len(st0.Warnings) == 2 && len(st3.Warnings) == 6
		})
		joined := strings.Join(st0.Warnings, "\n")
		for _, want := range []string{"peer n3 runs with shards 16, this node with 8", "peer n3 runs with voters n0,n1,n5, this node with n0,n1,n2"} {
			if !strings.Contains(joined, want) {
				t.Errorf("n0's warnings lack %q:\n%s", want, joined)
			}
		}
		if !strings.Contains(logs.String(), "level=ERROR msg=\"misconfiguration: peer n3 runs with shards 16") {
			t.Errorf("no ERROR line naming n3:\n%s", logs.String())
		}
		if got := metricLine(t, nodes[0], `omnirelay_config_mismatches{setting="shards"}`); got != `omnirelay_config_mismatches{setting="shards"} 1` {
			t.Errorf("gauge %q", got)
		}
		waitFor(t, 5*time.Second, "n1 counts the voter mismatch", func() bool {
			return metricLine(t, nodes[1], `omnirelay_config_mismatches{setting="voters"}`) == `omnirelay_config_mismatches{setting="voters"} 1`
		})
	})
}

// TestDuplicateNameRefused: a second node started with a live member's name at
// another address fails to start with ErrNameInUse naming both addresses, and the
// cluster keeps the incumbent at its address. Two running nodes of one name that
// meet (a node joins through both) name each other: status warning, ERROR log,
// gauge.
func TestDuplicateNameRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		a := startMem(t, memConfig(t, mn, "a", "10.0.0.1:7946"))
		defer a.Close()
		b := startMem(t, memConfig(t, mn, "b", "10.0.0.2:7946", "10.0.0.1:7946"))
		defer b.Close()
		waitFor(t, 5*time.Second, "a sees b", func() bool { s, _ := statusOf(a, "b"); return s == swim.StatusAlive })

		_, err := Start(t.Context(), memConfig(t, mn, "b", "10.0.0.3:7946", "10.0.0.1:7946"))
		if !errors.Is(err, ErrNameInUse) || !strings.Contains(err.Error(), "10.0.0.2:7946") || !strings.Contains(err.Error(), "10.0.0.3:7946") {
			t.Fatalf("second b: %v, want ErrNameInUse naming both addresses", err)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		for _, m := range a.Members() {
			if m.Name == "b" && (m.Addr != "10.0.0.2:7946" || m.Status != swim.StatusAlive || m.Incarnation > 1) {
				t.Errorf("a holds b at %s %v incarnation %d after the newcomer was refused", m.Addr, m.Status, m.Incarnation)
			}
		}

		logs := &syncBuffer{}
		c1cfg := memConfig(t, mn, "c", "10.0.0.4:7946")
		c1cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c1 := startMem(t, c1cfg)
		defer c1.Close()
		c2 := startMem(t, memConfig(t, mn, "c", "10.0.0.5:7946"))
		defer c2.Close()
		d := startMem(t, memConfig(t, mn, "d", "10.0.0.6:7946", "10.0.0.4:7946", "10.0.0.5:7946"))
		defer d.Close()
		for _, c := range []*Node{c1, c2} {
			var st control.NodeStatus
			// They meet by d's gossip and push-pulls (PushPullInterval).
			waitFor(t, time.Minute, c.AdvertiseAddr()+" warns", func() bool {
				call(t, c, "GET", "/control/v1/status", "", &st)
				return len(st.Warnings) == 1
			})
			other := map[*Node]*Node{c1: c2, c2: c1}[c].AdvertiseAddr()
			if !strings.Contains(st.Warnings[0], other) || !strings.Contains(st.Warnings[0], `name "c"`) {
				t.Errorf("%s's warning: %q", c.AdvertiseAddr(), st.Warnings[0])
			}
		}
		if !strings.Contains(logs.String(), `level=ERROR msg="misconfiguration: another node at 10.0.0.5:7946 claims this node's name`) {
			t.Errorf("no error line on c1:\n%s", logs.String())
		}
		if got := metricLine(t, c1, `omnirelay_config_mismatches{setting="name"}`); got != `omnirelay_config_mismatches{setting="name"} 1` {
			t.Errorf("gauge %q", got)
		}
	})
}

// TestShardFormationLogsOneLinePerChange: a 256-shard formation on three nodes
// writes its per-shard transitions at DEBUG only, and a few INFO summary lines.
func TestShardFormationLogsOneLinePerChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		logs := &syncBuffer{}
		var nodes []*Node
		for i := range 3 {
			cfg := leaderConfig(t, mn, i, t.TempDir(), nil)
			cfg.Shards = 256
			cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			nodes = append(nodes, startMem(t, cfg))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		waitFor(t, 20*time.Second, "every shard owned", func() bool {
			total := 0
			for _, n := range nodes {
				total += len(n.OwnedShards())
			}
			return total == 256
		})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		info, debug, summaries := 0, 0, 0
		for line := range strings.Lines(logs.String()) {
			isShard := strings.Contains(line, "msg=\"shard ") || strings.Contains(line, "msg=\"shards changed")
			switch {
			case !isShard:
			case strings.Contains(line, "level=DEBUG"):
				debug++
			case strings.Contains(line, "msg=\"shards changed"):
				summaries++
			default:
				info++
				t.Logf("per-shard line above DEBUG: %s", line)
			}
		}
		t.Logf("%d per-shard DEBUG lines, %d summary lines", debug, summaries)
		if info != 0 || debug < 256 || summaries == 0 || summaries > 60 {
			t.Errorf("%d per-shard lines above DEBUG, %d DEBUG, %d summaries; want 0, >= 256, 1..60", info, debug, summaries)
		}
	})
}
