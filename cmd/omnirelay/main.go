// Command omnirelay is the OmniRelay Mesh binary: agent, demo, mesh, cert and sim
// subcommands.
//
// This minimal dispatcher was written by the sim helper so `omnirelay sim` works
// before the node helper's subcommands land; node helper: extend it, and keep the
// "sim" case dispatching to runSim (cmd/omnirelay/sim.go).
package main

import (
	"fmt"
	"io"
	"os"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: omnirelay <command> [args]\ncommands: sim")
		return 2
	}
	switch args[0] {
	case "sim":
		return runSim(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "omnirelay: unknown command %q\n", args[0])
	return 2
}
