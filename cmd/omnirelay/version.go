package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/omnirelay/mesh/node"
)

const versionUsage = "usage: omnirelay version [-o text|json]\nPrints this binary's version, the Go release that built it and the wire protocol versions it accepts.\n"

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "text", "output: text or json")
	pos, err := parseArgs(fs, versionUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) > 0 || (*out != "text" && *out != "json") {
		fmt.Fprint(stderr, "omnirelay version: want no argument and -o text or json\n"+versionUsage)
		return 2
	}
	b := node.BuildInfo()
	if *out == "json" {
		return writeJSONOut(stdout, b)
	}
	fmt.Fprintf(stdout, "omnirelay %s\ngo %s\nprotocol %s (sends %d)\n", b.Version, b.Go, b.Protocol(), b.ProtocolMax)
	return 0
}
