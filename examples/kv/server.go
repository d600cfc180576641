package main

import (
	"bytes"
	"context"
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

	"github.com/omnirelay/mesh/node"
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

// owned is a shard this instance serves: the fencing token of its grant and
// the handle on its log. mu serializes the shard's operations in this process
// (the log's flock serializes them across processes).
type owned struct {
	mu  sync.Mutex
	tok Token
	log *shardLog // nil when opening it failed (err says why)
	err error
}

// shut closes the shard's log once the operation in flight is done; nil-safe.
func (o *owned) shut() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.log != nil {
		o.log.close()
		o.log = nil
	}
	o.err = errors.New("shard released")
}

// instance is one kv server embedding a mesh node.
type instance struct {
	n     *node.Node
	dir   string // the shared store
	log   *slog.Logger
	httpc *http.Client

	mu     sync.Mutex
	shards map[uint32]*owned
}

type serveFlags struct {
	name, bind, control, dataDir, httpAddr, store, keyFile string
	join, voters                                           []string
	shards                                                 int
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
	host, _, err := net.SplitHostPort(f.httpAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		// The kv API has no authentication of its own in this example.
		return fmt.Errorf("kv serve: --http %q: want a loopback IP literal and port: the example's kv API is plain, unauthenticated HTTP", f.httpAddr)
	}
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("kv serve: %w", err)
	}
	url := "http://" + ln.Addr().String()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("instance", f.name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := node.Start(startCtx, node.Config{
		Name: f.name, Bind: f.bind, Join: f.join, Control: f.control,
		Keys: [][]byte{key}, Voters: f.voters, Voter: slices.Contains(f.voters, f.name), DataDir: f.dataDir,
		Shards: f.shards, Logger: log,
		// One change per shard at most in flight per move batch; a large buffer
		// keeps a formation from dropping changes (a dropped gain has no token).
		EventBuffer: 16 * f.shards,
		Meta:        map[string]string{HTTPMetaKey: url},
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("kv serve: %w", err)
	}
	defer n.Close()
	in := &instance{n: n, dir: f.store, log: log, shards: map[uint32]*owned{},
		httpc: &http.Client{Timeout: 2 * time.Second}}
	w, err := n.WatchShards()
	if err != nil {
		return fmt.Errorf("kv serve: %w", err)
	}
	watched := make(chan struct{})
	go func() { defer close(watched); in.watch(w) }()
	srv := &http.Server{Handler: in, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	line, _ := json.Marshal(started{Name: f.name, Bind: n.Addr(), Control: "http://" + n.ControlAddr(), HTTP: url, PID: os.Getpid()})
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
// from the log and fencing earlier owners, and closes it when the shard goes.
func (in *instance) watch(w *node.ShardWatch) {
	var dropped uint64
	self := in.n.Name()
	if early := in.n.OwnedShards(); len(early) > 0 {
		// Gained before the watch opened: no grant token is known for them.
		// They answer "not serving" until they move; see README.md.
		in.log.Warn("shards owned before the watch opened are not served", "shards", early)
	}
	for c := range w.C {
		if d := w.Dropped(); d != dropped {
			in.log.Warn("shard changes dropped: shards gained meanwhile are not served", "dropped", d-dropped)
			dropped = d
		}
		if !c.Gained {
			in.mu.Lock()
			o := in.shards[c.Shard]
			delete(in.shards, c.Shard)
			in.mu.Unlock()
			o.shut()
			continue
		}
		o := &owned{tok: Token{Epoch: c.Epoch, Version: c.Version}}
		o.mu.Lock()
		in.mu.Lock()
		prev := in.shards[c.Shard]
		in.shards[c.Shard] = o
		in.mu.Unlock()
		prev.shut()
		start := time.Now()
		o.log, o.err = openShard(in.dir, c.Shard, o.tok, self)
		o.mu.Unlock()
		if o.err != nil {
			in.log.Error("opening shard log", "shard", c.Shard, "token", o.tok.String(), "err", o.err)
		} else {
			in.log.Debug("shard opened", "shard", c.Shard, "token", o.tok.String(), "took", time.Since(start))
		}
	}
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
func (in *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if o := in.settle(r.Context(), s); o != nil {
		in.local(w, o, s, rec)
		return
	}
	in.forward(w, r, s, body)
}

// handoverWait bounds how long a request waits here for a shard in a planned
// move to settle: the map names this instance, but it has not gained the shard
// yet (the new owner) or not learned that it moved (the old one). A move takes a
// few round trips; waiting for it costs the request that much, where a refusal
// would cost it a client backoff on top.
const handoverWait = 300 * time.Millisecond

// settle returns the shard's handle when this instance serves s now, waiting up
// to handoverWait while its own map names it the owner without it serving;
// nil when another instance owns s (or nobody does).
func (in *instance) settle(ctx context.Context, s uint32) *owned {
	deadline := time.Now().Add(handoverWait)
	for {
		in.mu.Lock()
		o := in.shards[s]
		in.mu.Unlock()
		if o != nil && in.n.Serving(s) {
			return o
		}
		if owner, _ := in.n.Owner(s); owner != in.n.Name() || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// local runs the operation on this instance's log of shard s.
func (in *instance) local(w http.ResponseWriter, o *owned, s uint32, rec record) {
	o.mu.Lock()
	defer o.mu.Unlock()
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
	if rec.Kind == "" {
		res.Values, err = o.log.read(o.tok, rec.Key)
	} else {
		rec.By = self
		res.Dup, err = o.log.write(o.tok, rec)
	}
	switch {
	case errors.Is(err, ErrFenced):
		writeError(w, http.StatusServiceUnavailable, codeFenced, err.Error(), "", "")
	case err != nil:
		writeError(w, http.StatusInternalServerError, "store", err.Error(), "", "")
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// forward sends the request to the owner this instance's map names, at most
// maxHops times in a chain; past that, or with no owner, it refuses with a
// retryable error naming the owner.
func (in *instance) forward(w http.ResponseWriter, r *http.Request, s uint32, body []byte) {
	owner, ok := in.n.Owner(s)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, codeNoOwner, fmt.Sprintf("shard %d has no owner now (moving)", s), "", "")
		return
	}
	ep := in.n.Meta(owner)[HTTPMetaKey]
	hops, _ := strconv.Atoi(r.Header.Get(hopsHeader))
	switch {
	case owner == in.n.Name():
		writeError(w, http.StatusServiceUnavailable, codeNotServing, fmt.Sprintf("shard %d is granted to this instance but not served yet", s), owner, ep)
		return
	case ep == "" || hops >= maxHops:
		writeError(w, http.StatusServiceUnavailable, codeNotOwner, fmt.Sprintf("shard %d is served by %s", s, owner), owner, ep)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, ep+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeForward, err.Error(), owner, ep)
		return
	}
	req.Header.Set(hopsHeader, strconv.Itoa(hops+1))
	resp, err := in.httpc.Do(req)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeForward, err.Error(), owner, ep)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}
