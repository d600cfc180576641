package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Load phases. The load generator keeps one set of figures per phase and adds
// every span of a phase to it: the steady state before the first fault and
// between faults, each fault while it stands, and each recovery (from the heal,
// restart or SIGCONT until the agents converged).
const (
	phaseWarmup   = "warmup"
	phaseSteady   = "steady"
	phaseFault    = "fault"
	phaseRecovery = "recovery"
)

// Warmup and the least steady state before the first fault: connections open
// and the client's table fills during the first, so that the second is steady.
const (
	loadWarmup = 3 * time.Second
	loadSteady = 5 * time.Second
)

// LoadReport is what the report says of the load: the kv sample service
// (examples/kv) beside every agent, driven from the hub namespace by
// `kv loadgen`, whose end-of-run check finds every acknowledged append lost or
// applied twice.
type LoadReport struct {
	Status string `json:"status"` // "ran", "none" (--no-load) or "failed"
	Note   string `json:"note,omitempty"`
	// Workers and Rate shape the load (kv loadgen --workers, --rate).
	Workers int     `json:"workers,omitempty"`
	Rate    float64 `json:"rate,omitempty"`
	// Steady, Fault and Recovery are the figures over every span of each phase.
	Steady   *LoadFigures `json:"steady,omitempty"`
	Fault    *LoadFigures `json:"fault,omitempty"`
	Recovery *LoadFigures `json:"recovery,omitempty"`
	// Writes is the check of every acknowledged append.
	Writes *Writes `json:"writes,omitempty"`
}

// LoadFigures are throughput and latency over one phase, retries included in
// an operation's latency.
type LoadFigures struct {
	Seconds float64 `json:"seconds"`
	OK      uint64  `json:"ok"`
	Failed  uint64  `json:"failed"` // gave up after the operation's deadline
	RPS     float64 `json:"ops_per_sec"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// Writes is kv loadgen's verification: acknowledged appends absent (lost), and
// appends present more than once (duplicated). Either above 0 fails the run.
type Writes struct {
	Acked      int `json:"acked"`
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	Unacked    int `json:"unacked"` // applied though the client gave up on them: allowed
}

// loadgenOut is the part of `kv loadgen --json` the harness reads.
type loadgenOut struct {
	Workers int     `json:"workers"`
	Rate    float64 `json:"rate"`
	Phases  []struct {
		Name string `json:"name"`
		LoadFigures
	} `json:"phases"`
	Verify Writes `json:"verify"`
}

// kvLoad runs `kv loadgen` in the hub namespace against every kv instance's
// control API, marking phases on its stdin.
type kvLoad struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	done    chan struct{}
	mu      sync.Mutex
	workers int
	rate    float64
}

// Load shape: open loop at loadRate operations a second over loadWorkers
// concurrent operations, 10 % reads. A rate below what the 2-core machines
// serve keeps the steady state's figures about the service, not the CPU; ops
// the workers cannot start in time are not made up for, so unavailability
// shows as lost throughput.
const (
	loadRate    = 100
	loadWorkers = 16
)

func startLoad(lab *Lab, c *Cluster, kv string, agents int) (*kvLoad, error) {
	var urls []string
	for i := 1; i <= agents; i++ {
		urls = append(urls, "https://"+addr(i)+":"+kvControlPort)
	}
	ca, cert, key := c.tlsFiles(loadName)
	l := &kvLoad{done: make(chan struct{}), workers: loadWorkers, rate: loadRate}
	l.cmd = exec.Command("ip", "netns", "exec", lab.hub(), kv, "loadgen", "--agents", strings.Join(urls, ","),
		"--workers", fmt.Sprint(loadWorkers), "--rate", fmt.Sprint(loadRate), "--phases-stdin", "--duration", "24h", "--json",
		"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key)
	l.cmd.Stdout, l.cmd.Stderr = &l.stdout, &l.stderr
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("chaos: starting kv loadgen: %v", err)
	}
	go func() { _ = l.cmd.Wait(); close(l.done) }()
	l.phase(phaseWarmup)
	return l, nil
}

// phase starts (or resumes) the named phase; nil-safe.
func (l *kvLoad) phase(name string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.stdin, name+"\n")
}

// exited reports a load generator that ended before it was stopped.
func (l *kvLoad) exited() bool {
	if l == nil {
		return false
	}
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// kill ends the load generator without its verification (a run that could not
// go on).
func (l *kvLoad) kill() {
	_ = l.cmd.Process.Kill()
	<-l.done
}

// stop ends the load, waits for the load generator's verification and reads its
// report.
func (l *kvLoad) stop(ctx context.Context) LoadReport {
	l.mu.Lock()
	_ = l.stdin.Close()
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		_ = l.cmd.Process.Kill()
		<-l.done
	case <-time.After(3 * time.Minute): // the verification reads every key
		_ = l.cmd.Process.Kill()
		<-l.done
	}
	rep := LoadReport{Status: "ran", Workers: l.workers, Rate: l.rate}
	var out loadgenOut
	if err := json.Unmarshal(l.stdout.Bytes(), &out); err != nil {
		rep.Status = "failed"
		rep.Note = fmt.Sprintf("kv loadgen (%v) gave no report: %s", l.cmd.ProcessState, tail(l.stderr.String(), 600))
		return rep
	}
	for _, p := range out.Phases {
		f := p.LoadFigures
		switch p.Name {
		case phaseSteady:
			rep.Steady = &f
		case phaseFault:
			rep.Fault = &f
		case phaseRecovery:
			rep.Recovery = &f
		}
	}
	rep.Writes = &out.Verify
	if !l.cmd.ProcessState.Success() && out.Verify.Lost == 0 && out.Verify.Duplicated == 0 {
		rep.Status = "failed"
		rep.Note = fmt.Sprintf("kv loadgen: %v: %s", l.cmd.ProcessState, tail(l.stderr.String(), 600))
	}
	return rep
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}
