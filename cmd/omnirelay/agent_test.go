package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
)

// fastConfig is an agent config file with short timers, so the multi-process test
// runs in seconds.
const fastConfig = `{
  "bind": "127.0.0.1:0",
  "control": "127.0.0.1:0",
  "log_format": "json",
  "join_timeout": "10s",
  "leave_timeout": "3s",
  "swim": {"probe_interval": "100ms", "probe_timeout": "60ms", "gossip_interval": "20ms",
           "suspicion_mult": 2, "pushpull_interval": "1s"}
}`

// agentProc is one running `omnirelay agent`.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	addrs  AddrFile
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs agent name with dir/config.json and testKey, joining join.
func startAgent(t *testing.T, bin, dir, name string, join ...string) *agentProc {
	t.Helper()
	extra := []string{"--key-file", keyFile(t, dir)}
	if len(join) > 0 {
		extra = append(extra, "--join", strings.Join(join, ","))
	}
	return startAgentArgs(t, bin, dir, name, nil, extra...)
}

// startAgentArgs runs agent name with dir/config.json, the extra flags and the
// environment variables env (KEY=VALUE) over ours, without an inherited key.
func startAgentArgs(t *testing.T, bin, dir, name string, env []string, extra ...string) *agentProc {
	t.Helper()
	addrFile := filepath.Join(dir, name+".json")
	args := append([]string{"agent", "--config", filepath.Join(dir, "config.json"), "--name", name, "--addr-file", addrFile}, extra...)
	p := &agentProc{cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(append(os.Environ(), keyEnv+"="), env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", name, p.stderr)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(addrFile)
		if err == nil && json.Unmarshal(b, &p.addrs) == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never wrote %s; stderr:\n%s", name, addrFile, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildBinary builds omnirelay into a new temporary directory and returns both;
// it skips the test under -short, as the tests that use it start processes.
func buildBinary(t *testing.T) (dir, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary and starts processes")
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "omnirelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir, bin
}

// stop sends SIGTERM and waits for a clean exit.
func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup's Wait
		if err != nil {
			t.Errorf("%s exited with %v", p.addrs.Name, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit within 10s of SIGTERM", p.addrs.Name)
	}
}

func poll(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func statusOn(p *agentProc, name string) string {
	c := &control.Client{Base: p.addrs.Control}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := c.GetPeer(ctx, name)
	if err != nil {
		return "error: " + err.Error()
	}
	return r.Peer.Status
}

// TestAgentsInSeparateProcesses builds the binary, runs three agents on loopback,
// reads their control APIs and /metrics, and stops them with SIGTERM: each leaves
// gracefully and the others see it as "left".
func TestAgentsInSeparateProcesses(t *testing.T) {
	dir, bin := buildBinary(t)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(fastConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, bin, dir, "a")
	b := startAgent(t, bin, dir, "b", a.addrs.Advertise)
	c := startAgent(t, bin, dir, "c", a.addrs.Advertise)
	agents := []*agentProc{a, b, c}
	for _, p := range agents {
		for _, name := range []string{"a", "b", "c"} {
			poll(t, 10*time.Second, p.addrs.Name+" sees "+name, func() bool { return statusOn(p, name) == "alive" })
		}
	}

	// The CLI reads the same API.
	var out, errOut bytes.Buffer
	if code := run([]string{"mesh", "peers", "list", "--addr", b.addrs.Control, "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("mesh peers list: %d %s", code, errOut.String())
	}
	var peers control.PeerList
	if err := json.Unmarshal(out.Bytes(), &peers); err != nil || len(peers.Peers) != 3 {
		t.Fatalf("mesh peers list -o json: %v %s", err, out.String())
	}

	resp, err := http.Get(a.addrs.Control + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`omnirelay_members{state="alive"} 3`, "omnirelay_probes_sent_total", `omnirelay_packets_total{direction="in",type="ack"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics of a lacks %q", want)
		}
	}

	c.stop(t)
	if !strings.Contains(c.stderr.String(), "left the cluster gracefully") {
		t.Errorf("c did not log a graceful leave:\n%s", c.stderr)
	}
	for _, p := range []*agentProc{a, b} {
		poll(t, 5*time.Second, p.addrs.Name+" sees c left", func() bool { return statusOn(p, "c") == "left" })
	}
	b.stop(t)
	a.stop(t)
	// Every log line is JSON (--log-format json from the config file), and
	// membership events carry their correlation id.
	sawLeft := false
	for line := range strings.SplitSeq(strings.TrimSpace(a.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if msg, _ := rec["msg"].(string); msg == "member left" && rec["member"] == "c" {
			sawLeft = true
			inc := uint64(rec["incarnation"].(float64))
			if rec["event_id"] != node.CorrelationID("c", inc, swim.EventLeft) {
				t.Errorf("event_id %v is not CorrelationID(c, %d, left)", rec["event_id"], inc)
			}
		}
	}
	if !sawLeft {
		t.Error("a never logged \"member left\" for c")
	}
}

func TestAgentControlLimitsSetting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(`{"control_max_conns": 64, "control_max_watchers": 8}`), 0o600)
	key := keyFile(t, filepath.Dir(path))
	s, err := parseAgent([]string{"--key-file", key, "--config", path, "--name", "a", "--bind", "127.0.0.1:0"}, io.Discard)
	if err != nil || s.cfg.ControlMaxConns != 64 || s.cfg.ControlMaxWatchers != 8 {
		t.Fatalf("from the file: %d, %d, %v", s.cfg.ControlMaxConns, s.cfg.ControlMaxWatchers, err)
	}
	s, err = parseAgent([]string{"--key-file", key, "--config", path, "--name", "a", "--bind", "127.0.0.1:0", "--control-max-watchers", "16"}, io.Discard)
	if err != nil || s.cfg.ControlMaxWatchers != 16 {
		t.Fatalf("flag over file: %d, %v", s.cfg.ControlMaxWatchers, err)
	}
	_, err = parseAgent([]string{"--key-file", key, "--name", "a", "--bind", "127.0.0.1:0", "--control-max-conns", "8", "--control-max-watchers", "8"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "ControlMaxWatchers") {
		t.Fatalf("as many watchers as connections: %v", err)
	}
}
