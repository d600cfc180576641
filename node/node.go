// Package node is OmniRelay Mesh's runtime: what a service embeds to join the mesh.
//
//	n, err := node.Start(ctx, node.Config{Name: "api-1", Bind: "10.0.0.5:7946", Join: seeds})
//	defer n.Close()
//	defer n.Leave(ctx)
//	for ev := range n.Subscribe().C { ... }
//
// One goroutine, the loop, owns the protocol stack (stack: the swim state
// machine); it is the only code that touches it. Around it: a goroutine reading
// datagrams, one accepting streams and one per stream in flight, and the control API's
// HTTP server when configured. They talk to the loop through channels and never
// block it: a datagram that finds the loop's queue full is dropped and counted, as
// the network would. Time comes from the Clock seam, sockets from the Transport seam,
// so the loop runs under testing/synctest on MemNetwork.
package node

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Errors of the node API.
var (
	// ErrNoSeedAnswered means Join (or Start with Config.Join) gave up, because its
	// context ended, before any seed answered a join. The wrapping error lists each
	// seed's last failure.
	ErrNoSeedAnswered = errors.New("node: no seed answered")
	// ErrClosed means the node was closed.
	ErrClosed = errors.New("node: closed")
	// ErrNameInUse means Join (or Start) found a live member of this node's name at
	// another address in the cluster; the node joined nothing and should stop.
	ErrNameInUse = errors.New("node: name already in use")
)

// Member is one node as the local node sees it.
type Member = swim.Member

// Event is a membership change seen by this node.
type Event struct {
	// ID is the event's correlation id: 16 hex digits of xxhash64(member name,
	// incarnation, kind). Every node that sees the same fact (say node-3 dead at
	// incarnation 2) logs it under the same id, so one grep follows it across the
	// cluster's logs.
	ID      string
	Kind    swim.EventKind
	Member  Member
	At      time.Time // when this node observed it, by its Clock
	Version uint64    // membership version reached by this change (control API "N")
	// Meta is what changed, for Kind == EventMeta only (Member is the member
	// whose metadata changed); nil otherwise.
	Meta *MetaChange
}

// Node is a running member of the mesh. Its methods are safe for concurrent use.
type Node struct {
	cfg      Config
	log      *slog.Logger
	logs     *logHub // log records for the control API's log watchers
	clock    Clock
	tr       Transport
	kr       *wire.Keyring
	replay   *wire.ReplayFilter
	addr     string // advertised
	epoch    string
	metrics  *metrics
	handler  func() http.Handler // the control API, built on first use: most embedded nodes never serve it
	lead     *leaderState        // nil: leadership off (no Config.Voters)
	shards   *shardState         // nil: shard routing off (no Config.Shards)
	fed      *fedState           // nil: one cluster (no Config.Federation)
	auditLog *auditLog           // nil: no Config.AuditLog
	// auditShared: auditLog is Config.poolAudit, run and closed by its owner.
	auditShared bool

	// Owned by the loop goroutine.
	stack  *stack.Stack
	rng    *rand.Rand // join jitter; the host has its own
	reader wire.PacketReader
	dec    wire.Decoder
	join   *joinState
	leaves []chan struct{}
	// clusterHash is ClusterHash(Config.ClusterLabel): received packets of another
	// label are not counted as accepted.
	clusterHash uint32
	versions    wire.Versions // the protocol range this node speaks (swim.Config.Versions)
	versionLog  versionLog
	// refusedLog rate-limits the lines of refused inbound streams.
	refusedLog rateLog
	// versionRefusedLog rate-limits the lines of members refused for their
	// protocol range.
	versionRefusedLog rateLog
	// certs, with TLS, holds the members' certificates that sign their gossip
	// self-claims (PROTOCOL.md 10.10); forgedLog rate-limits the audit lines and
	// log lines of refused forgeries (every one is counted).
	certs     *certStore
	forgedLog rateLog
	// metaForgedLog does the same for metadata cells not signed by their writer
	// (PROTOCOL.md section 13).
	metaForgedLog rateLog
	// nameConflicts is swim's NameConflicts count last looked at.
	nameConflicts uint64

	packets chan inPacket
	streams chan inStream
	results chan streamResult
	cmds    chan func()
	ctx     context.Context // canceled by Close: ends every goroutine
	cancel  context.CancelFunc
	loopEnd chan struct{}
	wg      sync.WaitGroup

	in     *inbound    // inbound streams, closed by Close
	budget *byteBudget // bytes of inbound request frames in flight
	live   *livePeers  // other live members, kept by the loop for goroutines off it

	mu      sync.Mutex // guards the published state below
	version uint64
	history []control.Change
	changed chan struct{}
	// clustersChanged is closed and replaced when the federation view changes.
	clustersChanged chan struct{}
	subs            map[*Subscription]struct{}
	members         []Member // the view when the loop stopped (publishFinal), read after it
	// finalMeta is every member's metadata when the loop stopped.
	finalMeta map[string]map[string]string
	stats     swim.Stats
	health    int
	digest    uint64
	joined    bool
	leaving   bool

	httpSrv     *http.Server
	controlAddr string
	closeOnce   sync.Once
	left        chan struct{} // closed by the first Leave that completes
	forwards    chan struct{} // a slot per join token being relayed (forwardToken)
	leftOnce    sync.Once

	warnMu sync.Mutex
	warned map[string]string // misconfigurations detected, by kind (see warn)
}

type inPacket struct {
	from string
	data []byte
}

type inStream struct {
	from  string
	peer  string // the name the peer's certificate gives, "" without TLS
	req   []byte
	reply chan []byte
}

type streamResult struct {
	id    uint64 // the stack's id of the stream
	to    string
	reply []byte
	err   error
	took  time.Duration
}

// Queue sizes between the I/O goroutines and the loop.
const (
	packetQueue   = 1024 // datagrams waiting for the loop; more are dropped
	maxPacketSize = 65536
)

// Start binds the transport, starts the loop and the control API, and joins
// cfg.Join. It returns once the node is running and, if seeds were given, one of
// them has answered; if ctx ends first it closes everything and returns an error
// wrapping ErrNoSeedAnswered. To keep retrying in the background instead, start
// with no seeds and call Join in a goroutine.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.KeysFromJoin {
		e, err := Enroll(ctx, EnrollRequest{Seeds: cfg.Join, Name: cfg.Name, TLS: cfg.TLS})
		if err != nil {
			return nil, fmt.Errorf("node: taking the keyring from the seeds: %w", err)
		}
		cfg.Keys = e.Keys
		cfg.Logger.Info("keyring delivered by enrollment", "node", cfg.Name, "from", e.From, "keys", len(e.Keys))
	}
	if cfg.Voter {
		cfg.Meta = withRole(cfg.Meta, VoterRole)
	}
	cfg.Meta = withClusterSettings(cfg.Meta, cfg)
	if cfg.Signer != nil {
		cfg.Meta = withSigner(cfg.Meta)
	}
	n := &Node{
		cfg: cfg, clock: cfg.Clock,
		packets:         make(chan inPacket, packetQueue),
		streams:         make(chan inStream),
		results:         make(chan streamResult),
		cmds:            make(chan func()),
		loopEnd:         make(chan struct{}),
		in:              newInbound(),
		budget:          newByteBudget(frameBudget),
		changed:         make(chan struct{}),
		clustersChanged: make(chan struct{}),
		subs:            map[*Subscription]struct{}{},
		left:            make(chan struct{}),
		forwards:        make(chan struct{}, maxForwards),
	}
	var seed [16]byte
	crand.Read(seed[:])
	n.epoch = hex.EncodeToString(seed[:4])
	if len(cfg.Keys) > 0 {
		kr, err := wire.NewKeyring(cfg.Keys[0], cfg.Keys[1:]...)
		if err != nil {
			return nil, fmt.Errorf("node: keyring: %w", err)
		}
		n.kr = kr
		n.replay = wire.NewReplayFilter(wire.DefaultReplaySenders) // every packet and frame that opens passes it
	}
	tr := cfg.Transport
	if tr == nil {
		nt, err := ListenNet(cfg.Bind)
		if err != nil {
			return nil, fmt.Errorf("node: binding %s: %w", cfg.Bind, err)
		}
		tr = nt
	}
	n.tr = tr
	adv, err := resolveAddr(ctx, cfg.advertiseAddr(tr.Addr()))
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("node: resolving the advertised address %s: %w", cfg.advertiseAddr(tr.Addr()), err)
	}
	n.addr = adv
	n.clusterHash = wire.ClusterHash(cfg.ClusterLabel)
	n.logs = newLogHub()
	n.log = slog.New(&teeHandler{inner: cfg.Logger.Handler(), hub: n.logs}).With("node", cfg.Name)
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	switch {
	case cfg.poolAudit != nil:
		n.auditLog, n.auditShared = cfg.poolAudit, true
	case cfg.AuditLog != nil:
		n.auditLog = newAuditLog(cfg.AuditLog)
	}
	hc := stack.Config{Swim: cfg.swimConfig(n.addr)}
	if cfg.TLS != nil && !cfg.unsignedGossip {
		// Mesh certificates name every member: its gossip self-claims are signed
		// with them (PROTOCOL.md 10.10).
		n.certs = newCertStore(cfg, cfg.TLS, n.clock.Now)
		hc.Swim.Auth = n.certs
	}
	if err := n.leaseHostConfig(&hc); err != nil {
		tr.Close()
		return nil, err
	}
	n.shardHostConfig(&hc)
	n.fedHostConfig(&hc)
	h, err := stack.New(hc, rng, n.clock.Now())
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.stack = h
	n.versions = h.Swim().Versions()
	n.reader.Accept(n.versions)
	n.rng = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[8:]), binary.LittleEndian.Uint64(seed[:8])))
	n.members = h.Swim().Members()
	n.live = newLivePeers(cfg.Name)
	n.metrics = newMetrics(n)
	if err := n.setInitialMeta(); err != nil {
		tr.Close()
		return nil, err
	}
	n.handler = sync.OnceValue(func() http.Handler {
		return control.NewHandler(controlSource{n}, control.Options{Metrics: n.metrics.handler(), Logger: n.log,
			Registerer: n.metrics.reg, MaxWatchers: cfg.ControlMaxWatchers, WatchWriteTimeout: cfg.ControlWriteTimeout,
			Auth: n.controlAuth()})
	})
	n.ctx, n.cancel = context.WithCancel(context.Background())

	if cfg.Control != "" {
		ln, err := net.Listen("tcp", cfg.Control)
		if err != nil {
			n.cancel()
			tr.Close()
			return nil, fmt.Errorf("node: control API on %s: %w", cfg.Control, err)
		}
		n.controlAddr = ln.Addr().String()
		n.serveControl(ln)
	}
	if cfg.TLS != nil && !cfg.wan { // the gateway node reloads the files they share
		n.wg.Add(1)
		go n.watchTLS()
	}
	if n.auditLog != nil && !n.auditShared {
		go n.auditLog.run(n) // not in n.wg: Close ends it after everything else
	}
	n.wg.Add(3)
	go n.readPackets()
	go n.acceptStreams()
	go n.loop()
	if cfg.Federation != nil && cfg.Federation.Gateway != nil {
		if err := n.startGateway(); err != nil {
			n.Close()
			return nil, err
		}
	}
	n.log.Info("node started", "bind", tr.Addr(), "advertise", n.addr, "control", n.controlAddr,
		"profile", cfg.Profile, "encrypted", n.kr != nil, "control_tls", cfg.TLS != nil)
	if n.controlAddr != "" && n.controlAuth() == nil {
		n.log.Warn("the control API has no authentication: every user who reaches it may drain nodes and change voters (set TLS or ControlTokens)",
			"control", n.controlAddr)
	}
	if n.kr == nil {
		n.log.Warn("running without packet keys: anyone who can reach the gossip port can join, impersonate members, declare them dead and forge lease votes",
			"insecure", cfg.Insecure)
	}

	if len(cfg.Join) > 0 {
		if err := n.Join(ctx, cfg.Join...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Addr is the bound host:port of packets and streams.
func (n *Node) Addr() string { return n.tr.Addr() }

// AdvertiseAddr is the host:port peers reach this node at.
func (n *Node) AdvertiseAddr() string { return n.addr }

// ControlAddr is the control API's bound host:port, or "" when not served.
func (n *Node) ControlAddr() string { return n.controlAddr }

// Handler is the control API (the same one served on Config.Control), for services
// that mount it on their own HTTP server.
func (n *Node) Handler() http.Handler { return n.handler() }

// Keyring is the keyring of packet and stream encryption, or nil when the node
// runs without encryption. Rotate keys in a live cluster with it: Install the new
// key on every node, then UsePrimary on every node, then Remove the old key on
// every node; each step must reach all nodes before the next starts, so no node
// ever receives a packet or frame it cannot open.
func (n *Node) Keyring() *wire.Keyring { return n.kr }

// do runs f on the loop goroutine and waits for it; false if the loop has stopped.
func (n *Node) do(f func()) bool {
	done := make(chan struct{})
	select {
	case n.cmds <- func() { f(); close(done) }:
		<-done
		return true
	case <-n.loopEnd:
		return false
	}
}

// Members returns the local view, sorted by name: this node, live members and
// remembered dead or left ones. After Close it returns the last view.
func (n *Node) Members() []Member {
	var ms []Member
	if n.do(func() { ms = n.stack.Swim().Members() }) {
		return ms
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.members)
}

// HasFeature reports whether every protocol feature of f is on in this node's
// view: it and every live member it holds advertise it (PROTOCOL.md section 7).
// False after Close.
func (n *Node) HasFeature(f wire.Features) bool {
	var on bool
	n.do(func() { on = n.stack.HasFeature(f) })
	return on
}

// Local is this node as it sees itself (its incarnation grows as it refutes).
func (n *Node) Local() Member {
	var m Member
	if n.do(func() { m = n.stack.Swim().Local() }) {
		return m
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.members {
		if m.Name == n.cfg.Name {
			return m
		}
	}
	return Member{Name: n.cfg.Name, Addr: n.addr}
}

// Stats returns the membership machine's counters; its claim counters include
// the lease and shard packets refused for their sender signature.
func (n *Node) Stats() swim.Stats {
	var s swim.Stats
	if n.do(func() {
		s = n.stack.Swim().Stats()
		addPacketAuth(&s, n.stack.LeaseHostStats().Auth, n.stack.ShardHostStats().Auth)
	}) {
		return s
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Leave announces a graceful departure and waits until the announcement has been
// sent its full retransmit budget (or no live peer is left to tell), or until ctx
// ends. The node keeps answering probes until Close; call Close after Leave.
func (n *Node) Leave(ctx context.Context) error {
	done := make(chan struct{})
	if !n.do(func() {
		n.mu.Lock()
		n.leaving = true
		n.mu.Unlock()
		n.stack.Leave(n.clock.Now())
		n.leaves = append(n.leaves, done)
	}) {
		return ErrClosed
	}
	select {
	case <-done:
		n.log.Info("left the cluster gracefully")
		n.leftOnce.Do(func() { close(n.left) })
		return nil
	case <-ctx.Done():
		return fmt.Errorf("node: leave not fully gossiped: %w", ctx.Err())
	case <-n.loopEnd:
		return ErrClosed
	}
}

// httpDrainWait bounds how long Close lets control API requests in flight finish.
const httpDrainWait = time.Second

// Close stops every goroutine and releases the sockets without telling peers: to
// them it looks like a crash, detected by probing. Call Leave first for a graceful
// exit. Subscriptions' channels are closed. Close is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		if n.httpSrv != nil {
			// Requests in flight get their answer (a POST /control/v1/leave closes the
			// node as soon as it has left, before its handler has written the reply);
			// watch streams end with n.ctx. Whatever is still open then is cut.
			ctx, cancel := context.WithTimeout(context.Background(), httpDrainWait)
			n.httpSrv.Shutdown(ctx)
			cancel()
			n.httpSrv.Close()
		}
		n.tr.Close()
		n.in.close()
		n.wg.Wait()
		n.mu.Lock()
		for s := range n.subs {
			delete(n.subs, s)
			close(s.ch)
		}
		n.mu.Unlock()
		n.closeShardWatches()
		if n.auditLog != nil && !n.auditShared {
			n.auditLog.close()
		}
		n.log.Info("node closed")
	})
	return nil
}

// readPackets feeds datagrams to the loop, dropping them when its queue is full.
func (n *Node) readPackets() {
	defer n.wg.Done()
	buf := make([]byte, maxPacketSize)
	for {
		sz, from, err := n.tr.ReadFrom(buf)
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.metrics.netErrors.WithLabelValues("read").Inc()
			n.log.Warn("reading a packet", "err", err)
			continue
		}
		select {
		case n.packets <- inPacket{from: from, data: append([]byte(nil), buf[:sz]...)}:
		default:
			n.metrics.inboundDropped.Inc()
		}
	}
}

// Backoff of the accept loop after an error, as net/http's: an error such as EMFILE
// (out of descriptors) lasts until connections close, and retrying at once only
// burns CPU and log (5.2 GB in 25 s measured).
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptStreams admits inbound streams into n.in (its limits: per stranger IP, a
// reserve for members, the oldest idle stream evicted to make room) and serves each
// in its own goroutine.
func (n *Node) acceptStreams() {
	defer n.wg.Done()
	var backoff time.Duration
	var warn rateLog
	for {
		conn, err := n.tr.Accept()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.metrics.netErrors.WithLabelValues("accept").Inc()
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			warn.log(n.log, n.clock.Now(), slog.LevelWarn, "accepting a stream", "err", err, "retry_in", backoff)
			if !n.pause(backoff) {
				return
			}
			continue
		}
		backoff = 0
		ip := sourceIP(conn.RemoteAddr())
		c := &inConn{conn: conn, ip: ip, member: n.isMemberIP(ip)}
		victim, v, room := n.in.admit(c, false)
		switch v {
		case refused:
			conn.Close()
			if n.ctx.Err() != nil {
				return
			}
			n.metrics.netErrors.WithLabelValues("stream_refused").Inc()
		case mustWait:
			n.wg.Add(1)
			go n.awaitSlot(c, room)
		case admitted:
			n.serve(c, victim)
		}
	}
}

// awaitSlot waits, at most FirstFrameTimeout, for a slot for c, then serves it or
// refuses it.
func (n *Node) awaitSlot(c *inConn, room <-chan struct{}) {
	defer n.wg.Done()
	t := time.NewTimer(n.cfg.FirstFrameTimeout)
	defer t.Stop()
	for {
		select {
		case <-room:
		case <-t.C:
			n.in.giveUp()
			c.conn.Close()
			n.metrics.netErrors.WithLabelValues("stream_refused").Inc()
			return
		case <-n.ctx.Done():
			n.in.giveUp()
			c.conn.Close()
			return
		}
		var v verdict
		var victim *inConn
		switch victim, v, room = n.in.admit(c, true); v {
		case refused: // the node is closing
			c.conn.Close()
			return
		case admitted:
			n.serve(c, victim)
			return
		}
	}
}

// serve closes the stream c's admission evicted, if any, and serves c in its own
// goroutine.
func (n *Node) serve(c *inConn, victim *inConn) {
	if victim != nil {
		n.metrics.netErrors.WithLabelValues("stream_evicted").Inc()
		victim.conn.Close()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.in.release(c)
		defer c.conn.Close()
		n.serveStream(c)
	}()
}

// pause waits d, or less if the node closes (false then).
func (n *Node) pause(d time.Duration) bool {
	t := n.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-n.ctx.Done():
		return false
	}
}

// isMemberIP reports whether ip is the IP of another live member, by the loop's last
// flushed view.
func (n *Node) isMemberIP(ip netip.Addr) bool {
	return ip.IsValid() && n.live.hasIP(ip)
}

// serveStream reads one request frame, has the loop answer it, writes the reply.
// With keys, a request that does not open is counted and the stream closed without
// a reply; opening and sealing happen here, off the loop. The frame's bytes are
// reserved in n.budget before they are read and released once the loop answered.
func (n *Node) serveStream(c *inConn) {
	conn := c.conn
	start := time.Now()
	deadline := start.Add(n.cfg.StreamTimeout)
	conn.SetDeadline(deadline)
	conn.SetReadDeadline(start.Add(min(n.cfg.FirstFrameTimeout, n.cfg.StreamTimeout)))
	reserved := 0
	release := func() {
		if reserved > 0 {
			n.budget.release(reserved)
			reserved = 0
		}
	}
	defer release()
	n.in.startRead(c)
	peer := "" // the verified node name, with TLS
	if n.cfg.TLS != nil {
		tc, id, enroll, err := n.acceptTLS(conn)
		if err != nil {
			n.log.Debug("refusing a stream: TLS", "from", conn.RemoteAddr(), "err", err)
			return
		}
		if !n.in.markActive(c) { // a handshake that had not begun when evicted
			return
		}
		if enroll {
			n.serveEnroll(tc, id)
			return
		}
		conn, peer = tc, n.cfg.memberName(*id)
	}
	started := false
	req, err := wire.ReadFrameReserve(conn, wire.DefaultMaxFrame, func(size int) error {
		if !n.in.markActive(c) {
			return errEvicted
		}
		started = true
		conn.SetReadDeadline(deadline)
		if !n.budget.reserve(size, budgetWait, n.ctx.Done()) {
			n.metrics.netErrors.WithLabelValues("frame_budget").Inc()
			return fmt.Errorf("%w: %d bytes claimed, %d-byte budget", errOverBudget, size, frameBudget)
		}
		reserved = size
		return nil
	})
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errOverBudget), errors.Is(err, errEvicted), errors.Is(err, net.ErrClosed):
			// counted where refused or evicted; closed: evicted, or the node is closing
		case errors.As(err, &ne) && ne.Timeout() && !started:
			n.metrics.netErrors.WithLabelValues("stream_idle").Inc()
		default:
			n.metrics.netErrors.WithLabelValues("stream_read").Inc()
		}
		n.log.Debug("reading a stream request", "from", conn.RemoteAddr(), "err", err)
		return
	}
	if req, err = n.openFrame(conn.RemoteAddr().String(), req); err != nil {
		n.refusedLog.log(n.log, n.clock.Now(), slog.LevelWarn, "refusing a stream that does not open: the peer's packet key differs from this node's keys (or it is not a mesh node)",
			"from", conn.RemoteAddr().String(), "err", err)
		return
	}
	if err := wire.FrameCluster(req, n.clusterHash); err != nil {
		// The stack drops and counts it; the joiner sees only a closed stream.
		n.refusedLog.log(n.log, n.clock.Now(), slog.LevelWarn, "refusing a stream of another cluster label: the peer's --cluster-label differs from this node's",
			"from", conn.RemoteAddr().String(), "cluster_label", n.cfg.ClusterLabel)
	}
	if peer != "" {
		if err := n.checkStreamName(peer, req); err != nil {
			n.metrics.netErrors.WithLabelValues("stream_identity").Inc()
			n.auditControl(control.AuditEvent{Event: "stream_identity_refused", Identity: peer,
				Remote: conn.RemoteAddr().String(), Route: "mesh stream", Reason: err.Error()})
			return
		}
	}
	s := inStream{from: conn.RemoteAddr().String(), peer: peer, req: req, reply: make(chan []byte, 1)}
	select {
	case n.streams <- s:
	case <-n.ctx.Done():
		return
	}
	var reply []byte
	select {
	case reply = <-s.reply:
	case <-n.ctx.Done():
		return
	}
	release() // the loop is done with the request; the reply is ours, not the peer's
	if reply == nil {
		return
	}
	if _, err := conn.Write(n.sealFrame(reply)); err != nil {
		n.metrics.netErrors.WithLabelValues("stream_write").Inc()
		n.log.Debug("writing a stream reply", "to", conn.RemoteAddr(), "err", err)
	}
}

// runStream carries one outbound stream and hands the result to the loop.
func (n *Node) runStream(s stack.Stream) {
	defer n.wg.Done()
	start := n.clock.Now()
	reply, err := n.exchange(s)
	r := streamResult{id: s.ID, to: s.To, reply: reply, err: err, took: n.clock.Now().Sub(start)}
	select {
	case n.results <- r:
	case <-n.ctx.Done():
	}
}

func (n *Node) exchange(s stack.Stream) ([]byte, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.StreamTimeout)
	defer cancel()
	raw, err := n.tr.Dial(ctx, s.To)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	// The closer holds the dialled conn, never the TLS one: a handshake that fails
	// leaves that nil, and ctx may end while the closer runs.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	conn := raw
	if n.cfg.TLS != nil {
		if conn, err = n.dialTLS(ctx, raw, s.To); err != nil {
			return nil, err
		}
	}
	if _, err := conn.Write(n.sealFrame(s.Data)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	if p, err := br.Peek(len("HTTP/")); err == nil && string(p) == "HTTP/" {
		return nil, errHTTPPeer
	}
	reply, err := wire.ReadFrame(br, wire.DefaultMaxFrame)
	if errors.Is(err, io.EOF) {
		return nil, errNoAnswer
	}
	if err != nil {
		return nil, err
	}
	return n.openFrame(s.To, reply)
}

// Stream failures worded for the operator: a peer that closes without a reply is,
// in practice, a misconfiguration on one side, which the peer names in its own log.
var (
	errNoAnswer = errors.New("closed the stream without answering (EOF): its packet key or cluster label " +
		"most likely differs from this node's (it logs which), or it speaks another protocol version")
	errHTTPPeer = errors.New("answered in HTTP: this address is an HTTP port (a control API?), not a gossip port")
)

// sealFrame seals an outbound stream frame when the node has keys: streams are
// encrypted and authenticated like packets.
func (n *Node) sealFrame(f []byte) []byte {
	if n.kr == nil {
		return f
	}
	sealed, err := wire.SealFrame(n.kr, f, crand.Reader)
	if err != nil {
		panic("node: sealing our own frame: " + err.Error())
	}
	return sealed
}

// openFrame opens an inbound stream frame, from peer from, when the node has keys; a
// frame that does not open (plain, unknown key, tampered) is counted as a decrypt
// failure. Without keys the frame passes as is, and the host refuses it if it is
// sealed. Either way a frame of another protocol version is counted and logged as a
// version mismatch first. Runs off the loop.
func (n *Node) openFrame(from string, f []byte) ([]byte, error) {
	if err := wire.FrameVersion(f, n.versions); n.dropVersionMismatch(from, err, n.clock.Now()) {
		return nil, fmt.Errorf("node: stream frame dropped: %w", err)
	}
	if n.kr == nil {
		return f, nil
	}
	plain, err := wire.OpenFrame(n.kr, f)
	if err != nil {
		n.metrics.decryptFailures.Inc()
		return nil, fmt.Errorf("node: stream frame does not open: %w", err)
	}
	if err := n.replay.AdmitFrame(f); err != nil {
		n.metrics.replayed.Inc()
		return nil, fmt.Errorf("node: stream frame refused: %w", err)
	}
	return plain, nil
}

// loop owns the host: every input, timer and command runs here, one at a time.
func (n *Node) loop() {
	defer n.wg.Done()
	defer close(n.loopEnd)
	timer := n.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := n.clock.Now()
		if d := n.stack.NextDeadline(); !d.IsZero() && !d.After(now) {
			n.stack.Tick(now)
		}
		if j := n.join; j != nil && !j.retryAt.IsZero() && !j.retryAt.After(now) {
			n.retryJoin(now)
		}
		n.flush()
		timer.Reset(n.sleep(now))
		select {
		case <-n.ctx.Done():
			n.publishFinal()
			return
		case p := <-n.packets:
			n.handlePacket(p)
			n.drainPackets()
		case s := <-n.streams:
			s.reply <- n.stack.HandleStream(n.clock.Now(), s.from, s.peer, s.req)
		case r := <-n.results:
			n.handleResult(r)
		case f := <-n.cmds:
			f()
		case <-timer.C():
		}
	}
}

// packetBatch bounds the packets the loop handles in one turn before it flushes
// their answers: at most a few milliseconds of work, well inside a probe timeout.
const packetBatch = 64

// drainPackets handles the packets already queued, up to packetBatch, in the same
// turn of the loop, so their outputs leave in one flush. One flush per packet made
// a busy node (a seed that 255 nodes join at once, sharing two cores with them)
// fall behind by a scheduling slot per packet: its queue and its inbound streams
// waited, and joins timed out and retried for tens of seconds.
func (n *Node) drainPackets() {
	for range packetBatch - 1 {
		select {
		case p := <-n.packets:
			n.handlePacket(p)
		default:
			return
		}
	}
}

// sleep is how long the loop may wait for input before a deadline is due.
func (n *Node) sleep(now time.Time) time.Duration {
	next := n.stack.NextDeadline()
	if j := n.join; j != nil && !j.retryAt.IsZero() && (next.IsZero() || j.retryAt.Before(next)) {
		next = j.retryAt
	}
	if next.IsZero() {
		return time.Hour // nothing scheduled: wait for input
	}
	return max(next.Sub(now), 0)
}

func (n *Node) handlePacket(p inPacket) {
	data := p.data
	n.metrics.bytesSealedIn.Add(float64(len(data)))
	if n.dropVersionMismatch(p.from, wire.PacketVersion(data, n.versions), n.clock.Now()) {
		return // before Open: a sealed packet of another version is named as such
	}
	if n.kr != nil {
		plain, err := wire.Open(n.kr, data)
		if err != nil {
			if n.dropVersionMismatch(p.from, err, n.clock.Now()) {
				return
			}
			n.metrics.decryptFailures.Inc()
			n.log.Debug("dropping a packet that does not open", "from", p.from, "err", err)
			return
		}
		if err := n.replay.AdmitPacket(data); err != nil {
			n.metrics.replayed.Inc()
			n.log.Debug("dropping a replayed packet", "from", p.from, "err", err)
			return
		}
		data = plain
	}
	now := n.clock.Now()
	if n.dropVersionMismatch(p.from, n.countPacket(dirIn, data), now) {
		return
	}
	n.stack.HandlePacket(now, p.from, data)
}

func (n *Node) handleResult(r streamResult) {
	now := n.clock.Now()
	n.metrics.pushPullDuration.Observe(r.took.Seconds())
	if r.err != nil {
		n.metrics.netErrors.WithLabelValues("stream").Inc()
		n.log.Debug("stream failed", "to", r.to, "err", r.err)
		n.stack.StreamFailed(now, r.id)
	} else {
		n.stack.StreamReply(now, r.id, r.reply)
	}
	n.joinResult(now, r)
}

// flushRounds bounds the Ready rounds of one flush: the second sends the lease
// packets a successful save released; anything later waits for the next turn.
const flushRounds = 2

// flush drains the stack's outputs, as many rounds as it has them (flushRounds).
// A certificate rotated since the last flush first re-signs our Alive.
func (n *Node) flush() {
	if n.certs != nil && n.certs.addOwn() {
		n.stack.Resign(n.clock.Now())
	}
	for round := 0; round < flushRounds && (round == 0 || n.stack.HasReady()); round++ {
		n.flushOnce()
	}
}

// flushOnce handles one Ready in the order its type documents: lease state saved,
// packets sent, streams started, events published, then Advance; waiting Leave
// calls are released once the leave has been gossiped.
func (n *Node) flushOnce() {
	rd := n.stack.Ready()
	n.driveLease(&rd) // saves the lease state before any packet of rd leaves
	now := n.clock.Now()
	n.driveShards(&rd, now)
	for _, p := range rd.Packets {
		n.countPacket(dirOut, p.Data)
		data := p.Data
		if n.kr != nil {
			sealed, err := wire.Seal(n.kr, data, crand.Reader)
			if err != nil {
				panic("node: sealing our own packet: " + err.Error())
			}
			data = sealed
		}
		n.metrics.bytesSealedOut.Add(float64(len(data)))
		if err := n.tr.WriteTo(data, p.To); err != nil && n.ctx.Err() == nil {
			n.metrics.netErrors.WithLabelValues("write").Inc()
			n.log.Debug("sending a packet", "to", p.To, "err", err)
		}
	}
	for _, s := range rd.Streams {
		n.wg.Add(1)
		go n.runStream(s)
	}
	for _, r := range rd.RTTs {
		n.metrics.probeRTT.Observe(r.Sample.Seconds())
	}
	if len(rd.Refused) > 0 {
		r := rd.Refused[0] // every one is counted (omnirelay_members_version_refused_total); one line names the range
		n.versionRefusedLog.log(n.log, now, slog.LevelWarn, "refusing a member that shares no protocol version with this node",
			"member", r.Member, "addr", r.Addr, "peer_min_version", r.ProtoMin, "peer_max_version", r.ProtoMax,
			"min_version", n.versions.Min, "max_version", n.versions.Max)
	}
	if len(rd.Forged) > 0 {
		n.auditForged(now, rd.Forged)
	}
	if len(rd.PacketsForged) > 0 {
		n.auditForgedPackets(now, rd.PacketsForged)
	}
	if len(rd.MetaForged) > 0 {
		n.auditMetaForged(now, rd.MetaForged)
	}
	sw := n.stack.Swim()
	st := sw.Stats()
	if st.NameConflicts != n.nameConflicts && n.join == nil {
		n.nameConflicts = st.NameConflicts
		if addr := sw.NameConflict(); addr != "" {
			n.warn("name/"+addr, "name", fmt.Sprintf("another node at %s claims this node's name %q (this node refutes it; stop the other one or rename it)", addr, n.cfg.Name))
		}
	}
	if len(rd.Events) > 0 {
		n.publish(rd.Events)
		n.live.apply(rd.Events)
	}
	if len(rd.Meta) > 0 {
		n.publishMeta(rd.Meta)
		n.checkSettings(rd.Meta)
	}
	n.driveFederation()
	if len(n.leaves) > 0 && (st.QueueLen == 0 || !n.anyLivePeer()) {
		for _, c := range n.leaves {
			close(c)
		}
		n.leaves = nil
	}
	n.stack.Advance()
}

func (n *Node) anyLivePeer() bool {
	for _, m := range n.stack.Swim().Members() {
		if m.Name != n.cfg.Name && (m.Status == swim.StatusAlive || m.Status == swim.StatusSuspect) {
			return true
		}
	}
	return false
}

// publishFinal keeps the last view readable after the loop stops.
func (n *Node) publishFinal() {
	sw := n.stack.Swim()
	n.mu.Lock()
	n.members, n.stats, n.health, n.digest = sw.Members(), sw.Stats(), sw.LocalHealth(), sw.Digest().Hash
	n.finalMeta = n.allMeta()
	n.mu.Unlock()
}

// CorrelationID is the id logged with a membership event and carried by Event.ID
// and the control API's watch stream: the same fact has the same id on every node.
func CorrelationID(member string, incarnation uint64, kind swim.EventKind) string {
	var d xxhash.Digest
	d.Reset()
	d.WriteString(member)
	var b [10]byte
	b[0] = 0
	binary.LittleEndian.PutUint64(b[1:9], incarnation)
	b[9] = byte(kind)
	d.Write(b[:])
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], d.Sum64())
	return hex.EncodeToString(out[:])
}

// publish records events: version, history for watch streams, logs, subscribers.
func (n *Node) publish(evs []swim.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range evs {
		n.version++
		ev := Event{ID: CorrelationID(e.Member.Name, e.Member.Incarnation, e.Kind), Kind: e.Kind,
			Member: e.Member, At: e.At, Version: n.version}
		n.history = append(n.history, control.Change{N: n.version, ID: ev.ID, Kind: KindName(e.Kind),
			Peer: n.peer(e.Member, n.metaOf(e.Member.Name)), At: e.At})
		if len(n.history) > n.cfg.History {
			n.history = slices.Delete(n.history, 0, len(n.history)-n.cfg.History)
		}
		n.metrics.memberEvents.WithLabelValues(KindName(e.Kind)).Inc()
		level := slog.LevelInfo
		if e.Kind == swim.EventSuspect || e.Kind == swim.EventDead {
			level = slog.LevelWarn
		}
		n.log.Log(context.Background(), level, "member "+KindName(e.Kind),
			"event_id", ev.ID, "member", e.Member.Name, "addr", e.Member.Addr,
			"incarnation", e.Member.Incarnation, "version", n.version)
		n.auditMember(ev.ID, e)
		for s := range n.subs {
			s.send(ev)
		}
		if e.Kind == swim.EventJoin && e.Member.Name != n.cfg.Name {
			n.joined = true
		}
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

// KindName is the lower-case name of an event kind, as logged and served: swim's
// names, and "meta" for EventMeta, which swim does not know.
func KindName(k swim.EventKind) string {
	if k == EventMeta {
		return "meta"
	}
	return k.String()
}

// peer is m as the control API serves it, with its metadata meta (never nil).
func (n *Node) peer(m Member, meta map[string]string) control.Peer {
	return control.Peer{Name: m.Name, Address: m.Addr, Status: m.Status.String(),
		Incarnation: m.Incarnation, Meta: meta, Since: m.Since, Local: m.Name == n.cfg.Name}
}

// Subscription delivers membership events. Its channel C has Config.EventBuffer
// slots; when a reader falls behind and C is full, the oldest buffered event is
// dropped to make room (counted by Dropped), so the loop never waits for a reader.
// A reader that must not miss changes re-reads Members after seeing Dropped grow.
// C is closed by Close and by Node.Close.
type Subscription struct {
	C       <-chan Event
	ch      chan Event
	n       *Node
	dropped uint64 // guarded by n.mu
}

// Subscribe returns a new subscription to membership events from now on.
func (n *Node) Subscribe() *Subscription {
	ch := make(chan Event, n.cfg.EventBuffer)
	s := &Subscription{C: ch, ch: ch, n: n}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx.Err() != nil {
		close(ch)
		return s
	}
	n.subs[s] = struct{}{}
	return s
}

// send delivers e, dropping the oldest buffered event if C is full. Caller holds n.mu.
func (s *Subscription) send(e Event) {
	for {
		select {
		case s.ch <- e:
			return
		default:
		}
		select {
		case <-s.ch:
			s.dropped++
			s.n.metrics.subscriberDropped.Inc()
		default:
		}
	}
}

// Dropped is how many events were dropped because C was full.
func (s *Subscription) Dropped() uint64 {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	return s.dropped
}

// Close ends the subscription and closes C.
func (s *Subscription) Close() {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	if _, ok := s.n.subs[s]; ok {
		delete(s.n.subs, s)
		close(s.ch)
	}
}

// controlSource adapts a Node to control.Source without widening Node's API.
type controlSource struct{ n *Node }

func (c controlSource) Snapshot() control.Snapshot {
	n := c.n
	var s control.Snapshot
	if !n.do(func() {
		ms := n.stack.Swim().Members()
		n.mu.Lock()
		s.Version = control.Version{Epoch: n.epoch, N: n.version}
		n.mu.Unlock()
		s.Peers = make([]control.Peer, len(ms))
		for i, m := range ms {
			s.Peers[i] = n.peer(m, n.metaOf(m.Name))
		}
	}) {
		n.mu.Lock()
		defer n.mu.Unlock()
		s.Version = control.Version{Epoch: n.epoch, N: n.version}
		s.Peers = make([]control.Peer, len(n.members))
		for i, m := range n.members {
			meta := maps.Clone(n.finalMeta[m.Name])
			if meta == nil {
				meta = map[string]string{}
			}
			s.Peers[i] = n.peer(m, meta)
		}
	}
	return s
}

func (c controlSource) ChangesSince(v uint64) ([]control.Change, bool) {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if v >= n.version {
		return nil, v == n.version
	}
	if len(n.history) == 0 || n.history[0].N > v+1 {
		return nil, false
	}
	return slices.Clone(n.history[v+1-n.history[0].N:]), true
}

func (c controlSource) Changed() <-chan struct{} {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	return c.n.changed
}
