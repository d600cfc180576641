package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/omnirelay/mesh/identity"
	controlv1 "github.com/omnirelay/mesh/proto/omnirelay/control/v1"
	"github.com/omnirelay/mesh/proto/omnirelay/control/v1/controlv1connect"
)

// h2cClient speaks HTTP/2 without TLS (prior knowledge), as grpcurl -plaintext does.
func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestControlServesGRPCInTheClear: without TLS the control port speaks gRPC over
// cleartext HTTP/2 beside HTTP/1.1, and its reflection lists the service.
func TestControlServesGRPCInTheClear(t *testing.T) {
	n := startControlNode(t, func(*Config) {})
	base := "http://" + n.ControlAddr()
	hc := h2cClient(t)
	c := controlv1connect.NewControlServiceClient(hc, base, connect.WithGRPC())
	st, err := c.GetStatus(t.Context(), connect.NewRequest(&controlv1.GetStatusRequest{}))
	if err != nil || st.Msg.Name != n.Name() || st.Msg.Status != "alive" {
		t.Fatalf("GetStatus over h2c: %v, %v", st, err)
	}
	rs := grpcreflect.NewClient(hc, base, connect.WithGRPC()).NewStream(t.Context())
	defer rs.Close()
	names, err := rs.ListServices()
	if err != nil || !slices.Contains(names, controlv1connect.ControlServiceName) {
		t.Fatalf("reflection lists %v (%v), want %s", names, err, controlv1connect.ControlServiceName)
	}
	// The Connect protocol (and gRPC-Web) over HTTP/1.1 reach the same service.
	h1 := controlv1connect.NewControlServiceClient(http.DefaultClient, base)
	if st, err := h1.GetStatus(t.Context(), connect.NewRequest(&controlv1.GetStatusRequest{})); err != nil || st.Msg.Name != n.Name() {
		t.Fatalf("GetStatus by Connect over HTTP/1.1: %v, %v", st, err)
	}
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("HTTP/1.1 beside it: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestControlGRPCMutualTLS: over TLS the port speaks gRPC on HTTP/2 (ALPN h2),
// and a client certificate's role decides as for the HTTP routes.
func TestControlGRPCMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	n := startControlNode(t, func(c *Config) { c.Name = "a"; c.TLS = pki.source(identity.RoleNode, "a") })
	base := "https://" + n.ControlAddr()
	client := func(src *identity.Source) controlv1connect.ControlServiceClient {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // a caller without a certificate
		if src != nil {
			cfg = src.ClientConfig(identity.Policy{Roles: []identity.Role{identity.RoleNode}})
		}
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return controlv1connect.NewControlServiceClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}, base, connect.WithGRPC())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	list := func(c controlv1connect.ControlServiceClient) error {
		_, err := c.ListPeers(ctx, connect.NewRequest(&controlv1.ListPeersRequest{}))
		return err
	}
	drain := func(c controlv1connect.ControlServiceClient) error {
		_, err := c.DrainShards(ctx, connect.NewRequest(&controlv1.DrainRequest{Node: "a", Drain: true}))
		return err
	}
	reader, anon := client(pki.source(identity.RoleReader, "rita")), client(nil)
	for _, c := range []struct {
		name string
		err  error
		want connect.Code
	}{
		{"reader lists peers", list(reader), 0},
		{"reader drains", drain(reader), connect.CodePermissionDenied},
		{"no certificate lists peers", list(anon), connect.CodeUnauthenticated},
	} {
		if got := connect.CodeOf(c.err); c.err != nil && got != c.want || c.err == nil && c.want != 0 {
			t.Errorf("%s: %v, want code %v", c.name, c.err, c.want)
		}
	}
}

// TestControlWatchOverHTTP2: an SSE watch stream works on HTTP/2 too (its
// per-write deadlines are the stream's), as a client that negotiates h2 gets it.
func TestControlWatchOverHTTP2(t *testing.T) {
	pki := newTestPKI(t)
	n := startControlNode(t, func(c *Config) { c.Name = "a"; c.TLS = pki.source(identity.RoleNode, "a") })
	cfg := pki.source(identity.RoleReader, "rita").ClientConfig(identity.Policy{Roles: []identity.Role{identity.RoleNode}})
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+n.ControlAddr()+"/control/v1/peers?watch=true", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Fatalf("%s %d, want HTTP/2.0 200", resp.Proto, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != "event: snapshot" {
	}
	if sc.Text() != "event: snapshot" {
		t.Fatalf("no snapshot event over HTTP/2: %v", sc.Err())
	}
}
