package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
)

// clustersCommand is `mesh clusters list|get ID`: the multi-cluster descriptors
// (GET /control/v1/clusters, docs/multi-cluster.md).
func clustersCommand() command {
	return command{name: "clusters", usage: meshUsage, subs: []command{
		{name: "list", run: runClustersList},
		{name: "get", run: runClustersGet},
	}}
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
