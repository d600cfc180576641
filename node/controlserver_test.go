package node

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// startControlNode is one loopback node serving the control API with cfg's limits.
func startControlNode(t *testing.T, tune func(*Config)) *Node {
	t.Helper()
	cfg := loopbackConfig("a", nil)
	cfg.Control = "127.0.0.1:0"
	tune(&cfg)
	n, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// closedByServer reads c until the server closes it, failing if it stays open
// past a generous safety limit.
func closedByServer(t *testing.T, c net.Conn, r io.Reader, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, r)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: still open after 5 s", what)
	}
}

// TestControlConnectionsBeyondTheCapAreClosed: with ControlMaxConns idle
// connections open, one more is accepted and closed at once, and counted; once a
// connection leaves, requests are served again.
func TestControlConnectionsBeyondTheCapAreClosed(t *testing.T) {
	n := startControlNode(t, func(c *Config) { c.ControlMaxConns, c.ControlMaxWatchers = 3, 1 })
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", n.ControlAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", n.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	closedByServer(t, extra, extra, "the connection beyond the cap")
	if got := metricLine(t, n, "omnirelay_control_connections_refused_total "); got != "omnirelay_control_connections_refused_total 1" {
		t.Fatalf("refused connections: %q, want 1", got)
	}
	if got := metricLine(t, n, "omnirelay_control_connections "); got != "omnirelay_control_connections 3" {
		t.Fatalf("open connections: %q, want 3", got)
	}
	held[0].Close()
	eventually(t, 10*time.Second, "a request served after a connection left", func() bool {
		resp, err := http.Get("http://" + n.ControlAddr() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestControlIdleConnectionsAreClosed: a keep-alive connection left idle after a
// request is closed by the server after ControlIdleTimeout.
func TestControlIdleConnectionsAreClosed(t *testing.T) {
	n := startControlNode(t, func(c *Config) { c.ControlIdleTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", n.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first request: %d close=%v, want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	closedByServer(t, c, br, "the idle keep-alive connection")
}
