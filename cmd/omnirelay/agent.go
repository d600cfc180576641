package main

import (
	"cmp"
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
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

const agentUsage = `usage: omnirelay agent --name NAME --bind HOST:PORT [--advertise HOST:PORT]
       [--join HOST:PORT,...] [--control HOST:PORT] [--config FILE]
       [--profile lan|memberlist] [--key-file FILE | --insecure] [--cluster-label L]
       [--log-format text|json] [--log-level debug|info|warn|error]
       [--addr-file FILE] [--join-timeout D] [--leave-timeout D]
       [--meta KEY=VALUE ...] [--role NAME ...]
       [--voters A,B,C [--voter --data-dir DIR]] [--audit-log FILE]
       [--shards N] [--tls-ca FILE --tls-cert FILE --tls-key FILE]
       [--control-tokens FILE]
       [--cluster-id ID --clusters A,B,... [--region R] [--cluster-state active|passive]
        [--cluster-priority N] [--promote-after D]
        [--gateway --wan-bind HOST:PORT [--wan-advertise HOST:PORT] [--wan-join HOST:PORT,...]]]

Runs one mesh node and its control API until SIGINT, SIGTERM or "mesh leave", then
leaves the cluster gracefully. SIGHUP reloads the log level and metadata from the
config file and flags (docs/configuration.md, "Reloading"). Flags override the config file (JSON, see docs/configuration.md).
The agent needs a packet key (--key-file, $` + keyEnv + `, or the config file) unless
--insecure is given. Make one with: omnirelay keygen -o FILE
A control API on a non-loopback address needs --tls-* (mutual TLS and roles) or
--insecure. Make certificates with: omnirelay cert ca, omnirelay cert issue
`

// duration is a time.Duration written as a Go duration string in JSON ("250ms").
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	// A type error lets the decoder name the key (decodeConfig words it).
	bad := &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[duration]()}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return bad
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return bad
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
	MaxMembers        *int      `json:"max_members"`
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
	setI(&c.MaxMembers, s.MaxMembers)
}

// previewTune sets a preview build's protocol range (preview.go); a release
// build leaves the profile's.
var previewTune = func(*swim.Config) {}

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
	KeyFile      string            `json:"key_file"`
	Insecure     bool              `json:"insecure"`
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
	TLSCA        string            `json:"tls_ca"`
	TLSCert      string            `json:"tls_cert"`
	TLSKey       string            `json:"tls_key"`
	TLSCAKey     string            `json:"tls_ca_key"`
	SPIFFESocket string            `json:"spiffe_socket"`
	// ControlTokens is a file of bearer-token hashes (control.ParseTokens).
	ControlTokens string `json:"control_tokens"`
	Shards        int    `json:"shards"`
	// Federation (docs/multi-cluster.md).
	ClusterID       string    `json:"cluster_id"`
	Clusters        []string  `json:"clusters"`
	Region          string    `json:"region"`
	ClusterState    string    `json:"cluster_state"`
	ClusterPriority int       `json:"cluster_priority"`
	PromoteAfter    *duration `json:"promote_after"`
	Gateway         bool      `json:"gateway"`
	WANBind         string    `json:"wan_bind"`
	WANAdvertise    string    `json:"wan_advertise"`
	WANJoin         []string  `json:"wan_join"`
	// Control API limits; 0 means node's default.
	ControlMaxConns    int `json:"control_max_conns"`
	ControlMaxWatchers int `json:"control_max_watchers"`
}

// Metadata keys the agent publishes about its binary (unless meta sets them).
const (
	buildMetaKey    = "version"  // node.BuildInfo().Version
	protocolMetaKey = "protocol" // wire protocol range accepted, "MIN-MAX"
)

// Agent defaults beyond node's.
const (
	defaultControl = "127.0.0.1:7070"
	// defaultBind is loopback so that an agent started with no address runs on a
	// laptop as is; reaching other hosts takes --bind (and --advertise for a
	// wildcard such as 0.0.0.0).
	defaultBind         = "127.0.0.1:7946"
	defaultJoinTimeout  = 30 * time.Second
	defaultLeaveTimeout = 5 * time.Second
)

func loadAgentFile(path string) (agentFile, error) {
	f := agentFile{}
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := decodeConfig(b, &f); err != nil {
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
	swim         string   // the config file's "swim" object, for reload comparisons
	warnings     []string // logged once the logger exists
	ident        identityPlan
}

// parseAgent merges the config file (if any) and the flags, flags winning.
func parseAgent(args []string, stderr io.Writer) (agentSettings, error) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "JSON config file (docs/configuration.md)")
		name       = fs.String("name", "", "unique node name (required)")
		bind       = fs.String("bind", "", "UDP+TCP host:port to listen on (port 0: any free port; default "+defaultBind+": this machine only)")
		advertise  = fs.String("advertise", "", "host:port peers reach this node at (default: the bound address)")
		ctlAddr    = fs.String("control", "", "control API host:port (default "+defaultControl+"; \"off\" disables)")
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
		keyFile    = fs.String("key-file", "", "file of base64 32-byte packet keys, one a line, the first primary (not accessible to other users; make one with: omnirelay keygen -o FILE)")
		insecure   = fs.Bool("insecure", false, "run without packet keys: anyone who can reach the gossip port can join, impersonate members and forge lease votes")
		maxConns   = fs.Int("control-max-conns", 0, "connections open to the control API at once; more are closed at accept (default 256)")
		maxWatch   = fs.Int("control-max-watchers", 0, "watch streams open at once; more get 503 (default 128, below --control-max-conns)")
		tokens     = fs.String("control-tokens", "", "file of bearer-token hashes the control API accepts, one \"sha256:HEX ROLE NAME\" a line")
		joinToken  = fs.String("join-token", "", "single-use join token (omnirelay mesh token create): redeemed through a --join seed (any member relays it to the signing member) for a node certificate, written to --tls-cert and --tls-key, and the packet keys")
		caKey      = fs.String("tls-ca-key", "", "the CA's private key (PEM; its certificate is in --tls-ca): this agent becomes a signing member that creates and redeems join tokens")
		spiffe     = fs.String("spiffe-socket", "", "SPIFFE Workload API socket path: take the certificate and trust bundle from it, rotated as it pushes (instead of --tls-*)")
		clusterID  = fs.String("cluster-id", "", "this cluster's id in a federation of clusters (one of --clusters; enables multi-cluster failover; needs --voters)")
		region     = fs.String("region", "", "the region this cluster runs in (published in its descriptor)")
		clState    = fs.String("cluster-state", "", "the cluster's state before its first write: active (exactly one cluster of the federation) or passive (default)")
		clPriority = fs.Int("cluster-priority", 0, "order of self-promotion in an unplanned failover, lower first")
		promoteTO  = fs.Duration("promote-after", 0, "promote this passive cluster after the active one has been unreachable this long (default 5s)")
		gateway    = fs.Bool("gateway", false, "this node is a gateway: it joins the WAN pool of the federation's gateways (needs --wan-bind)")
		wanBind    = fs.String("wan-bind", "", "UDP+TCP host:port of the gateway's WAN pool")
		wanAdv     = fs.String("wan-advertise", "", "host:port other gateways reach this one at (default: the WAN bound address)")
		clusters   listFlag
		wanJoin    listFlag
		tf         tlsFlags
		voters     listFlag
		join, keys listFlag
		roles      listFlag
		meta       = metaFlag{}
	)
	tf.register(fs, "this node's", "", "", "")
	fs.Var(meta, "meta", "metadata KEY=VALUE published to every peer (repeatable; merged over the config file's \"meta\")")
	fs.Var(&roles, "role", "role of this node (repeatable, or comma-separated): the \""+node.RolesKey+"\" metadata key, which the control API's role filter matches")
	fs.Var(&join, "join", "seed host:port (repeatable, or comma-separated)")
	fs.Var(&clusters, "clusters", "every cluster id of the federation, comma-separated, in one order shared by every cluster (append only)")
	fs.Var(&wanJoin, "wan-join", "WAN seed host:port: a gateway of this or another cluster (repeatable, or comma-separated)")
	fs.Var(&voters, "voters", "leader-election voter names, comma-separated, identical on every node (3 or 5; enables leadership)")
	fs.Var(&keys, "key", "base64 32-byte packet key (repeatable; the first is primary); visible to every user of the host in the process list: prefer --key-file or $"+keyEnv)
	pos, err := parseArgs(fs, agentUsage, args)
	if err != nil {
		return agentSettings{}, err
	}
	if len(pos) > 0 {
		return agentSettings{}, fmt.Errorf("unexpected argument %q", pos[0])
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
	if b, err := json.Marshal(f.Swim); err == nil {
		s.swim = string(b)
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
	ctl := pick("control", *ctlAddr, f.Control)
	switch ctl {
	case "":
		ctl = defaultControl
	case "off":
		ctl = ""
	}
	s.cfg = node.Config{
		Name:         pick("name", *name, f.Name),
		Bind:         cmp.Or(pick("bind", *bind, f.Bind), defaultBind),
		Advertise:    pick("advertise", *advertise, f.Advertise),
		Control:      ctl,
		Profile:      pick("profile", *profile, f.Profile),
		ClusterLabel: pick("cluster-label", *label, f.ClusterLabel),
		MTU:          f.MTU,
		Join:         f.Join,
		Tune:         func(c *swim.Config) { f.Swim.apply(c); previewTune(c) },
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
	if err := s.federation(f, set, federationFlags{*clusterID, clusters, *region, *clState, *clPriority, *promoteTO,
		*gateway, *wanBind, *wanAdv, wanJoin}); err != nil {
		return s, err
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
	ks := keySources{file: f.Keys, fileKeyFile: f.KeyFile}
	if set["key"] {
		ks.flag = keys
	}
	if set["key-file"] {
		ks.flagKeyFile = *keyFile
	}
	ks.env, _ = os.LookupEnv(keyEnv)
	keyStrs, from, err := ks.resolve()
	if err != nil {
		return s, err
	}
	if from == "--key" {
		s.warnings = append(s.warnings, "--key puts the packet key in this process's command line, which every user of this host can read (ps, /proc/PID/cmdline): use --key-file or $"+keyEnv)
	}
	for i, k := range keyStrs {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return s, fmt.Errorf("key %d (%s): not base64: %w", i+1, from, err)
		}
		s.cfg.Keys = append(s.cfg.Keys, b)
	}
	s.cfg.Insecure = f.Insecure
	if set["insecure"] {
		s.cfg.Insecure = *insecure
	}
	tf = tlsFlags{ca: pick("tls-ca", tf.ca, f.TLSCA), cert: pick("tls-cert", tf.cert, f.TLSCert), key: pick("tls-key", tf.key, f.TLSKey)}
	s.ident, err = planIdentity(tf, pick("spiffe-socket", *spiffe, f.SPIFFESocket), *joinToken,
		pick("tls-ca-key", *caKey, f.TLSCAKey), s.cfg.DataDir, s.cfg.Join)
	if err != nil {
		return s, err
	}
	if !s.ident.pending() {
		if s.cfg.TLS, err = tf.source(); err != nil {
			return s, err
		}
	}
	withTLS := s.cfg.TLS != nil || s.ident.pending()
	if path := pick("control-tokens", *tokens, f.ControlTokens); path != "" {
		if s.cfg.ControlTokens, err = control.LoadTokens(path); err != nil {
			return s, err
		}
	}
	if s.cfg.Control != "" && !withTLS && !s.cfg.Insecure && !node.IsLoopback(s.cfg.Control) {
		return s, fmt.Errorf("control API on %s without TLS: anyone who reaches it could drain every node; "+
			"give --tls-ca, --tls-cert and --tls-key (docs/security.md), bind --control to 127.0.0.1, or pass --insecure", s.cfg.Control)
	}
	// Without a key file, a node with a certificate takes the keyring from its
	// seed (a token's enrollment brings it too); the first node needs a key.
	if len(s.cfg.Keys) == 0 && !s.cfg.Insecure && withTLS && len(s.cfg.Join) > 0 {
		s.cfg.KeysFromJoin = s.ident.joinToken == ""
	}
	check := s.cfg
	check.Insecure = true // the agent's own rule below names its flags
	if s.ident.pending() {
		check.KeysFromJoin = false // TLS is made at start: prepare, then node.Start validates
	}
	if err := check.Validate(); err != nil {
		return s, err
	}
	if len(s.cfg.Keys) == 0 && !s.cfg.Insecure && !(withTLS && len(s.cfg.Join) > 0) {
		return s, errNoKey
	}
	return s, nil
}

// federationFlags are the multi-cluster flags as given.
type federationFlags struct {
	id              string
	clusters        listFlag
	region, state   string
	priority        int
	promoteAfter    time.Duration
	gateway         bool
	wanBind, wanAdv string
	wanJoin         listFlag
}

// federation fills s.cfg.Federation from the file and the flags (flags win);
// none of the keys given: no federation.
func (s *agentSettings) federation(f agentFile, set map[string]bool, fl federationFlags) error {
	pick := func(name, flagVal, fileVal string) string {
		if set[name] {
			return flagVal
		}
		return fileVal
	}
	fed := node.Federation{Cluster: pick("cluster-id", fl.id, f.ClusterID), Clusters: f.Clusters,
		Region: pick("region", fl.region, f.Region), State: pick("cluster-state", fl.state, f.ClusterState),
		Priority: f.ClusterPriority}
	if set["clusters"] {
		fed.Clusters = fl.clusters
	}
	if set["cluster-priority"] {
		fed.Priority = fl.priority
	}
	if f.PromoteAfter != nil {
		fed.PromoteAfter = time.Duration(*f.PromoteAfter)
	}
	if set["promote-after"] {
		fed.PromoteAfter = fl.promoteAfter
	}
	gw := f.Gateway
	if set["gateway"] {
		gw = fl.gateway
	}
	g := node.Gateway{Bind: pick("wan-bind", fl.wanBind, f.WANBind), Advertise: pick("wan-advertise", fl.wanAdv, f.WANAdvertise), Join: f.WANJoin}
	if set["wan-join"] {
		g.Join = fl.wanJoin
	}
	if fed.Cluster == "" {
		if len(fed.Clusters) > 0 || gw || g.Bind != "" || fed.State != "" {
			return fmt.Errorf("--clusters, --cluster-state, --gateway and --wan-bind need --cluster-id (this cluster's id)")
		}
		return nil
	}
	if gw {
		if g.Bind == "" {
			return fmt.Errorf("--gateway needs --wan-bind (the WAN pool's host:port)")
		}
		fed.Gateway = &g
	} else if g.Bind != "" || len(g.Join) > 0 {
		return fmt.Errorf("--wan-bind and --wan-join are a gateway's: give --gateway too")
	}
	s.cfg.Federation = &fed
	return nil
}

// keyEnv is the environment variable packet keys are read from when none is given
// on the command line: a process's environment, unlike its arguments, is readable
// only by its own user.
const keyEnv = "OMNIRELAY_KEY"

// errNoKey refuses an agent without packet keys: every agent needs one, not only
// those with leadership or shards, because unauthenticated packets let anyone who
// reaches the gossip port declare members dead, inject fake ones and use the agent
// as a reflector (docs/configuration.md, "Packet keys").
var errNoKey = errors.New("no packet key: anyone who can reach the gossip port could join, declare members dead and forge lease votes; " +
	"set --key-file FILE (make one with: omnirelay keygen -o FILE), $" + keyEnv + " or the config file's key_file, or pass --insecure")

// keySources are the places packet keys may come from.
type keySources struct {
	flag        []string // --key
	flagKeyFile string   // --key-file
	env         string   // $OMNIRELAY_KEY
	file        []string // config file "keys"
	fileKeyFile string   // config file "key_file"
}

// resolve returns the keys of the first source that is set: the command line, then
// the environment, then the config file; it names the source for messages. Two
// sources of one level are an error rather than a guess.
func (k keySources) resolve() ([]string, string, error) {
	switch {
	case len(k.flag) > 0 && k.flagKeyFile != "":
		return nil, "", errors.New("--key and --key-file: give one of them")
	case k.flagKeyFile != "":
		ks, err := readKeyFile(k.flagKeyFile)
		return ks, "--key-file " + k.flagKeyFile, err
	case len(k.flag) > 0:
		return k.flag, "--key", nil
	case strings.TrimSpace(k.env) != "":
		var l listFlag
		l.Set(k.env)
		return l, "$" + keyEnv, nil
	case len(k.file) > 0 && k.fileKeyFile != "":
		return nil, "", errors.New("config file: keys and key_file: give one of them")
	case k.fileKeyFile != "":
		ks, err := readKeyFile(k.fileKeyFile)
		return ks, "key_file " + k.fileKeyFile, err
	}
	return k.file, "config file keys", nil
}

// readKeyFile reads packet keys, one a line (as keygen writes them; blank lines and
// lines starting with # are skipped). A file other users can access is refused, as
// ssh refuses such a private key: whoever reads the key can forge any packet.
func readKeyFile(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("key file %s is accessible to other users (mode %04o): chmod 600 %s", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var keys []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key file %s holds no key", path)
	}
	return keys, nil
}

// newLogger builds the agent's logger; level may be changed while it runs
// (SIGHUP reload).
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
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
	WAN       string `json:"wan"`     // a gateway's advertised WAN pool address, "" when not a gateway
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
		return parseExit(err, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay agent: %v\n", err)
		return 2
	}
	level := new(slog.LevelVar)
	var lvl slog.Level
	lvl.UnmarshalText([]byte(s.logLevel)) // validated by parseAgent
	level.Set(lvl)
	base := newLogger(stderr, s.logFormat, level)
	s.cfg.Logger = base // node adds node=NAME itself
	log := base.With("node", s.cfg.Name)
	for _, w := range s.warnings {
		log.Warn(w)
	}
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
	// SIGHUP reloads (reload.go); without this it would end the process without
	// a leave, which peers see as a crash.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	startCtx := ctx
	if s.joinTimeout > 0 {
		var cancel context.CancelFunc
		startCtx, cancel = context.WithTimeout(ctx, s.joinTimeout)
		defer cancel()
	}
	release, err := s.ident.prepare(startCtx, &s, log)
	defer release()
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay agent: %v\n", err)
		return 1
	}
	n, err := node.Start(startCtx, s.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay agent: %s\n", joinFailure(err, ctx.Err(), startCtx.Err(), s.joinTimeout))
		return 1
	}
	defer n.Close()
	ctlURL := ""
	if n.ControlAddr() != "" {
		ctlURL = "http://" + n.ControlAddr()
		if s.cfg.TLS != nil {
			ctlURL = "https://" + n.ControlAddr()
		}
	}
	log.Info("agent running", "bind", n.Addr(), "advertise", n.AdvertiseAddr(), "control", ctlURL)
	if u := publicControlURL(n.ControlAddr(), n.AdvertiseAddr(), s.cfg.TLS != nil); u != "" && s.cfg.Meta[node.ControlMetaKey] == "" {
		// Peers name it when they refuse a leader-only request, so the CLI can follow.
		if err := n.SetMeta(node.ControlMetaKey, u); err != nil {
			log.Warn("publishing the control URL in metadata failed", "err", err)
		}
	}
	// Peers read these for `mesh status --cluster`; an operator's own meta wins.
	b := node.BuildInfo()
	for k, v := range map[string]string{buildMetaKey: b.Version, protocolMetaKey: b.Protocol()} {
		if _, own := s.cfg.Meta[k]; !own {
			if err := n.SetMeta(k, v); err != nil {
				log.Warn("publishing the build in metadata failed", "key", k, "err", err)
			}
		}
	}
	if s.addrFile != "" {
		b, _ := json.Marshal(AddrFile{Name: n.Name(), Bind: n.Addr(), Advertise: n.AdvertiseAddr(), Control: ctlURL, WAN: n.GatewayAddr(), PID: os.Getpid()})
		if err := writeFileAtomic(s.addrFile, b); err != nil {
			fmt.Fprintf(stderr, "omnirelay agent: writing --addr-file: %v\n", err)
			return 1
		}
	}
	for running := true; running; {
		select {
		case <-hup:
			reloadAgent(args, &s, level, n, log)
		case <-ctx.Done():
			running = false
		case <-n.Left():
			running = false
		}
	}
	select {
	case <-n.Left():
		log.Info("shutting down: left the cluster on request (mesh leave)")
	default:
		stop() // a second signal now kills the process the default way
		log.Info("shutting down: leaving the cluster", "timeout", s.leaveTimeout.String())
		lctx, cancel := context.WithTimeout(context.Background(), s.leaveTimeout)
		defer cancel()
		if err := n.Leave(lctx); err != nil {
			log.Warn("leave incomplete; peers will detect the departure by probing", "err", err)
		}
	}
	n.Close()
	log.Info("agent stopped")
	return 0
}

const keygenUsage = "usage: omnirelay keygen [-o FILE]\nPrints a new random 32-byte packet key, base64, or writes it to a new file (mode 0600): pass that to agent --key-file.\n"

// joinFailure words a failed start whose join was cut short in the operator's
// terms: "interrupted" (a signal) or "timed out after D", never the context's own
// "context canceled" or "context deadline exceeded".
func joinFailure(err, signalled, started error, timeout time.Duration) string {
	msg := err.Error()
	switch {
	case signalled != nil:
		return strings.Replace(msg, "("+signalled.Error()+")", "(interrupted while joining)", 1)
	case errors.Is(started, context.DeadlineExceeded):
		return strings.Replace(msg, "("+started.Error()+")", fmt.Sprintf("(timed out after %s, --join-timeout)", timeout), 1)
	}
	return msg
}

func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the key to this new file, readable only by you, instead of printing it")
	pos, err := parseArgs(fs, keygenUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "omnirelay keygen: unexpected argument %q\n%s", pos[0], keygenUsage)
		return 2
	}
	k := make([]byte, wire.KeySize)
	rand.Read(k)
	line := base64.StdEncoding.EncodeToString(k) + "\n"
	if *out == "" {
		fmt.Fprint(stdout, line)
		return 0
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay keygen: %v\n", err)
		return 1
	}
	return 0
}
