// Command omnirelay is the OmniRelay Mesh binary: agent, demo, mesh, keygen, cert and sim
// subcommands. Only this package calls os.Exit.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage: omnirelay <command> [args]

commands:
  demo     run a 5-node mesh on this machine and watch it detect a crash (start here)
  agent    run one mesh node and its control API
  cert     create a CA and issue node and operator certificates (cert ca, cert issue)
  mesh     query an agent's control API (mesh peers, mesh leaders, mesh shards)
  keygen   print a new base64 packet-encryption key, or write it to a file (-o FILE)
  sim      run scenarios (membership, metadata, leadership, shards) in the deterministic simulator

Run "omnirelay <command> --help" for a command's flags.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "agent":
		return runAgent(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "mesh":
		return runMesh(args[1:], stdout, stderr)
	case "keygen":
		return runKeygen(args[1:], stdout, stderr)
	case "cert":
		return runCert(args[1:], stdout, stderr)
	case "sim":
		return runSim(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "omnirelay: unknown command %q\n%s", args[0], usage)
	return 2
}
