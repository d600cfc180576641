package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
)

// clustersCommand is `mesh clusters list|get ID|promote ID|drain ID`: the
// multi-cluster descriptors (GET /control/v1/clusters, docs/multi-cluster.md)
// and the failovers (POST /control/v1/clusters/{id}/promote, operator role).
func clustersCommand() command {
	var force bool
	var to string
	return command{name: "clusters", usage: meshUsage, subs: []command{
		{name: "list", run: runClustersList},
		{name: "get", run: runClustersGet},
		leaf("promote", 1, 1, func(fs *flag.FlagSet) {
			fs.BoolVar(&force, "force", false, "promote ID now, without the active cluster handing over (two clusters answer as active, at different versions, until they hear of each other)")
		}, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			return promoteCluster(ctx, a, pos[0], "", force, stdout, stderr)
		}),
		leaf("drain", 1, 1, func(fs *flag.FlagSet) {
			fs.StringVar(&to, "to", "", "the cluster taking over (default: the passive cluster of lowest priority)")
		}, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			return promoteCluster(ctx, a, to, pos[0], false, stdout, stderr)
		}),
	}}
}

// promoteCluster asks for target's promotion. Planned (not force), it is asked of
// the active cluster (drain, when given, must be it), which hands over: through
// the agent at --addr if it is of that cluster, else through a control URL its
// gateways relay; forced, of target's own agents. Either way the cluster's lease
// holder answers, followed once if another agent is asked.
func promoteCluster(ctx context.Context, a *apiFlags, target, drain string, force bool, stdout, stderr io.Writer) int {
	cs, err := a.client().GetClusters(ctx)
	if err != nil {
		return meshError(stderr, a.addr, err)
	}
	from := target // whose agents are asked
	if !force {
		from = cs.Active
		switch {
		case from == "":
			fmt.Fprintln(stderr, "omnirelay mesh clusters: no cluster is active to hand over: promote one with --force")
			return 1
		case drain != "" && drain != from:
			fmt.Fprintf(stderr, "omnirelay mesh clusters drain: %s is not the active cluster (%s is)\n", drain, from)
			return 1
		}
		if target == "" {
			target = nextInLine(cs.Clusters, from)
		}
		if target == from {
			fmt.Fprintf(stdout, "%s is already the active cluster\n", target)
			return 0
		}
	}
	bases := []string{a.addr}
	if cs.Self != from {
		bases = nil
		for _, e := range cs.Endpoints {
			if e.Cluster == from {
				bases = e.Control
			}
		}
		if len(bases) == 0 {
			fmt.Fprintf(stderr, "omnirelay mesh clusters: %s asks no agent of cluster %s (its gateways relay no control URL of it): give --addr of one\n", a.addr, from)
			return 1
		}
	}
	// Each agent of the cluster in turn: one that knows no leader yet (just
	// elected) or cannot be reached leaves the others to try.
	var base string
	for _, u := range bases {
		b := *a
		b.addr = u
		if u != a.addr {
			fmt.Fprintf(stderr, "omnirelay mesh clusters: asking cluster %s at %s\n", from, u)
		}
		base, err = atLeader(ctx, &b, stderr, func(c *control.Client) error {
			_, err := c.PromoteCluster(ctx, target, force)
			return err
		})
		var nl *control.NotLeaderError
		var ae *control.APIError
		if err == nil || !errors.As(err, &nl) && errors.As(err, &ae) {
			break // done, or an answer that another agent would repeat
		}
	}
	if err != nil {
		return leaderError(stderr, base, err)
	}
	if force {
		fmt.Fprintf(stdout, "%s promoted itself with a higher failover version (watch: omnirelay mesh clusters list)\n", target)
	} else {
		fmt.Fprintf(stdout, "%s is draining; %s takes over with a higher failover version (watch: omnirelay mesh clusters list)\n", from, target)
	}
	return 0
}

// nextInLine is the cluster an unplanned failover would promote first: the
// passive one of lowest priority, then of lowest id; from when there is none.
func nextInLine(ds []cluster.Descriptor, from string) string {
	best := from
	var bp int
	for _, d := range ds {
		if d.ID != from && d.State == cluster.Passive && (best == from || d.Priority < bp) {
			best, bp = d.ID, d.Priority
		}
	}
	return best
}

func runClustersList(args []string, stdout, stderr io.Writer) int {
	return meshGet(args, 0, "mesh clusters list", stdout, stderr,
		func(ctx context.Context, c *control.Client, _ []string) (control.Clusters, error) {
			return c.GetClusters(ctx)
		},
		func(w io.Writer, cs control.Clusters) { printClusters(w, cs.Clusters, cs.Self, cs.Active) })
}

func runClustersGet(args []string, stdout, stderr io.Writer) int {
	return meshGet(args, 1, "mesh clusters get", stdout, stderr,
		func(ctx context.Context, c *control.Client, pos []string) (cluster.Descriptor, error) {
			return c.GetCluster(ctx, pos[0])
		},
		func(w io.Writer, d cluster.Descriptor) { printClusters(w, []cluster.Descriptor{d}, "", "") })
}

// meshGet is a read command: parse the flags and wantArgs arguments, fetch
// within --timeout, print the API's answer with -o json or as print's table.
func meshGet[T any](args []string, wantArgs int, name string, stdout, stderr io.Writer,
	fetch func(context.Context, *control.Client, []string) (T, error), print func(io.Writer, T)) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var a apiFlags
	pos, code := parseMesh(fs, &a, args, wantArgs, stdout, stderr)
	if code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	v, err := fetch(ctx, a.client(), pos)
	if err != nil {
		return meshError(stderr, a.addr, err)
	}
	if a.out == "json" {
		return writeJSONOut(stdout, v)
	}
	print(stdout, v)
	return 0
}

// printClusters writes one row per descriptor; self and active, when known, are
// marked.
func printClusters(w io.Writer, ds []cluster.Descriptor, self, active string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREGION\tSTATE\tPRIORITY\tFAILOVER VERSION\tEPOCH.COUNTER\t")
	for _, d := range ds {
		mark := ""
		if d.ID == self {
			mark += " (self)"
		}
		if d.ID == active {
			mark += " (active)"
		}
		st := d.State.String()
		if d.State == cluster.Draining {
			st += " to " + d.Handoff
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%d\t%d\t%d.%d\t\n", d.ID, mark, d.Region, st, d.Priority, d.Version, d.Epoch, d.Counter)
	}
	tw.Flush()
}
