package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/control"
)

// scenarioConfig shapes a scenario run.
type scenarioConfig struct {
	Bin    string   // the kv binary; its "serve" subcommand runs an instance
	Env    []string // added to each instance's environment
	Dir    string   // work directory: key, store, data dirs, logs
	Shards int
	Phase  time.Duration // the least time each phase lasts
	Renew  time.Duration // the instances' shard renewal interval; 0: the mesh default
	// PKI, when set, is a directory as `omnirelay cert` writes it (ca.pem,
	// NAME.pem, NAME-key.pem): each instance serves with its node certificate.
	PKI   string
	Trace string // where to write the operations' traces (trace.go); "": nowhere
	Load  loadConfig
	Logf  func(format string, args ...any)
}

// ScenarioReport is what a run measured.
type ScenarioReport struct {
	Instances int           `json:"instances,omitempty"`
	Shards    int           `json:"shards,omitempty"`
	Workers   int           `json:"workers"`
	Rate      float64       `json:"rate"`
	Phases    []PhaseReport `json:"phases"`
	Verify    Verify        `json:"verify"`
	// Scenario only. DrainP50 and DrainP99 are the drain phase's latency
	// relative to the steady phase's (+0.10 is 10 % slower). DrainCycles is how
	// many drains the drain phase made (lifting each but the last again);
	// DrainSettledMs the longest time one took to settle.
	DrainP50       float64   `json:"drain_vs_steady_p50,omitempty"`
	DrainP99       float64   `json:"drain_vs_steady_p99,omitempty"`
	DrainCycles    int       `json:"drain_cycles,omitempty"`
	DrainSettledMs float64   `json:"drain_settled_max_ms,omitempty"`
	Handover       *Handover `json:"handover,omitempty"`
}

type proc struct {
	name string
	cmd  *exec.Cmd
	info started
	done chan struct{}
}

type cluster struct {
	cfg    scenarioConfig
	key    string
	voters []string
	mu     sync.Mutex
	procs  map[string]*proc
}

func (c *cluster) start(name string) (*proc, error) {
	var seeds []string
	c.mu.Lock()
	for _, p := range c.procs {
		seeds = append(seeds, p.info.Bind)
	}
	c.mu.Unlock()
	dir := filepath.Join(c.cfg.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	args := []string{"serve", "--name", name, "--store", filepath.Join(c.cfg.Dir, "store"), "--key-file", c.key,
		"--shards", strconv.Itoa(c.cfg.Shards), "--voters", strings.Join(c.voters, ","), "--data-dir", filepath.Join(dir, "data"),
		"--join", strings.Join(seeds, ","), "--debug"}
	if c.cfg.Renew > 0 {
		args = append(args, "--renew", c.cfg.Renew.String())
	}
	if p := c.cfg.PKI; p != "" {
		args = append(args, "--tls-ca", filepath.Join(p, "ca.pem"), "--tls-cert", filepath.Join(p, name+".pem"), "--tls-key", filepath.Join(p, name+"-key.pem"))
	}
	logf, err := os.Create(filepath.Join(dir, "instance.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.cfg.Bin, args...)
	cmd.Env = append(os.Environ(), c.cfg.Env...)
	cmd.Stderr = logf
	// An instance dies with the scenario, even one killed or timed out before it
	// could stop them (Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	first := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			first <- json.Unmarshal(sc.Bytes(), &p.info)
		} else {
			first <- fmt.Errorf("%s exited before it served (see %s)", name, logf.Name())
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	select {
	case err = <-first:
	case <-time.After(60 * time.Second):
		err = fmt.Errorf("%s did not start within 60 s (see %s)", name, logf.Name())
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		return nil, err
	}
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	c.cfg.Logf("started %s (pid %d) http %s control %s", name, p.info.PID, p.info.HTTP, p.info.Control)
	return p, nil
}

func (c *cluster) kill(name string) {
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// stopAll ends every instance: SIGTERM, then SIGKILL after 10 s.
func (c *cluster) stopAll() {
	c.mu.Lock()
	procs := c.procs
	c.procs = map[string]*proc{}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func (c *cluster) controls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, name := range sortedNames(c.procs) {
		out = append(out, c.procs[name].info.Control)
	}
	return out
}

func sortedNames(m map[string]*proc) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// leaderMap reads the shard map from the leader's control API (the leader's
// view is the one that grants).
func (c *cluster) leaderMap() (control.ShardMap, error) {
	var errs []error
	for _, ctl := range c.controls() {
		var m control.ShardMap
		if err := getJSON(ctl+"/control/v1/shards?limit=1000", &m); err != nil {
			errs = append(errs, err)
			continue
		}
		if m.Leader == "" || m.Leader == m.Node {
			if m.Leader != "" {
				return m, nil
			}
			continue
		}
		c.mu.Lock()
		lp := c.procs[m.Leader]
		c.mu.Unlock()
		if lp == nil {
			continue
		}
		var lm control.ShardMap
		if err := getJSON(lp.info.Control+"/control/v1/shards?limit=1000", &lm); err != nil {
			errs = append(errs, err)
			continue
		}
		if lm.Leader == lm.Node {
			return lm, nil
		}
	}
	return control.ShardMap{}, fmt.Errorf("no leader map: %w", errors.Join(errs...))
}

// waitStable waits until the leader's map has every shard steady on a running
// instance and ok accepts the owners (shards per owner).
func (c *cluster) waitStable(ctx context.Context, ok func(owners map[string]int) bool) (control.ShardMap, error) {
	var last error
	for {
		m, err := c.leaderMap()
		if err == nil {
			owners := map[string]int{}
			steady := len(m.Shards) == m.Count
			c.mu.Lock()
			for _, s := range m.Shards {
				if s.State != "steady" || c.procs[s.Owner] == nil {
					steady = false
				}
				owners[s.Owner]++
			}
			c.mu.Unlock()
			if steady && ok(owners) {
				return m, nil
			}
			err = fmt.Errorf("map %d.%d not settled: owners %v", m.Epoch, m.Version, owners)
		}
		last = err
		select {
		case <-ctx.Done():
			return control.ShardMap{}, fmt.Errorf("waiting for a settled map: %v", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// setDrain marks name drained (or lifts the mark) through the leader's control
// API, what `omnirelay mesh shards drain` does.
func setDrain(leaderControl, name string, on bool) error {
	body := strings.NewReader(fmt.Sprintf(`{"node": %q, "drain": %t}`, name, on))
	resp, err := http.Post(leaderControl+"/control/v1/shards/drain", "application/json", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("drain %s: %s: %s", name, resp.Status, b)
	}
	return nil
}

func getJSON(u string, v any) error {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v)
}

func writeKey(path string) error {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600)
}

// drainPause separates the drains of the drain phase: moves are in flight a
// good part of the phase, not back to back.
const drainPause = 500 * time.Millisecond

// scenarioRounds is how many steady and drain windows alternate.
const scenarioRounds = 4

// runScenario: three instances (the voters) under load; a fourth joins
// (reshard); steady state alternates with windows in which one non-leader voter
// is drained, repeatedly; the fourth is SIGKILLed while it owns shards. Each
// phase lasts at least cfg.Phase (steady and drain: in all) and until the map
// settled.
func runScenario(ctx context.Context, cfg scenarioConfig) (rep ScenarioReport, err error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	c := &cluster{cfg: cfg, key: filepath.Join(cfg.Dir, "mesh.key"), voters: []string{"kv1", "kv2", "kv3"}, procs: map[string]*proc{}}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return rep, err
	}
	if err := writeKey(c.key); err != nil {
		return rep, err
	}
	defer c.stopAll()
	for _, n := range c.voters {
		if _, err := c.start(n); err != nil {
			return rep, err
		}
	}
	wait, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.waitStable(wait, func(o map[string]int) bool { return len(o) == 3 }); err != nil {
		return rep, err
	}
	cfg.Load.Agents = c.controls()
	g, err := newLoadgen(wait, cfg.Load)
	if err != nil {
		return rep, err
	}
	defer g.close()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	g.setPhase("warmup")
	loaded := make(chan struct{})
	go func() { defer close(loaded); g.run(loadCtx) }()
	settle := func(name string, ok func(map[string]int) bool) (time.Duration, error) {
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if _, err := c.waitStable(wctx, ok); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return time.Since(start), nil
	}
	phase := func(name string, act func() error, settled func(map[string]int) bool) error {
		start := time.Now()
		g.setPhase(name)
		cfg.Logf("phase %s", name)
		if err := act(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		took, err := settle(name, settled)
		if err != nil {
			return err
		}
		cfg.Logf("phase %s settled after %v", name, took.Round(time.Millisecond))
		time.Sleep(time.Until(start.Add(cfg.Phase)))
		return nil
	}
	// The first seconds of load open connections and fill the client's table;
	// they are reported apart so that steady state is compared with steady state.
	time.Sleep(cfg.Phase / 4)
	m, err := c.leaderMap()
	if err != nil {
		return rep, err
	}
	leader := m.Leader
	drained := "kv2"
	if leader == drained {
		drained = "kv3"
	}
	err = phase("reshard", func() error { _, err := c.start("kv4"); return err },
		func(o map[string]int) bool { return len(o) == 4 && o["kv4"] > 0 })
	if err == nil {
		// Steady state and the drain are measured in alternating windows
		// (scenarioRounds of each, cfg.Phase in all per phase), so that what
		// the machine does meanwhile (other processes, fsync stalls of a
		// shared disk) falls on both alike. One drain settles in a few hundred
		// milliseconds, too few requests for a p99: a drain window drains the
		// instance and lifts the drain again, pausing drainPause after each,
		// until its time has passed; the last one ends drained.
		c.mu.Lock()
		ctl := c.procs[leader].info.Control
		c.mu.Unlock()
		window := cfg.Phase / scenarioRounds
		cfg.Logf("phases steady and drain (%s, repeated), %d windows of %v each", drained, scenarioRounds, window)
		for round := range scenarioRounds {
			g.setPhase("steady")
			time.Sleep(window)
			start := time.Now()
			g.setPhase("drain")
			for err == nil {
				var took time.Duration
				if err = setDrain(ctl, drained, true); err == nil {
					took, err = settle("drain", func(o map[string]int) bool { return o[drained] == 0 && len(o) == 3 })
				}
				if err != nil {
					break
				}
				rep.DrainCycles++
				rep.DrainSettledMs = max(rep.DrainSettledMs, ms(took))
				time.Sleep(drainPause)
				if round == scenarioRounds-1 && time.Since(start) >= window {
					break
				}
				if err = setDrain(ctl, drained, false); err == nil {
					_, err = settle("undrain", func(o map[string]int) bool { return o[drained] > 0 && len(o) == 4 })
				}
				time.Sleep(drainPause)
				if round < scenarioRounds-1 && time.Since(start) >= window {
					break // undrained: the next steady window has all four
				}
			}
			if err != nil {
				break
			}
		}
		cfg.Logf("phase drain: %d drains, each settled within %.0f ms", rep.DrainCycles, rep.DrainSettledMs)
	}
	if err == nil {
		err = phase("kill", func() error { c.kill("kv4"); return nil },
			func(o map[string]int) bool { return o["kv4"] == 0 && len(o) == 2 })
	}
	stopLoad()
	<-loaded
	if err != nil {
		return rep, err
	}
	rep.Instances, rep.Shards, rep.Workers, rep.Rate, rep.Phases = 4, cfg.Shards, g.cfg.Workers, g.cfg.Rate, g.report()
	rep.Verify, err = g.verify()
	if cfg.Trace != "" && err == nil {
		err = g.writeTraces(cfg.Trace)
	}
	h := handoverGaps(cfg.Dir, []string{"kv1", "kv2", "kv3", "kv4"})
	rep.Handover = &h
	var steady, dr PhaseReport
	for _, p := range rep.Phases {
		switch p.Name {
		case "steady":
			steady = p
		case "drain":
			dr = p
		}
	}
	if steady.P50 > 0 && steady.P99 > 0 {
		rep.DrainP50, rep.DrainP99 = dr.P50/steady.P50-1, dr.P99/steady.P99-1
	}
	return rep, err
}
