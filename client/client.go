// Package client is the Go SDK for services that route by the mesh without
// embedding node: it follows one agent's control API at a time (docs/api.md),
// keeps the peer list and the shard map in memory, and answers which member owns
// a key, and at which endpoint, without a network call.
//
//	c, err := client.New(ctx, client.Config{
//		Agents: []string{"https://10.0.0.1:7070", "https://10.0.0.2:7070"},
//		TLS:    tlsConfig, // nil for plain http:// agents
//	})
//	if err != nil { ... }
//	defer c.Close()
//	addr, ok := c.Endpoint("user-42", "grpc") // the owner's metadata key "grpc"
//
// Two Server-Sent Events streams feed it, GET /control/v1/peers?watch=true and
// GET /control/v1/shards?watch=true, both resumed after a drop with Last-Event-ID.
// Every map is rebuilt from its placement, owners and states and its checksum
// checked before it is used (shard.DecodeMap, the code nodes run on maps from the
// leader), so Owner computes exactly what the agents compute. The current table
// is one immutable value behind an atomic pointer: Owner and Endpoint take no lock
// and do not allocate.
//
// When the agent's stream fails (refused, closed, silent for IdleTimeout, a body
// over the bounds, a map whose checksum does not match), the client moves to the
// next agent at once and keeps answering from the table it has; only after every
// agent failed in a row does it wait, Backoff doubling to BackoffMax. A map older
// than the one held (a lagging agent) is ignored, never installed.
//
// With Config.FollowActive the client also watches GET /control/v1/clusters
// (docs/multi-cluster.md). When its agent's view names another cluster active
// (the active descriptor with the highest failover version) and that cluster's
// gateways are reachable, the client moves to that cluster's control URLs as the
// gateways relay them, takes its members and shard map afresh, and keeps the old
// agents behind them as a fallback. Table.Cluster says which cluster it follows;
// Changed fires when that changes.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/shard"
)

// Member is one member of the mesh as the agent reports it (docs/api.md, peer
// fields). Its Meta map is shared with the client's table: read it, never write it.
type Member = control.Peer

// ErrClosed is returned by New when Close or the end of its context stops it
// before the first table, and wrapped by errors of a closed client.
var ErrClosed = errors.New("client: closed")

// ErrInvalidConfig is wrapped by New's errors for a bad Config; the message names
// the field.
var ErrInvalidConfig = errors.New("client: invalid config")

// ErrBadMap is wrapped by the error a stream ends with when an agent sends a
// shard map that does not decode or whose checksum does not match its content.
// The map is dropped (Stats.BadMaps) and the client moves to another agent.
var ErrBadMap = errors.New("client: bad shard map")

// Defaults of Config fields left zero.
const (
	DefaultBackoff       = 100 * time.Millisecond
	DefaultBackoffMax    = 5 * time.Second
	DefaultIdleTimeout   = 45 * time.Second // three of the agent's 15 s heartbeats
	DefaultMaxEventBytes = 16 << 20         // a map of about 200,000 shards
	DefaultDialTimeout   = 5 * time.Second
)

// Config configures a Client.
type Config struct {
	// Agents are control API URLs, "http://HOST:PORT" or "https://HOST:PORT"
	// (an agent's --control address). The client streams from one at a time, in
	// this order, and moves to the next when it fails. At least one.
	Agents []string
	// TLS is the TLS configuration for https:// agents: root CAs and, for mutual
	// TLS, a client certificate (GetClientCertificate lets it rotate). nil uses
	// the system roots and no client certificate. Setting it with an http:// agent
	// is refused: the agent would get the traffic unencrypted.
	TLS *tls.Config
	// Logger receives failovers and dropped maps; nil discards them.
	Logger *slog.Logger
	// Backoff is the first wait after every agent failed in a row, doubled per
	// further round up to BackoffMax, ±25 % jitter. Defaults DefaultBackoff,
	// DefaultBackoffMax. A failing agent is left for the next one at once.
	Backoff, BackoffMax time.Duration
	// IdleTimeout ends a stream that carried nothing (event or heartbeat) for this
	// long, so a hung agent is noticed. Keep it above the agents' heartbeat
	// interval (15 s). Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxEventBytes bounds one event of a stream (a whole shard map or peer
	// snapshot is one event) and so what an agent can make the client buffer.
	// A larger event ends the stream. Default DefaultMaxEventBytes.
	MaxEventBytes int
	// FollowActive makes the client follow the active cluster of a federation
	// (agents started with --cluster-id): it watches the agent's clusters view
	// and, when another cluster is active at a failover version at least the
	// one it follows and reachable, switches to that cluster's agents. A view
	// naming a lower version than one already seen (a lagging agent) is
	// ignored. Agents without federation (clusters_off) are followed as without
	// it. Off by default: a client of one cluster never leaves its agents.
	FollowActive bool
}

// maxFollowAgents bounds the agent list a switch builds (the new cluster's
// control URLs, then the previous agents as a fallback).
const maxFollowAgents = 64

// Cluster is the federation as the client's current agent reports it
// (FollowActive; zero otherwise, or before the first view).
type Cluster struct {
	Self    string // the cluster of the agent the client streams from
	Active  string // the active cluster of that agent's view ("" when none)
	Version uint64 // Active's failover version
}

// Stats counts what the client's streams did.
type Stats struct {
	Connects uint64 // streams opened (peers and shards each count)
	Failures uint64 // agent sessions that ended with an error
	Maps     uint64 // maps installed
	BadMaps  uint64 // maps dropped: undecodable or checksum mismatch
	Stale    uint64 // maps ignored because the table held a newer one
}

// Table is one immutable state of the client's view: the shard map and the
// members, as of the versions it names. A Table never changes; the client swaps
// in a new one.
type Table struct {
	m            *shard.Map        // nil before the first map
	members      map[string]Member // by name
	sorted       []Member          // by name
	peersVersion string            // EPOCH.N of the agent the members came from
	agent        string            // the agent the latest change came from
	mapCluster   string            // the cluster m came from (FollowActive)
	cluster      Cluster
}

// Cluster is the cluster view the table was taken under (FollowActive).
func (t *Table) Cluster() Cluster { return t.cluster }

// Map is the shard map (epoch, version, checksum, owners, states), nil before the
// first one arrived or when the agent runs no shard routing.
func (t *Table) Map() *shard.Map { return t.m }

// PeersVersion is the membership version (EPOCH.N, docs/api.md) of the agent the
// members were read from; "" before the first snapshot.
func (t *Table) PeersVersion() string { return t.peersVersion }

// Members returns the members sorted by name (a new slice; the Meta maps are
// shared and must not be written).
func (t *Table) Members() []Member { return slices.Clone(t.sorted) }

// Owner returns the member that serves key's shard: the map's owner of
// ShardForString(key), steady, rebalancing, or draining (it serves until it
// releases). false before the first map, while the shard has no owner, or when
// the owner is not in the member list. It takes no lock and does not allocate.
func (t *Table) Owner(key string) (Member, bool) {
	if t.m == nil {
		return Member{}, false
	}
	name := t.m.Owner(t.m.ShardForString(key))
	if name == "" {
		return Member{}, false
	}
	m, ok := t.members[name]
	return m, ok
}

// Endpoint returns the value of key's owner's metadata key name (for example the
// "grpc" or "http" address a service publishes with SetMeta or the agent's
// --meta), and false when there is no owner or it publishes no such key.
func (t *Table) Endpoint(key, name string) (string, bool) {
	m, ok := t.Owner(key)
	if !ok {
		return "", false
	}
	v := m.Meta[name]
	return v, v != ""
}

// Client follows the agents' control API; its methods are safe for concurrent use.
type Client struct {
	cfg    Config
	agents []*url.URL
	hc     *http.Client
	log    *slog.Logger

	table atomic.Pointer[Table]

	mu      sync.Mutex    // serializes table swaps and guards changed
	changed chan struct{} // closed at the next swap

	stats     struct{ connects, failures, maps, badMaps, stale atomic.Uint64 }
	shardsOff atomic.Bool // an agent answered shards_off: no map will come

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	ready  chan struct{} // closed at the first complete table (members and, if served, a map)
	once   sync.Once     // closes ready
}

// New validates cfg, starts following the agents and returns once the first
// agent that answers has delivered its members and its shard map (or said it
// runs no shard routing). If ctx ends first, New stops and returns an error
// wrapping ErrClosed with each agent's last failure. ctx bounds only this wait;
// the client runs until Close.
func New(ctx context.Context, cfg Config) (*Client, error) {
	agents, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dialer := &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 15 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		TLSClientConfig:       cfg.TLS.Clone(), // nil stays nil: system roots
		TLSHandshakeTimeout:   DefaultDialTimeout,
		ResponseHeaderTimeout: 10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   2,
	}
	c := &Client{cfg: cfg, agents: agents, hc: &http.Client{Transport: tr}, log: log,
		changed: make(chan struct{}), done: make(chan struct{}), ready: make(chan struct{})}
	c.table.Store(&Table{members: map[string]Member{}})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	lastErr := map[string]error{}
	var order []string // agents in the order they first failed
	var errMu sync.Mutex
	go func() {
		defer close(c.done)
		c.run(func(agent string, err error) {
			errMu.Lock()
			if _, seen := lastErr[agent]; !seen {
				order = append(order, agent)
			}
			lastErr[agent] = err
			errMu.Unlock()
		})
	}()
	select {
	case <-c.ready:
		return c, nil
	case <-ctx.Done():
	}
	c.Close()
	errMu.Lock()
	defer errMu.Unlock()
	var b strings.Builder
	for _, a := range order {
		fmt.Fprintf(&b, "; %s: %v", a, lastErr[a])
	}
	return nil, fmt.Errorf("%w before a first table (%v)%s", ErrClosed, context.Cause(ctx), b.String())
}

// validate checks cfg and parses the agent URLs.
func (cfg Config) validate() ([]*url.URL, error) {
	if len(cfg.Agents) == 0 {
		return nil, fmt.Errorf("%w: Agents is empty: name at least one agent control URL", ErrInvalidConfig)
	}
	var out []*url.URL
	for i, a := range cfg.Agents {
		u, err := cfg.parseAgent(a)
		if err != nil {
			return nil, fmt.Errorf("%w: Agents[%d] %w", ErrInvalidConfig, i, err)
		}
		out = append(out, u)
	}
	if cfg.MaxEventBytes < 0 || cfg.IdleTimeout < 0 || cfg.Backoff < 0 || cfg.BackoffMax < 0 {
		return nil, fmt.Errorf("%w: MaxEventBytes, IdleTimeout, Backoff and BackoffMax must not be negative", ErrInvalidConfig)
	}
	return out, nil
}

// parseAgent parses one control URL, from the config or relayed by a gateway.
func (cfg Config) parseAgent(a string) (*url.URL, error) {
	u, err := url.Parse(a)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: want http://HOST:PORT or https://HOST:PORT", a)
	}
	if u.Scheme == "http" && cfg.TLS != nil {
		return nil, fmt.Errorf("%q is http:// while TLS is set: use https://", a)
	}
	return u, nil
}

// Table returns the current table.
func (c *Client) Table() *Table { return c.table.Load() }

// Owner is c.Table().Owner(key): lock and allocation free.
func (c *Client) Owner(key string) (Member, bool) { return c.table.Load().Owner(key) }

// Endpoint is c.Table().Endpoint(key, name).
func (c *Client) Endpoint(key, name string) (string, bool) { return c.table.Load().Endpoint(key, name) }

// Members is c.Table().Members().
func (c *Client) Members() []Member { return c.table.Load().Members() }

// Changed returns a channel closed at the next table change (members or map).
// Fetch it before reading Table so no change slips between the two:
//
//	for {
//		ch := c.Changed()
//		use(c.Table())
//		<-ch
//	}
//
// A reader never blocks the client and never misses the latest table, only
// intermediate ones.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Agent returns the URL of the agent the latest change came from ("" before one).
func (c *Client) Agent() string { return c.table.Load().agent }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Connects: c.stats.connects.Load(), Failures: c.stats.failures.Load(),
		Maps: c.stats.maps.Load(), BadMaps: c.stats.badMaps.Load(), Stale: c.stats.stale.Load()}
}

// Close stops the streams and waits for them. The last table stays readable.
// Idempotent.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// swap installs the table edit makes of the current one and wakes Changed
// readers. edit returns nil to keep the current table.
func (c *Client) swap(edit func(old *Table) *Table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := edit(c.table.Load())
	if t == nil {
		return
	}
	c.table.Store(t)
	close(c.changed)
	c.changed = make(chan struct{})
}

// withMembers returns a copy of t whose members are ms.
func (t *Table) withMembers(ms map[string]Member, version, agent string) *Table {
	sorted := make([]Member, 0, len(ms))
	for _, m := range ms {
		sorted = append(sorted, m)
	}
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	n := *t
	n.members, n.sorted, n.peersVersion, n.agent = ms, sorted, version, agent
	return &n
}
