package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/omnirelay/mesh/identity"
	controlv1 "github.com/omnirelay/mesh/proto/omnirelay/control/v1"
	"github.com/omnirelay/mesh/proto/omnirelay/control/v1/controlv1connect"
)

// The control API as the gRPC service omnirelay.control.v1.ControlService
// (proto/omnirelay/control/v1/control.proto), served by connectrpc.com/connect on
// the same handler as the HTTP routes: gRPC, gRPC-Web and Connect, on whatever
// server and TLS the HTTP routes have. Each RPC runs the handler of one HTTP route
// in process (rpcRoutes): the role, the checks, the errors and the data are that
// route's, and the reply is the route's JSON read into the RPC's message, whose
// fields carry the JSON's names. One implementation cannot drift from the other.

// rpcRoute is the HTTP route an RPC runs.
type rpcRoute struct {
	pattern string
	watch   bool // the route's watch=true stream
	// events names, per SSE event kind, the field of the stream message that
	// carries its data ("*": every other kind; a kind absent here carries none).
	events map[string]string
	probe  bool // a 503 is a reply (status "fail"), not an error
}

// rpcRoutes maps each procedure of ControlService to its route, which gives its
// role (routeRoles): the one place an RPC gets one. A procedure missing here is
// refused to everyone. GET /metrics has no RPC: Prometheus scrapes it over HTTP.
var rpcRoutes = map[string]rpcRoute{
	controlv1connect.ControlServiceListPeersProcedure:       {pattern: "GET /control/v1/peers"},
	controlv1connect.ControlServiceWatchPeersProcedure:      {pattern: "GET /control/v1/peers", watch: true, events: map[string]string{"snapshot": "snapshot", "reset": "", "*": "change"}},
	controlv1connect.ControlServiceGetPeerProcedure:         {pattern: "GET /control/v1/peers/{name}"},
	controlv1connect.ControlServiceForceLeaveProcedure:      {pattern: "POST /control/v1/peers/{name}/force-leave"},
	controlv1connect.ControlServiceGetStatusProcedure:       {pattern: "GET /control/v1/status"},
	controlv1connect.ControlServiceStreamLogsProcedure:      {pattern: "GET /control/v1/logs", events: map[string]string{"log": "log", "dropped": "dropped"}},
	controlv1connect.ControlServiceSetMetaProcedure:         {pattern: "PUT /control/v1/meta/{key}"},
	controlv1connect.ControlServiceDeleteMetaProcedure:      {pattern: "DELETE /control/v1/meta/{key}"},
	controlv1connect.ControlServiceJoinProcedure:            {pattern: "POST /control/v1/join"},
	controlv1connect.ControlServiceLeaveProcedure:           {pattern: "POST /control/v1/leave"},
	controlv1connect.ControlServiceGetKeyringProcedure:      {pattern: "GET /control/v1/keyring"},
	controlv1connect.ControlServiceInstallKeyProcedure:      {pattern: "POST /control/v1/keyring/install"},
	controlv1connect.ControlServiceUseKeyProcedure:          {pattern: "POST /control/v1/keyring/use"},
	controlv1connect.ControlServiceRemoveKeyProcedure:       {pattern: "POST /control/v1/keyring/remove"},
	controlv1connect.ControlServiceGetLeadersProcedure:      {pattern: "GET /control/v1/leaders"},
	controlv1connect.ControlServiceStepDownProcedure:        {pattern: "POST /control/v1/leaders/step-down"},
	controlv1connect.ControlServiceChangeVotersProcedure:    {pattern: "POST /control/v1/voters"},
	controlv1connect.ControlServiceCreateTokenProcedure:     {pattern: "POST /control/v1/tokens"},
	controlv1connect.ControlServiceListShardsProcedure:      {pattern: "GET /control/v1/shards"},
	controlv1connect.ControlServiceWatchShardsProcedure:     {pattern: "GET /control/v1/shards", watch: true, events: map[string]string{"map": "map"}},
	controlv1connect.ControlServiceLookupShardProcedure:     {pattern: "GET /control/v1/shards/lookup"},
	controlv1connect.ControlServiceGetShardProcedure:        {pattern: "GET /control/v1/shards/{id}"},
	controlv1connect.ControlServiceDrainShardsProcedure:     {pattern: "POST /control/v1/shards/drain"},
	controlv1connect.ControlServiceRebalanceShardsProcedure: {pattern: "POST /control/v1/shards/rebalance"},
	controlv1connect.ControlServiceListClustersProcedure:    {pattern: "GET /control/v1/clusters"},
	controlv1connect.ControlServiceWatchClustersProcedure:   {pattern: "GET /control/v1/clusters", watch: true, events: map[string]string{"clusters": "clusters"}},
	controlv1connect.ControlServiceGetClusterProcedure:      {pattern: "GET /control/v1/clusters/{id}"},
	controlv1connect.ControlServicePromoteClusterProcedure:  {pattern: "POST /control/v1/clusters/{id}/promote"},
	controlv1connect.ControlServiceHealthProcedure:          {pattern: "GET /healthz", probe: true},
	controlv1connect.ControlServiceReadyProcedure:           {pattern: "GET /readyz", probe: true},
}

// reflectionServices are the gRPC server reflection services (grpcurl, grpcui):
// readers may call them. They describe only the schema, which is public, but
// every procedure of the port needs its role like the routes.
var reflectionServices = []string{"/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}

// rpcRole is the role procedure needs (known false: none, so no one may call it),
// whether it changes something (audited when it passes), and whether the port
// serves it at all.
func rpcRole(procedure string) (need identity.Role, known, change, served bool) {
	if rt, ok := rpcRoutes[procedure]; ok {
		need, known = routeRoles[rt.pattern]
		return need, known, !strings.HasPrefix(rt.pattern, http.MethodGet+" "), true
	}
	for _, s := range reflectionServices {
		if strings.HasPrefix(procedure, s) {
			return identity.RoleReader, true, false, true
		}
	}
	return "", false, false, false
}

// isRPC reports whether r is for the gRPC service or reflection rather than a route.
func isRPC(r *http.Request) bool {
	p := r.URL.Path
	return strings.HasPrefix(p, "/"+controlv1connect.ControlServiceName+"/") ||
		strings.HasPrefix(p, reflectionServices[0]) || strings.HasPrefix(p, reflectionServices[1])
}

// grpcService serves ControlService by running the routes of h.
type grpcService struct {
	h      *handler
	routes map[string]route // by pattern
	mux    *http.ServeMux
	errors *connect.ErrorWriter
}

// maxRPCRequest bounds a request message, as readBody bounds a route's body.
const maxRPCRequest = 1 << 16

func newGRPCService(h *handler, routes []route) *grpcService {
	s := &grpcService{h: h, routes: map[string]route{}, mux: http.NewServeMux(), errors: connect.NewErrorWriter()}
	for _, rt := range routes {
		s.routes[rt.Pattern()] = rt
	}
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(maxRPCRequest)}
	s.mux.Handle(controlv1connect.NewControlServiceHandler(s, opts...))
	reflector := grpcreflect.NewStaticReflector(controlv1connect.ControlServiceName)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector, opts...))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, opts...))
	return s
}

// outerKey holds the real request and response writer of an RPC: the routes read
// the caller's TLS state and address, and a stream sets its write deadlines on
// the real connection.
type outerKey struct{}

type outer struct {
	r *http.Request
	w http.ResponseWriter
}

// ServeHTTP authenticates and authorizes an RPC as authorize does a route, then
// hands it to connect.
func (s *grpcService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start, procedure := time.Now(), r.URL.Path
	need, known, change, served := rpcRole(procedure)
	if !served {
		s.h.requestMetrics.observe("unmatched", http.StatusNotFound, start, true)
		s.errors.Write(w, r, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("no procedure %s (docs/api.md, gRPC)", procedure)))
		return
	}
	r, ref := s.h.opts.Auth.admit(r, procedure, need, known, change)
	if ref != nil {
		s.h.requestMetrics.observe(procedure, ref.status, start, true)
		s.errors.Write(w, r, rpcError(ref.status, ErrorBody{Code: ref.code, Message: ref.msg}, "", ""))
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), outerKey{}, outer{r: r, w: w}))
	s.mux.ServeHTTP(w, r)
}

// rpcError is the error of an RPC whose route answered status with body: the
// gRPC code closest to the status, the route's error code in an ErrorDetail.
func rpcError(status int, body ErrorBody, leader, leaderControl string) error {
	code := connect.CodeUnknown
	switch status {
	case http.StatusBadRequest:
		code = connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		code = connect.CodeUnauthenticated
	case http.StatusForbidden:
		code = connect.CodePermissionDenied
	case http.StatusNotFound:
		code = connect.CodeNotFound
	case http.StatusMethodNotAllowed:
		code = connect.CodeUnimplemented
	case http.StatusConflict:
		code = connect.CodeFailedPrecondition
		if body.Code == CodeChangeInProgress {
			code = connect.CodeAborted
		}
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		code = connect.CodeUnavailable
		if body.Code == CodeTooManyWatchers {
			code = connect.CodeResourceExhausted
		}
	case http.StatusInternalServerError:
		code = connect.CodeInternal
	}
	err := connect.NewError(code, errors.New(body.Message))
	if d, derr := connect.NewErrorDetail(&controlv1.ErrorDetail{Code: body.Code, Message: body.Message,
		Leader: leader, LeaderControl: leaderControl}); derr == nil {
		err.AddDetail(d)
	}
	return err
}

// serve runs procedure's route with in as its request, writing to w.
func (s *grpcService) serve(ctx context.Context, procedure string, in proto.Message, w *rpcWriter) error {
	rt, ok := rpcRoutes[procedure]
	o, _ := ctx.Value(outerKey{}).(outer)
	route, okRoute := s.routes[rt.pattern]
	if !ok || !okRoute || o.r == nil {
		return connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%s has no route on this node", procedure))
	}
	req, err := routeRequest(ctx, route.Route, rt.watch, in)
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	req.RemoteAddr, req.TLS, req.Pattern = o.r.RemoteAddr, o.r.TLS, rt.pattern
	streams := rt.watch || rt.events != nil
	if streams {
		w.outer = o.w
	}
	start := time.Now()
	route.serve(w, req)
	w.WriteHeader(http.StatusOK) // a route that wrote nothing answered 200
	s.h.requestMetrics.observe(procedure, w.code, start, !streams)
	return nil
}

// routeRequest is the HTTP request of route that carries in: a field named like
// a path wildcard fills it; the others are the query of a GET (set fields only,
// one value per element of a list) and the JSON body of the other methods.
func routeRequest(ctx context.Context, route Route, watch bool, in proto.Message) (*http.Request, error) {
	m := in.ProtoReflect()
	path, paths, query := route.Path, map[string]string{}, url.Values{}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		if wildcard := "{" + name + "}"; strings.Contains(path, wildcard) {
			v := fmt.Sprint(m.Get(fd).Interface())
			paths[name] = v
			path = strings.Replace(path, wildcard, url.PathEscape(v), 1)
			continue
		}
		if route.Method != http.MethodGet || !m.Has(fd) {
			continue
		}
		if fd.IsList() {
			l := m.Get(fd).List()
			for j := range l.Len() {
				query.Add(name, fmt.Sprint(l.Get(j).Interface()))
			}
			continue
		}
		query.Set(name, fmt.Sprint(m.Get(fd).Interface()))
	}
	if watch {
		query.Set("watch", "true")
	}
	var body []byte
	if route.Method != http.MethodGet {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(in)
		if err != nil {
			return nil, err
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return nil, err
		}
		for name := range paths {
			delete(obj, name)
		}
		if body, err = json.Marshal(obj); err != nil {
			return nil, err
		}
	}
	target := path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, route.Method, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for name, v := range paths {
		req.SetPathValue(name, v)
	}
	return req, nil
}

// rpcWriter is the ResponseWriter a route writes an RPC's answer to: a unary
// answer is kept whole; a stream's events are parsed as they come and handed to
// emit, its heartbeats too. Deadlines reach the real connection (Unwrap).
type rpcWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer // the answer, or an error, or a stream's partial event
	outer  http.ResponseWriter
	emit   func(id, kind string, data []byte) error // nil: unary
	err    error                                    // emit's first error
}

func newRPCWriter(emit func(id, kind string, data []byte) error) *rpcWriter {
	return &rpcWriter{header: http.Header{}, emit: emit}
}

func (w *rpcWriter) Header() http.Header { return w.header }

func (w *rpcWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *rpcWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.err != nil {
		return 0, w.err
	}
	w.body.Write(b)
	if w.emit == nil || w.code != http.StatusOK {
		return len(b), nil
	}
	for {
		block, _, ok := bytes.Cut(w.body.Bytes(), []byte("\n\n"))
		if !ok {
			return len(b), nil
		}
		var id, kind string
		var data []byte
		for line := range bytes.SplitSeq(block, []byte("\n")) {
			switch k, v, _ := bytes.Cut(line, []byte(": ")); string(k) {
			case "id":
				id = string(v)
			case "event":
				kind = string(v)
			case "data":
				data = v
			}
		}
		if kind == "" {
			kind = "heartbeat" // an SSE comment
		}
		if w.err = w.emit(id, kind, data); w.err != nil {
			return 0, w.err
		}
		w.body.Next(len(block) + 2)
	}
}

// Flush is a no-op: connect flushes each message it sends.
func (w *rpcWriter) Flush() {}

// Unwrap gives http.ResponseController the real writer, for a stream's deadlines.
func (w *rpcWriter) Unwrap() http.ResponseWriter { return w.outer }

// failure is the error of a route's non-200 answer, nil for a 200 (or a probe's 503).
func (w *rpcWriter) failure(probe bool) error {
	if w.code == http.StatusOK || w.code == 0 || probe && w.code == http.StatusServiceUnavailable {
		return nil
	}
	var nl NotLeaderReply // an ErrorReply, and the leader of a not_leader answer
	if json.Unmarshal(w.body.Bytes(), &nl) != nil || nl.Error.Code == "" {
		nl.Error = ErrorBody{Code: http.StatusText(w.code), Message: strings.TrimSpace(w.body.String())}
	}
	return rpcError(w.code, nl.Error, nl.Leader, nl.LeaderControl)
}

// strict reads a route's JSON into an RPC's message: a field the message lacks is
// an error, so a schema that falls behind its route fails (and its tests do).
var strict = protojson.UnmarshalOptions{}

// unary runs a unary RPC: its route's answer, read into out.
func unary[Req, Res any](ctx context.Context, s *grpcService, r *connect.Request[Req], out *Res) (*connect.Response[Res], error) {
	procedure := r.Spec().Procedure
	w := newRPCWriter(nil)
	if err := s.serve(ctx, procedure, any(r.Msg).(proto.Message), w); err != nil {
		return nil, err
	}
	if err := w.failure(rpcRoutes[procedure].probe); err != nil {
		return nil, err
	}
	if err := strict.Unmarshal(w.body.Bytes(), any(out).(proto.Message)); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("%s: the route's reply does not fit the message: %w", procedure, err))
	}
	resp := connect.NewResponse(out)
	if etag := w.header.Get("ETag"); etag != "" {
		resp.Header().Set("ETag", etag)
	}
	return resp, nil
}

// stream runs a server-streaming RPC: one message per event of its route's SSE
// stream, the event's data in the field rpcRoute.events names.
func stream[Req, Res any](ctx context.Context, s *grpcService, r *connect.Request[Req], st *connect.ServerStream[Res]) error {
	procedure := r.Spec().Procedure
	events := rpcRoutes[procedure].events
	w := newRPCWriter(func(id, kind string, data []byte) error {
		ev := new(Res)
		m := any(ev).(proto.Message).ProtoReflect()
		fields := m.Descriptor().Fields()
		m.Set(fields.ByName("id"), protoreflect.ValueOfString(id))
		m.Set(fields.ByName("kind"), protoreflect.ValueOfString(kind))
		name, ok := events[kind]
		if !ok && kind != "heartbeat" {
			name = events["*"]
		}
		if fd := fields.ByName(protoreflect.Name(name)); name != "" && fd != nil {
			if err := strict.Unmarshal(data, m.Mutable(fd).Message().Interface()); err != nil {
				return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: a %s event does not fit the message: %w", procedure, kind, err))
			}
		}
		return st.Send(ev)
	})
	if err := s.serve(ctx, procedure, any(r.Msg).(proto.Message), w); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	return w.failure(false)
}
