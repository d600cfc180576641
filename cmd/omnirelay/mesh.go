package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
)

const meshUsage = `usage:
  omnirelay mesh peers list [--status S[,S]] [--role R] [--meta K:V ...] [--limit N] [--watch]
  omnirelay mesh peers get NAME
  omnirelay mesh status [--cluster]
  omnirelay mesh monitor [--log-level L|off]
  omnirelay mesh members force-leave NAME [--prune]
  omnirelay mesh meta set KEY=VALUE | meta delete KEY
  omnirelay mesh join HOST:PORT ... | leave
  omnirelay mesh leaders status | leaders step-down
  omnirelay mesh voters add NAME ... | voters remove NAME ...
  omnirelay mesh clusters list | clusters get ID
  omnirelay mesh clusters promote ID [--force] | clusters drain ID [--to ID]
  omnirelay mesh shards list|summary|owner KEY|drain NODE [--undo]|rebalance  (mesh shards help)
  omnirelay mesh keyring list|install|use|remove --key-file FILE      (mesh keyring help)
  omnirelay mesh token create --ttl D [--role R]      (at a signing member; admin)
Every command also takes [--addr URL] [-o table|json] [--timeout D]
[--tls-ca FILE --tls-cert FILE --tls-key FILE].

Talks to an agent's control API only. --addr defaults to $OMNIRELAY_ADDR, else
http://127.0.0.1:7070. --timeout (default 10s) bounds the whole command (--watch and
monitor run until interrupted). Statuses: alive, suspect, dead, left. -o json prints
the API's answer. step-down and voters are served by the leader: asked of another
agent they follow its answer to the leader's control URL once. clusters promote and
drain are asked of the active cluster (through a control URL its gateways relay
when --addr is an agent of another) and served by its lease holder.

An agent with TLS wants a client certificate: --tls-ca, --tls-cert and --tls-key
(or $OMNIRELAY_TLS_CA, $OMNIRELAY_TLS_CERT, $OMNIRELAY_TLS_KEY); the CLI then speaks
HTTPS. Automation may send a bearer token instead: $OMNIRELAY_TOKEN.
`

// repeatFlag collects a repeatable flag whose values are kept whole: a --meta
// filter's value may hold commas (the API takes one key:value per meta parameter).
type repeatFlag []string

func (r *repeatFlag) String() string     { return strings.Join(*r, " ") }
func (r *repeatFlag) Set(s string) error { *r = append(*r, s); return nil }

// meshCommand is `omnirelay mesh`: every subcommand reads an agent's control API.
func meshCommand() command {
	return command{name: "mesh", usage: meshUsage, subs: []command{
		{name: "peers", usage: meshUsage, subs: []command{
			{name: "list", run: runPeersList},
			{name: "get", run: runPeersGet},
		}},
		statusCommand(),
		monitorCommand(),
		membersCommand(),
		metaCommand(),
		joinCommand(),
		leaveCommand(),
		{name: "leaders", usage: meshUsage, subs: []command{
			{name: "status", run: runLeadersStatus},
			stepDownCommand(),
		}},
		votersCommand(),
		clustersCommand(),
		shardsCommand(),
		keyringCommand(),
		tokenCommand(),
	}}
}

// Environment variables of the mesh commands (docs/configuration.md, "The CLI").
const (
	envAddr    = "OMNIRELAY_ADDR"
	envTLSCA   = "OMNIRELAY_TLS_CA"
	envTLSCert = "OMNIRELAY_TLS_CERT"
	envTLSKey  = "OMNIRELAY_TLS_KEY"
	// envToken is a bearer token: in the environment, unlike a flag, other users
	// of the host cannot read it.
	envToken = "OMNIRELAY_TOKEN"
)

// apiFlags are the flags every mesh command has.
type apiFlags struct {
	addr    string
	out     string
	timeout time.Duration
	tls     tlsFlags
	hc      *http.Client // built by check
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	def := os.Getenv(envAddr)
	if def == "" {
		def = "http://" + defaultControl
	}
	fs.StringVar(&a.addr, "addr", def, "control API URL of an agent")
	fs.StringVar(&a.out, "o", "table", "output: table or json")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "give up after this long")
	a.tls.register(fs, "this caller's", os.Getenv(envTLSCA), os.Getenv(envTLSCert), os.Getenv(envTLSKey))
}

// check validates the flags, makes addr a URL (https:// with a certificate) and
// builds the HTTP client.
func (a *apiFlags) check() error {
	if a.out != "table" && a.out != "json" {
		return fmt.Errorf("-o %q: want table or json", a.out)
	}
	cfg, err := a.tls.clientConfig()
	if err != nil {
		return err
	}
	scheme := "http://"
	if cfg != nil {
		scheme = "https://"
	}
	if rest, ok := strings.CutPrefix(a.addr, "http://"); ok && cfg != nil {
		a.addr = rest
	}
	if !strings.Contains(a.addr, "://") {
		a.addr = scheme + a.addr
	}
	var rt http.RoundTripper = http.DefaultTransport
	if cfg != nil {
		rt = &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment}
	}
	if tok := strings.TrimSpace(os.Getenv(envToken)); tok != "" {
		rt = bearer{token: tok, next: rt}
	}
	a.hc = &http.Client{Timeout: a.timeout, Transport: rt}
	return nil
}

func (a *apiFlags) client() *control.Client {
	return &control.Client{Base: a.addr, HTTP: a.hc}
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// tlsFlags are --tls-ca, --tls-cert and --tls-key, shared by the agent and the
// mesh commands.
type tlsFlags struct{ ca, cert, key string }

func (t *tlsFlags) register(fs *flag.FlagSet, whose, ca, cert, key string) {
	fs.StringVar(&t.ca, "tls-ca", ca, "trust bundle (PEM CA certificates) that peers' certificates must chain to")
	fs.StringVar(&t.cert, "tls-cert", cert, whose+" certificate (PEM, from omnirelay cert issue); enables mutual TLS")
	fs.StringVar(&t.key, "tls-key", key, "the certificate's private key (PEM)")
}

// clientConfig is the CLI's TLS configuration, nil for plain HTTP: with a
// certificate it presents it and checks the server is a node of its own cluster;
// with --tls-ca alone (a bearer token authenticates) it checks the server is a
// node of the bundle's trust domain.
func (t tlsFlags) clientConfig() (*tls.Config, error) {
	if t.ca != "" && t.cert == "" && t.key == "" {
		cfg, err := identity.BundleClientConfig(t.ca, nil)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		return cfg, nil
	}
	src, err := t.source()
	if src == nil || err != nil {
		return nil, err
	}
	return src.ClientConfig(identity.Policy{Roles: []identity.Role{identity.RoleNode}}), nil
}

// source loads the files, or returns nil when none is named. It does file I/O.
func (t tlsFlags) source() (*identity.Source, error) {
	if t.ca == "" && t.cert == "" && t.key == "" {
		return nil, nil
	}
	if t.ca == "" || t.cert == "" || t.key == "" {
		return nil, fmt.Errorf("--tls-ca %q, --tls-cert %q, --tls-key %q: give all three (the mesh commands: or --tls-ca alone, with $%s), or none", t.ca, t.cert, t.key, envToken)
	}
	src, err := identity.NewSource(identity.Files{Cert: t.cert, Key: t.key, Bundle: t.ca}, nil)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return src, nil
}

// parseMesh parses a mesh command's flags and wantArgs positional arguments; code
// is -1 to go on, else the exit code (help and errors already printed).
func parseMesh(fs *flag.FlagSet, a *apiFlags, args []string, wantArgs int, stdout, stderr io.Writer) ([]string, int) {
	return parseMeshUsage(fs, a, args, wantArgs, meshUsage, stdout, stderr)
}

// parseMeshUsage is parseMesh for a command with a usage text of its own.
func parseMeshUsage(fs *flag.FlagSet, a *apiFlags, args []string, wantArgs int, usage string, stdout, stderr io.Writer) ([]string, int) {
	fs.SetOutput(stderr)
	a.register(fs)
	pos, err := parseArgs(fs, usage, args)
	if err != nil {
		return nil, parseExit(err, stdout)
	}
	if len(pos) != wantArgs {
		err = fmt.Errorf("want %d argument(s), got %d", wantArgs, len(pos))
	} else {
		err = a.check()
	}
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay %s: %v\n", fs.Name(), err)
		return nil, 2
	}
	return pos, -1
}

func runPeersList(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mesh peers list", flag.ContinueOnError)
	var a apiFlags
	status := fs.String("status", "", "only peers with these statuses (comma-separated)")
	role := fs.String("role", "", "only peers with this role (metadata key role, or listed in roles)")
	limit := fs.Int("limit", 0, "page size used while fetching (all pages are fetched)")
	var meta repeatFlag
	fs.Var(&meta, "meta", "only peers with this key:value metadata (repeatable; the value may hold commas)")
	watch := fs.Bool("watch", false, "print the list's changes as they happen, until interrupted")
	if _, code := parseMesh(fs, &a, args, 0, stdout, stderr); code >= 0 {
		return code
	}
	var st []string
	if *status != "" {
		st = strings.Split(*status, ",")
	}
	if *watch {
		ctx, stop := untilSignal()
		defer stop()
		q := url.Values{}
		if *status != "" {
			q.Set("status", *status)
		}
		if *role != "" {
			q.Set("role", *role)
		}
		for _, m := range meta {
			q.Add("meta", m)
		}
		if err := watchPeers(ctx, a.client(), "&"+q.Encode(), stdout, ""); err != nil && ctx.Err() == nil {
			return meshError(stderr, a.addr, err)
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	ps, version, err := a.client().ListPeers(ctx, control.ListOptions{Status: st, Role: *role, Meta: meta, Limit: *limit})
	if err != nil {
		return meshError(stderr, a.addr, err)
	}
	if a.out == "json" {
		// All pages in one answer of the API's own shape, so json output is the API's.
		return writeJSONOut(stdout, control.PeerList{Version: version, Peers: ps})
	}
	printPeers(stdout, ps, time.Now())
	return 0
}

func runPeersGet(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mesh peers get", flag.ContinueOnError)
	var a apiFlags
	pos, code := parseMesh(fs, &a, args, 1, stdout, stderr)
	if code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	r, err := a.client().GetPeer(ctx, pos[0])
	if err != nil {
		return meshError(stderr, a.addr, err)
	}
	if a.out == "json" {
		return writeJSONOut(stdout, r)
	}
	printPeers(stdout, []control.Peer{r.Peer}, time.Now())
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
	var a apiFlags
	if _, code := parseMesh(fs, &a, args, 0, stdout, stderr); code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	l, err := a.client().GetLeaders(ctx)
	if err != nil {
		return meshError(stderr, a.addr, err)
	}
	if a.out == "json" {
		return writeJSONOut(stdout, l)
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
		fmt.Fprintf(tw, "VALID FOR\t%s\n", validFor(l.Leader.ValidUntil, now))
	}
	fmt.Fprintf(tw, "VOTERS\t%s\n", strings.Join(l.Voters, ","))
	for _, v := range l.VoterStatus {
		fmt.Fprintf(tw, "  %s\t%s for %s\n", v.Name, v.Status, age(now, v.Since))
	}
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

// validFor is how long the serving node still believes in a lease. A node that has
// not learned the deadline (zero time) or whose belief has lapsed prints "unknown"
// rather than a negative duration.
func validFor(until, now time.Time) string {
	if d := until.Sub(now); !until.IsZero() && d > 0 {
		return d.Round(100 * time.Millisecond).String()
	}
	return "unknown"
}
