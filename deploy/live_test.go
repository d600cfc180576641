package deploy_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// agentConfig gives the agents short timers so probes, acks and push-pulls fill the
// counters within seconds. All three agents are voters (each gets its own
// --data-dir), so the leadership metrics are live too, and they route 64 shards
// so the shard metrics are. The cluster's packet key is in key_file, as an
// agent needs one (or --insecure).
const agentConfig = `{
  "key_file": %q,
  "bind": "127.0.0.1:0",
  "control": "127.0.0.1:0",
  "log_format": "json",
  "voters": ["node-a", "node-b", "node-c"],
  "voter": true,
  "shards": 64,
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

// agentNames are the agents startCluster runs, all voters.
var agentNames = []string{"node-a", "node-b", "node-c"}

// cluster is three agents on loopback, each restartable on the same addresses and
// data directory.
type cluster struct {
	bin, cfg, dir string
	procs         map[string]*proc
	advertise     map[string]string // gossip host:port
	controls      map[string]string // control API host:port (what Prometheus scrapes)
}

// startCluster builds omnirelay, runs three agents on loopback and returns them.
func startCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	c := &cluster{bin: filepath.Join(dir, "omnirelay"), cfg: filepath.Join(dir, "agent.json"), dir: dir,
		procs: map[string]*proc{}, advertise: map[string]string{}, controls: map[string]string{}}
	build := exec.Command("go", "build", "-o", c.bin, "./cmd/omnirelay")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(dir, "mesh.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.cfg, fmt.Appendf(nil, agentConfig, keyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range agentNames {
		c.start(t, name)
	}
	return c
}

// targets are the control addresses, in agentNames order.
func (c *cluster) targets() []string {
	var out []string
	for _, name := range agentNames {
		out = append(out, c.controls[name])
	}
	return out
}

// start runs agent name, joining the live agents; a restart reuses the agent's
// gossip and control addresses (so Prometheus keeps scraping the same target) and
// its data directory.
func (c *cluster) start(t *testing.T, name string) {
	t.Helper()
	addrFile := filepath.Join(c.dir, name+".addr.json")
	os.Remove(addrFile)
	args := []string{"agent", "--config", c.cfg, "--name", name, "--addr-file", addrFile,
		"--data-dir", filepath.Join(c.dir, name+".data"), "--audit-log", filepath.Join(c.dir, name+".audit.jsonl")}
	if a, ok := c.advertise[name]; ok {
		args = append(args, "--bind", a, "--control", c.controls[name])
	}
	var seeds []string
	for n, p := range c.procs {
		if n != name && !p.exited() {
			seeds = append(seeds, c.advertise[n])
		}
	}
	if len(seeds) > 0 {
		args = append(args, "--join", strings.Join(seeds, ","))
	}
	p := start(t, name, exec.Command(c.bin, args...))
	var addrs struct{ Advertise, Control string }
	waitFor(t, 15*time.Second, name+" writes "+addrFile, func() (bool, string) {
		if p.exited() {
			t.Fatalf("%s exited:\n%s", name, p.out)
		}
		b, err := os.ReadFile(addrFile)
		return err == nil && json.Unmarshal(b, &addrs) == nil, fmt.Sprint(err)
	})
	c.procs[name] = p
	c.advertise[name] = addrs.Advertise
	c.controls[name] = strings.TrimPrefix(addrs.Control, "http://")
}

// kill crashes agent name (SIGKILL: no graceful leave, as a machine failure).
func (c *cluster) kill(t *testing.T, name string) {
	t.Helper()
	p := c.procs[name]
	p.cmd.Process.Kill()
	<-p.done
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
	targets := startCluster(t, dir).targets()
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

// leadersView is the part of GET /control/v1/leaders the live test compares.
type leadersView struct {
	Leader *struct {
		Holder string `json:"holder"`
		Epoch  uint64 `json:"epoch"`
	} `json:"leader"`
	Voters []string `json:"voters"`
}

// agreedLeader returns the holder and epoch every live agent's leaders route
// reports, or "" while they differ or none stands.
func (c *cluster) agreedLeader() (string, uint64, string) {
	var holder string
	var epoch uint64
	first := true
	for _, name := range agentNames {
		if c.procs[name].exited() {
			continue
		}
		resp, err := http.Get("http://" + c.controls[name] + "/control/v1/leaders")
		if err != nil {
			return "", 0, err.Error()
		}
		var v leadersView
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || v.Leader == nil {
			return "", 0, fmt.Sprintf("%s: no leader (%v)", name, err)
		}
		if !first && (v.Leader.Holder != holder || v.Leader.Epoch != epoch) {
			return "", 0, fmt.Sprintf("%s sees %s@%d, others %s@%d", name, v.Leader.Holder, v.Leader.Epoch, holder, epoch)
		}
		holder, epoch, first = v.Leader.Holder, v.Leader.Epoch, false
	}
	return holder, epoch, ""
}

// TestLeaderFailoverMovesPanelAndFiresFlapAlert is the leadership half of the live
// check: three voter agents elect a leader that every agent's /control/v1/leaders
// names; killing the leader moves it (the "Current leader" panel's query names
// another node, the lease epoch grows); repeated kills make OmniRelayLeaderFlapping
// fire.
//
// The alert is evaluated as shipped: real rules.yml, real threshold (> 3 changes)
// and the real 15-minute window. The window needs no shortening: increase() over
// 15m of a series that is younger than that counts every change since its first
// sample, so four failovers inside the test's ~40 s of data cross the threshold
// exactly as four in a quarter hour would in production.
func TestLeaderFailoverMovesPanelAndFiresFlapAlert(t *testing.T) {
	promBin := prometheusBinary(t)
	dir := t.TempDir()
	c := startCluster(t, dir)
	api := startPrometheus(t, promBin, dir, c.targets())
	nameOf := map[string]string{} // instance (control address) -> agent name
	for _, name := range agentNames {
		nameOf[c.controls[name]] = name
	}
	// panelLeader is the "Current leader" panel's query: the instances with
	// omnirelay_is_leader == 1, as agent names.
	panelLeader := func() []string {
		var d struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		}
		if err := api.get("/api/v1/query?query="+url.QueryEscape(`omnirelay_is_leader == 1`), &d); err != nil {
			return []string{err.Error()}
		}
		var out []string
		for _, r := range d.Result {
			out = append(out, nameOf[r.Metric["instance"]])
		}
		slices.Sort(out)
		return out
	}
	maxEpoch := func() float64 {
		var d struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		}
		if api.get("/api/v1/query?query="+url.QueryEscape(`max(omnirelay_lease_epoch)`), &d) != nil || len(d.Result) == 0 {
			return 0
		}
		v, _ := strconv.ParseFloat(fmt.Sprint(d.Result[0].Value[1]), 64)
		return v
	}

	var holder string
	var epoch uint64
	waitFor(t, 15*time.Second, "three agents agree on one leader", func() (bool, string) {
		var why string
		holder, epoch, why = c.agreedLeader()
		return holder != "", why
	})
	waitFor(t, 10*time.Second, "the leader panel names "+holder, func() (bool, string) {
		got := panelLeader()
		return slices.Equal(got, []string{holder}), fmt.Sprint(got)
	})

	flapping := func() (bool, string) {
		var d struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := api.get("/api/v1/alerts", &d); err != nil {
			return false, err.Error()
		}
		for _, a := range d.Alerts {
			if a.Labels["alertname"] == "OmniRelayLeaderFlapping" && a.State == "firing" {
				return true, "firing"
			}
		}
		n, err := api.query(`omnirelay:leader_changes:increase15m`)
		return false, fmt.Sprint("not firing; recorded series ", n, err)
	}
	for kill := 1; ; kill++ {
		if ok, _ := flapping(); ok {
			t.Logf("OmniRelayLeaderFlapping fires after %d failovers", kill-1)
			break
		}
		if kill > 6 {
			_, why := flapping()
			t.Fatalf("OmniRelayLeaderFlapping not firing after %d failovers: %s", kill-1, why)
		}
		epochBefore := maxEpoch()
		killedAt := time.Now()
		c.kill(t, holder)
		old := holder
		waitFor(t, 10*time.Second, "survivors agree on a new leader after killing "+old, func() (bool, string) {
			var why string
			holder, epoch, why = c.agreedLeader()
			return holder != "" && holder != old, why
		})
		t.Logf("failover %d: %s -> %s@%d in %v", kill, old, holder, epoch, time.Since(killedAt).Round(10*time.Millisecond))
		waitFor(t, 10*time.Second, "the leader panel moves to "+holder, func() (bool, string) {
			got := panelLeader()
			return slices.Equal(got, []string{holder}), fmt.Sprint(got)
		})
		if e := maxEpoch(); e <= epochBefore {
			t.Errorf("max(omnirelay_lease_epoch) = %v after failover %d, want above %v", e, kill, epochBefore)
		}
		// Bring the killed voter back on its data dir, so the next kill leaves a
		// quorum (2 of 3).
		c.start(t, old)
		waitFor(t, 10*time.Second, old+" back and scraped", func() (bool, string) {
			n, err := api.query(fmt.Sprintf(`up{instance=%q} == 1 and omnirelay_lease_epoch{instance=%q} > 0`, c.controls[old], c.controls[old]))
			return err == nil && n == 1, fmt.Sprint(n, err)
		})
	}

	// Every agent's audit log recorded the changes it saw, as JSON lines.
	b, err := os.ReadFile(filepath.Join(dir, agentNames[0]+".audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	for line := range strings.Lines(string(b)) {
		var r struct{ Event, ID string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if (r.Event == "leader_changed" || r.Event == "became_leader") && r.ID != "" {
			changes++
		}
	}
	if changes == 0 {
		t.Errorf("%s's audit log has no leadership record:\n%s", agentNames[0], b)
	}
}

// shardsView is the part of GET /control/v1/shards the live test compares.
type shardsView struct {
	Epoch, Version uint64
	Count          int
	Leader         string
	Shards         []struct {
		ID    uint32 `json:"id"`
		Owner string `json:"owner"`
		State string `json:"state"`
	} `json:"shards"`
}

// shardOwners returns how many shards each owner has on agent name's map, or a
// reason while the map is not settled (no map, unowned or moving shards).
func (c *cluster) shardOwners(name string) (map[string]int, string) {
	resp, err := http.Get("http://" + c.controls[name] + "/control/v1/shards")
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	var v shardsView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
		return nil, fmt.Sprintf("%s: status %d (%v)", name, resp.StatusCode, err)
	}
	if v.Count != 64 || len(v.Shards) != 64 || v.Leader == "" {
		return nil, fmt.Sprintf("%s: %d of %d shards, leader %q", name, len(v.Shards), v.Count, v.Leader)
	}
	owners := map[string]int{}
	for _, s := range v.Shards {
		if s.Owner == "" || s.State != "steady" {
			return nil, fmt.Sprintf("%s: shard %d %s on %q", name, s.ID, s.State, s.Owner)
		}
		owners[s.Owner]++
	}
	return owners, ""
}

// TestShardsLiveDrainThroughCLI: three agents routing 64 shards settle on a map
// every agent serves alike; `omnirelay mesh shards drain` asked of a non-leader
// follows the 409 to the leader's published control URL, the drained agent ends
// up owning nothing, and --undo gives it shards back.
func TestShardsLiveDrainThroughCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent and starts three processes")
	}
	c := startCluster(t, t.TempDir())
	var holder string
	waitFor(t, 20*time.Second, "one leader, every agent's map settled with every node owning shards", func() (bool, string) {
		h, _, why := c.agreedLeader()
		if h == "" {
			return false, why
		}
		holder = h
		for _, name := range agentNames {
			owners, why := c.shardOwners(name)
			if owners == nil {
				return false, why
			}
			if len(owners) != len(agentNames) {
				return false, fmt.Sprintf("%s: owners %v", name, owners)
			}
		}
		return true, ""
	})
	var asked, victim string // a non-leader to ask, and another one to drain
	for _, name := range agentNames {
		if name == holder {
			continue
		}
		if asked == "" {
			asked = name
		} else {
			victim = name
		}
	}
	cli := func(args ...string) string {
		cmd := exec.Command(c.bin, append([]string{"mesh", "shards"}, append(args, "--addr", c.controls[asked])...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("omnirelay mesh shards %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := cli("drain", victim); !strings.Contains(out, "asking "+holder) {
		t.Fatalf("drain via a non-leader did not follow to %s:\n%s", holder, out)
	}
	waitFor(t, 30*time.Second, victim+" owns no shard on any agent's map", func() (bool, string) {
		for _, name := range agentNames {
			owners, why := c.shardOwners(name)
			if owners == nil {
				return false, why
			}
			if owners[victim] > 0 {
				return false, fmt.Sprintf("%s: %s still owns %d", name, victim, owners[victim])
			}
		}
		return true, ""
	})
	if out := cli("owner", "user-42"); !strings.Contains(out, "LEADER  "+holder) || strings.Contains(out, "OWNER   "+victim) {
		t.Fatalf("shards owner after the drain:\n%s", out)
	}
	cli("drain", "--undo", victim)
	waitFor(t, 30*time.Second, victim+" owns shards again", func() (bool, string) {
		owners, why := c.shardOwners(holder)
		return owners != nil && owners[victim] > 0, why
	})
}
