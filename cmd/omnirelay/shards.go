package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/omnirelay/mesh/control"
)

const shardsUsage = `usage:
  omnirelay mesh shards list [--addr URL] [--owner NODE] [--state S[,S]] [--watch] [-o table|json]
  omnirelay mesh shards summary [--addr URL] [-o table|json]
  omnirelay mesh shards owner KEY [--addr URL] [-o table|json]
  omnirelay mesh shards drain NODE [--undo] [--addr URL]
  omnirelay mesh shards rebalance [--addr URL]
Every subcommand also takes --timeout D (default 10s).

States: steady, draining, rebalancing. drain and rebalance are served by the
leader: asked of another agent, they follow its answer to the leader's control
URL (its "control" metadata) once.
`

// publicControlURL is the control URL peers can reach: the listening address,
// with the advertised host in place of a wildcard one, https:// when served over
// TLS. "" when the API is off.
func publicControlURL(controlAddr, advertise string, tls bool) string {
	if controlAddr == "" {
		return ""
	}
	h, p, err := net.SplitHostPort(controlAddr)
	if err != nil {
		return ""
	}
	if h == "" || h == "0.0.0.0" || h == "::" {
		if ah, _, err := net.SplitHostPort(advertise); err == nil {
			h = ah
		}
	}
	if tls {
		return "https://" + net.JoinHostPort(h, p)
	}
	return "http://" + net.JoinHostPort(h, p)
}

// shardsCmd is a parsed `mesh shards` command line.
type shardsCmd struct {
	sub     string // list, owner, drain, rebalance
	arg     string // KEY or NODE
	addr    string
	out     string
	owner   string
	states  []string
	undo    bool
	watch   bool
	timeout time.Duration
	hc      *http.Client
}

// parseShards parses the arguments after `mesh shards`; flags may come before or
// after the positional argument.
func parseShards(args []string, stderr io.Writer) (shardsCmd, error) {
	var c shardsCmd
	if len(args) == 0 {
		return c, errors.New("want a subcommand: list, summary, owner, drain or rebalance")
	}
	c.sub = args[0]
	wantArg := map[string]string{"list": "", "summary": "", "rebalance": "", "owner": "KEY", "drain": "NODE"}
	argName, ok := wantArg[c.sub]
	if !ok {
		return c, fmt.Errorf("unknown subcommand %q", c.sub)
	}
	fs := flag.NewFlagSet("mesh shards "+c.sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a apiFlags
	a.register(fs)
	if c.sub == "list" {
		fs.StringVar(&c.owner, "owner", "", "only shards this node owns")
		fs.BoolVar(&c.watch, "watch", false, "print the map again at each change, until interrupted")
	}
	var states listFlag
	if c.sub == "list" {
		fs.Var(&states, "state", "only shards in these states (comma-separated)")
	}
	if c.sub == "drain" {
		fs.BoolVar(&c.undo, "undo", false, "lift the drain")
	}
	pos, err := parseArgs(fs, shardsUsage, args[1:])
	if err != nil {
		return c, err
	}
	switch {
	case argName == "" && len(pos) > 0:
		return c, fmt.Errorf("unexpected argument %q", pos[0])
	case argName != "" && len(pos) != 1:
		return c, fmt.Errorf("want exactly one %s", argName)
	}
	if err := a.check(); err != nil {
		return c, err
	}
	c.addr, c.out, c.timeout, c.hc = a.addr, a.out, a.timeout, a.hc
	for _, s := range states {
		if !slices.Contains(control.ShardStates, s) {
			return c, fmt.Errorf("--state %q: want one of %s", s, strings.Join(control.ShardStates, ", "))
		}
	}
	c.states = states
	if len(pos) == 1 {
		c.arg = pos[0]
	}
	return c, nil
}

// shardsCommand is `omnirelay mesh shards`.
func shardsCommand() command {
	c := command{name: "shards", usage: shardsUsage}
	for _, sub := range []string{"list", "summary", "owner", "drain", "rebalance"} {
		c.subs = append(c.subs, command{name: sub, run: func(args []string, stdout, stderr io.Writer) int {
			return runShards(append([]string{sub}, args...), stdout, stderr)
		}})
	}
	return c
}

// runShards runs `omnirelay mesh shards SUB ...`.
func runShards(args []string, stdout, stderr io.Writer) int {
	c, err := parseShards(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return parseExit(err, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay mesh shards: %v\n", err)
		return 2
	}
	client := &control.Client{Base: c.addr, HTTP: c.hc}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	switch c.sub {
	case "list":
		if c.watch {
			wctx, stop := untilSignal()
			defer stop()
			q := url.Values{}
			if c.owner != "" {
				q.Set("owner", c.owner)
			}
			if len(c.states) > 0 {
				q.Set("state", strings.Join(c.states, ","))
			}
			if err := watchShardMaps(wctx, client, "&"+q.Encode(), stdout, "", true); err != nil && wctx.Err() == nil {
				return meshError(stderr, c.addr, err)
			}
			return 0
		}
		m, err := client.ListShards(ctx, control.ShardListOptions{Owner: c.owner, State: c.states})
		if err != nil {
			return meshError(stderr, c.addr, err)
		}
		if c.out == "json" {
			return writeJSONOut(stdout, m)
		}
		printShards(stdout, m)
	case "summary":
		m, err := client.ListShards(ctx, control.ShardListOptions{})
		if err != nil {
			return meshError(stderr, c.addr, err)
		}
		if c.out == "json" {
			return writeJSONOut(stdout, summarize(m))
		}
		printSummary(stdout, summarize(m))
	case "owner":
		l, err := client.LookupShard(ctx, c.arg)
		if err != nil {
			return meshError(stderr, c.addr, err)
		}
		if c.out == "json" {
			return writeJSONOut(stdout, l)
		}
		printLookup(stdout, l)
	case "drain", "rebalance":
		op := func(cl *control.Client) error {
			if c.sub == "drain" {
				return cl.DrainNode(ctx, c.arg, !c.undo)
			}
			return cl.Rebalance(ctx)
		}
		a := &apiFlags{addr: c.addr, timeout: c.timeout, hc: c.hc}
		if base, err := atLeader(ctx, a, stderr, op); err != nil {
			return leaderError(stderr, base, err)
		}
		switch {
		case c.sub == "rebalance":
			fmt.Fprintln(stdout, "rebalance requested")
		case c.undo:
			fmt.Fprintf(stdout, "drain of %s lifted\n", c.arg)
		default:
			fmt.Fprintf(stdout, "draining %s: its shards move away (watch: omnirelay mesh shards list --owner %s)\n", c.arg, c.arg)
		}
	}
	return 0
}

func writeJSONOut(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

// printShards writes the map header and one row per shard.
func printShards(w io.Writer, m control.ShardMap) {
	leader := m.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "MAP epoch %d version %d checksum %s, %d shards, leader %s (as seen by %s)\n",
		m.Epoch, m.Version, m.Checksum, m.Count, leader, m.Node)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tOWNER\tSTATE\tTARGET")
	for _, s := range m.Shards {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.ID, orNone(s.Owner), s.State, orNone(s.Target))
	}
	tw.Flush()
}

// printLookup writes which shard a key maps to, its owner and the leader whose
// map says so (REQUIREMENTS: which node owns shard N and the owning leader).
func printLookup(w io.Writer, l control.ShardLookup) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "KEY\t%s\n", l.Key)
	fmt.Fprintf(tw, "SHARD\t%d\n", l.Shard)
	fmt.Fprintf(tw, "OWNER\t%s (%s)\n", orNone(l.Owner), l.State)
	fmt.Fprintf(tw, "LEADER\t%s\n", orNone(l.Leader))
	fmt.Fprintf(tw, "MAP\tepoch %d version %d\n", l.Epoch, l.Version)
	tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
