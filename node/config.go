package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns; the message
// names the field and says why.
var ErrInvalidConfig = errors.New("node: invalid config")

// Profiles accepted in Config.Profile.
const (
	ProfileLAN        = "lan"        // swim.LANProfile: fast timers for a LAN (default)
	ProfileMemberlist = "memberlist" // swim.MemberlistProfile: hashicorp/memberlist's LAN timers
)

// Config configures a Node. The zero value of every optional field means its
// documented default.
type Config struct {
	// Name is this node's unique name in the cluster. Required.
	Name string
	// Bind is the host:port the node listens on, UDP and TCP alike. Port 0 picks a
	// free port (read it back with Node.Addr). Default "0.0.0.0:7946".
	Bind string
	// Advertise is the host:port peers reach this node at. Default: the bound
	// address; required when Bind's host is a wildcard (0.0.0.0, ::), since peers
	// cannot reach a wildcard. Port 0 means the bound port. A host name is resolved
	// once, by Start (the protocol carries IP literals only).
	Advertise string
	// Join lists seed addresses (host:port). Start tries them, with backoff, until
	// one answers or its ctx ends. Host names are resolved once, when the join
	// starts, off the node's loop. Empty: start a new cluster (or call Join later).
	Join []string
	// Control is the host:port of the HTTP control API (/control/v1, /metrics,
	// /healthz, /readyz). Empty: not served. Port 0 picks a free port. A host that
	// is not loopback needs TLS (or Insecure): whoever reaches an unauthenticated
	// API can drain every node.
	Control string
	// TLS, when set, serves the control API over mutual TLS 1.3 with this node's
	// certificate and enforces its roles (docs/security.md, "Control API"): a
	// client certificate of the trust bundle and the node's cluster, or a bearer
	// token of ControlTokens. Its identity must be this node's: role node, name
	// Name, cluster ClusterLabel (identity.DefaultCluster when the label is
	// empty). The node re-reads its files every TLSReloadInterval, so certificates
	// and the bundle rotate without a restart. Nil: plain HTTP.
	TLS *identity.Source
	// Signer, with TLS, makes this node a signing member: it redeems the join
	// tokens of Signer.Tokens for node certificates signed by Signer.CA, on the
	// enrollment stream (docs/security.md, "Enrollment"), and the control API's
	// POST /control/v1/tokens creates tokens. Whoever holds this node's disk holds
	// the CA key. Nil: tokens presented here are refused (ErrNotSigner).
	Signer *Signer
	// ControlTokens are the bearer tokens the control API accepts (their hashes,
	// with a role and a name each), for automation without a certificate. With
	// TLS or tokens set, every route but /healthz and /readyz needs credentials.
	ControlTokens []control.BearerToken
	// ControlMaxConns caps the connections open to the control API server; one
	// more is accepted and closed at once (counted in
	// omnirelay_control_connections_refused_total). Default 256. Each idle
	// connection costs a descriptor and a goroutine.
	ControlMaxConns int
	// ControlMaxWatchers caps the watch streams (peers and shards) open at once;
	// one more gets 503 too_many_watchers. Default control.DefaultMaxWatchers
	// (128), or half of ControlMaxConns if that is less. Must be below
	// ControlMaxConns, so probes and the CLI still get in.
	ControlMaxWatchers int
	// ControlIdleTimeout closes a keep-alive connection of the control API idle
	// this long. Default 30 s.
	ControlIdleTimeout time.Duration
	// ControlReadTimeout bounds reading one request, headers and body. Default 10 s.
	ControlReadTimeout time.Duration
	// ControlWriteTimeout bounds writing one response, and each event of a watch
	// stream (streams live on: the deadline is renewed per write). Default 30 s.
	ControlWriteTimeout time.Duration
	// Profile selects the membership timers: "lan" (default) or "memberlist".
	Profile string
	// Tune adjusts the profile's swim.Config (timers, fan-outs) before validation.
	// Name, Addr, ClusterLabel and MTU are set by the node afterwards.
	Tune func(*swim.Config)
	// ClusterLabel keeps clusters that share a network apart: packets of another
	// label are dropped. Default "".
	ClusterLabel string
	// MTU is the largest UDP payload sent, in bytes. Default wire.DefaultMTU (1400).
	// With encryption the state machine packs wire.SealOverhead bytes less, so the
	// sealed packet still fits. Raising it risks IP fragmentation; lowering it packs
	// less gossip per probe.
	MTU int
	// Keys enables encryption (AES-256-GCM) of packets and stream frames: Keys[0]
	// seals, every key opens; plain input is then refused. Each key is 32 bytes.
	// Empty: everything is sent in the clear and sealed input refused, which
	// leadership and shards allow only with Insecure. Rotate at run time through
	// Node.Keyring.
	Keys [][]byte
	// KeysFromJoin makes Start take the keyring from the first Join seed that
	// answers an enrollment stream (mutual TLS with this node's certificate,
	// docs/security.md, "Enrollment"), so the node needs no key file. It needs TLS
	// and Join, and Keys empty. A seed without keys answers an empty keyring: the
	// node then runs without keys, as the cluster does.
	KeysFromJoin bool
	// Insecure lets a node with leadership or shards (Voters or Shards set) run
	// without Keys. Unauthenticated packets let anyone who reaches Bind forge lease
	// votes and shard traffic, declare members dead or impersonate them, so
	// Validate refuses leadership or shards without Keys unless Insecure is set.
	// Set it only on a network nobody else can reach. Any node without Keys,
	// membership-only ones included, logs a warning at start and exports
	// omnirelay_insecure 1. Ignored when Keys is set. It also lets the control
	// API listen on a non-loopback address without TLS.
	Insecure bool

	// unsignedGossip turns off the signed self-claims of a TLS cluster, for the
	// benchmarks that measure what they cost. Not public: a cluster with node
	// certificates always signs.
	unsignedGossip bool
	// wan makes this node a gateway's member of the WAN pool (startGateway):
	// named NAME@CLUSTER, its streams and certificates are of any cluster of the
	// trust domain (wanName).
	wan bool
	// poolAudit, with wan, is the gateway node's audit log: the pool's records
	// (refused streams, forged claims) go to the same file, by one writer.
	poolAudit *auditLog
	// StreamTimeout bounds one stream exchange (dial, request, reply). Default 10 s.
	// Lower it to give up sooner on slow peers; push-pulls of big clusters need
	// more.
	StreamTimeout time.Duration
	// FirstFrameTimeout bounds the wait, from accept, for the first bytes of an
	// inbound stream's request (its 4-byte length prefix); the rest of the exchange
	// then has the rest of StreamTimeout. A peer writes its request as soon as it
	// connects, so the prefix arrives one network delay after the handshake: the
	// default 1 s is over three intercontinental round trips plus a sender's GC
	// pause, and a connection that sends nothing holds an inbound slot (64 in all)
	// for at most that long. Raise it only for links slower than that. Default 1 s.
	FirstFrameTimeout time.Duration
	// JoinBackoff is the wait before the first join retry; it doubles after every
	// round in which no seed answered, up to JoinBackoffMax, with ±25% jitter.
	// Default 200 ms.
	JoinBackoff time.Duration
	// JoinBackoffMax caps the join retry wait. Default 5 s.
	JoinBackoffMax time.Duration
	// EventBuffer is the channel capacity of each Subscribe subscription; when a
	// subscriber falls that far behind, its oldest events are dropped (and
	// counted). Default 256.
	EventBuffer int
	// HealthTimeout bounds how long /healthz and /readyz wait for the event loop
	// to answer; a loop that does not is reported wedged. Default 1 s. The loop
	// normally answers in microseconds; lower detects a wedge sooner, higher
	// tolerates long loop work (push-pulls of very big clusters).
	HealthTimeout time.Duration
	// History is how many membership changes are kept for watch streams to resume
	// from (Last-Event-ID). Default 1024. A client further behind gets a fresh
	// snapshot.
	History int
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
	// Clock is the time source. Default SystemClock.
	Clock Clock
	// Transport carries packets and streams. Default: ListenNet(Bind). When set,
	// Bind is ignored and the transport's Addr is the bound address.
	Transport Transport
	// Meta is this node's initial metadata (see Node.SetMeta), set before it
	// joins so the join carries it. Roles go in the RolesKey ("roles") key,
	// comma-separated. Default none. Keys and values must fit the metadata limits
	// (keys 1..128 bytes, values up to 1 KiB, at most 64 keys, 16 KiB in all).
	Meta map[string]string
	// Voters is the bootstrap voter set of leader election (lease.Config.Voters):
	// the names of the nodes with the `voter` role, 3 or 5 of them. It must be the
	// same list on every node of the cluster, voters and non-voters alike: two
	// different lists could elect two leaders. Empty: this node takes no part in
	// leadership (Leader reports none, Fence fails). Required when Voter is set.
	Voters []string
	// Voter makes this node a voter: it promises epochs, accepts leases and may be
	// elected. Its name must be in Voters and DataDir is required. The node adds
	// VoterRole to its "roles" metadata, so `role=voter` finds the voters.
	Voter bool
	// DataDir holds this node's durable state: the lease state file
	// (lease-state.json), written atomically and fsynced before any lease message
	// that depends on it leaves. Created (0700) if missing. Required for a voter:
	// a voter that forgot its promises could grant two leases for one epoch.
	// Optional otherwise (a non-voter keeps its state in memory).
	DataDir string
	// LeaseStorage, when set, keeps the lease state instead of DataDir's file, for
	// embedders with their own durable store. Save must be durable when it returns;
	// when it fails the node drops that batch's packets. Satisfies a voter's
	// DataDir requirement.
	LeaseStorage lease.Storage
	// LeaseTune adjusts the lease timers (lease.DefaultConfig: 3 s leases renewed
	// every second, failover in about 3.5 s) before validation. Every node must
	// use the same LeaseDuration and MaxDrift. Self and Voters are set by the node.
	LeaseTune func(*lease.Config)
	// AuditLog, when set, receives one JSON object per line for every join, leave
	// and death of a member and every leadership transition (schema in
	// docs/observability.md). The node serializes its writes; it does not close
	// the writer. Default: no audit log.
	AuditLog io.Writer
	// Shards turns on shard routing with this many shards (shard.Config.Shards,
	// at most rendezvous.MaxShards): keys map to shard xxhash64(key) mod Shards,
	// the leader places shards on the members and grants ownership leases. It
	// MUST be the same on every node for the cluster's lifetime (a node with
	// another count maps keys to other shards). Requires Voters (the shard
	// controller runs on the leader). 0 (the default): no shard routing. More
	// shards even out load and make each move smaller, at a few bytes per shard in
	// every map and a leader scan linear in Shards per tick.
	Shards int
	// ShardTune adjusts the shard timers and move limit (shard.DefaultConfig:
	// 3 s ownership leases renewed every second, 16 moves at once) before
	// validation. Every node must use the same LeaseDuration and MaxDrift.
	// Shards is set from the field above.
	ShardTune func(*shard.Config)
	// Federation makes this node part of a federation of clusters with
	// failover (docs/multi-cluster.md; Federation's fields). Requires Voters.
	// nil (the default): one cluster, /control/v1/clusters answers 404.
	Federation *Federation
}

// VoterRole is the role a voter adds to its "roles" metadata.
const VoterRole = "voter"

// Defaults used when a field is zero.
const (
	DefaultBind           = "0.0.0.0:7946"
	DefaultStreamTimeout  = 10 * time.Second
	DefaultFirstFrame     = time.Second
	DefaultJoinBackoff    = 200 * time.Millisecond
	DefaultJoinBackoffMax = 5 * time.Second
	DefaultEventBuffer    = 256
	DefaultHistory        = 1024
)

// withDefaults returns c with zero fields filled in.
func (c Config) withDefaults() Config {
	if c.Bind == "" {
		c.Bind = DefaultBind
	}
	if c.Profile == "" {
		c.Profile = ProfileLAN
	}
	if c.MTU == 0 {
		c.MTU = wire.DefaultMTU
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = DefaultStreamTimeout
	}
	if c.FirstFrameTimeout == 0 {
		c.FirstFrameTimeout = DefaultFirstFrame
	}
	if c.JoinBackoff == 0 {
		c.JoinBackoff = DefaultJoinBackoff
	}
	if c.JoinBackoffMax == 0 {
		c.JoinBackoffMax = DefaultJoinBackoffMax
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = DefaultEventBuffer
	}
	if c.History == 0 {
		c.History = DefaultHistory
	}
	if c.ControlMaxConns == 0 {
		c.ControlMaxConns = DefaultControlMaxConns
	}
	if c.ControlMaxWatchers == 0 {
		c.ControlMaxWatchers = min(control.DefaultMaxWatchers, c.ControlMaxConns/2)
	}
	if c.ControlIdleTimeout == 0 {
		c.ControlIdleTimeout = DefaultControlIdleTimeout
	}
	if c.ControlReadTimeout == 0 {
		c.ControlReadTimeout = DefaultControlReadTimeout
	}
	if c.ControlWriteTimeout == 0 {
		c.ControlWriteTimeout = DefaultControlWriteTimeout
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	return c
}

// Validate reports the first invalid field, after applying defaults, wrapping
// ErrInvalidConfig. It has no side effects and opens no socket.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(field, why string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, fmt.Sprintf(why, args...))
	}
	if c.Name == "" {
		return bad("Name", "is empty: every node needs a unique name")
	}
	if len(c.Name) > wire.MaxString {
		return bad("Name", "is longer than %d bytes", wire.MaxString)
	}
	if c.Transport == nil {
		if err := checkHostPort(c.Bind); err != nil {
			return bad("Bind", "%q: %v", c.Bind, err)
		}
	}
	if c.Advertise != "" {
		if err := checkHostPort(c.Advertise); err != nil {
			return bad("Advertise", "%q: %v", c.Advertise, err)
		}
		if host, _, _ := net.SplitHostPort(c.Advertise); isWildcard(host) {
			return bad("Advertise", "%q is a wildcard address peers cannot reach", c.Advertise)
		}
	} else if host, _, _ := net.SplitHostPort(c.Bind); c.Transport == nil && isWildcard(host) {
		return bad("Advertise", "is required when Bind (%q) is a wildcard address", c.Bind)
	}
	for i, s := range c.Join {
		if err := checkHostPort(s); err != nil {
			return bad(fmt.Sprintf("Join[%d]", i), "%q: %v", s, err)
		}
	}
	if c.Control != "" {
		if err := checkHostPort(c.Control); err != nil {
			return bad("Control", "%q: %v", c.Control, err)
		}
		if c.TLS == nil && !c.Insecure && !IsLoopback(c.Control) {
			return bad("Control", "%q is not a loopback address and TLS is not set: anyone who reaches it could drain every node; set TLS, bind Control to 127.0.0.1, or set Insecure", c.Control)
		}
	}
	if c.TLS != nil {
		id, want := c.TLS.Identity(), ClusterOf(c.ClusterLabel)
		switch {
		case id.Role != identity.RoleNode:
			return bad("TLS", "certificate names %s, of role %q: a node needs a certificate of role node", id, id.Role)
		case c.memberName(id) != c.Name:
			return bad("TLS", "certificate names %s, but Name is %q: issue the certificate for this node's name", id, c.Name)
		case !c.wan && id.Cluster != want:
			return bad("TLS", "certificate names %s, of cluster %q, but ClusterLabel %q makes this node's cluster %q", id, id.Cluster, c.ClusterLabel, want)
		}
	}
	if s := c.Signer; s != nil {
		switch {
		case c.TLS == nil:
			return bad("Signer", "is set without TLS: join tokens are redeemed only on TLS mesh streams")
		case s.CA == nil || s.Tokens == nil:
			return bad("Signer", "needs both CA and Tokens")
		case s.CA.TrustDomain != c.TLS.Identity().TrustDomain:
			return bad("Signer", "CA signs trust domain %q, this node's certificate is of %q", s.CA.TrustDomain, c.TLS.Identity().TrustDomain)
		}
	}
	if c.Profile != ProfileLAN && c.Profile != ProfileMemberlist {
		return bad("Profile", "%q: want %q or %q", c.Profile, ProfileLAN, ProfileMemberlist)
	}
	if c.MTU < 256+wire.SealOverhead || c.MTU > 65507 {
		return bad("MTU", "%d: want %d..65507 bytes", c.MTU, 256+wire.SealOverhead)
	}
	for i, k := range c.Keys {
		if len(k) != wire.KeySize {
			return bad(fmt.Sprintf("Keys[%d]", i), "is %d bytes: want %d (AES-256)", len(k), wire.KeySize)
		}
	}
	if c.KeysFromJoin {
		switch {
		case c.TLS == nil:
			return bad("KeysFromJoin", "needs TLS: keys are delivered only to a verified node certificate")
		case len(c.Join) == 0:
			return bad("KeysFromJoin", "needs Join: the keys come from a seed")
		case len(c.Keys) > 0:
			return bad("KeysFromJoin", "is set with Keys: give one of them")
		}
	}
	if len(c.Keys) == 0 && !c.KeysFromJoin && !c.Insecure && (len(c.Voters) > 0 || c.Shards != 0) {
		return bad("Keys", "is empty while leadership or shards are on: anyone who can reach the gossip port could forge lease votes; set Keys, or Insecure to run unauthenticated")
	}
	switch {
	case c.StreamTimeout < 0:
		return bad("StreamTimeout", "must be positive")
	case c.FirstFrameTimeout < 0:
		return bad("FirstFrameTimeout", "must be positive")
	case c.JoinBackoff < 0:
		return bad("JoinBackoff", "must be positive")
	case c.JoinBackoffMax < c.JoinBackoff:
		return bad("JoinBackoffMax", "(%v) must be at least JoinBackoff (%v)", c.JoinBackoffMax, c.JoinBackoff)
	case c.EventBuffer < 1:
		return bad("EventBuffer", "must be at least 1")
	case c.History < 1:
		return bad("History", "must be at least 1")
	case c.HealthTimeout < 0:
		return bad("HealthTimeout", "must be positive")
	case c.ControlMaxConns < 1:
		return bad("ControlMaxConns", "is %d: want at least 1", c.ControlMaxConns)
	case c.ControlMaxWatchers < 1 || c.ControlMaxWatchers >= c.ControlMaxConns:
		return bad("ControlMaxWatchers", "is %d: want 1..ControlMaxConns-1 (%d), so probes still get a connection",
			c.ControlMaxWatchers, c.ControlMaxConns-1)
	case c.ControlIdleTimeout < 0 || c.ControlReadTimeout < 0 || c.ControlWriteTimeout < 0:
		return bad("ControlIdleTimeout/ControlReadTimeout/ControlWriteTimeout", "must be positive")
	}
	sc := c.swimConfig("127.0.0.1:1")
	if err := sc.Validate(); err != nil {
		return fmt.Errorf("%w: Profile/Tune: %v", ErrInvalidConfig, err)
	}
	if err := c.validateLease(bad); err != nil {
		return err
	}
	if err := c.validateShards(bad); err != nil {
		return err
	}
	if err := c.validateFederation(bad); err != nil {
		return err
	}
	return checkMeta(c.Meta)
}

// validateLease checks the leadership fields.
func (c Config) validateLease(bad func(field, why string, args ...any) error) error {
	if len(c.Voters) == 0 {
		if c.Voter {
			return bad("Voters", "is empty: a voter needs the cluster's voter list (the same on every node)")
		}
		return nil
	}
	if n := len(c.Voters); n%2 == 0 {
		return bad("Voters", "has %d names %v: use an odd number, 3 or 5 (%d voters need a quorum of %d, so they survive no more failures than %d would, with more ways to split)", n, c.Voters, n, n/2+1, n-1)
	}
	if !c.Voter && slices.Contains(c.Voters, c.Name) {
		return bad("Voter", "is not set but this node's name %q is in Voters: set Voter (and DataDir) or drop the name", c.Name)
	}
	if c.Voter && !slices.Contains(c.Voters, c.Name) {
		return bad("Voter", "is set but this node's name %q is not in Voters %v", c.Name, c.Voters)
	}
	if c.Voter && c.DataDir == "" && c.LeaseStorage == nil {
		return bad("DataDir", "is required for a voter: its lease promises must survive restarts")
	}
	lc, _ := c.leaseConfig()
	if err := lc.Validate(); err != nil {
		return fmt.Errorf("%w: Voters/LeaseTune: %v", ErrInvalidConfig, err)
	}
	return nil
}

// leaseConfig builds the lease config; ok is false when leadership is off.
func (c Config) leaseConfig() (lease.Config, bool) {
	if len(c.Voters) == 0 {
		return lease.Config{}, false
	}
	lc := lease.DefaultConfig(c.Name, c.Voters)
	if c.LeaseTune != nil {
		c.LeaseTune(&lc)
	}
	lc.Self, lc.Voters = c.Name, slices.Clone(c.Voters)
	return lc, true
}

// swimConfig builds the membership config for advertised address addr.
func (c Config) swimConfig(addr string) swim.Config {
	var sc swim.Config
	if c.Profile == ProfileMemberlist {
		sc = swim.MemberlistProfile(c.Name, addr)
	} else {
		sc = swim.LANProfile(c.Name, addr)
	}
	if c.Tune != nil {
		c.Tune(&sc)
	}
	sc.Name, sc.Addr, sc.ClusterLabel = c.Name, addr, c.ClusterLabel
	// Only IP literals get into the view, so nothing a peer sends makes the
	// transport resolve a name on the loop (PROTOCOL.md, section 3.4).
	sc.CheckAddr = wire.CheckAddr
	sc.MTU = c.MTU
	if len(c.Keys) > 0 {
		sc.MTU -= wire.SealOverhead
	}
	return sc
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q is not a number in 0..65535", port)
	}
	return nil
}

func isWildcard(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::" || host == "[::]"
}

// advertiseAddr picks the address peers reach us at, given the bound one.
func (c Config) advertiseAddr(bound string) string {
	if c.Advertise == "" {
		return bound
	}
	host, port, _ := net.SplitHostPort(c.Advertise)
	if port == "0" {
		_, port, _ = net.SplitHostPort(bound)
	}
	return net.JoinHostPort(host, port)
}

// validateShards checks the shard fields.
func (c Config) validateShards(bad func(field, why string, args ...any) error) error {
	if c.Shards == 0 {
		return nil
	}
	if c.Shards < 0 {
		return bad("Shards", "is %d: want 0 (off) or a positive count", c.Shards)
	}
	if len(c.Voters) == 0 {
		return bad("Shards", "needs Voters: the shard controller runs on the elected leader")
	}
	sc, _ := c.shardConfig()
	if err := sc.Validate(); err != nil {
		return fmt.Errorf("%w: Shards/ShardTune: %v", ErrInvalidConfig, err)
	}
	return nil
}

// shardConfig builds the shard config; ok is false when shard routing is off.
func (c Config) shardConfig() (shard.Config, bool) {
	if c.Shards == 0 {
		return shard.Config{}, false
	}
	sc := shard.DefaultConfig()
	if c.ShardTune != nil {
		c.ShardTune(&sc)
	}
	sc.Shards = c.Shards
	return sc, true
}

// IsLoopback reports whether hostport's host is a loopback address or
// "localhost": only the host's own users can reach it. An empty host (all
// interfaces) is not.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ClusterOf is the cluster segment of identities for a cluster label: the label
// itself, or identity.DefaultCluster when it is empty.
func ClusterOf(label string) string {
	if label == "" {
		return identity.DefaultCluster
	}
	return label
}
