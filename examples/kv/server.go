package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/shard"
)

// HTTPMetaKey is the metadata key under which an instance publishes its kv URL;
// the load generator and forwarding instances read it (client.Endpoint, n.Meta).
const HTTPMetaKey = "http"

// Limits of one request, checked before anything is read into memory.
const (
	maxKey   = 256
	maxValue = 4 << 10
	maxID    = 128
	// maxHops is how many times a request is forwarded to the owner another
	// instance names before it is refused with a retryable error naming the
	// owner: the routing table of each instance can lag a move by a moment, so
	// more hops would only chase a shard in flight.
	maxHops = 2
)

const hopsHeader = "X-Kv-Hops"

// timingHeader carries, on every answer, where the instances on the request's
// path spent its time, as Server-Timing entries "span;desc=instance;dur=ms":
// this instance's first, then those of the instance it forwarded to. The load
// generator's trace attributes its slow requests with them.
const timingHeader = "Server-Timing"

// Spans of timingHeader. route: finding the shard's server, including the wait
// for a gain here (handoverWait); open: waiting for the shard's log to be
// opened after the gain; lock: waiting for the shard's operation in flight;
// flock, fsync: the store's file lock and sync; store: the whole store call;
// fwd: the forwarded request, round trip; total: the handler.
const (
	spanRoute = "route"
	spanOpen  = "open"
	spanLock  = "lock"
	spanFlock = "flock"
	spanFsync = "fsync"
	spanStore = "store"
	spanFwd   = "fwd"
	spanTotal = "total"
)

// timing collects one request's spans here; next holds the forwarded hop's.
type timing struct {
	self    string
	start   time.Time
	entries []string
	next    []string
}

func (t *timing) add(span string, d time.Duration) {
	t.entries = append(t.entries, span+";desc="+t.self+";dur="+strconv.FormatFloat(ms(d), 'f', 3, 64))
}

// timedWriter stamps the timing header on the answer when its status is written.
type timedWriter struct {
	http.ResponseWriter
	t *timing
}

func (w *timedWriter) WriteHeader(code int) {
	w.t.add(spanTotal, time.Since(w.t.start))
	w.Header()[timingHeader] = append(w.t.entries, w.t.next...)
	w.ResponseWriter.WriteHeader(code)
}

func (w *timedWriter) Write(b []byte) (int, error) {
	if w.Header()[timingHeader] == nil {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// DEBUG log lines of each shard lost and gained (with the node's time of the
// change), from which the scenario measures handovers.
const (
	msgLost   = "shard lost"
	msgOpened = "shard opened"
)

// owned is a shard this instance serves: the fencing token of its grant and
// the handle on its log. mu serializes the shard's operations in this process
// (the log's flock serializes them across processes).
type owned struct {
	mu     sync.Mutex
	tok    Token
	log    *shardLog // nil when opening it failed (err says why)
	err    error
	opened time.Time // when the open finished, for the timing of requests that waited for it
}

// shut takes the shard's log away once the operation in flight is done and
// returns it (nil if none), for the instance to keep; nil-safe.
func (o *owned) shut() *shardLog {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.log
	o.log, o.err = nil, errors.New("shard released")
	return l
}

// instance is one kv server embedding a mesh node.
type instance struct {
	n     *node.Node
	dir   string // the shared store
	log   *slog.Logger
	httpc *http.Client

	mu     sync.Mutex
	shards map[uint32]*owned
	gained chan struct{} // closed (and replaced) when a shard is gained
	// kept holds the logs of shards this instance served before, so that
	// gaining one again catches up with the records since instead of reading
	// the whole log (openShard): in a drain the same shards come and go.
	kept map[uint32]*shardLog
}

type serveFlags struct {
	name, bind, control, dataDir, httpAddr, store, keyFile string
	tls                                                    tlsFlags
	join, voters                                           []string
	shards                                                 int
	renew                                                  time.Duration
	debug                                                  bool
}

func parseServe(args []string) (serveFlags, error) {
	fs := flag.NewFlagSet("kv serve", flag.ContinueOnError)
	var f serveFlags
	var join, voters string
	fs.StringVar(&f.name, "name", "", "member name, unique in the cluster (required)")
	fs.StringVar(&f.bind, "bind", "127.0.0.1:0", "gossip address (UDP and TCP)")
	fs.StringVar(&f.control, "control", "127.0.0.1:0", "control API address (loopback: plain HTTP)")
	fs.StringVar(&join, "join", "", "seed gossip addresses, comma-separated; empty starts a cluster")
	fs.StringVar(&f.dataDir, "data-dir", "", "durable node state (required for a voter)")
	fs.IntVar(&f.shards, "shards", 64, "shard count, the same on every instance")
	fs.StringVar(&voters, "voters", "", "the voter names, comma-separated, the same on every instance; this instance votes if its name is listed")
	fs.StringVar(&f.httpAddr, "http", "127.0.0.1:0", "kv HTTP listen address, published as metadata "+HTTPMetaKey)
	fs.StringVar(&f.store, "store", "", "the shared store directory every instance reaches (required)")
	fs.StringVar(&f.keyFile, "key-file", "", "file holding the base64 32-byte packet key (required; mode 0600)")
	fs.DurationVar(&f.renew, "renew", 0, "shard ownership renewal interval (default: the mesh's, 1 s)")
	fs.BoolVar(&f.debug, "debug", false, "log at DEBUG, with a line per shard gained and lost")
	f.tls.register(fs, "this instance's node certificate")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	f.join, f.voters = splitList(join), splitList(voters)
	switch {
	case f.name == "":
		return f, errors.New("kv serve: --name is required")
	case f.store == "":
		return f, errors.New("kv serve: --store is required (the shared directory of shard logs)")
	case f.keyFile == "":
		return f, errors.New("kv serve: --key-file is required: gossip, leases and shard grants are authenticated with the packet key")
	case len(f.voters) == 0:
		return f, errors.New("kv serve: --voters is required (3 or 5 names): shard ownership is granted by the elected leader")
	}
	return f, nil
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readKey reads one base64 packet key; a file other users can read is refused.
func readKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s is readable by other users (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("key file %s: want one base64 32-byte key", path)
	}
	return k, nil
}

// started is the line an instance prints on stdout once it serves, so a
// scenario that starts it on ephemeral ports learns its addresses.
type started struct {
	Name    string `json:"name"`
	Bind    string `json:"bind"`
	Control string `json:"control"` // URL
	HTTP    string `json:"http"`    // URL
	PID     int    `json:"pid"`
}

func serve(args []string) error {
	f, err := parseServe(args)
	if err != nil {
		return err
	}
	key, err := readKey(f.keyFile)
	if err != nil {
		return fmt.Errorf("kv serve: %w", err)
	}
	if err := os.MkdirAll(f.store, 0o700); err != nil {
		return fmt.Errorf("kv serve: store: %w", err)
	}
	src, err := f.tls.source()
	if err != nil {
		return fmt.Errorf("kv serve: %w", err)
	}
	host, _, err := net.SplitHostPort(f.httpAddr)
	if ip := net.ParseIP(host); src == nil && (err != nil || ip == nil || !ip.IsLoopback()) {
		// Without certificates the kv API has no authentication at all.
		return fmt.Errorf("kv serve: --http %q: want a loopback IP literal and port, or certificates (--tls-*): without them the kv API is plain, unauthenticated HTTP", f.httpAddr)
	}
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("kv serve: %w", err)
	}
	url := "http://" + ln.Addr().String()
	httpc := &http.Client{Timeout: 2 * time.Second, Transport: forwardTransport()}
	if src != nil {
		// Callers are nodes (forwarding instances) and the cluster's clients
		// (any role): the kv API has no permissions of its own.
		ln = tls.NewListener(ln, src.ServerConfig(identity.ControlPolicy))
		url = "https://" + ln.Addr().String()
		httpc.Transport.(*http.Transport).TLSClientConfig = src.ClientConfig(identity.MeshPolicy)
	}
	level := slog.LevelInfo
	if f.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("instance", f.name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := node.Start(startCtx, node.Config{
		Name: f.name, Bind: f.bind, Control: f.control, // joins below, once the watch is open
		Keys: [][]byte{key}, Voters: f.voters, Voter: slices.Contains(f.voters, f.name), DataDir: f.dataDir,
		Shards: f.shards, Logger: log, TLS: src,
		ShardTune: func(c *shard.Config) {
			if f.renew > 0 {
				c.RenewInterval = f.renew
			}
		},
		// Every change must reach the watch (a dropped gain has no token): 16
		// per shard is far more than a formation or a drain delivers at once.
		EventBuffer: 16 * f.shards,
		Meta:        map[string]string{HTTPMetaKey: url},
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("kv serve: %w", err)
	}
	defer n.Close()
	in := &instance{n: n, dir: f.store, log: log, shards: map[uint32]*owned{}, gained: make(chan struct{}), kept: map[uint32]*shardLog{},
		httpc: httpc}
	// The watch opens before the join: no shard can be granted before it, so
	// every gain arrives with its token.
	w, err := n.WatchShards()
	if err != nil {
		return fmt.Errorf("kv serve: %w", err)
	}
	if len(f.join) > 0 {
		if err := n.Join(startCtx, f.join...); err != nil {
			return fmt.Errorf("kv serve: %w", err)
		}
	}
	watched := make(chan struct{})
	go func() { defer close(watched); in.watch(w) }()
	srv := &http.Server{Handler: in, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	ctlURL := "http://" + n.ControlAddr()
	if src != nil {
		ctlURL = "https://" + n.ControlAddr()
	}
	line, _ := json.Marshal(started{Name: f.name, Bind: n.Addr(), Control: ctlURL, HTTP: url, PID: os.Getpid()})
	fmt.Println(string(line))
	<-ctx.Done()
	// SIGTERM: unpublish the endpoint, leave, then stop serving.
	_ = n.DeleteMeta(HTTPMetaKey)
	leaveCtx, cancelLeave := context.WithTimeout(context.Background(), 5*time.Second)
	_ = n.Leave(leaveCtx)
	cancelLeave()
	shutCtx, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
	_ = srv.Shutdown(shutCtx)
	cancelShut()
	w.Close()
	<-watched
	return nil
}

// watch opens a shard's log when this instance gains it, rebuilding the state
// from the log (or catching up a log kept from an earlier gain) and fencing
// earlier owners, and takes it from the shard's requests when the shard goes.
func (in *instance) watch(w *node.ShardWatch) {
	var dropped uint64
	var opening sync.WaitGroup
	self := in.n.Name()
	for c := range w.C {
		if d := w.Dropped(); d != dropped {
			in.log.Warn("shard changes dropped: shards gained meanwhile are not served", "dropped", d-dropped)
			dropped = d
		}
		if !c.Gained {
			in.log.Debug(msgLost, "shard", c.Shard, "lost_at", c.At)
			in.mu.Lock()
			o := in.shards[c.Shard]
			delete(in.shards, c.Shard)
			in.mu.Unlock()
			in.keep(c.Shard, o.shut())
			continue
		}
		o := &owned{tok: Token{Epoch: c.Epoch, Version: c.Version}}
		o.mu.Lock()
		in.mu.Lock()
		prev := in.shards[c.Shard]
		in.shards[c.Shard] = o
		close(in.gained)
		in.gained = make(chan struct{})
		in.mu.Unlock()
		in.keep(c.Shard, prev.shut())
		in.mu.Lock()
		kept := in.kept[c.Shard]
		delete(in.kept, c.Shard)
		in.mu.Unlock()
		// Opened off the watch loop, so the shards of one batch are rebuilt
		// from their logs at once; o.mu, held until then, keeps requests and a
		// later release of the shard waiting for it.
		opening.Add(1)
		go func() {
			defer opening.Done()
			defer o.mu.Unlock()
			start := time.Now()
			o.log, o.err = openShard(in.dir, c.Shard, o.tok, self, kept)
			o.opened = time.Now()
			if o.err != nil {
				in.log.Error("opening shard log", "shard", c.Shard, "token", o.tok.String(), "err", o.err)
			} else {
				in.log.Debug(msgOpened, "shard", c.Shard, "token", o.tok.String(), "gained_at", c.At, "took", time.Since(start), "flock", o.log.flockWait)
			}
		}()
	}
	opening.Wait()
}

// keep holds l, the log of a shard no longer served, for the next gain.
func (in *instance) keep(s uint32, l *shardLog) {
	if l == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if old := in.kept[s]; old != nil {
		old.close()
	}
	in.kept[s] = l
}

// apiError is the body of every refusal; Owner and Endpoint, when known, tell
// the caller where to retry.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Owner    string `json:"owner,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
}

// Codes of retryable refusals (503): the shard is moving or this instance's
// view is behind; a caller retries after a short backoff.
const (
	codeNoMap      = "no_shard_map"
	codeNoOwner    = "no_owner"
	codeNotServing = "not_serving"
	codeNotOwner   = "not_owner"
	codeFenced     = "fenced"
	codeForward    = "forward_failed"
)

func writeError(w http.ResponseWriter, status int, code, msg, owner, endpoint string) {
	var e apiError
	e.Error.Code, e.Error.Message, e.Owner, e.Endpoint = code, msg, owner, endpoint
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// result is a successful answer.
type result struct {
	Values []string `json:"values,omitempty"` // GET
	Dup    bool     `json:"dup,omitempty"`    // a write whose request id was applied before
	Shard  uint32   `json:"shard"`
	Owner  string   `json:"owner"`
}

// ServeHTTP serves /kv/{key}: GET reads the key's value list, PUT ?id=ID sets
// it to the body, POST ?op=append&id=ID appends the body to it.
func (in *instance) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	tm := &timing{self: in.n.Name(), start: time.Now()}
	w := &timedWriter{ResponseWriter: rw, t: tm}
	key, ok := strings.CutPrefix(r.URL.Path, "/kv/")
	if !ok || key == "" || len(key) > maxKey {
		writeError(w, http.StatusNotFound, "not_found", "want /kv/{key}, a key of 1.."+strconv.Itoa(maxKey)+" bytes", "", "")
		return
	}
	var rec record
	switch {
	case r.Method == http.MethodGet:
	case r.Method == http.MethodPut:
		rec.Kind = recPut
	case r.Method == http.MethodPost && r.URL.Query().Get("op") == "append":
		rec.Kind = recAppend
	default:
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET, PUT, or POST ?op=append", "", "")
		return
	}
	rec.Key = key
	var body []byte
	if rec.Kind != "" {
		rec.ID = r.URL.Query().Get("id")
		if rec.ID == "" || len(rec.ID) > maxID {
			writeError(w, http.StatusBadRequest, "bad_request", "a write needs a request id (?id=) of 1.."+strconv.Itoa(maxID)+" bytes, so a retry is not applied twice", "", "")
			return
		}
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, maxValue+1))
		if err != nil || len(body) > maxValue {
			writeError(w, http.StatusBadRequest, "bad_request", "a value of at most "+strconv.Itoa(maxValue)+" bytes", "", "")
			return
		}
		rec.Value = string(body)
	}
	s, ok := in.n.ShardFor([]byte(key))
	if !ok {
		writeError(w, http.StatusServiceUnavailable, codeNoMap, "this instance has no shard map yet", "", "")
		return
	}
	routed := time.Now()
	o, dest, why := in.route(r.Context(), s)
	tm.add(spanRoute, time.Since(routed))
	if o != nil {
		in.local(w, tm, o, s, rec)
		return
	}
	in.forward(w, tm, r, s, dest, why, body)
}

// handoverWait bounds how long a request waits here for a shard in a move to
// reach this instance: a planned move takes a few round trips, which waiting
// costs the request; a refusal would cost it a client backoff on top.
const handoverWait = 300 * time.Millisecond

// route finds where shard s is served: here (o), or at dest, the owner this
// instance's map names or, for a shard moving away from here or parked, its
// target. When s is moving here, route waits up to handoverWait for the gain
// (forwarding it back to the old owner would bounce it back); why says what was
// wrong when dest is "".
func (in *instance) route(ctx context.Context, s uint32) (o *owned, dest, why string) {
	deadline := time.Now().Add(handoverWait)
	self := in.n.Name()
	for {
		in.mu.Lock()
		o = in.shards[s]
		gained := in.gained
		in.mu.Unlock()
		if o != nil && in.n.Serving(s) {
			return o, "", ""
		}
		m := in.n.ShardMap()
		if m == nil {
			return nil, "", codeNoMap
		}
		dest = m.Owner(s)
		switch {
		case m.State(s) != shard.StateSteady && m.Target(s) == self:
			dest = self // moving here: wait for the gain
		case dest == self || dest == "":
			dest = m.Target(s) // moving away from here, or parked: where it goes
		}
		switch {
		case dest != "" && dest != self:
			return nil, dest, ""
		case time.Now().After(deadline):
			if dest == self {
				return nil, "", codeNotServing
			}
			return nil, "", codeNoOwner
		}
		// Woken by a gain here, or after 5 ms to look at the map again (a move
		// away from here shows only there).
		select {
		case <-ctx.Done():
			return nil, "", codeNotServing
		case <-gained:
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// local runs the operation on this instance's log of shard s.
func (in *instance) local(w http.ResponseWriter, tm *timing, o *owned, s uint32, rec record) {
	waited := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.opened.After(waited) {
		tm.add(spanOpen, time.Since(waited))
	} else {
		tm.add(spanLock, time.Since(waited))
	}
	self := in.n.Name()
	if o.log == nil {
		msg := "shard log not open"
		if o.err != nil {
			msg = o.err.Error()
		}
		writeError(w, http.StatusServiceUnavailable, codeNotServing, msg, self, "")
		return
	}
	res := result{Shard: s, Owner: self}
	var err error
	stored := time.Now()
	if rec.Kind == "" {
		res.Values, err = o.log.read(o.tok, rec.Key)
	} else {
		rec.By = self
		res.Dup, err = o.log.write(o.tok, rec)
	}
	tm.add(spanStore, time.Since(stored))
	tm.add(spanFlock, o.log.flockWait)
	tm.add(spanFsync, o.log.synced)
	switch {
	case errors.Is(err, ErrFenced):
		writeError(w, http.StatusServiceUnavailable, codeFenced, err.Error(), "", "")
	case err != nil:
		writeError(w, http.StatusInternalServerError, "store", err.Error(), "", "")
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// forwardTransport is the forwarding client's: the default transport keeps 2
// idle connections per instance, and forwards come in bursts (every request of
// a shard that just moved, from clients whose tables lag), so most of a burst
// would dial a new connection, and leave it in TIME_WAIT.
func forwardTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return tr
}

// forward sends the request to dest, at most maxHops times in a chain; past
// that, or without a dest, it refuses with a retryable error naming the owner
// when known.
func (in *instance) forward(w http.ResponseWriter, tm *timing, r *http.Request, s uint32, dest, why string, body []byte) {
	switch why {
	case codeNoMap:
		writeError(w, http.StatusServiceUnavailable, codeNoMap, "this instance has no shard map yet", "", "")
		return
	case codeNoOwner:
		writeError(w, http.StatusServiceUnavailable, codeNoOwner, fmt.Sprintf("shard %d has no owner now (moving)", s), "", "")
		return
	case codeNotServing:
		writeError(w, http.StatusServiceUnavailable, codeNotServing, fmt.Sprintf("shard %d is granted to this instance but not served yet", s), in.n.Name(), "")
		return
	}
	ep := in.n.Meta(dest)[HTTPMetaKey]
	hops, _ := strconv.Atoi(r.Header.Get(hopsHeader))
	if ep == "" || hops >= maxHops {
		writeError(w, http.StatusServiceUnavailable, codeNotOwner, fmt.Sprintf("shard %d is served by %s", s, dest), dest, ep)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, ep+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeForward, err.Error(), dest, ep)
		return
	}
	req.Header.Set(hopsHeader, strconv.Itoa(hops+1))
	sent := time.Now()
	resp, err := in.httpc.Do(req)
	tm.add(spanFwd, time.Since(sent))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeForward, err.Error(), dest, ep)
		return
	}
	defer resp.Body.Close()
	tm.next = resp.Header[timingHeader]
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}
