package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/omnirelay/mesh/control"
)

const meshUsage = `usage:
  omnirelay mesh peers list [--addr URL] [--status S[,S]] [--role R] [--meta K:V]
                            [--limit N] [-o table|json]
  omnirelay mesh peers get NAME [--addr URL] [-o table|json]
  omnirelay mesh leaders status [--addr URL] [-o table|json]
  omnirelay mesh shards list|owner KEY|drain NODE [--undo]|rebalance  (mesh shards help)

Reads an agent's control API only. --addr defaults to $OMNIRELAY_ADDR, else
http://127.0.0.1:7070. Statuses: alive, suspect, dead, left.
`

func runMesh(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 1 && args[0] == "shards" {
		return runShards(args[1:], stdout, stderr)
	}
	if len(args) >= 2 && args[0] == "leaders" && args[1] == "status" {
		return runLeadersStatus(args[2:], stdout, stderr)
	}
	if len(args) < 2 || args[0] != "peers" || (args[1] != "list" && args[1] != "get") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, meshUsage)
			return 0
		}
		fmt.Fprint(stderr, meshUsage)
		return 2
	}
	fs := flag.NewFlagSet("mesh peers "+args[1], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, meshUsage) }
	defAddr := os.Getenv("OMNIRELAY_ADDR")
	if defAddr == "" {
		defAddr = "http://" + defaultControl
	}
	addr := fs.String("addr", defAddr, "control API URL of an agent")
	out := fs.String("o", "table", "output: table or json")
	status := fs.String("status", "", "only peers with these statuses (comma-separated)")
	role := fs.String("role", "", "only peers with this role (metadata key role, or listed in roles)")
	limit := fs.Int("limit", 0, "page size used while fetching (all pages are fetched)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	var meta listFlag
	fs.Var(&meta, "meta", "only peers with this key:value metadata (repeatable)")
	// Flags may come before or after the positional NAME.
	rest := args[2:]
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	var pos []string
	for fs.NArg() > 0 {
		pos = append(pos, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if *out != "table" && *out != "json" {
		fmt.Fprintf(stderr, "omnirelay mesh: -o %q: want table or json\n", *out)
		return 2
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	c := &control.Client{Base: base, HTTP: &http.Client{Timeout: *timeout}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var peers []control.Peer
	switch args[1] {
	case "list":
		if len(pos) > 0 {
			fmt.Fprintf(stderr, "omnirelay mesh peers list: unexpected argument %q\n", pos[0])
			return 2
		}
		var st []string
		if *status != "" {
			st = strings.Split(*status, ",")
		}
		ps, _, err := c.ListPeers(ctx, control.ListOptions{Status: st, Role: *role, Meta: meta, Limit: *limit})
		if err != nil {
			return meshError(stderr, base, err)
		}
		peers = ps
	case "get":
		if len(pos) != 1 {
			fmt.Fprintln(stderr, "omnirelay mesh peers get: want exactly one NAME")
			return 2
		}
		p, err := c.GetPeer(ctx, pos[0])
		if err != nil {
			return meshError(stderr, base, err)
		}
		peers = []control.Peer{p}
	}
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if args[1] == "get" {
			enc.Encode(peers[0])
		} else {
			enc.Encode(peers)
		}
		return 0
	}
	printPeers(stdout, peers, time.Now())
	return 0
}

func meshError(stderr io.Writer, base string, err error) int {
	var ae *control.APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(stderr, "omnirelay mesh: %s: %s\n", ae.Body.Code, ae.Body.Message)
	} else {
		fmt.Fprintf(stderr, "omnirelay mesh: cannot reach the control API at %s: %v\n", base, err)
	}
	return 1
}

// printPeers writes the peer table: name, address, status, incarnation, how long
// the status has held, and the metadata (key=value, sorted by key).
func printPeers(w io.Writer, peers []control.Peer, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tINCARNATION\tFOR\tMETA")
	for _, p := range peers {
		name := p.Name
		if p.Local {
			name += " (self)"
		}
		kv := make([]string, 0, len(p.Meta))
		for _, k := range slices.Sorted(maps.Keys(p.Meta)) {
			kv = append(kv, k+"="+p.Meta[k])
		}
		meta := strings.Join(kv, " ")
		if meta == "" {
			meta = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", name, p.Address, p.Status, p.Incarnation, age(now, p.Since), meta)
	}
	tw.Flush()
}

func age(now, since time.Time) string {
	if since.IsZero() {
		return "-"
	}
	d := now.Sub(since)
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// runLeadersStatus prints GET /control/v1/leaders of one agent.
func runLeadersStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mesh leaders status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, meshUsage) }
	defAddr := os.Getenv("OMNIRELAY_ADDR")
	if defAddr == "" {
		defAddr = "http://" + defaultControl
	}
	addr := fs.String("addr", defAddr, "control API URL of an agent")
	out := fs.String("o", "table", "output: table or json")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "omnirelay mesh leaders status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *out != "table" && *out != "json" {
		fmt.Fprintf(stderr, "omnirelay mesh: -o %q: want table or json\n", *out)
		return 2
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	c := &control.Client{Base: base, HTTP: &http.Client{Timeout: *timeout}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	l, err := c.GetLeaders(ctx)
	if err != nil {
		return meshError(stderr, base, err)
	}
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(l)
		return 0
	}
	printLeaders(stdout, l, time.Now())
	return 0
}

// printLeaders writes the leadership view as label/value lines.
func printLeaders(w io.Writer, l control.Leaders, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if l.Leader == nil {
		fmt.Fprintln(tw, "LEADER\t(none)")
	} else {
		holder := l.Leader.Holder
		if l.Leader.IsLocal {
			holder += " (self)"
		}
		fmt.Fprintf(tw, "LEADER\t%s\n", holder)
		fmt.Fprintf(tw, "EPOCH\t%d\n", l.Leader.Epoch)
		fmt.Fprintf(tw, "VALID FOR\t%s\n", l.Leader.ValidUntil.Sub(now).Round(100*time.Millisecond))
	}
	fmt.Fprintf(tw, "VOTERS\t%s\n", strings.Join(l.Voters, ","))
	role := "non-voter"
	if l.Local.IsVoter {
		role = "voter"
	}
	if l.Local.IsLeader {
		role += ", leader"
	}
	fmt.Fprintf(tw, "LOCAL\t%s (%s, epoch seen %d)\n", l.Local.Name, role, l.Local.EpochSeen)
	fmt.Fprintf(tw, "VERSION\t%s\n", l.Version)
	tw.Flush()
}
