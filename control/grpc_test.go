package control

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/omnirelay/mesh/identity"
	controlv1 "github.com/omnirelay/mesh/proto/omnirelay/control/v1"
	"github.com/omnirelay/mesh/proto/omnirelay/control/v1/controlv1connect"
)

// fullFake is a Source with every optional part, each answering fixed data.
type fullFake struct {
	*shardFake
	cs Clusters
	l  Leaders
}

var fakeTime = time.Date(2026, 12, 1, 10, 30, 0, 123456789, time.UTC)

func newFullFake() *fullFake {
	f := &fullFake{shardFake: newShardFake(8, "a", "b", "c")}
	f.m.Placement = &Placement{Replicas: 1, Nodes: []PlacementNode{{Name: "a", Weight: 1}, {Name: "b", Weight: 2.5}}}
	f.apply("meta", Peer{Name: "b", Address: "10.0.0.2:7946", Status: "suspect", Incarnation: 7,
		Meta: map[string]string{"zone": "eu", "roles": "api,kv"}, Since: fakeTime})
	f.cs = twoClusters()
	f.cs.Clusters[0].Handoff = "us"
	f.l = Leaders{Version: "e1.4", Leader: &Lease{Holder: "a", Epoch: 3, ValidUntil: fakeTime, IsLocal: true},
		Voters: []string{"a", "b"}, VoterStatus: []VoterStatus{{"a", "alive", fakeTime}, {"b", "suspect", fakeTime}},
		Local: LocalLeadership{Name: "a", IsVoter: true, IsLeader: true, EpochSeen: 3}}
	return f
}

func (f *fullFake) Clusters() (Clusters, error)                { return f.cs, nil }
func (f *fullFake) ClustersChanged() <-chan struct{}           { return nil }
func (f *fullFake) PromoteCluster(id string, force bool) error { return nil }
func (f *fullFake) Leaders() (Leaders, error)                  { return f.l, nil }
func (f *fullFake) StepDown() error                            { return nil }
func (f *fullFake) ChangeVoters(add, _ []string) ([]string, error) {
	return append([]string{"a", "b"}, add...), nil
}

func (f *fullFake) Status() (NodeStatus, error) {
	st := NodeStatus{Name: "a", Address: "10.0.0.1:7946", Version: "v1.2.3", Protocol: "1-2", Status: "alive",
		Incarnation: 4, Health: 1, Joined: true, Leader: "a", Epoch: 3, IsVoter: true, IsLeader: true, Shards: 8, Owned: 3,
		Warnings: []string{"peer b has another shard count"}}
	st.Members.Alive, st.Members.Suspect = 2, 1
	return st, nil
}
func (f *fullFake) SetMeta(string, string) error         { return nil }
func (f *fullFake) DeleteMeta(string) error              { return nil }
func (f *fullFake) Join(context.Context, []string) error { return nil }
func (f *fullFake) Leave(context.Context) error          { return nil }
func (f *fullFake) ForceLeave(string, bool) error        { return nil }
func (f *fullFake) Keyring() ([]KeyInfo, error) {
	return []KeyInfo{{"00aa11bb22cc33dd", true}, {"ffee", false}}, nil
}
func (f *fullFake) InstallKey([]byte, Caller) error { return nil }
func (f *fullFake) UseKey([]byte, Caller) error     { return nil }
func (f *fullFake) RemoveKey([]byte, Caller) error  { return nil }
func (f *fullFake) CreateToken(role identity.Role, ttl time.Duration, _ Caller) (string, identity.Token, error) {
	return "tok-secret", identity.Token{ID: "t1", Cluster: "default", Role: role, Expires: fakeTime.Add(ttl)}, nil
}
func (f *fullFake) WatchLogs(slog.Level) (<-chan LogRecord, func() uint64, func()) {
	c := make(chan LogRecord, 1)
	c <- LogRecord{Time: fakeTime, Level: "INFO", Msg: "probe", Attrs: map[string]string{"peer": "b"}}
	return c, func() uint64 { return 0 }, func() {}
}

// startBoth serves h over HTTP/1.1 and cleartext HTTP/2 on loopback and returns
// its URL and a gRPC client of it.
func startBoth(t *testing.T, h http.Handler, opts ...connect.ClientOption) (string, *http.Client, controlv1connect.ControlServiceClient) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: h2c, Timeout: 10 * time.Second}
	t.Cleanup(h2c.CloseIdleConnections)
	return srv.URL, hc, controlv1connect.NewControlServiceClient(hc, srv.URL, append([]connect.ClientOption{connect.WithGRPC()}, opts...)...)
}

// rpcCase is one RPC and the HTTP request of its route that asks the same.
type rpcCase struct {
	procedure    string
	method, path string
	body         string
	// call makes the RPC and, for HTTP's answer, the message it must equal.
	call func(ctx context.Context, hc *http.Client, base string, httpBody []byte) (got, want proto.Message, err error)
}

// unaryCase is the case of a unary RPC with request req and reply type Res.
func unaryCase[Req, Res any](procedure, method, path, body string, req *Req) rpcCase {
	return rpcCase{procedure, method, path, body, func(ctx context.Context, hc *http.Client, base string, httpBody []byte) (proto.Message, proto.Message, error) {
		resp, err := connect.NewClient[Req, Res](hc, base+procedure, connect.WithGRPC()).CallUnary(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, nil, err
		}
		want := any(new(Res)).(proto.Message)
		return any(resp.Msg).(proto.Message), want, protojson.Unmarshal(httpBody, want)
	}}
}

// streamCase is the case of a streaming RPC: its first event that is not a
// heartbeat against the HTTP stream's, whose data goes in field.
func streamCase[Req, Res any](procedure, path string, req *Req, field string) rpcCase {
	return rpcCase{procedure, "GET", path, "", func(ctx context.Context, hc *http.Client, base string, httpBody []byte) (proto.Message, proto.Message, error) {
		st, err := connect.NewClient[Req, Res](hc, base+procedure, connect.WithGRPC()).CallServerStream(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, nil, err
		}
		defer st.Close()
		for st.Receive() {
			m := any(st.Msg()).(proto.Message)
			if kind := m.ProtoReflect().Get(m.ProtoReflect().Descriptor().Fields().ByName("kind")).String(); kind == "heartbeat" {
				continue
			}
			want := any(new(Res)).(proto.Message).ProtoReflect()
			id, kind, data := firstSSE(httpBody)
			fields := want.Descriptor().Fields()
			want.Set(fields.ByName("id"), protoreflect.ValueOfString(id))
			want.Set(fields.ByName("kind"), protoreflect.ValueOfString(kind))
			err := protojson.Unmarshal(data, want.Mutable(fields.ByName(protoreflect.Name(field))).Message().Interface())
			return m, want.Interface(), err
		}
		return nil, nil, errors.Join(errors.New("the stream ended before an event"), st.Err())
	}}
}

// firstSSE parses the first event of an SSE body that is not a comment.
func firstSSE(b []byte) (id, kind string, data []byte) {
	for block := range strings.SplitSeq(string(b), "\n\n") {
		for line := range strings.SplitSeq(block, "\n") {
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "id":
				id = v
			case "event":
				kind = v
			case "data":
				data = []byte(v)
			}
		}
		if kind != "" {
			return id, kind, data
		}
	}
	return "", "", nil
}

// rpcCases covers every RPC, each with a request that is not the zero one where
// the route takes parameters.
func rpcCases() []rpcCase {
	const p = "/" + controlv1connect.ControlServiceName + "/"
	key := `{"key":"` + strings.Repeat("A", 43) + `="}` // base64 of 32 zero bytes
	zero := make([]byte, 32)
	return []rpcCase{
		unaryCase[controlv1.ListPeersRequest, controlv1.PeerList](p+"ListPeers", "GET", "/control/v1/peers?status=alive,suspect&limit=2", "", &controlv1.ListPeersRequest{Status: []string{"alive,suspect"}, Limit: 2}),
		streamCase[controlv1.WatchPeersRequest, controlv1.PeersEvent](p+"WatchPeers", "/control/v1/peers?watch=true&role=kv", &controlv1.WatchPeersRequest{Role: "kv"}, "snapshot"),
		unaryCase[controlv1.GetPeerRequest, controlv1.PeerReply](p+"GetPeer", "GET", "/control/v1/peers/b", "", &controlv1.GetPeerRequest{Name: "b"}),
		unaryCase[controlv1.ForceLeaveRequest, controlv1.ForceLeaveReply](p+"ForceLeave", "POST", "/control/v1/peers/c/force-leave", `{"prune":true}`, &controlv1.ForceLeaveRequest{Name: "c", Prune: true}),
		unaryCase[controlv1.GetStatusRequest, controlv1.NodeStatus](p+"GetStatus", "GET", "/control/v1/status", "", &controlv1.GetStatusRequest{}),
		streamCase[controlv1.StreamLogsRequest, controlv1.LogEvent](p+"StreamLogs", "/control/v1/logs?level=debug", &controlv1.StreamLogsRequest{Level: "debug"}, "log"),
		unaryCase[controlv1.SetMetaRequest, controlv1.MetaChange](p+"SetMeta", "PUT", "/control/v1/meta/zone", `{"value":"eu"}`, &controlv1.SetMetaRequest{Key: "zone", Value: "eu"}),
		unaryCase[controlv1.DeleteMetaRequest, controlv1.MetaChange](p+"DeleteMeta", "DELETE", "/control/v1/meta/zone", "", &controlv1.DeleteMetaRequest{Key: "zone"}),
		unaryCase[controlv1.JoinRequest, controlv1.JoinReply](p+"Join", "POST", "/control/v1/join", `{"seeds":["10.0.0.9:7946"]}`, &controlv1.JoinRequest{Seeds: []string{"10.0.0.9:7946"}}),
		unaryCase[controlv1.LeaveRequest, controlv1.LeaveReply](p+"Leave", "POST", "/control/v1/leave", `{}`, &controlv1.LeaveRequest{}),
		unaryCase[controlv1.GetKeyringRequest, controlv1.KeyringReply](p+"GetKeyring", "GET", "/control/v1/keyring", "", &controlv1.GetKeyringRequest{}),
		unaryCase[controlv1.KeyRequest, controlv1.KeyringReply](p+"InstallKey", "POST", "/control/v1/keyring/install", key, &controlv1.KeyRequest{Key: zero}),
		unaryCase[controlv1.KeyRequest, controlv1.KeyringReply](p+"UseKey", "POST", "/control/v1/keyring/use", key, &controlv1.KeyRequest{Key: zero}),
		unaryCase[controlv1.KeyRequest, controlv1.KeyringReply](p+"RemoveKey", "POST", "/control/v1/keyring/remove", key, &controlv1.KeyRequest{Key: zero}),
		unaryCase[controlv1.GetLeadersRequest, controlv1.Leaders](p+"GetLeaders", "GET", "/control/v1/leaders", "", &controlv1.GetLeadersRequest{}),
		unaryCase[controlv1.StepDownRequest, controlv1.StepDownReply](p+"StepDown", "POST", "/control/v1/leaders/step-down", `{}`, &controlv1.StepDownRequest{}),
		unaryCase[controlv1.ChangeVotersRequest, controlv1.VotersReply](p+"ChangeVoters", "POST", "/control/v1/voters", `{"add":["d"]}`, &controlv1.ChangeVotersRequest{Add: []string{"d"}}),
		unaryCase[controlv1.CreateTokenRequest, controlv1.TokenReply](p+"CreateToken", "POST", "/control/v1/tokens", `{"ttl":"15m","role":"operator"}`, &controlv1.CreateTokenRequest{Ttl: "15m", Role: "operator"}),
		unaryCase[controlv1.ListShardsRequest, controlv1.ShardMap](p+"ListShards", "GET", "/control/v1/shards?owner=b&state=steady&limit=1", "", &controlv1.ListShardsRequest{Owner: "b", State: []string{"steady"}, Limit: 1}),
		streamCase[controlv1.WatchShardsRequest, controlv1.ShardsEvent](p+"WatchShards", "/control/v1/shards?watch=true&owner=c", &controlv1.WatchShardsRequest{Owner: "c"}, "map"),
		unaryCase[controlv1.LookupShardRequest, controlv1.ShardLookup](p+"LookupShard", "GET", "/control/v1/shards/lookup?key=k1", "", &controlv1.LookupShardRequest{Key: proto.String("k1")}),
		unaryCase[controlv1.GetShardRequest, controlv1.ShardReply](p+"GetShard", "GET", "/control/v1/shards/3", "", &controlv1.GetShardRequest{Id: 3}),
		unaryCase[controlv1.DrainRequest, controlv1.DrainReply](p+"DrainShards", "POST", "/control/v1/shards/drain", `{"node":"b","drain":true}`, &controlv1.DrainRequest{Node: "b", Drain: true}),
		unaryCase[controlv1.RebalanceRequest, controlv1.RebalanceReply](p+"RebalanceShards", "POST", "/control/v1/shards/rebalance", `{}`, &controlv1.RebalanceRequest{}),
		unaryCase[controlv1.ListClustersRequest, controlv1.Clusters](p+"ListClusters", "GET", "/control/v1/clusters", "", &controlv1.ListClustersRequest{}),
		streamCase[controlv1.WatchClustersRequest, controlv1.ClustersEvent](p+"WatchClusters", "/control/v1/clusters?watch=true", &controlv1.WatchClustersRequest{}, "clusters"),
		unaryCase[controlv1.GetClusterRequest, controlv1.ClusterDescriptor](p+"GetCluster", "GET", "/control/v1/clusters/eu", "", &controlv1.GetClusterRequest{Id: "eu"}),
		unaryCase[controlv1.PromoteClusterRequest, controlv1.PromoteClusterReply](p+"PromoteCluster", "POST", "/control/v1/clusters/us/promote", `{"force":true}`, &controlv1.PromoteClusterRequest{Id: "us", Force: true}),
		unaryCase[controlv1.HealthRequest, controlv1.ProbeReply](p+"Health", "GET", "/healthz", "", &controlv1.HealthRequest{}),
		unaryCase[controlv1.ReadyRequest, controlv1.ProbeReply](p+"Ready", "GET", "/readyz", "", &controlv1.ReadyRequest{}),
	}
}

// httpAnswer makes the HTTP request of c; a stream's body is read until its first
// event that is not a comment.
func httpAnswer(t *testing.T, ctx context.Context, base string, c rpcCase) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	var b []byte
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b = append(b, sc.Text()+"\n"...)
		if sc.Text() == "" {
			if _, kind, _ := firstSSE(b); kind != "" {
				break
			}
		}
	}
	return resp.StatusCode, b
}

// TestGRPCAndHTTPReturnTheSameData runs every route over HTTP and its RPC over
// gRPC (cleartext HTTP/2) and compares the answers. It covers the route table:
// a route without an RPC, or an RPC without a case, fails it.
func TestGRPCAndHTTPReturnTheSameData(t *testing.T) {
	f := newFullFake()
	f.ready = errors.New("not joined yet") // a failing probe is a reply too
	base, hc, _ := startBoth(t, NewHandler(f, Options{}))
	cases := map[string]rpcCase{}
	for _, c := range rpcCases() {
		cases[c.procedure] = c
	}
	methods := controlv1.File_omnirelay_control_v1_control_proto.Services().ByName("ControlService").Methods()
	for i := range methods.Len() {
		proc := "/" + controlv1connect.ControlServiceName + "/" + string(methods.Get(i).Name())
		if _, ok := rpcRoutes[proc]; !ok {
			t.Errorf("RPC %s runs no route (control.rpcRoutes)", proc)
		}
		if _, ok := cases[proc]; !ok {
			t.Errorf("RPC %s has no case here", proc)
		}
	}
	for _, r := range Routes() {
		if r.Pattern() == "GET /metrics" { // Prometheus scrapes it over HTTP
			continue
		}
		var procs []string
		for proc, rt := range rpcRoutes {
			if rt.pattern == r.Pattern() {
				procs = append(procs, proc)
			}
		}
		if len(procs) == 0 {
			t.Errorf("route %s has no RPC (control.rpcRoutes, proto/omnirelay/control/v1/control.proto)", r.Pattern())
		}
		slices.Sort(procs)
		for _, proc := range procs {
			c, ok := cases[proc]
			if !ok {
				continue
			}
			if !matches(r, c) {
				t.Errorf("case %s asks %s %s, not of route %s", proc, c.method, c.path, r.Pattern())
				continue
			}
			t.Run(strings.TrimPrefix(proc, "/"+controlv1connect.ControlServiceName+"/"), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				code, body := httpAnswer(t, ctx, base, c)
				if code != http.StatusOK && !(rpcRoutes[proc].probe && code == http.StatusServiceUnavailable) {
					t.Fatalf("HTTP %s %s: %d %s", c.method, c.path, code, body)
				}
				got, want, err := c.call(ctx, hc, base, body)
				if err != nil {
					t.Fatalf("gRPC %s: %v (HTTP answered %s)", proc, err, body)
				}
				if !proto.Equal(got, want) {
					t.Errorf("gRPC %s answered\n%v\nHTTP %s %s answered\n%s", proc, got, c.method, c.path, body)
				}
			})
		}
	}
}

// matches reports whether c's HTTP request is one of route r.
func matches(r Route, c rpcCase) bool {
	mux := http.NewServeMux()
	mux.HandleFunc(r.Pattern(), func(http.ResponseWriter, *http.Request) {})
	_, pattern := mux.Handler(httptest.NewRequest(c.method, c.path, nil))
	return pattern == r.Pattern()
}

// detail is the ErrorDetail of a connect error, nil if none.
func detail(err error) *controlv1.ErrorDetail {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if e, ok := v.(*controlv1.ErrorDetail); ok {
				return e
			}
		}
	}
	return nil
}

func TestGRPCErrorsCarryTheRouteCodes(t *testing.T) {
	f := newFullFake()
	f.notLeader = &NotLeaderError{Leader: "b", Control: "https://10.0.0.2:7947"}
	_, _, c := startBoth(t, NewHandler(f, Options{}))
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		call func() error
		code connect.Code
		api  string
	}{
		{"unknown peer", func() error {
			_, err := c.GetPeer(ctx, connect.NewRequest(&controlv1.GetPeerRequest{Name: "zed"}))
			return err
		},
			connect.CodeNotFound, CodeUnknownPeer},
		{"bad filter", func() error {
			_, err := c.ListPeers(ctx, connect.NewRequest(&controlv1.ListPeersRequest{Status: []string{"asleep"}}))
			return err
		}, connect.CodeInvalidArgument, CodeBadFilter},
		{"short key", func() error {
			_, err := c.InstallKey(ctx, connect.NewRequest(&controlv1.KeyRequest{Key: []byte("short")}))
			return err
		},
			connect.CodeInvalidArgument, CodeBadRequest},
		{"lookup without a key", func() error {
			_, err := c.LookupShard(ctx, connect.NewRequest(&controlv1.LookupShardRequest{}))
			return err
		},
			connect.CodeInvalidArgument, CodeBadKey},
		{"drain on a follower", func() error {
			_, err := c.DrainShards(ctx, connect.NewRequest(&controlv1.DrainRequest{Node: "b", Drain: true}))
			return err
		}, connect.CodeFailedPrecondition, CodeNotLeader},
	} {
		err := tc.call()
		d := detail(err)
		if connect.CodeOf(err) != tc.code || d == nil || d.Code != tc.api {
			t.Errorf("%s: %v (detail %v), want %v with code %s", tc.name, err, d, tc.code, tc.api)
		}
		if tc.api == CodeNotLeader && (d == nil || d.Leader != "b" || d.LeaderControl != f.notLeader.Control) {
			t.Errorf("not_leader detail %v does not name the leader", d)
		}
	}
}

// TestGRPCWatchPeersStreamsChanges: after its snapshot a stream carries each
// change, and resumes from a version without a snapshot.
func TestGRPCWatchPeersStreamsChanges(t *testing.T) {
	f := newFullFake()
	_, _, c := startBoth(t, NewHandler(f, Options{Heartbeat: time.Hour}))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := c.WatchPeers(ctx, connect.NewRequest(&controlv1.WatchPeersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() || st.Msg().Kind != "snapshot" || len(st.Msg().Snapshot.GetPeers()) != 3 {
		t.Fatalf("first event %v (%v), want a snapshot of 3 peers", st.Msg(), st.Err())
	}
	version := st.Msg().Snapshot.Version
	f.apply("dead", Peer{Name: "c", Address: "10.0.0.3:7946", Status: "dead", Incarnation: 2, Meta: map[string]string{}})
	if !st.Receive() || st.Msg().Kind != "dead" || st.Msg().Change.GetPeer().GetName() != "c" {
		t.Fatalf("second event %v (%v), want c dead", st.Msg(), st.Err())
	}
	resumed, err := c.WatchPeers(ctx, connect.NewRequest(&controlv1.WatchPeersRequest{Since: version}))
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if !resumed.Receive() || resumed.Msg().Kind != "dead" || resumed.Msg().Id != st.Msg().Id {
		t.Fatalf("resumed from %s: %v (%v), want only the missed change %s", version, resumed.Msg(), resumed.Err(), st.Msg().Id)
	}
}

// TestGRPCRBACByRole: the roles, refusals and audit of the routes, over gRPC.
func TestGRPCRBACByRole(t *testing.T) {
	sink := &auditSink{}
	verify := func(chain []*x509.Certificate) (identity.ID, error) { return identity.FromCertificate(chain[0]) }
	srvURL, hc, _ := startBoth(t, NewHandler(newFullFake(), Options{Auth: &Auth{Verify: verify, Tokens: testTokens(), Audit: sink.add}}))
	client := func(token string) controlv1connect.ControlServiceClient {
		var opts []connect.ClientOption
		if token != "" {
			opts = append(opts, connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
				return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
					r.Header().Set("Authorization", "Bearer "+token)
					return next(ctx, r)
				}
			})))
		}
		return controlv1connect.NewControlServiceClient(hc, srvURL, append(opts, connect.WithGRPC())...)
	}
	ctx := t.Context()
	list := func(c controlv1connect.ControlServiceClient) error {
		_, err := c.ListPeers(ctx, connect.NewRequest(&controlv1.ListPeersRequest{}))
		return err
	}
	drain := func(c controlv1connect.ControlServiceClient) error {
		_, err := c.DrainShards(ctx, connect.NewRequest(&controlv1.DrainRequest{Node: "b", Drain: true}))
		return err
	}
	keys := func(c controlv1connect.ControlServiceClient) error {
		_, err := c.GetKeyring(ctx, connect.NewRequest(&controlv1.GetKeyringRequest{}))
		return err
	}
	health := func(c controlv1connect.ControlServiceClient) error {
		_, err := c.Health(ctx, connect.NewRequest(&controlv1.HealthRequest{}))
		return err
	}
	for _, c := range []struct {
		name  string
		token string
		call  func(controlv1connect.ControlServiceClient) error
		want  connect.Code // 0: allowed
		api   string
	}{
		{"no credentials, read", "", list, connect.CodeUnauthenticated, CodeUnauthenticated},
		{"no credentials, drain", "", drain, connect.CodeUnauthenticated, CodeUnauthenticated},
		{"unknown token", "nope", list, connect.CodeUnauthenticated, CodeUnauthenticated},
		{"no credentials, probe", "", health, 0, ""},
		{"reader reads", "r-secret", list, 0, ""},
		{"reader drains", "r-secret", drain, connect.CodePermissionDenied, CodeForbidden},
		{"reader lists keys", "r-secret", keys, connect.CodePermissionDenied, CodeForbidden},
		{"operator lists keys", "o-secret", keys, 0, ""},
		{"operator drains", "o-secret", drain, 0, ""},
		{"admin drains", "a-secret", drain, 0, ""},
	} {
		err := c.call(client(c.token))
		if connect.CodeOf(err) != c.want && !(c.want == 0 && err == nil) {
			t.Errorf("%s: %v, want code %v", c.name, err, c.want)
			continue
		}
		if c.api != "" {
			if d := detail(err); d == nil || d.Code != c.api {
				t.Errorf("%s: detail %v, want code %s", c.name, d, c.api)
			}
		}
	}
	var refused, changes int
	for _, e := range sink.events() {
		if e.ID == "" || !strings.HasPrefix(e.Route, "/"+controlv1connect.ControlServiceName+"/") {
			t.Errorf("audit event without id or procedure: %+v", e)
		}
		switch e.Event {
		case "control_unauthenticated", "control_forbidden":
			refused++
		case "control_request":
			changes++
			if e.Route != controlv1connect.ControlServiceDrainShardsProcedure || !strings.HasPrefix(e.Identity, "token:") {
				t.Errorf("change audited as %+v", e)
			}
		}
	}
	if refused != 5 || changes != 2 {
		t.Errorf("audited %d refusals and %d changes, want 5 and 2: %+v", refused, changes, sink.events())
	}
}

// TestGRPCProcedureWithoutRouteIsRefused: deny by default, and the reflection
// service needs a reader like any read.
func TestGRPCProcedureWithoutRouteIsRefused(t *testing.T) {
	if need, known, _, served := rpcRole("/" + controlv1connect.ControlServiceName + "/Nope"); served || known || need != "" {
		t.Fatalf("an unknown procedure: role %q known %v served %v", need, known, served)
	}
	if need, known, _, _ := rpcRole("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"); need != identity.RoleReader || !known {
		t.Fatalf("reflection needs %q (known %v), want reader", need, known)
	}
	for proc, rt := range rpcRoutes {
		if need, known, change, _ := rpcRole(proc); !known || need != routeRoles[rt.pattern] || change != !strings.HasPrefix(rt.pattern, "GET ") {
			t.Errorf("%s: role %q known %v change %v, not its route's %s", proc, need, known, change, rt.pattern)
		}
	}
}

// BenchmarkListPeers: one page of 100 peers over loopback, by HTTP/1.1 JSON and
// by gRPC (h2c), which runs the same route in process and re-reads its JSON.
func BenchmarkListPeers(b *testing.B) {
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("node-%03d", i)
	}
	srv := httptest.NewUnstartedServer(NewHandler(newFake(names...), Options{}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()
	b.Run("http", func(b *testing.B) {
		hc := &http.Client{Transport: &http.Transport{}}
		for b.Loop() {
			resp, err := hc.Get(srv.URL + "/control/v1/peers")
			if err != nil {
				b.Fatal(err)
			}
			var l PeerList
			if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || len(l.Peers) != 100 {
				b.Fatalf("%d peers, %v", len(l.Peers), err)
			}
			resp.Body.Close()
		}
	})
	b.Run("grpc", func(b *testing.B) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		c := controlv1connect.NewControlServiceClient(&http.Client{Transport: tr}, srv.URL, connect.WithGRPC())
		for b.Loop() {
			l, err := c.ListPeers(context.Background(), connect.NewRequest(&controlv1.ListPeersRequest{}))
			if err != nil || len(l.Msg.Peers) != 100 {
				b.Fatalf("%v, %v", l, err)
			}
		}
	})
}

// TestGRPCWatchersShareTheCap: gRPC watch streams take the slots of MaxWatchers
// like SSE ones; one more is RESOURCE_EXHAUSTED too_many_watchers.
func TestGRPCWatchersShareTheCap(t *testing.T) {
	base, _, c := startBoth(t, NewHandler(newFullFake(), Options{MaxWatchers: 1, Heartbeat: time.Hour}))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := c.WatchShards(ctx, connect.NewRequest(&controlv1.WatchShardsRequest{}))
	if err != nil || !st.Receive() || st.Msg().Kind != "map" {
		t.Fatalf("first watch: %v %v", err, st.Err())
	}
	defer st.Close()
	second, err := c.WatchPeers(ctx, connect.NewRequest(&controlv1.WatchPeersRequest{}))
	if err == nil {
		for second.Receive() {
		}
		err = second.Err()
	}
	if d := detail(err); connect.CodeOf(err) != connect.CodeResourceExhausted || d == nil || d.Code != CodeTooManyWatchers {
		t.Fatalf("second watch: %v (detail %v), want RESOURCE_EXHAUSTED too_many_watchers", err, d)
	}
	if code, body := httpAnswer(t, ctx, base, rpcCase{method: "GET", path: "/control/v1/peers?watch=true"}); code != http.StatusServiceUnavailable {
		t.Fatalf("an SSE watch beside it: %d %s, want 503", code, body)
	}
}

// TestGRPCRequestsAreCounted: an RPC counts in omnirelay_control_requests_total
// under its procedure and its route's status, a refusal too.
func TestGRPCRequestsAreCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, _, c := startBoth(t, NewHandler(newFullFake(), Options{Registerer: reg, Auth: &Auth{Tokens: testTokens()}}))
	ctx := t.Context()
	req := connect.NewRequest(&controlv1.GetPeerRequest{Name: "zed"})
	req.Header().Set("Authorization", "Bearer r-secret")
	c.GetPeer(ctx, req)
	c.Health(ctx, connect.NewRequest(&controlv1.HealthRequest{}))
	c.GetStatus(ctx, connect.NewRequest(&controlv1.GetStatusRequest{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_control_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var route, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			got[strings.TrimPrefix(route, "/"+controlv1connect.ControlServiceName+"/")+" "+code] = m.GetCounter().GetValue()
		}
	}
	// GetStatus without credentials is refused before its route runs.
	for _, want := range []string{"GetPeer 404", "Health 200", "GetStatus 401"} {
		if got[want] != 1 {
			t.Errorf("requests_total{%s} = %v, want 1 (all: %v)", want, got[want], got)
		}
	}
}
