// Command kv is a sharded key-value service routed by the mesh (README.md): each
// instance embeds node, serves the keys of the shards it owns from a shared,
// fenced store and forwards the others to their owner; a load generator routes
// through the client package and verifies every acknowledged write; a scenario
// runs both across real processes through a reshard, a drain and a SIGKILL.
//
//	kv serve    --name kv1 --voters kv1,kv2,kv3 --store DIR --key-file KEY [--join ADDR,...]
//	kv loadgen  --agents http://127.0.0.1:7070 [--workers 8] [--rate 0] [--duration 30s] [--phases-stdin] [--json]
//	kv scenario [--shards 64] [--phase 10s] [--workers 16] [--rate 200] [--json]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/identity"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

const usage = `usage: kv serve|loadgen|scenario [flags]  (kv CMD -h lists the flags)`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%s", usage)
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "loadgen":
		return loadgenCmd(args[1:], os.Stdin, stdout)
	case "scenario":
		return scenarioCmd(args[1:], stdout, stderr)
	}
	return fmt.Errorf("kv: unknown command %q; %s", args[0], usage)
}

func loadFlags(fs *flag.FlagSet, c *loadConfig) {
	fs.IntVar(&c.Workers, "workers", 8, "concurrent operations at most")
	fs.Float64Var(&c.Rate, "rate", 0, "operations per second in all; 0 runs a closed loop (each worker back to back)")
	fs.IntVar(&c.Keys, "keys", 256, "distinct keys")
	fs.IntVar(&c.ReadPct, "reads", 10, "percentage of operations that are reads (the rest are appends)")
	fs.DurationVar(&c.Deadline, "deadline", 15*time.Second, "per operation, retries included")
}

func loadgenCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("kv loadgen", flag.ContinueOnError)
	var cfg loadConfig
	loadFlags(fs, &cfg)
	agents := fs.String("agents", "", "control API URLs of instances, comma-separated (required)")
	duration := fs.Duration("duration", 30*time.Second, "how long to run (with --phases-stdin: at most)")
	phases := fs.Bool("phases-stdin", false, "read phase names from stdin, one a line: each line starts that phase, or resumes it if it ran before; the load ends at EOF. A harness marks its faults this way")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var tf tlsFlags
	tf.register(fs, "the load generator's certificate, of any role")
	trace := fs.String("trace", "", "write every operation's trace (attempts, instances' spans) to this file, JSON lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Agents = splitList(*agents); len(cfg.Agents) == 0 {
		return fmt.Errorf("kv loadgen: --agents is required")
	}
	src, err := tf.source()
	if err != nil {
		return fmt.Errorf("kv loadgen: %w", err)
	}
	if src != nil {
		cfg.TLS = src.ClientConfig(identity.MeshPolicy) // instances present node certificates
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	g, err := newLoadgen(startCtx, cfg)
	if err != nil {
		return err
	}
	defer g.close()
	runCtx, cancelRun := context.WithTimeout(ctx, *duration)
	defer cancelRun()
	if *phases {
		lines := bufio.NewScanner(stdin)
		if !lines.Scan() {
			return fmt.Errorf("kv loadgen: --phases-stdin: no phase name on stdin")
		}
		g.setPhase(lines.Text())
		go func() {
			defer cancelRun()
			for lines.Scan() {
				g.setPhase(lines.Text())
			}
		}()
	} else {
		g.setPhase("load")
	}
	g.run(runCtx)
	rep := ScenarioReport{Workers: g.cfg.Workers, Rate: g.cfg.Rate, Phases: g.report()}
	rep.Verify, err = g.verify()
	printReport(stdout, rep, *asJSON)
	if err != nil {
		return err
	}
	if *trace != "" {
		if err := g.writeTraces(*trace); err != nil {
			return fmt.Errorf("kv loadgen: --trace: %w", err)
		}
	}
	return rep.check()
}

func scenarioCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kv scenario", flag.ContinueOnError)
	cfg := scenarioConfig{}
	loadFlags(fs, &cfg.Load)
	fs.IntVar(&cfg.Shards, "shards", 64, "shard count")
	fs.DurationVar(&cfg.Phase, "phase", 10*time.Second, "the least time each phase lasts")
	fs.DurationVar(&cfg.Renew, "renew", 0, "the instances' shard renewal interval (kv serve --renew); 0: the mesh default, 1 s")
	fs.StringVar(&cfg.Dir, "dir", "", "work directory (default: a new temporary one, removed after)")
	fs.StringVar(&cfg.Trace, "trace", "", "write every operation's trace (attempts, instances' spans) to this file, JSON lines")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	verbose := fs.Bool("v", false, "log the steps to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Bin = bin
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "kv-scenario-"); err != nil {
			return err
		}
		defer os.RemoveAll(cfg.Dir)
	}
	if *verbose {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(stderr, time.Now().Format("15:04:05.000 ")+f+"\n", a...) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := runScenario(ctx, cfg)
	if err != nil {
		return err
	}
	printReport(stdout, rep, *asJSON)
	return rep.check()
}

// causes renders retry causes as "code=N ...", sorted by code.
func causes(m map[string]uint64) string {
	var out []string
	for _, c := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%d", c, m[c]))
	}
	return strings.Join(out, " ")
}

// check fails a run that lost or duplicated an acknowledged write.
func (r ScenarioReport) check() error {
	if r.Verify.Lost > 0 || r.Verify.Duplicated > 0 {
		return fmt.Errorf("kv: %d acknowledged appends lost, %d applied twice", r.Verify.Lost, r.Verify.Duplicated)
	}
	return nil
}

func printReport(w io.Writer, r ScenarioReport, asJSON bool) {
	if asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(w, string(b))
		return
	}
	fmt.Fprintf(w, "%-8s %7s %7s %6s %7s %8s %8s %8s %8s %8s\n", "phase", "secs", "ok", "failed", "retries", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "%-8s %7.1f %7d %6d %7d %8.1f %8.2f %8.2f %8.2f %8.2f  %s\n", p.Name, p.Seconds, p.OK, p.Failed, p.Retries, p.Throughput, p.P50, p.P90, p.P99, p.Max, causes(p.Causes))
	}
	fmt.Fprintf(w, "where the time went, mean ms per operation, the slowest 1 %% of each phase and all of it:\n%-8s %4s %6s %8s", "phase", "", "ops", "mean")
	for _, c := range components {
		fmt.Fprintf(w, " %7s", c)
	}
	fmt.Fprintf(w, "  %s\n", "retried/forwarded/waited/opening, refusals")
	for _, p := range r.Phases {
		for _, b := range []struct {
			label string
			b     *Breakdown
		}{{"1%", p.Slowest}, {"all", p.All}} {
			if b.b == nil {
				continue
			}
			fmt.Fprintf(w, "%-8s %4s %6d %8.2f", p.Name, b.label, b.b.Ops, b.b.MeanMs)
			for _, c := range components {
				fmt.Fprintf(w, " %7.2f", b.b.Ms[c])
			}
			fmt.Fprintf(w, "  %d/%d/%d/%d %s\n", b.b.Retried, b.b.Forwarded, b.b.Waited, b.b.Opening, causes(b.b.Codes))
		}
	}
	v := r.Verify
	fmt.Fprintf(w, "verify: %d acknowledged appends over %d keys: %d lost, %d duplicated (%d unacknowledged applied)\n", v.Acked, v.Keys, v.Lost, v.Duplicated, v.Unacked)
	if r.Instances > 0 {
		fmt.Fprintf(w, "drain vs steady: p50 %+.1f %%, p99 %+.1f %% (%d drains, each settled within %.0f ms)\n", 100*r.DrainP50, 100*r.DrainP99, r.DrainCycles, r.DrainSettledMs)
	}
	if h := r.Handover; h != nil {
		fmt.Fprintf(w, "planned handovers (old owner's loss to new owner's gain): %d, p50 %.1f ms, p90 %.1f ms, max %.1f ms\n", h.Moves, h.P50, h.P90, h.Max)
	}
}
