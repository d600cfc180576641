package chaos

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	sigKill = syscall.SIGKILL
	sigCont = syscall.SIGCONT
	sigStop = syscall.SIGSTOP
	sigTerm = syscall.SIGTERM

	gossipPort  = "7946"
	controlPort = "7070"

	// The kv instance beside each agent (ClusterConfig.KV).
	kvGossipPort  = "7947"
	kvControlPort = "7072"
	kvHTTPPort    = "7071"
)

// BuildAgent builds ./cmd/omnirelay of the module the go tool finds from the
// current directory into dir and returns the binary's path.
func BuildAgent(ctx context.Context, dir string) (string, error) {
	return build(ctx, filepath.Join(dir, "omnirelay"), "./cmd/omnirelay")
}

// BuildPreviewAgent builds the agent with the omnirelay_preview tag: protocol
// versions 1..2 and the ack-health feature, the "new build" of the
// rolling-upgrade scenario (docs/upgrading.md).
func BuildPreviewAgent(ctx context.Context, dir string) (string, error) {
	return build(ctx, filepath.Join(dir, "omnirelay-preview"), "./cmd/omnirelay", "-tags", "omnirelay_preview")
}

// BuildKV builds the sample service and load generator, ./examples/kv.
func BuildKV(ctx context.Context, dir string) (string, error) {
	return build(ctx, filepath.Join(dir, "kv"), "./examples/kv")
}

func build(ctx context.Context, bin, pkg string, flags ...string) (string, error) {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" || strings.TrimSpace(string(mod)) == os.DevNull {
		return "", fmt.Errorf("chaos: building %s: not inside the module (go env GOMOD: %q, %v); run from the repository or pass the binary", pkg, strings.TrimSpace(string(mod)), err)
	}
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"build"}, flags...), "-o", bin, pkg)...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("chaos: go build %s %s: %v: %s", strings.Join(flags, " "), pkg, err, out)
	}
	return bin, nil
}

// ClusterConfig is the shape of the cluster a scenario runs.
type ClusterConfig struct {
	Agents int // agents n1..nN
	Voters int // n1..nVoters are the leader-election voters (3 or 5)
	Shards int // shard count on every agent
	Bin    string
	// KV, when set, is the kv binary (examples/kv): beside each agent, in its
	// namespace, runs kv instance kvI, a member of a second cluster (the
	// service's, kv1..kvVoters its voters), started, stopped, paused and
	// resumed with the agent, so every fault on agent I hits the service on
	// the same machine.
	KV string
}

// Cluster is the agents of one run and their processes.
type Cluster struct {
	cfg  ClusterConfig
	lab  *Lab
	key  string
	pki  string // the CA and every certificate (omnirelay cert), secure as in production
	mu   sync.Mutex
	proc map[int]*agentProc // running (or stopped) agents by index
	bins map[int]string     // agent binaries other than cfg.Bin (SetBin)
	log  func(format string, args ...any)
}

type agentProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	kv     *exec.Cmd // the kv instance beside it, nil without ClusterConfig.KV
	kvDone chan struct{}
	paused bool
}

// NewCluster makes the packet key (the agent's own keygen) and data directories;
// Start starts the agents.
func NewCluster(ctx context.Context, lab *Lab, cfg ClusterConfig, logf func(string, ...any)) (*Cluster, error) {
	if cfg.Voters != 3 && cfg.Voters != 5 {
		return nil, fmt.Errorf("chaos: %d voters: want 3 or 5", cfg.Voters)
	}
	if cfg.Agents < cfg.Voters || cfg.Agents > lab.nodes {
		return nil, fmt.Errorf("chaos: %d agents: want %d (the voters) .. %d (the lab)", cfg.Agents, cfg.Voters, lab.nodes)
	}
	c := &Cluster{cfg: cfg, lab: lab, key: filepath.Join(lab.Dir, "mesh.key"), pki: filepath.Join(lab.Dir, "pki"),
		proc: map[int]*agentProc{}, bins: map[int]string{}, log: logf}
	if err := run(ctx, nil, cfg.Bin, "keygen", "-o", c.key); err != nil {
		return nil, err
	}
	if cfg.KV != "" { // the service's cluster has a key of its own
		if err := run(ctx, nil, cfg.Bin, "keygen", "-o", c.kvKey()); err != nil {
			return nil, err
		}
	}
	// Agents serve their control API on the lab's addresses, so they need mTLS
	// (the agent refuses a non-loopback control API without it): a CA, a node
	// certificate per agent, and a reader certificate for the observer.
	if err := run(ctx, nil, cfg.Bin, "cert", "ca", "--out", c.pki); err != nil {
		return nil, err
	}
	issue := func(n, role string) error {
		return run(ctx, nil, cfg.Bin, "cert", "issue", "--ca", c.pki, "--name", n, "--role", role, "--out", c.pki)
	}
	for i := 1; i <= lab.nodes; i++ {
		if err := issue(name(i), "node"); err != nil {
			return nil, err
		}
		if err := issue(kvName(i), "node"); err != nil {
			return nil, err
		}
	}
	if err := issue(observerName, "reader"); err != nil {
		return nil, err
	}
	if err := issue(loadName, "reader"); err != nil {
		return nil, err
	}
	return c, nil
}

// observerName and loadName are the certificate names the observer reads the
// agents with and the load generator uses the service with.
const (
	observerName = "chaos-observer"
	loadName     = "chaos-load"
)

func (c *Cluster) kvKey() string { return filepath.Join(c.lab.Dir, "kv.key") }

func kvName(i int) string { return "kv" + strconv.Itoa(i) }

// SetBin makes agent i run bin from its next start (a rolling upgrade).
func (c *Cluster) SetBin(i int, bin string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bins[i] = bin
}

// Bin is the binary agent i runs (or will at its next start).
func (c *Cluster) Bin(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cmp.Or(c.bins[i], c.cfg.Bin)
}

// tlsFiles are the CA bundle, certificate and key of name in the cluster's PKI.
func (c *Cluster) tlsFiles(n string) (ca, cert, key string) {
	return filepath.Join(c.pki, "ca.pem"), filepath.Join(c.pki, n+".pem"), filepath.Join(c.pki, n+"-key.pem")
}

func name(i int) string { return "n" + strconv.Itoa(i) }

// index is the agent index of a node name, 0 if none.
func index(n string) int {
	i, err := strconv.Atoi(strings.TrimPrefix(n, "n"))
	if err != nil || !strings.HasPrefix(n, "n") {
		return 0
	}
	return i
}

// Start starts agent i. The first agent of a fresh cluster (join=false) starts a
// new cluster; every other start joins through all the other agents, so a
// restarted agent finds whichever of them is up.
func (c *Cluster) Start(i int, join bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc[i] != nil {
		return fmt.Errorf("chaos: %s is already running", name(i))
	}
	voters := make([]string, c.cfg.Voters)
	for v := range voters {
		voters[v] = name(v + 1)
	}
	dir := filepath.Join(c.lab.Dir, name(i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	args := []string{"netns", "exec", c.lab.netns(i), cmp.Or(c.bins[i], c.cfg.Bin), "agent",
		"--name", name(i), "--bind", addr(i) + ":" + gossipPort, "--control", addr(i) + ":" + controlPort,
		"--key-file", c.key, "--voters", strings.Join(voters, ","), "--shards", strconv.Itoa(c.cfg.Shards),
		"--log-format", "json", "--join-timeout", "0", "--audit-log", filepath.Join(dir, "audit.jsonl")}
	ca, cert, key := c.tlsFiles(name(i))
	args = append(args, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key)
	if i <= c.cfg.Voters {
		args = append(args, "--voter", "--data-dir", filepath.Join(dir, "data"))
	}
	if join {
		var seeds []string
		for j := 1; j <= c.cfg.Agents; j++ {
			if j != i {
				seeds = append(seeds, addr(j)+":"+gossipPort)
			}
		}
		args = append(args, "--join", strings.Join(seeds, ","))
	}
	logf, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// ip netns exec execs the agent in place, so the pid is the agent's and the
	// signals below reach it directly. Its own process group keeps a terminal's
	// Ctrl-C away from it: the harness stops agents itself, in order.
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("chaos: starting %s: %v", name(i), err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	c.proc[i] = p
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.log("start %s (pid %d)", name(i), cmd.Process.Pid)
	if c.cfg.KV != "" {
		if err := c.startKV(i, p); err != nil {
			return err
		}
	}
	return nil
}

// startKV starts kv instance i beside agent i and waits until it serves (its
// first stdout line): the next instance joins through it.
func (c *Cluster) startKV(i int, p *agentProc) error {
	voters := make([]string, c.cfg.Voters)
	for v := range voters {
		voters[v] = kvName(v + 1)
	}
	var seeds []string
	for j := 1; j <= c.cfg.Agents; j++ {
		if q := c.proc[j]; j != i && q != nil && q.kv != nil {
			seeds = append(seeds, addr(j)+":"+kvGossipPort)
		}
	}
	dir := filepath.Join(c.lab.Dir, name(i))
	ca, cert, key := c.tlsFiles(kvName(i))
	args := []string{"netns", "exec", c.lab.netns(i), c.cfg.KV, "serve", "--name", kvName(i),
		"--bind", addr(i) + ":" + kvGossipPort, "--control", addr(i) + ":" + kvControlPort, "--http", addr(i) + ":" + kvHTTPPort,
		"--join", strings.Join(seeds, ","), "--data-dir", filepath.Join(dir, "kv-data"), "--store", filepath.Join(c.lab.Dir, "kv-store"),
		"--key-file", c.kvKey(), "--shards", strconv.Itoa(c.cfg.Shards), "--voters", strings.Join(voters, ","),
		"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key}
	logf, err := os.OpenFile(filepath.Join(dir, "kv.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("chaos: starting %s: %v", kvName(i), err)
	}
	p.kv, p.kvDone = cmd, make(chan struct{})
	served := make(chan bool, 1)
	go func() {
		line := bufio.NewScanner(out)
		served <- line.Scan()
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		logf.Close()
		close(p.kvDone)
	}()
	select {
	case ok := <-served:
		if !ok {
			<-p.kvDone
			return fmt.Errorf("chaos: %s exited before it served: %s", kvName(i), logTail(filepath.Join(dir, "kv.log")))
		}
	case <-time.After(60 * time.Second):
		return fmt.Errorf("chaos: %s did not serve within 60 s: %s", kvName(i), logTail(filepath.Join(dir, "kv.log")))
	}
	c.log("start %s (pid %d)", kvName(i), cmd.Process.Pid)
	return nil
}

// logTail is the end of a log file, for error messages.
func logTail(file string) string {
	b, _ := os.ReadFile(file)
	return tail(string(b), 600)
}

// StartAll starts agents 1..N: the first alone, the rest joining it.
func (c *Cluster) StartAll() error {
	for i := 1; i <= c.cfg.Agents; i++ {
		if err := c.Start(i, i > 1); err != nil {
			return err
		}
	}
	return nil
}

// Running reports whether agent i has a process (possibly stopped).
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc[i] != nil
}

// Up lists the agents whose process runs and is not paused.
func (c *Cluster) Up() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up []int
	for i := 1; i <= c.cfg.Agents; i++ {
		if p := c.proc[i]; p != nil && !p.paused {
			up = append(up, i)
		}
	}
	return up
}

// Kill sends SIGKILL to agent i and waits for it to exit.
func (c *Cluster) Kill(i int) error { return c.stop(i, sigKill, 5*time.Second) }

// Leave sends SIGTERM (graceful leave) and waits for the exit.
func (c *Cluster) Leave(i int) error { return c.stop(i, sigTerm, 15*time.Second) }

func (c *Cluster) stop(i int, sig syscall.Signal, wait time.Duration) error {
	c.mu.Lock()
	p := c.proc[i]
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("chaos: %s is not running", name(i))
	}
	for _, q := range p.procs() {
		if p.paused {
			_ = q.cmd.Process.Signal(sigCont)
		}
		_ = q.cmd.Process.Signal(sig)
	}
	for _, q := range p.procs() {
		select {
		case <-q.done:
		case <-time.After(wait):
			_ = q.cmd.Process.Signal(sigKill)
			<-q.done
		}
	}
	c.mu.Lock()
	delete(c.proc, i)
	c.mu.Unlock()
	c.log("%s %s", sigName(sig), name(i))
	return nil
}

// Pause (SIGSTOP) and Resume (SIGCONT) agent i.
func (c *Cluster) Pause(i int) error  { return c.signal(i, sigStop, true) }
func (c *Cluster) Resume(i int) error { return c.signal(i, sigCont, false) }

func (c *Cluster) signal(i int, sig syscall.Signal, paused bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.proc[i]
	if p == nil {
		return fmt.Errorf("chaos: %s is not running", name(i))
	}
	for _, q := range p.procs() {
		if err := q.cmd.Process.Signal(sig); err != nil {
			return fmt.Errorf("chaos: %s %s: %v", sigName(sig), name(i), err)
		}
	}
	p.paused = paused
	c.log("%s %s", sigName(sig), name(i))
	return nil
}

// procs are the agent's process and the kv instance's, if any.
func (p *agentProc) procs() []struct {
	cmd  *exec.Cmd
	done chan struct{}
} {
	type one = struct {
		cmd  *exec.Cmd
		done chan struct{}
	}
	ps := []one{{p.cmd, p.done}}
	if p.kv != nil {
		ps = append(ps, one{p.kv, p.kvDone})
	}
	return ps
}

func sigName(s syscall.Signal) string {
	switch s {
	case sigKill:
		return "SIGKILL"
	case sigTerm:
		return "SIGTERM"
	case sigStop:
		return "SIGSTOP"
	case sigCont:
		return "SIGCONT"
	}
	return s.String()
}

// Close SIGKILLs every agent still running and waits for them.
func (c *Cluster) Close() error {
	c.mu.Lock()
	var idx []int
	for i := range c.proc {
		idx = append(idx, i)
	}
	c.mu.Unlock()
	var errs []error
	for _, i := range idx {
		errs = append(errs, c.Kill(i))
	}
	return errors.Join(errs...)
}

// Exited reports agents that exited on their own (a crash, a refused start), with
// the tail of their log: a scenario fails on any.
func (c *Cluster) Exited() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for i, p := range c.proc {
		for _, q := range p.procs() {
			select {
			case <-q.done:
				who, log := name(i), "agent.log"
				if q.cmd == p.kv {
					who, log = kvName(i), "kv.log"
				}
				out = append(out, fmt.Sprintf("%s exited unexpectedly (%v): %s", who, q.cmd.ProcessState, logTail(filepath.Join(c.lab.Dir, name(i), log))))
				// The machine goes as a whole: the other process is ended too.
				for _, o := range p.procs() {
					_ = o.cmd.Process.Signal(sigKill)
					<-o.done
				}
				delete(c.proc, i)
			default:
				continue
			}
			break
		}
	}
	return out
}
