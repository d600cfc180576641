// Command omnirelay-chaos runs the chaos suite: real omnirelay agents in Linux
// network namespaces, broken with nftables and signals, judged by their own
// control APIs (docs/chaos.md). It needs root, iproute2 and nftables.
//
//	omnirelay-chaos list
//	omnirelay-chaos run --scenario NAME [--json] [flags]
//	omnirelay-chaos nightly [--budget 30m] [--out DIR] [flags]
//	omnirelay-chaos sweep
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/internal/chaos"
)

const usage = `usage: omnirelay-chaos COMMAND [flags]

commands:
  list                      the scenarios
  run --scenario NAME       run one scenario; --json prints its report as JSON
  nightly                   run every scenario under --budget, write reports and summary.md to --out
  sweep                     remove namespaces, links and directories left by runs that died

Needs root, ip (iproute2) and nft (nftables). Exit status: 0 pass, 1 a scenario
failed, 2 bad usage or missing prerequisites.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "list":
		for _, s := range chaos.Scenarios() {
			fmt.Fprintf(stdout, "%-22s %s\n", s.Name, s.Summary)
		}
		return 0
	case "run", "nightly":
		return runScenarios(args[0], args[1:], stdout, stderr)
	case "sweep":
		swept, err := chaos.Sweep(context.Background())
		fmt.Fprintf(stdout, "swept %d stale runs %v\n", len(swept), swept)
		if err != nil {
			fmt.Fprintln(stderr, "omnirelay-chaos sweep:", err)
			return 1
		}
		return 0
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "omnirelay-chaos: unknown command %q\n%s", args[0], usage)
	return 2
}

func runScenarios(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o chaos.Options
	scenario := fs.String("scenario", "", "scenario to run (run; see list)")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout (run)")
	budget := fs.Duration("budget", 30*time.Minute, "time budget of the whole suite; scenarios that would start after it are skipped (nightly)")
	out := fs.String("out", "chaos-reports", "directory for the JSON reports and summary.md (nightly)")
	fs.IntVar(&o.Agents, "agents", 0, "agents (default: the scenario's, 5; churn 6)")
	fs.IntVar(&o.Voters, "voters", 3, "leader-election voters, n1..nV (3 or 5)")
	fs.IntVar(&o.Shards, "shards", 64, "shard count")
	fs.IntVar(&o.Kills, "kills", 3, "leader kills (leader-kill)")
	fs.DurationVar(&o.Hold, "hold", 10*time.Second, "how long a partition stands")
	fs.DurationVar(&o.Duration, "duration", 0, "how long loss or churn lasts (default: loss 60s, churn 20s)")
	fs.IntVar(&o.Loss, "loss", 10, "percent of packets dropped on every link, each way (loss)")
	fs.DurationVar(&o.Pause, "pause", 8*time.Second, "how long the leader stays SIGSTOPped (pause)")
	fs.Uint64Var(&o.Seed, "seed", 0, "seed of random choices (default: the time)")
	fs.StringVar(&o.AgentBin, "agent-bin", "", "omnirelay binary to run (default: go build ./cmd/omnirelay)")
	fs.StringVar(&o.UpgradeBin, "upgrade-bin", "", "the new build rolling-upgrade restarts the agents onto (default: go build -tags omnirelay_preview ./cmd/omnirelay, versions 1..2)")
	fs.StringVar(&o.KVBin, "kv-bin", "", "the kv sample service and load generator (default: go build ./examples/kv)")
	fs.BoolVar(&o.NoLoad, "no-load", false, "run no kv service and no load beside the agents")
	fs.StringVar(&o.LogDir, "logs", "", "keep the agents' logs of a failed scenario under this directory (nightly: --out)")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !*quiet {
		o.Logf = func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	}
	var list []chaos.Scenario
	if cmd == "run" {
		s, ok := chaos.Lookup(*scenario)
		if !ok {
			fmt.Fprintf(stderr, "omnirelay-chaos run: unknown --scenario %q; one of: %s\n", *scenario, names())
			return 2
		}
		list = []chaos.Scenario{s}
	} else {
		list = chaos.Scenarios()
	}
	if err := chaos.Prereqs(); err != nil {
		fmt.Fprintln(stderr, "omnirelay-chaos:", err)
		return 2
	}
	// SIGINT/SIGTERM cancel the run; its deferred cleanup then removes every
	// agent, namespace and rule. Further signals are swallowed until it is done.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if swept, err := chaos.Sweep(ctx); len(swept) > 0 || err != nil {
		fmt.Fprintf(stderr, "swept leftovers of dead runs %v (%v)\n", swept, err)
	}
	// Every binary a scenario needs is built once, before the first.
	builds := []struct {
		bin   *string
		need  bool
		build func(context.Context, string) (string, error)
	}{
		{&o.AgentBin, true, chaos.BuildAgent},
		{&o.KVBin, !o.NoLoad, chaos.BuildKV},
		{&o.UpgradeBin, slices.ContainsFunc(list, func(s chaos.Scenario) bool { return s.Name == "rolling-upgrade" }), chaos.BuildPreviewAgent},
	}
	var dir string
	for _, b := range builds {
		if *b.bin != "" || !b.need {
			continue
		}
		var err error
		if dir == "" {
			if dir, err = chaos.BinDir(); err != nil {
				fmt.Fprintln(stderr, "omnirelay-chaos:", err)
				return 1
			}
			defer os.RemoveAll(dir)
		}
		if *b.bin, err = b.build(ctx, dir); err != nil {
			fmt.Fprintln(stderr, "omnirelay-chaos:", err)
			return 1
		}
	}
	if cmd == "nightly" {
		if o.LogDir == "" {
			o.LogDir = *out
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			fmt.Fprintln(stderr, "omnirelay-chaos:", err)
			return 1
		}
	}
	start := time.Now()
	var reports []*chaos.Report
	var skipped []string
	status := 0
	for _, s := range list {
		if cmd == "nightly" && time.Since(start) > *budget {
			skipped = append(skipped, s.Name)
			continue
		}
		rep, err := chaos.Run(ctx, s, o)
		if err != nil {
			fmt.Fprintf(stderr, "omnirelay-chaos: %s: %v\n", s.Name, err)
			if errors.Is(err, context.Canceled) {
				return 1
			}
			status = 1
			continue
		}
		if !rep.Pass {
			status = 1
		}
		reports = append(reports, rep)
		b, _ := json.MarshalIndent(rep, "", "  ")
		switch {
		case cmd == "nightly":
			if err := os.WriteFile(filepath.Join(*out, s.Name+".json"), append(b, '\n'), 0o644); err != nil {
				fmt.Fprintln(stderr, "omnirelay-chaos:", err)
				status = 1
			}
		case *asJSON:
			fmt.Fprintf(stdout, "%s\n", b)
		}
	}
	table := chaos.SummaryTable(reports, skipped)
	if cmd == "nightly" {
		if err := os.WriteFile(filepath.Join(*out, "summary.md"), []byte(table), 0o644); err != nil {
			fmt.Fprintln(stderr, "omnirelay-chaos:", err)
			status = 1
		}
		if len(skipped) > 0 {
			status = 1 // a suite that did not run whole does not gate a release
		}
	}
	if cmd == "nightly" || !*asJSON {
		fmt.Fprint(stdout, table)
	}
	return status
}

func names() string {
	var n []string
	for _, s := range chaos.Scenarios() {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}
