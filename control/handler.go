package control

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxWatchers is Options.MaxWatchers when zero. Each open watch stream
// holds a goroutine, buffers and a connection (10,000 took 565 MB).
const DefaultMaxWatchers = 128

// DefaultWatchWriteTimeout is Options.WatchWriteTimeout when zero.
const DefaultWatchWriteTimeout = 10 * time.Second

// Pagination limits of GET /control/v1/peers.
const (
	DefaultLimit = 100  // peers per page when limit is absent
	MaxLimit     = 1000 // largest accepted limit
)

// Options configures a Handler. The zero value is usable.
type Options struct {
	// Metrics serves GET /metrics; nil leaves the route unregistered (404).
	Metrics http.Handler
	// Heartbeat is how often an idle watch stream sends an SSE comment so proxies
	// and clients see the connection alive. Default 15 s; lower means more idle
	// traffic, higher risks idle-timeout disconnects.
	Heartbeat time.Duration
	// Logger receives request errors; nil discards them.
	Logger *slog.Logger
	// Registerer receives the API's own metrics
	// (omnirelay_control_requests_total, omnirelay_control_request_duration_seconds,
	// omnirelay_control_watchers, omnirelay_control_watchers_refused_total);
	// nil records none.
	Registerer prometheus.Registerer
	// MaxWatchers caps the watch streams (peers and shards together) open at once;
	// one more is answered 503 too_many_watchers with Retry-After. Default
	// DefaultMaxWatchers. Raise it with the server's connection cap.
	MaxWatchers int
	// WatchWriteTimeout bounds each write (event or heartbeat) of a watch stream: a
	// client that stops reading is dropped after it. A watch stream replaces the
	// server's whole-response WriteTimeout and ReadTimeout with this per-write
	// deadline, so those can stay short without ending streams. Default
	// DefaultWatchWriteTimeout.
	WatchWriteTimeout time.Duration
	// Auth authenticates callers and enforces the route roles (routeRoles); nil
	// serves every request to anyone.
	Auth *Auth
}

type handler struct {
	src  Source
	opts Options
	log  *slog.Logger
	// watchSlots holds one token per open watch stream.
	watchSlots     chan struct{}
	watchers       prometheus.Gauge
	watchesRefused prometheus.Counter
	requestMetrics *requestMetrics // nil without Options.Registerer
}

// NewHandler returns the control-plane handler over src.
func NewHandler(src Source, opts Options) http.Handler {
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxWatchers <= 0 {
		opts.MaxWatchers = DefaultMaxWatchers
	}
	if opts.WatchWriteTimeout <= 0 {
		opts.WatchWriteTimeout = DefaultWatchWriteTimeout
	}
	h := &handler{src: src, opts: opts, log: log, watchSlots: make(chan struct{}, opts.MaxWatchers),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "omnirelay_control_watchers",
			Help: "Watch streams (peers and shards) open on the control API."}),
		watchesRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_control_watchers_refused_total",
			Help: "Watch requests answered 503 because MaxWatchers streams were open."}),
	}
	mux := http.NewServeMux()
	routes := h.routes()
	for _, rt := range routes {
		if rt.Path == "/metrics" && opts.Metrics == nil {
			continue
		}
		mux.HandleFunc(rt.Pattern(), rt.serve)
	}
	var rest http.Handler = jsonErrors(mux, opts.Auth)
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(h.watchers, h.watchesRefused)
		h.requestMetrics = newRequestMetrics(opts.Registerer)
		rest = instrument(rest, h.requestMetrics)
	}
	rpc := newGRPCService(h, routes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isRPC(r) {
			rpc.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// jsonErrors serves a routed request if auth allows it, and answers what no route
// serves (the mux's own plain-text 404 and 405) in the JSON error envelope, keeping
// the mux's status and Allow header.
func jsonErrors(mux *http.ServeMux, auth *Auth) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			r.Pattern = pattern // instrument's route label, also of a refusal
			if r, ok := auth.authorize(w, r, pattern); ok {
				mux.ServeHTTP(w, r)
			}
			return
		}
		cw := &codeWriter{header: w.Header()}
		h.ServeHTTP(cw, r)
		w.Header().Del("X-Content-Type-Options")
		if cw.code == http.StatusMethodNotAllowed {
			writeError(w, cw.code, CodeMethodNotAllowed, fmt.Sprintf("%s %s: allowed methods are %s", r.Method, r.URL.Path, w.Header().Get("Allow")))
			return
		}
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no route %s %s (routes: docs/api.md)", r.Method, r.URL.Path))
	})
}

// codeWriter keeps the status code and headers of the mux's error handler and
// drops its plain-text body.
type codeWriter struct {
	header http.Header
	code   int
}

func (c *codeWriter) Header() http.Header         { return c.header }
func (c *codeWriter) WriteHeader(code int)        { c.code = code }
func (c *codeWriter) Write(b []byte) (int, error) { return len(b), nil }

// logsRoute is always a stream, so instrument does not time it.
const logsRoute = "GET /control/v1/logs"

// requestMetrics counts control API requests by route (the mux pattern, or a gRPC
// procedure ControlService serves: never a raw path, so a scanner cannot grow the
// label set) and the route's HTTP status, and times all but streams (which last
// as long as the client wants). Nil records nothing.
type requestMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	if reg == nil {
		return nil
	}
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_control_requests_total",
			Help: "Control API requests, by route pattern (or gRPC procedure) and HTTP status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "omnirelay_control_request_duration_seconds",
			Help:    "Control API request latency by route pattern or gRPC procedure (watch streams excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	// Pre-create the series an error budget divides by, so rates exist from the start.
	for _, route := range []string{"GET /control/v1/peers", "GET /control/v1/peers/{name}"} {
		m.requests.WithLabelValues(route, "200")
		m.duration.WithLabelValues(route)
	}
	return m
}

// observe records one request of route that was answered code; timed false for
// a stream.
func (m *requestMetrics) observe(route string, code int, start time.Time, timed bool) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if timed {
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}
}

// instrument records every request the mux routes (m.observe).
func instrument(mux http.Handler, m *requestMetrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		mux.ServeHTTP(sw, r)
		route := r.Pattern // set by the mux while routing
		if route == "" {
			route = "unmatched"
		}
		m.observe(route, sw.code, start, r.URL.Query().Get("watch") != "true" && route != logsRoute)
	})
}

// statusWriter remembers the status code; it forwards Flush so watch streams work.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// PeerList is the JSON body of GET /control/v1/peers.
type PeerList struct {
	Version       string `json:"version"`
	Peers         []Peer `json:"peers"`
	NextPageToken string `json:"next_page_token"`
}

// PeerReply is the JSON body of GET /control/v1/peers/{name}.
type PeerReply struct {
	Version string `json:"version"`
	Peer    Peer   `json:"peer"`
}

// ErrorReply is the JSON body of every 4xx/5xx answer.
type ErrorReply struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody says what went wrong: Code is stable and machine-readable.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// filter is the parsed status/role/meta query of a peers request.
type filter struct {
	status map[string]bool // nil: any
	role   string
	meta   [][2]string
}

func parseFilter(q map[string][]string) (filter, error) {
	var f filter
	for _, v := range q["status"] {
		for s := range strings.SplitSeq(v, ",") {
			if !slices.Contains(Statuses, s) {
				return f, fmt.Errorf("status %q: want one of %s", s, strings.Join(Statuses, ", "))
			}
			if f.status == nil {
				f.status = map[string]bool{}
			}
			f.status[s] = true
		}
	}
	if r := q["role"]; len(r) > 0 {
		f.role = r[len(r)-1]
	}
	for _, v := range q["meta"] {
		k, val, ok := strings.Cut(v, ":")
		if !ok || k == "" {
			return f, fmt.Errorf("meta %q: want key:value", v)
		}
		f.meta = append(f.meta, [2]string{k, val})
	}
	return f, nil
}

// match reports whether p passes f. Role matches a peer whose "role" metadata key
// equals it or whose "roles" key (comma-separated) lists it.
func (f filter) match(p Peer) bool {
	if f.status != nil && !f.status[p.Status] {
		return false
	}
	if f.role != "" && !HasRole(p.Meta, f.role) {
		return false
	}
	for _, kv := range f.meta {
		if v, ok := p.Meta[kv[0]]; !ok || v != kv[1] {
			return false
		}
	}
	return true
}

func (h *handler) peers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadFilter, err.Error())
		return
	}
	if q.Get("watch") == "true" {
		h.watch(w, r, f)
		return
	}
	limit := DefaultLimit
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > MaxLimit {
			writeError(w, http.StatusBadRequest, CodeBadLimit, fmt.Sprintf("limit %q: want 1..%d", s, MaxLimit))
			return
		}
	}
	after := ""
	if tok := q.Get("page_token"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 {
			writeError(w, http.StatusBadRequest, CodeBadPageToken, "page_token is not one this server issued")
			return
		}
		after = string(b)
	}
	snap := h.src.Snapshot()
	etag := `"` + snap.Version.String() + `"`
	if notModified(w, r, etag) {
		return
	}
	out := PeerList{Version: snap.Version.String(), Peers: []Peer{}}
	for _, p := range snap.Peers {
		if p.Name <= after || !f.match(p) {
			continue
		}
		if len(out.Peers) == limit {
			out.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(out.Peers[limit-1].Name))
			break
		}
		out.Peers = append(out.Peers, p)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) peer(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	snap := h.src.Snapshot()
	i, ok := slices.BinarySearchFunc(snap.Peers, name, func(p Peer, n string) int { return strings.Compare(p.Name, n) })
	if !ok {
		writeError(w, http.StatusNotFound, CodeUnknownPeer, fmt.Sprintf("no peer named %q in this node's view", name))
		return
	}
	etag := `"` + snap.Version.String() + `"`
	if notModified(w, r, etag) {
		return
	}
	writeJSON(w, http.StatusOK, PeerReply{Version: snap.Version.String(), Peer: snap.Peers[i]})
}

// notModified sets the reply's ETag and, when the request's If-None-Match holds
// it, answers 304 (true: the reply is written).
func notModified(w http.ResponseWriter, r *http.Request, etag string) bool {
	w.Header().Set("ETag", etag)
	if !etagMatch(r.Header.Get("If-None-Match"), etag) {
		return false
	}
	w.WriteHeader(http.StatusNotModified)
	return true
}

// writeTagged writes v as JSON with an ETag of its bytes (after prefix, when
// given: "PREFIX-HASH"), or 304 when the request's If-None-Match has it.
func writeTagged(w http.ResponseWriter, r *http.Request, prefix string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("control: encoding our own reply: " + err.Error())
	}
	tag := fmt.Sprintf("%016x", xxhash.Sum64(b))
	if prefix != "" {
		tag = prefix + "-" + tag
	}
	if notModified(w, r, `"`+tag+`"`) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}

// etagMatch implements If-None-Match: a list of entity tags or "*" (weak compare).
func etagMatch(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// WatchSnapshot is the data of the "snapshot" SSE event.
type WatchSnapshot struct {
	Version string `json:"version"`
	Peers   []Peer `json:"peers"`
}

// watch streams membership changes as Server-Sent Events. It starts with a snapshot
// unless the client resumes (Last-Event-ID header or since=VERSION) from a version
// still in the source's history, in which case only the missed changes are replayed.
func (h *handler) watch(w http.ResponseWriter, r *http.Request, f filter) {
	release, ok := h.admitWatch(w)
	if !ok {
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	resume := r.Header.Get("Last-Event-ID")
	if s := r.URL.Query().Get("since"); s != "" {
		resume = s
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)

	changed := h.src.Changed()
	snap := h.src.Snapshot()
	last := snap.Version.N
	sendSnapshot := true
	if v, err := ParseVersion(resume); err == nil && v.Epoch == snap.Version.Epoch && v.N <= snap.Version.N {
		if _, ok := h.src.ChangesSince(v.N); ok {
			last, sendSnapshot = v.N, false
		}
	}
	if sendSnapshot {
		ws := WatchSnapshot{Version: snap.Version.String(), Peers: []Peer{}}
		for _, p := range snap.Peers {
			if f.match(p) {
				ws.Peers = append(ws.Peers, p)
			}
		}
		if !h.event(w, snap.Version.String(), "snapshot", ws) {
			return
		}
	}
	heartbeat := time.NewTicker(h.opts.Heartbeat)
	defer heartbeat.Stop()
	for {
		changes, ok := h.src.ChangesSince(last)
		if !ok {
			// The client fell further behind than the history keeps: it must start
			// over from a fresh snapshot, which it gets by reconnecting without an id.
			h.event(w, Version{Epoch: snap.Version.Epoch, N: last}.String(), "reset", struct{}{})
			return
		}
		for _, c := range changes {
			last = c.N
			if !f.match(c.Peer) {
				continue
			}
			if !h.event(w, Version{Epoch: snap.Version.Epoch, N: c.N}.String(), c.Kind, c) {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
			changed = h.src.Changed()
		case <-heartbeat.C:
			if !h.heartbeat(w) {
				return
			}
		}
	}
}

// admitWatch takes a watch slot, or answers 503 (counted) when MaxWatchers streams
// are open. It also lifts the connection's read deadline: the server's ReadTimeout
// would otherwise fire in its background read and cancel the stream's context.
func (h *handler) admitWatch(w http.ResponseWriter) (release func(), ok bool) {
	select {
	case h.watchSlots <- struct{}{}:
	default:
		h.watchesRefused.Inc()
		w.Header().Set("Retry-After", "5") // seconds: about the time for a watcher to leave
		writeError(w, http.StatusServiceUnavailable, CodeTooManyWatchers,
			fmt.Sprintf("this node serves at most %d watch streams at once; retry later or poll", h.opts.MaxWatchers))
		return nil, false
	}
	h.watchers.Inc()
	http.NewResponseController(w).SetReadDeadline(time.Time{}) // ErrNotSupported: no deadline to lift
	return func() {
		h.watchers.Dec()
		<-h.watchSlots
	}, true
}

// streamWrite writes to a watch stream and flushes it under a fresh write deadline,
// which replaces the server's whole-response WriteTimeout; false means the client
// is gone or stopped reading.
func (h *handler) streamWrite(w http.ResponseWriter, format string, args ...any) bool {
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(h.opts.WatchWriteTimeout)) // ErrNotSupported: the server's own timeouts apply
	_, err := fmt.Fprintf(w, format, args...)
	return err == nil && rc.Flush() == nil
}

// heartbeat writes an SSE comment; false means the client is gone.
func (h *handler) heartbeat(w http.ResponseWriter) bool {
	return h.streamWrite(w, ": heartbeat\n\n")
}

// event writes one SSE event; false means the client is gone.
func (h *handler) event(w http.ResponseWriter, id, kind string, data any) bool {
	b, err := json.Marshal(data)
	if err != nil {
		panic("control: encoding our own event: " + err.Error())
	}
	return h.streamWrite(w, "id: %s\nevent: %s\ndata: %s\n\n", id, kind, b)
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	probe(w, h.src.Health())
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	probe(w, h.src.Readiness())
}

// probe answers 200 when every check is ok and 503 otherwise, naming each check.
func probe(w http.ResponseWriter, checks []Check) {
	reply := ProbeReply{Status: CheckOK, Checks: checks}
	for _, c := range checks {
		if c.State != CheckOK {
			reply.Status = CheckFail
		}
	}
	if reply.Checks == nil {
		reply.Checks = []Check{}
	}
	code := http.StatusOK
	if reply.Status != CheckOK {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, reply)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("control: encoding our own reply: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, ErrorReply{Error: ErrorBody{Code: errCode, Message: msg}})
}

// HasRole reports whether metadata meta gives role: its "role" key equals it, or
// its "roles" key, a comma-separated list (spaces around names ignored), holds it.
func HasRole(meta map[string]string, role string) bool {
	if meta["role"] == role {
		return true
	}
	for r := range strings.SplitSeq(meta["roles"], ",") {
		if strings.TrimSpace(r) == role {
			return true
		}
	}
	return false
}
