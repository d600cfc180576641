package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/swim"
)

const testShards = 64

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fast shortens the LAN timers so the loopback agents form and fail over in
// seconds (as node's loopback tests do).
func fast(c *swim.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 60 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
	c.ReconnectInterval = 500 * time.Millisecond
}

// agents starts k real agents on loopback (the first three are voters) with
// shard routing and a control API each; every node publishes "grpc" metadata.
// They close when the test ends (Close twice is harmless).
func agents(t *testing.T, k int) []*node.Node {
	t.Helper()
	voters := []string{"n0", "n1", "n2"}
	var nodes []*node.Node
	for i := range k {
		name := fmt.Sprintf("n%d", i)
		cfg := node.Config{Name: name, Bind: "127.0.0.1:0", Control: "127.0.0.1:0", Tune: fast,
			Keys: [][]byte{testKey}, Voters: voters, Voter: i < len(voters), Shards: testShards,
			Meta:   map[string]string{"grpc": name + ".example:9000"},
			Logger: slog.New(slog.DiscardHandler)}
		if cfg.Voter {
			cfg.DataDir = t.TempDir()
		}
		if i > 0 {
			cfg.Join = []string{nodes[0].AdvertiseAddr()}
		}
		n, err := node.Start(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	eventually(t, 30*time.Second, "a shard map on every agent, all agreeing", func() bool { return agreedMap(nodes) })
	return nodes
}

// agreedMap reports whether every node holds the same map with every shard owned.
func agreedMap(nodes []*node.Node) bool {
	first := nodes[0].ShardMap()
	if first == nil {
		return false
	}
	for s := range uint32(testShards) {
		if first.Owner(s) == "" {
			return false
		}
	}
	for _, n := range nodes[1:] {
		m := n.ShardMap()
		if m == nil || m.Epoch() != first.Epoch() || m.Version() != first.Version() || m.Checksum() != first.Checksum() {
			return false
		}
	}
	return true
}

func controlURL(n *node.Node) string { return "http://" + n.ControlAddr() }

func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sameMap reports whether c holds n's map.
// settled says every shard of m is steady at its target: the leader has no move
// left to make.
func settled(m *shard.Map) bool {
	for s := range uint32(m.Shards()) {
		if m.State(s) != shard.StateSteady || m.Owner(s) != m.Target(s) {
			return false
		}
	}
	return true
}

func sameMap(c *Client, n *node.Node) bool {
	cm, nm := c.Table().Map(), n.ShardMap()
	return cm != nil && nm != nil && cm.Epoch() == nm.Epoch() && cm.Version() == nm.Version() && cm.Checksum() == nm.Checksum()
}

// TestOwnerAgreesWithAgents: for 2,000 keys the client's Owner, computed
// locally from the map it rebuilt and checked, names the node every agent's map
// names, and the lookup route of the control API agrees on a sample; Endpoint
// returns that owner's "grpc" metadata.
func TestOwnerAgreesWithAgents(t *testing.T) {
	nodes := agents(t, 3)
	c := newClient(t, Config{Agents: []string{controlURL(nodes[0]), controlURL(nodes[1])}})
	eventually(t, 10*time.Second, "the client holds the agents' map", func() bool { return sameMap(c, nodes[0]) })
	eventually(t, 10*time.Second, "the client knows every member", func() bool { return len(c.Members()) == len(nodes) })
	api := &control.Client{Base: controlURL(nodes[2])}
	for i := range 2000 {
		key := fmt.Sprintf("user-%d", i)
		got, ok := c.Owner(key)
		if !ok {
			t.Fatalf("Owner(%q): none", key)
		}
		for _, n := range nodes {
			m := n.ShardMap()
			if want := m.Owner(m.ShardForString(key)); got.Name != want {
				t.Fatalf("Owner(%q) = %s, %s's map says %s", key, got.Name, n.Name(), want)
			}
		}
		if i%40 == 0 {
			l, err := api.LookupShard(t.Context(), key)
			if err != nil {
				t.Fatal(err)
			}
			if l.Owner != got.Name {
				t.Fatalf("Owner(%q) = %s, GET /control/v1/shards/lookup says %s", key, got.Name, l.Owner)
			}
		}
		if ep, ok := c.Endpoint(key, "grpc"); !ok || ep != got.Name+".example:9000" {
			t.Fatalf("Endpoint(%q, grpc) = %q, %v", key, ep, ok)
		}
	}
	if ep, ok := c.Endpoint("user-1", "http"); ok {
		t.Fatalf("Endpoint for a key no owner publishes: %q", ep)
	}
	if st := c.Stats(); st.BadMaps != 0 || st.Maps == 0 {
		t.Fatalf("stats %+v: want maps installed and none dropped", st)
	}
}

// TestFailoverWhenAgentDies: the agent the client streams from is killed; the
// client keeps answering from its table at once, moves to the other agent, and
// sees a change made after the kill through it.
func TestFailoverWhenAgentDies(t *testing.T) {
	nodes := agents(t, 4)
	byURL := map[string]*node.Node{}
	for _, n := range nodes {
		byURL[controlURL(n)] = n
	}
	// Agents n3 (never a voter) and n1; whichever it streams from is killed.
	c := newClient(t, Config{Agents: []string{controlURL(nodes[3]), controlURL(nodes[1])}, IdleTimeout: 5 * time.Second})
	// A settled map: a move still under way at formation would change owners
	// right after the kill for reasons of its own.
	eventually(t, 15*time.Second, "the client holds the settled map", func() bool { return sameMap(c, nodes[0]) && settled(c.Table().Map()) })
	first := c.Agent()
	victim := byURL[first]
	if victim == nil {
		t.Fatalf("Agent() = %q, not one of the agents", first)
	}
	want := map[string]string{}
	for i := range 200 {
		key := fmt.Sprintf("k%d", i)
		m, _ := c.Owner(key)
		want[key] = m.Name
	}
	killed := time.Now()
	victim.Close()
	for key, name := range want {
		if m, ok := c.Owner(key); !ok || m.Name != name {
			t.Fatalf("right after the agent died: Owner(%q) = %q, %v; want %q", key, m.Name, ok, name)
		}
	}
	var survivor *node.Node
	for _, n := range nodes {
		if n != victim && n != nodes[3] && n != nodes[1] {
			survivor = n
			break
		}
	}
	eventually(t, 15*time.Second, "the client streams from another agent", func() bool { return c.Agent() != first })
	moved := time.Since(killed)
	if err := survivor.SetMeta("grpc", "moved.example:9001"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the client streams from the other agent and sees the new endpoint", func() bool {
		for _, m := range c.Members() {
			if m.Name == survivor.Name() {
				return c.Agent() != first && m.Meta["grpc"] == "moved.example:9001"
			}
		}
		return false
	})
	if st := c.Stats(); st.Failures == 0 {
		t.Fatalf("stats %+v: want the failed session counted", st)
	}
	t.Logf("moved from %s to %s %v after the kill; stats %+v", first, c.Agent(), moved, c.Stats())
}

// TestDrainIsSeen: a drain moves a node's shards away; the client's Changed
// fires and its table, checked, ends up naming no shard of the drained node,
// equal to the agents' map.
func TestDrainIsSeen(t *testing.T) {
	nodes := agents(t, 4)
	c := newClient(t, Config{Agents: []string{controlURL(nodes[3])}})
	eventually(t, 10*time.Second, "the client holds the map", func() bool { return sameMap(c, nodes[0]) })
	// Under load a renewal can be late and a node briefly names no holder: wait
	// for a node that holds the lease itself.
	var leader *node.Node
	eventually(t, 15*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.Leader().Holder == n.Name() {
				leader = n
				return true
			}
		}
		return false
	})
	victim := nodes[3].Name()
	if len(c.Table().Map().ShardsOf(victim)) == 0 {
		t.Fatalf("%s owns no shard before the drain", victim)
	}
	changed := c.Changed()
	if err := leader.DrainShards(victim, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(15 * time.Second):
		t.Fatal("Changed did not fire after a drain")
	}
	eventually(t, 30*time.Second, "the client's map names no shard of the drained node and equals the agents'", func() bool {
		return len(c.Table().Map().ShardsOf(victim)) == 0 && agreedMap(nodes) && sameMap(c, nodes[0])
	})
	for i := range 500 {
		if m, ok := c.Owner(fmt.Sprintf("k%d", i)); !ok || m.Name == victim {
			t.Fatalf("after the drain Owner(k%d) = %q, %v", i, m.Name, ok)
		}
	}
}

// TestCorruptMapIsDroppedAndAgentLeft: an agent serving a map whose content does
// not hash to its checksum (one owner changed) is left for the next agent; the
// map is counted in BadMaps and never installed.
func TestCorruptMapIsDroppedAndAgentLeft(t *testing.T) {
	nodes := agents(t, 3)
	real := controlURL(nodes[0])
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/control/v1/peers" {
			proxy(t, w, r, real) // honest members
			return
		}
		m, err := (&control.Client{Base: real}).ListShards(r.Context(), control.ShardListOptions{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		m.Shards[0].Owner = map[bool]string{true: "n1", false: "n2"}[m.Shards[0].Owner != "n1"]
		b, _ := json.Marshal(m)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: %d.%d\nevent: map\ndata: %s\n\n", m.Epoch, m.Version, b)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(bad.Close)
	c := newClient(t, Config{Agents: []string{bad.URL, real}})
	if st := c.Stats(); st.BadMaps == 0 {
		t.Fatalf("stats %+v: the corrupt map was not counted", st)
	}
	eventually(t, 10*time.Second, "the client holds the honest map from the honest agent", func() bool {
		return sameMap(c, nodes[0]) && c.Agent() == real
	})
}

// proxy streams r to the same path on base (for the honest half of a fake agent).
func proxy(t *testing.T, w http.ResponseWriter, r *http.Request, base string) {
	proxyEvents(t, w, r, base, -1)
}

// proxyEvents is proxy ending the answer after events SSE events (-1: never),
// as a dropped connection would.
func proxyEvents(t *testing.T, w http.ResponseWriter, r *http.Request, base string, events int) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.RequestURI(), nil)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32<<10)
	var prev byte
	for {
		n, err := resp.Body.Read(buf)
		for i, b := range buf[:n] {
			if b == '\n' && prev == '\n' {
				if events--; events == 0 {
					w.Write(buf[:i+1])
					w.(http.Flusher).Flush()
					return
				}
			}
			prev = b
		}
		if n > 0 {
			w.Write(buf[:n])
			w.(http.Flusher).Flush()
		}
		if err != nil {
			if err != io.EOF && r.Context().Err() == nil {
				t.Logf("proxy: %v", err)
			}
			return
		}
	}
}

// TestStreamsResumeAfterADrop: an agent whose first streams are cut after one
// event is asked again with Last-Event-ID (the peers version and the map id the
// client holds), so it sends no snapshot or map again; changes after the drop
// still arrive. The agent is served over TLS, verified with Config.TLS's roots.
func TestStreamsResumeAfterADrop(t *testing.T) {
	nodes := agents(t, 3)
	real := controlURL(nodes[0])
	var mu sync.Mutex
	seen := map[string][]string{} // path: Last-Event-ID of each request
	held := make(chan struct{})   // closed once New returned: the client holds members and map
	agent := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = append(seen[r.URL.Path], r.Header.Get("Last-Event-ID"))
		first := len(seen[r.URL.Path]) == 1
		mu.Unlock()
		if first {
			// The snapshot or map, then a drop once the client holds both.
			proxyEvents(t, w, r, real, 1)
			select {
			case <-held:
			case <-r.Context().Done():
			}
			return
		}
		proxy(t, w, r, real)
	}))
	agent.StartTLS()
	t.Cleanup(agent.Close) // after the client closes (cleanups run last first): a streaming handler ends then
	roots := x509.NewCertPool()
	roots.AddCert(agent.Certificate())
	c := newClient(t, Config{Agents: []string{agent.URL}, TLS: &tls.Config{RootCAs: roots}, Backoff: 10 * time.Millisecond})
	close(held)
	eventually(t, 10*time.Second, "both streams opened again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["/control/v1/peers"]) >= 2 && len(seen["/control/v1/shards"]) >= 2
	})
	mu.Lock()
	peersID, mapID := seen["/control/v1/peers"][1], seen["/control/v1/shards"][1]
	mu.Unlock()
	m := c.Table().Map()
	if want := fmt.Sprintf("%d.%d", m.Epoch(), m.Version()); mapID != want {
		t.Fatalf("shards resumed with Last-Event-ID %q, want the held map %q", mapID, want)
	}
	if v, err := control.ParseVersion(peersID); err != nil || !strings.HasPrefix(c.Table().PeersVersion(), v.Epoch+".") {
		t.Fatalf("peers resumed with Last-Event-ID %q (%v); the client holds %q", peersID, err, c.Table().PeersVersion())
	}
	if err := nodes[1].SetMeta("grpc", "after-drop.example:9002"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a change after the drop is seen", func() bool {
		for _, m := range c.Members() {
			if m.Name == "n1" {
				return m.Meta["grpc"] == "after-drop.example:9002"
			}
		}
		return false
	})
}

// TestEventOverTheBoundEndsTheStream: with MaxEventBytes below one map, the
// client never installs a map and New reports the bound by name.
func TestEventOverTheBoundEndsTheStream(t *testing.T) {
	nodes := agents(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err := New(ctx, Config{Agents: []string{controlURL(nodes[0])}, MaxEventBytes: 1024})
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "MaxEventBytes") {
		t.Fatalf("New with a 1 KiB event bound: %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Agents is empty"},
		{Config{Agents: []string{"127.0.0.1:7070"}}, `Agents[0] "127.0.0.1:7070": want http://`},
		{Config{Agents: []string{"https://a:1", "http://b:1"}, TLS: testTLS()}, `Agents[1] "http://b:1" is http:// while TLS is set`},
		{Config{Agents: []string{"http://a:1"}, MaxEventBytes: -1}, "must not be negative"},
	} {
		_, err := New(t.Context(), tc.cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig naming %q", tc.cfg, err, tc.want)
		}
	}
}

func testTLS() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS13} }

// TestSilentAgentIsLeft: an agent that answers 200 and then sends nothing, not
// even heartbeats, is left after IdleTimeout, each time, and New names the reason.
func TestSilentAgentIsLeft(t *testing.T) {
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(silent.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err := New(ctx, Config{Agents: []string{silent.URL}, IdleTimeout: 200 * time.Millisecond, Backoff: 10 * time.Millisecond})
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "IdleTimeout") {
		t.Fatalf("New against a silent agent: %v", err)
	}
}
