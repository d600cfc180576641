package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// agentConfig gives the agents short timers so probes, acks and push-pulls fill the
// counters within seconds.
const agentConfig = `{
  "bind": "127.0.0.1:0",
  "control": "127.0.0.1:0",
  "log_format": "json",
  "join_timeout": "10s",
  "leave_timeout": "2s",
  "swim": {"probe_interval": "100ms", "probe_timeout": "60ms", "gossip_interval": "20ms",
           "suspicion_mult": 2, "pushpull_interval": "1s"}
}`

// prometheusConfig scrapes the agents every second and evaluates the rules every
// second, so the test needs seconds of data, not minutes.
const prometheusConfig = `global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: omnirelay
    static_configs:
      - targets: [%s]
`

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a child process whose output is kept for failure reports and which is
// killed when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

func start(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond every 100ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, limit, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// prometheusBinary returns the Prometheus server binary, or skips: .ci/run installs
// Debian's prometheus package, which provides /usr/bin/prometheus.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the agent and starts four processes")
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("no prometheus binary on PATH (apt-get install prometheus; .ci/run does this)")
	}
	return bin
}

// startCluster builds omnirelay, runs three agents on loopback and returns their
// control API addresses (host:port), which serve /metrics.
func startCluster(t *testing.T, dir string) []string {
	t.Helper()
	bin := filepath.Join(dir, "omnirelay")
	build := exec.Command("go", "build", "-o", bin, "./cmd/omnirelay")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfg, []byte(agentConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	var controls []string
	seed := ""
	for _, name := range []string{"node-a", "node-b", "node-c"} {
		addrFile := filepath.Join(dir, name+".addr.json")
		args := []string{"agent", "--config", cfg, "--name", name, "--addr-file", addrFile}
		if seed != "" {
			args = append(args, "--join", seed)
		}
		p := start(t, name, exec.Command(bin, args...))
		var addrs struct{ Advertise, Control string }
		waitFor(t, 15*time.Second, name+" writes "+addrFile, func() (bool, string) {
			if p.exited() {
				t.Fatalf("%s exited:\n%s", name, p.out)
			}
			b, err := os.ReadFile(addrFile)
			return err == nil && json.Unmarshal(b, &addrs) == nil, fmt.Sprint(err)
		})
		if seed == "" {
			seed = addrs.Advertise
		}
		controls = append(controls, strings.TrimPrefix(addrs.Control, "http://"))
	}
	return controls
}

// startPrometheus runs a Prometheus server that loads rules.yml and scrapes targets.
// The port is picked free and then handed over, so a rare clash is retried.
func startPrometheus(t *testing.T, bin, dir string, targets []string) promAPI {
	t.Helper()
	rules, err := filepath.Abs(filepath.Join(root, rulesPath))
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = fmt.Sprintf("%q", tg)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, prometheusConfig, rules, strings.Join(quoted, ", ")), 0o600); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		addr := freePort(t)
		p := start(t, "prometheus", exec.Command(bin,
			"--config.file="+cfg,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("tsdb%d", attempt)),
			"--web.listen-address="+addr,
			"--log.level=warn"))
		api := promAPI{base: "http://" + addr}
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !p.exited(); time.Sleep(100 * time.Millisecond) {
			var flags map[string]string
			if api.get("/api/v1/status/flags", &flags) == nil && flags["web.listen-address"] == addr {
				return api
			}
		}
		if !p.exited() || attempt == 3 || !strings.Contains(p.out.String(), "address already in use") {
			t.Fatalf("prometheus did not come up on %s:\n%s", addr, p.out)
		}
	}
}

type ruleInfo struct {
	Name        string            `json:"name"`
	Query       string            `json:"query"`
	Type        string            `json:"type"`
	Health      string            `json:"health"`
	LastError   string            `json:"lastError"`
	Annotations map[string]string `json:"annotations"`
}

func loadedRules(t *testing.T, api promAPI) []ruleInfo {
	t.Helper()
	var d struct {
		Groups []struct {
			Rules []ruleInfo `json:"rules"`
		} `json:"groups"`
	}
	if err := api.get("/api/v1/rules", &d); err != nil {
		t.Fatalf("/api/v1/rules: %v", err)
	}
	var rs []ruleInfo
	for _, g := range d.Groups {
		rs = append(rs, g.Rules...)
	}
	return rs
}

// TestAssetsAgainstLiveCluster runs three agents and a real Prometheus that scrapes
// them and loads rules.yml, then checks every rule and every dashboard query against
// the live data:
//   - every rule evaluates without error, and every alert has a summary, a
//     description and a runbook_url;
//   - every dashboard query and rule expression runs without error;
//   - every signal (an expression without its top-level threshold comparison, see
//     signals) returns series, unless it references a pending metric;
//   - every metric named anywhere is either exposed by the agents or pending, and
//     no pending metric is exposed (the list cannot go stale) or unused.
func TestAssetsAgainstLiveCluster(t *testing.T) {
	promBin := prometheusBinary(t)
	dir := t.TempDir()
	targets := startCluster(t, dir)
	api := startPrometheus(t, promBin, dir, targets)

	// Enough scrapes for rate() over the substituted 1m windows to have several
	// samples of every agent, and every rule evaluated at least once.
	waitFor(t, 30*time.Second, "three agents scraped five times each", func() (bool, string) {
		n, err := api.query(`min(count_over_time(omnirelay_probes_sent_total[1m])) >= 5 and count(up == 1) == 3`)
		return err == nil && n == 1, fmt.Sprint(n, err)
	})
	var rules []ruleInfo
	waitFor(t, 10*time.Second, "every rule evaluated", func() (bool, string) {
		rules = loadedRules(t, api)
		for _, r := range rules {
			if r.Health == "unknown" || r.Health == "" {
				return false, r.Name + " not evaluated yet"
			}
		}
		return len(rules) > 0, "no rules loaded"
	})

	recorded := map[string]string{} // recording rule name → expression
	var qs []query
	for _, r := range rules {
		if r.Health != "ok" {
			t.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
		}
		switch r.Type {
		case "recording":
			recorded[r.Name] = r.Query
		case "alerting":
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[k] == "" {
					t.Errorf("alert %s has no %s annotation", r.Name, k)
				}
			}
			if u := r.Annotations["runbook_url"]; !strings.HasPrefix(u, runbookPrefix+"docs/runbooks/") {
				t.Errorf("alert %s: runbook_url %q does not point into docs/runbooks/", r.Name, u)
			}
		}
		qs = append(qs, query{"rule " + r.Name, r.Query})
	}
	qs = append(qs, dashboardQueries(t, loadDashboard(t))...)

	var exposed []string
	if err := api.get(`/api/v1/label/__name__/values`, &exposed); err != nil {
		t.Fatal(err)
	}
	// baseMetrics expands recording rule names to the metrics they are built from.
	var baseMetrics func(expr string) []string
	baseMetrics = func(expr string) []string {
		var out []string
		for _, name := range metricNames(expr) {
			if e, ok := recorded[name]; ok {
				out = append(out, baseMetrics(e)...)
			} else {
				out = append(out, name)
			}
		}
		return out
	}

	used := map[string]bool{}
	for _, q := range qs {
		if _, err := api.query(q.expr); err != nil {
			t.Errorf("%s: %v\n\t%s", q.where, err, q.expr)
			continue
		}
		for _, name := range baseMetrics(q.expr) {
			if base, ok := pendingName(name); ok {
				used[base] = true
			} else if _, lazy := lazyMetrics[name]; !lazy && !slices.Contains(exposed, name) {
				t.Errorf("%s uses %s, which the agents do not expose and which is not pending", q.where, name)
			}
		}
		for _, s := range signals(q.expr) {
			var pending []string
			for _, name := range baseMetrics(s) {
				if base, ok := pendingName(name); ok {
					pending = append(pending, base)
				} else if _, lazy := lazyMetrics[name]; lazy {
					pending = append(pending, name+" (lazy)")
				}
			}
			n, err := api.query(s)
			switch {
			case err != nil:
				t.Errorf("%s: signal %s: %v", q.where, s, err)
			case n == 0 && len(pending) == 0:
				t.Errorf("%s: %s returns no series", q.where, s)
			case n == 0:
				t.Logf("%s: no series yet (pending %s)", q.where, strings.Join(slices.Compact(pending), ", "))
			}
		}
	}
	for name, why := range pendingMetrics {
		for _, s := range append([]string{""}, histogramSuffixes...) {
			if slices.Contains(exposed, name+s) {
				t.Errorf("%s is exposed now: remove it from pendingMetrics (it was waiting for %s) and from docs/observability.md's planned metrics", name, why)
			}
		}
		if !used[name] {
			t.Errorf("pending metric %s is used by no rule or panel: drop it from pendingMetrics", name)
		}
	}
}

// TestLeaderFailoverMovesPanelAndFiresFlapAlert is the leadership half of the live
// check: kill the leader agent, see the "Current leader" panel's query name another
// node and the lease epoch grow; repeat, and see OmniRelayLeaderFlapping pending.
// It waits for node to export leadership metrics.
func TestLeaderFailoverMovesPanelAndFiresFlapAlert(t *testing.T) {
	if _, pending := pendingMetrics["omnirelay_is_leader"]; pending {
		t.Skip("leadership not yet in node: omnirelay_is_leader and omnirelay_leader_changes_total are pending")
	}
	t.Fatal("TODO: leadership metrics are exposed now; write this test (kill the leader, query `omnirelay_is_leader == 1` and omnirelay:leader_changes:increase15m)")
}
