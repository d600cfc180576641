package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/sim"
)

const simUsage = `usage:
  omnirelay sim list
  omnirelay sim run --scenario NAME [--nodes N] [--seed S] [--duration D] [--loss P]
                    [--profile lan|memberlist] [--lifeguard=false] [--pause-max D] [--json]
  omnirelay sim replay FILE   (a schedule printed by a failing property test)
`

// simCommand is `omnirelay sim`.
func simCommand() command {
	return command{name: "sim", usage: simUsage, subs: []command{
		{name: "list", run: runSimList},
		{name: "run", run: runSimRun},
		{name: "replay", run: runSimReplay},
	}}
}

// runSim is the `omnirelay sim` subcommand; it returns the exit status.
func runSim(args []string, stdout, stderr io.Writer) int {
	return simCommand().dispatch(args, stdout, stderr)
}

func runSimList(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pos, err := parseArgs(fs, simUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "omnirelay sim list: unexpected argument %q\n", pos[0])
		return 2
	}
	for _, sc := range sim.Scenarios() {
		fmt.Fprintf(stdout, "%-15s %s (default duration %v; reports %s)\n", sc.Name, sc.About, sc.Duration, strings.Join(sc.Figures, ", "))
	}
	return 0
}

func runSimRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "", "scenario name (see: omnirelay sim list)")
	nodes := fs.Int("nodes", 100, "cluster size")
	seed := fs.Uint64("seed", 1, "master seed; equal flags give an equal trace_hash")
	duration := fs.Duration("duration", 0, "measured phase length (0: the scenario's default)")
	loss := fs.Float64("loss", 0, "datagram loss probability on every link during the measured phase, in [0,1)")
	profile := fs.String("profile", "lan", "swim profile: lan or memberlist")
	lifeguard := fs.Bool("lifeguard", true, "Lifeguard extensions (local health, aware suspicion, buddy)")
	signed := fs.Bool("signed-gossip", false, "signed self-claims (and, in leader, reshard and drain scenarios, signed lease and shard packets) under a simulated authority, as with node certificates")
	pauseMax := fs.Duration("pause-max", 0, "pause and gc-pause scenarios: longest fault, each lasts 1/6 of it to all of it (0: 24 probe intervals)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a report")
	voters := fs.Int("voters", 0, "leader-* scenarios: voters, the first nodes (3 or 5; 0: 3)")
	shards := fs.Int("shards", 0, "reshard-* and drain scenarios: shard count (0: 1024)")
	maxMoves := fs.Int("max-moves", 0, "reshard-* and drain scenarios: shards moved at once, K (0: 16)")
	clusters := fs.Int("clusters", 0, "region-failover: clusters of three voters (2 to 9; 0: 2)")
	pos, err := parseArgs(fs, simUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "omnirelay sim run: unexpected argument %q\n", pos[0])
		return 2
	}
	if *scenario == "" {
		fmt.Fprintln(stderr, "omnirelay sim run: --scenario is required (see `omnirelay sim list`)")
		return 2
	}
	o := sim.Options{
		Scenario: *scenario, Nodes: *nodes, Seed: *seed, Duration: *duration,
		Loss: *loss, Profile: *profile, NoLifeguard: !*lifeguard, SignedGossip: *signed, Voters: *voters,
		PauseMax: *pauseMax, Clusters: *clusters,
	}
	if *shards > 0 || *maxMoves > 0 {
		o.Shard = shard.DefaultConfig()
		if *shards > 0 {
			o.Shard.Shards = *shards
		}
		if *maxMoves > 0 {
			o.Shard.MaxMoves = *maxMoves
		}
	}
	printed := false
	if !*asJSON {
		start := time.Now()
		last := start
		o.Progress = func(phase string, virtual time.Duration, events uint64) {
			if now := time.Now(); now.Sub(last) >= time.Second {
				last, printed = now, true
				fmt.Fprintf(stderr, "\r%s: virtual %.1fs, %d events, wall %.0fs   ", phase, virtual.Seconds(), events, now.Sub(start).Seconds())
			}
		}
	}
	res, err := sim.Run(o)
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay sim run: %v\n", err)
		if errors.Is(err, sim.ErrConfig) {
			return 2
		}
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "omnirelay sim run: %v\n", err)
			return 1
		}
		return 0
	}
	if printed {
		fmt.Fprint(stderr, "\r\033[K") // clear the progress line
	}
	printReport(stdout, res)
	return 0
}

// runSimReplay plays a schedule file (sim.Schedule text form) and reports whether
// every live node agreed with ground truth after its quiet period: exit 0 if so,
// 1 if not.
func runSimReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pos, err := parseArgs(fs, simUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "omnirelay sim replay: want one schedule file\n%s", simUsage)
		return 2
	}
	text, err := os.ReadFile(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay sim replay: %v\n", err)
		return 2
	}
	sc, err := sim.ParseSchedule(string(text))
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay sim replay: %v\n", err)
		return 2
	}
	s, err := sim.RunSchedule(sc, nil)
	if s != nil {
		fmt.Fprintf(stdout, "virtual %v, live %d, trace_hash %016x\n", s.Elapsed(), len(s.LiveNodes()), s.TraceHash())
	}
	if err != nil {
		fmt.Fprintf(stdout, "FAIL: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "ok: every live node sees exactly the live nodes")
	return 0
}

// printReport writes the result as aligned "key  value" lines in the order of the
// JSON fields, so the report and the JSON never disagree on names.
func printReport(w io.Writer, res *sim.Result) {
	b, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintf(w, "%+v\n", *res)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // the opening brace
		return
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return
		}
		fmt.Fprintf(w, "%-28s %s\n", k, v)
	}
}
