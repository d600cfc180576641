package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

const agentUsage = `usage: omnirelay agent --name NAME --bind HOST:PORT [--advertise HOST:PORT]
       [--join HOST:PORT,...] [--control HOST:PORT] [--config FILE]
       [--profile lan|memberlist] [--key BASE64 ...] [--cluster-label L]
       [--log-format text|json] [--log-level debug|info|warn|error]
       [--addr-file FILE] [--join-timeout D] [--leave-timeout D]
       [--meta KEY=VALUE ...] [--role NAME ...]
       [--voters A,B,C [--voter --data-dir DIR]] [--audit-log FILE]
       [--shards N]

Runs one mesh node and its control API until SIGINT or SIGTERM, then leaves the
cluster gracefully. Flags override the config file (JSON, see docs/configuration.md).
`

// duration is a time.Duration written as a Go duration string in JSON ("250ms").
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// swimFile holds the timer overrides of the config file's "swim" object; absent keys
// keep the profile's value.
type swimFile struct {
	ProbeInterval     *duration `json:"probe_interval"`
	ProbeTimeout      *duration `json:"probe_timeout"`
	IndirectChecks    *int      `json:"indirect_checks"`
	GossipInterval    *duration `json:"gossip_interval"`
	GossipNodes       *int      `json:"gossip_nodes"`
	EagerFanout       *int      `json:"eager_fanout"`
	SuspicionMult     *int      `json:"suspicion_mult"`
	RetransmitMult    *int      `json:"retransmit_mult"`
	PushPullInterval  *duration `json:"pushpull_interval"`
	ReconnectInterval *duration `json:"reconnect_interval"`
	TombstoneTTL      *duration `json:"tombstone_ttl"`
}

func (s *swimFile) apply(c *swim.Config) {
	setD := func(dst *time.Duration, v *duration) {
		if v != nil {
			*dst = time.Duration(*v)
		}
	}
	setI := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	setD(&c.ProbeInterval, s.ProbeInterval)
	setD(&c.ProbeTimeout, s.ProbeTimeout)
	setI(&c.IndirectChecks, s.IndirectChecks)
	setD(&c.GossipInterval, s.GossipInterval)
	setI(&c.GossipNodes, s.GossipNodes)
	setI(&c.EagerFanout, s.EagerFanout)
	setI(&c.SuspicionMult, s.SuspicionMult)
	setI(&c.RetransmitMult, s.RetransmitMult)
	setD(&c.PushPullInterval, s.PushPullInterval)
	setD(&c.ReconnectInterval, s.ReconnectInterval)
	setD(&c.TombstoneTTL, s.TombstoneTTL)
}

// agentFile is the agent's config file. Every key is documented in
// docs/configuration.md; unknown keys are an error.
type agentFile struct {
	Name         string            `json:"name"`
	Bind         string            `json:"bind"`
	Advertise    string            `json:"advertise"`
	Join         []string          `json:"join"`
	Control      string            `json:"control"`
	Profile      string            `json:"profile"`
	ClusterLabel string            `json:"cluster_label"`
	MTU          int               `json:"mtu"`
	Keys         []string          `json:"keys"`
	LogFormat    string            `json:"log_format"`
	LogLevel     string            `json:"log_level"`
	AddrFile     string            `json:"addr_file"`
	JoinTimeout  *duration         `json:"join_timeout"`
	LeaveTimeout *duration         `json:"leave_timeout"`
	Swim         swimFile          `json:"swim"`
	Meta         map[string]string `json:"meta"`
	Roles        []string          `json:"roles"`
	Voters       []string          `json:"voters"`
	Voter        bool              `json:"voter"`
	DataDir      string            `json:"data_dir"`
	AuditLog     string            `json:"audit_log"`
	Shards       int               `json:"shards"`
	// Control API limits; 0 means node's default.
	ControlMaxConns    int `json:"control_max_conns"`
	ControlMaxWatchers int `json:"control_max_watchers"`
}

// Agent defaults beyond node's.
const (
	defaultControl      = "127.0.0.1:7070"
	defaultJoinTimeout  = 30 * time.Second
	defaultLeaveTimeout = 5 * time.Second
)

func loadAgentFile(path string) (agentFile, error) {
	f := agentFile{}
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, fmt.Errorf("config file %s: %w", path, err)
	}
	return f, nil
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// metaFlag collects repeatable KEY=VALUE flags; values may hold commas and '='.
type metaFlag map[string]string

func (m metaFlag) String() string { return fmt.Sprint(map[string]string(m)) }
func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	m[k] = v
	return nil
}

// agentSettings is the merged result of config file and flags.
type agentSettings struct {
	cfg          node.Config
	logFormat    string
	logLevel     string
	addrFile     string
	joinTimeout  time.Duration
	leaveTimeout time.Duration
	auditLog     string
}

// parseAgent merges the config file (if any) and the flags, flags winning.
func parseAgent(args []string, stderr io.Writer) (agentSettings, error) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, agentUsage); fs.PrintDefaults() }
	var (
		configPath = fs.String("config", "", "JSON config file (docs/configuration.md)")
		name       = fs.String("name", "", "unique node name (required)")
		bind       = fs.String("bind", "", "UDP+TCP host:port to listen on (port 0: any free port; default "+node.DefaultBind+")")
		advertise  = fs.String("advertise", "", "host:port peers reach this node at (default: the bound address)")
		control    = fs.String("control", "", "control API host:port (default "+defaultControl+"; \"off\" disables)")
		profile    = fs.String("profile", "", "membership timers: lan (default) or memberlist")
		label      = fs.String("cluster-label", "", "cluster label; packets of other labels are dropped")
		logFormat  = fs.String("log-format", "", "log format: text (default) or json")
		logLevel   = fs.String("log-level", "", "log level: debug, info (default), warn, error")
		addrFile   = fs.String("addr-file", "", "write the bound addresses as JSON to this file once running")
		joinTO     = fs.Duration("join-timeout", 0, "give up joining after this long (default 30s; 0 means never)")
		leaveTO    = fs.Duration("leave-timeout", 0, "bound on the graceful leave at shutdown (default 5s)")
		voter      = fs.Bool("voter", false, "this node is a leader-election voter (its name must be in --voters; needs --data-dir)")
		dataDir    = fs.String("data-dir", "", "directory of durable state (the lease state file); required with --voter")
		auditLog   = fs.String("audit-log", "", "append JSON-lines audit records (join, leave, dead, leadership) to this file")
		shards     = fs.Int("shards", 0, "shard count, identical on every node for the cluster's lifetime (enables shard routing; needs --voters)")
		maxConns   = fs.Int("control-max-conns", 0, "connections open to the control API at once; more are closed at accept (default 256)")
		maxWatch   = fs.Int("control-max-watchers", 0, "watch streams open at once; more get 503 (default 128, below --control-max-conns)")
		voters     listFlag
		join, keys listFlag
		roles      listFlag
		meta       = metaFlag{}
	)
	fs.Var(meta, "meta", "metadata KEY=VALUE published to every peer (repeatable; merged over the config file's \"meta\")")
	fs.Var(&roles, "role", "role of this node (repeatable, or comma-separated): the \""+node.RolesKey+"\" metadata key, which the control API's role filter matches")
	fs.Var(&join, "join", "seed host:port (repeatable, or comma-separated)")
	fs.Var(&voters, "voters", "leader-election voter names, comma-separated, identical on every node (3 or 5; enables leadership)")
	fs.Var(&keys, "key", "base64 32-byte packet key (repeatable; the first is primary; make one with: omnirelay keygen)")
	if err := fs.Parse(args); err != nil {
		return agentSettings{}, err
	}
	if fs.NArg() > 0 {
		return agentSettings{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var f agentFile
	if *configPath != "" {
		var err error
		if f, err = loadAgentFile(*configPath); err != nil {
			return agentSettings{}, err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	pick := func(flagName, flagVal, fileVal string) string {
		if set[flagName] {
			return flagVal
		}
		return fileVal
	}
	s := agentSettings{
		logFormat:    pick("log-format", *logFormat, f.LogFormat),
		logLevel:     pick("log-level", *logLevel, f.LogLevel),
		addrFile:     pick("addr-file", *addrFile, f.AddrFile),
		auditLog:     pick("audit-log", *auditLog, f.AuditLog),
		joinTimeout:  defaultJoinTimeout,
		leaveTimeout: defaultLeaveTimeout,
	}
	if f.JoinTimeout != nil {
		s.joinTimeout = time.Duration(*f.JoinTimeout)
	}
	if set["join-timeout"] {
		s.joinTimeout = *joinTO
	}
	if f.LeaveTimeout != nil {
		s.leaveTimeout = time.Duration(*f.LeaveTimeout)
	}
	if set["leave-timeout"] {
		s.leaveTimeout = *leaveTO
	}
	if s.logFormat == "" {
		s.logFormat = "text"
	}
	if s.logFormat != "text" && s.logFormat != "json" {
		return s, fmt.Errorf("log format %q: want text or json", s.logFormat)
	}
	if s.logLevel == "" {
		s.logLevel = "info"
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s.logLevel)); err != nil {
		return s, fmt.Errorf("log level %q: want debug, info, warn or error", s.logLevel)
	}
	ctl := pick("control", *control, f.Control)
	switch ctl {
	case "":
		ctl = defaultControl
	case "off":
		ctl = ""
	}
	s.cfg = node.Config{
		Name:         pick("name", *name, f.Name),
		Bind:         pick("bind", *bind, f.Bind),
		Advertise:    pick("advertise", *advertise, f.Advertise),
		Control:      ctl,
		Profile:      pick("profile", *profile, f.Profile),
		ClusterLabel: pick("cluster-label", *label, f.ClusterLabel),
		MTU:          f.MTU,
		Join:         f.Join,
		Tune:         f.Swim.apply,
		Voters:       f.Voters,
		Voter:        f.Voter,
		DataDir:      pick("data-dir", *dataDir, f.DataDir),
		Shards:       f.Shards,

		ControlMaxConns:    f.ControlMaxConns,
		ControlMaxWatchers: f.ControlMaxWatchers,
	}
	if set["shards"] {
		s.cfg.Shards = *shards
	}
	if set["control-max-conns"] {
		s.cfg.ControlMaxConns = *maxConns
	}
	if set["control-max-watchers"] {
		s.cfg.ControlMaxWatchers = *maxWatch
	}
	if set["voters"] {
		s.cfg.Voters = voters
	}
	if set["voter"] {
		s.cfg.Voter = *voter
	}
	if set["join"] {
		s.cfg.Join = join
	}
	if len(f.Meta) > 0 || len(meta) > 0 {
		s.cfg.Meta = map[string]string{}
		maps.Copy(s.cfg.Meta, f.Meta)
		maps.Copy(s.cfg.Meta, meta)
	}
	rs := f.Roles
	if set["role"] {
		rs = roles
	}
	if len(rs) > 0 {
		if s.cfg.Meta == nil {
			s.cfg.Meta = map[string]string{}
		}
		s.cfg.Meta[node.RolesKey] = strings.Join(rs, ",")
	}
	keyStrs := f.Keys
	if set["key"] {
		keyStrs = keys
	}
	for i, k := range keyStrs {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return s, fmt.Errorf("key %d: not base64: %w", i+1, err)
		}
		s.cfg.Keys = append(s.cfg.Keys, b)
	}
	if err := s.cfg.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(level)) // validated by parseAgent
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// AddrFile is what --addr-file receives once the agent runs: the addresses it
// actually bound, for scripts and tests that start agents on port 0.
type AddrFile struct {
	Name      string `json:"name"`
	Bind      string `json:"bind"`
	Advertise string `json:"advertise"`
	Control   string `json:"control"` // URL of the control API, "" when off
	PID       int    `json:"pid"`
}

// writeFileAtomic writes via a temporary file and rename, so a reader polling for
// the file never sees it half-written.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func runAgent(args []string, stdout, stderr io.Writer) int {
	s, err := parseAgent(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay agent: %v\n", err)
		return 2
	}
	base := newLogger(stderr, s.logFormat, s.logLevel)
	s.cfg.Logger = base // node adds node=NAME itself
	log := base.With("node", s.cfg.Name)
	if s.auditLog != "" {
		af, err := os.OpenFile(s.auditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "omnirelay agent: --audit-log: %v\n", err)
			return 1
		}
		defer af.Close()
		s.cfg.AuditLog = af
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	startCtx := ctx
	if s.joinTimeout > 0 {
		var cancel context.CancelFunc
		startCtx, cancel = context.WithTimeout(ctx, s.joinTimeout)
		defer cancel()
	}
	n, err := node.Start(startCtx, s.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay agent: %v\n", err)
		return 1
	}
	defer n.Close()
	ctlURL := ""
	if n.ControlAddr() != "" {
		ctlURL = "http://" + n.ControlAddr()
	}
	log.Info("agent running", "bind", n.Addr(), "advertise", n.AdvertiseAddr(), "control", ctlURL)
	if u := publicControlURL(n.ControlAddr(), n.AdvertiseAddr()); u != "" && s.cfg.Meta[node.ControlMetaKey] == "" {
		// Peers name it when they refuse a leader-only request, so the CLI can follow.
		if err := n.SetMeta(node.ControlMetaKey, u); err != nil {
			log.Warn("publishing the control URL in metadata failed", "err", err)
		}
	}
	if s.addrFile != "" {
		b, _ := json.Marshal(AddrFile{Name: n.Name(), Bind: n.Addr(), Advertise: n.AdvertiseAddr(), Control: ctlURL, PID: os.Getpid()})
		if err := writeFileAtomic(s.addrFile, b); err != nil {
			fmt.Fprintf(stderr, "omnirelay agent: writing --addr-file: %v\n", err)
			return 1
		}
	}
	<-ctx.Done()
	stop() // a second signal now kills the process the default way
	log.Info("shutting down: leaving the cluster", "timeout", s.leaveTimeout.String())
	lctx, cancel := context.WithTimeout(context.Background(), s.leaveTimeout)
	defer cancel()
	if err := n.Leave(lctx); err != nil {
		log.Warn("leave incomplete; peers will detect the departure by probing", "err", err)
	}
	n.Close()
	log.Info("agent stopped")
	return 0
}

func runKeygen(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: omnirelay keygen\nPrints a new random 32-byte packet key, base64: pass it to agent --key.")
		return 2
	}
	k := make([]byte, wire.KeySize)
	rand.Read(k)
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(k))
	return 0
}
