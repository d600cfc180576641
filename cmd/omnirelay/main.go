// Command omnirelay is the OmniRelay Mesh binary: agent, demo, mesh, keygen, cert, sim and version
// subcommands. Only this package calls os.Exit.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `usage: omnirelay <command> [args]

commands:
  demo     run a 5-node mesh on this machine and watch it detect a crash (start here)
  agent    run one mesh node and its control API
  cert     create a CA and issue node and operator certificates (cert ca, cert issue)
  mesh     query an agent's control API (mesh peers, mesh leaders, mesh shards, mesh keyring)
  keygen   print a new base64 packet-encryption key, or write it to a file (-o FILE)
  sim      run scenarios (membership, metadata, leadership, shards) in the deterministic simulator
  version  print this binary's version, Go release and wire protocol range

Run "omnirelay <command> --help" for a command's flags.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	return commandTree().dispatch(args, stdout, stderr)
}

// command is one node of the command tree: a leaf runs, a group dispatches on its
// next argument. The tree is the only list of commands, so help tests walk it.
type command struct {
	name  string // the word that selects it
	run   func(args []string, stdout, stderr io.Writer) int
	subs  []command
	usage string // of a group: printed for help and for a missing or unknown subcommand
}

func commandTree() command {
	return command{name: "omnirelay", usage: usage, subs: []command{
		{name: "agent", run: runAgent},
		{name: "demo", run: runDemo},
		meshCommand(),
		{name: "keygen", run: runKeygen},
		certCommand(),
		simCommand(),
		{name: "version", run: runVersion},
	}}
}

func (c command) dispatch(args []string, stdout, stderr io.Writer) int {
	if c.run != nil {
		return c.run(args, stdout, stderr)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, c.usage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, c.usage)
		return 0
	}
	for _, s := range c.subs {
		if s.name == args[0] {
			return s.dispatch(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n%s", c.name, args[0], c.usage)
	return 2
}

// helpText is the error parseArgs returns for -h or --help: the command's usage and
// flags, which the caller prints to stdout. It matches flag.ErrHelp.
type helpText string

func (h helpText) Error() string { return string(h) }
func (helpText) Unwrap() error   { return flag.ErrHelp }

// parseArgs parses args into fs, flags before or after the positional arguments,
// which it returns. A bad flag is reported with the usage and flags on fs's output.
func parseArgs(fs *flag.FlagSet, usage string, args []string) ([]string, error) {
	fs.Usage = func() {} // printed below, to the stream that fits
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			writeUsage(&b, fs, usage)
			return nil, helpText(b.String())
		}
		if err != nil {
			writeUsage(fs.Output(), fs, usage)
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseExit is the exit code for a parseArgs error, printing help to stdout.
func parseExit(err error, stdout io.Writer) int {
	var h helpText
	if errors.As(err, &h) {
		fmt.Fprint(stdout, h)
		return 0
	}
	return 2
}

func writeUsage(w io.Writer, fs *flag.FlagSet, usage string) {
	fmt.Fprint(w, usage)
	out := fs.Output()
	fs.SetOutput(w)
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
	fs.SetOutput(out)
}
