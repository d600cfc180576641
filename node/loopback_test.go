package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/swim"
)

// fast shortens the LAN timers so real-socket tests finish in seconds.
func fast(c *swim.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 60 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
	c.ReconnectInterval = 500 * time.Millisecond
}

func loopbackConfig(name string, keys [][]byte, join ...string) Config {
	return Config{Name: name, Bind: "127.0.0.1:0", Join: join, Tune: fast, Keys: keys,
		Logger: slog.New(slog.DiscardHandler)}
}

// eventually polls cond every 10 ms until it holds or the deadline passes.
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

// lenient keeps probe timeouts far above scheduling stalls of a loaded machine, for
// tests that assert no probe fails.
func lenient(c *swim.Config) {
	fast(c)
	c.ProbeInterval = 400 * time.Millisecond
	c.ProbeTimeout = 300 * time.Millisecond
}

// startCluster starts k loopback nodes joined to the first; node i is tuned by
// tune[i % len(tune)] when tunes are given (fast otherwise).
func startCluster(t *testing.T, k int, keys [][]byte, tune ...func(*swim.Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range k {
		var join []string
		if i > 0 {
			join = []string{nodes[0].AdvertiseAddr()}
		}
		cfg := loopbackConfig(string(rune('a'+i)), keys, join...)
		if len(tune) > 0 {
			cfg.Tune = tune[i%len(tune)]
		}
		n, err := Start(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		eventually(t, 10*time.Second, "cluster formed", allSee(nodes, n.Name(), swim.StatusAlive))
	}
	return nodes
}

// TestLoopbackCrashAndRestart is the smoke test on real sockets: five nodes, one
// crashes (sockets closed, no leave), all survivors see it dead; it restarts on the
// same port and all see it alive at a higher incarnation.
func TestLoopbackCrashAndRestart(t *testing.T) {
	nodes := startCluster(t, 5, nil)
	victim := nodes[2]
	addr := victim.Addr()
	_, inc := statusOf(nodes[0], victim.Name())
	victim.Close()
	survivors := []*Node{nodes[0], nodes[1], nodes[3], nodes[4]}
	eventually(t, 10*time.Second, "victim dead everywhere", allSee(survivors, victim.Name(), swim.StatusDead))

	cfg := loopbackConfig(victim.Name(), nil, nodes[0].AdvertiseAddr())
	cfg.Bind = addr
	back, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	nodes[2] = back
	eventually(t, 10*time.Second, "victim alive again", allSee(nodes, victim.Name(), swim.StatusAlive))
	for _, n := range nodes {
		if _, got := statusOf(n, victim.Name()); got <= inc {
			t.Errorf("%s sees the restarted node at incarnation %d, want > %d", n.Name(), got, inc)
		}
	}
}

// TestLeaveIsSeenAsLeft: a graceful leave reaches peers as "left", not "dead".
func TestLeaveIsSeenAsLeft(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := nodes[2].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	nodes[2].Close()
	eventually(t, 5*time.Second, "left everywhere", allSee(nodes[:2], nodes[2].Name(), swim.StatusLeft))
	if d := nodes[0].Stats().Deaths; d != 0 {
		t.Errorf("a graceful leave was counted as %d deaths", d)
	}
}

func key(t *testing.T) []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// TestKeyRotationWithoutProbeFailures rotates the key of a live encrypted cluster
// (install everywhere, make primary everywhere, remove the old everywhere) while
// probing and push-pulls go on: no packet or stream frame fails to open, no probe
// and no push-pull fails, and push-pulls complete during every step.
func TestKeyRotationWithoutProbeFailures(t *testing.T) {
	k1, k2 := key(t), key(t)
	nodes := startCluster(t, 3, [][]byte{k1}, lenient)
	failedBefore, ppFailedBefore := map[string]uint64{}, map[string]uint64{}
	for _, n := range nodes {
		st := n.Stats()
		failedBefore[n.Name()], ppFailedBefore[n.Name()] = st.ProbesFailed, st.PushPullsFailed
	}
	pushPulls := func() (sum uint64) {
		for _, n := range nodes {
			sum += n.Stats().PushPulls
		}
		return sum
	}
	// Periodic push-pulls start after a jittered first interval: wait for them, so
	// each step below sees some (one per node per second in the fast profile).
	joined := pushPulls()
	eventually(t, 5*time.Second, "periodic push-pulls", func() bool { return pushPulls() > joined })
	// A few probe rounds and push-pulls per step, sealed with each key in turn.
	settle := func() { time.Sleep(1500 * time.Millisecond) }
	for i, step := range []func(n *Node) error{
		func(n *Node) error { return n.Keyring().Install(k2) },
		func(n *Node) error { return n.Keyring().UsePrimary(k2) },
		func(n *Node) error { return n.Keyring().Remove(k1) },
	} {
		before := pushPulls()
		for _, n := range nodes {
			if err := step(n); err != nil {
				t.Fatal(err)
			}
		}
		// Push-pulls go on under this step's keys (one per node per second, later
		// on a loaded machine), and a few probe rounds run.
		eventually(t, 10*time.Second, fmt.Sprintf("step %d: a push-pull", i+1), func() bool { return pushPulls() > before })
		settle()
	}
	for _, n := range nodes {
		if got := counter(t, n, "omnirelay_decrypt_failures_total"); got != "0" {
			t.Errorf("%s: %s packets or frames failed to open during rotation", n.Name(), got)
		}
		st := n.Stats()
		if f := st.ProbesFailed - failedBefore[n.Name()]; f != 0 {
			t.Errorf("%s: %d probes failed during rotation", n.Name(), f)
		}
		if f := st.PushPullsFailed - ppFailedBefore[n.Name()]; f != 0 {
			t.Errorf("%s: %d push-pulls failed during rotation", n.Name(), f)
		}
		if ks := n.Keyring().Keys(); len(ks) != 1 || !bytes.Equal(ks[0], k2) {
			t.Errorf("%s: keyring after rotation holds %d keys", n.Name(), len(ks))
		}
	}
	// A node with the old key cannot join (its stream frames do not open either),
	// and what it sends is counted as failing to open: encryption is in force.
	stranger, err := Start(t.Context(), loopbackConfig("stranger", [][]byte{k1}))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := stranger.Join(ctx, nodes[0].AdvertiseAddr()); err == nil {
		t.Fatal("a node with the old key joined")
	}
	if ms := stranger.Members(); len(ms) != 1 {
		t.Errorf("the stranger's view gained members: %v", ms)
	}
	eventually(t, 5*time.Second, "stranger's input rejected", func() bool {
		return counter(t, nodes[0], "omnirelay_decrypt_failures_total") != "0"
	})
}

// counter scrapes n's /metrics and returns the unlabelled sample of name.
func counter(t *testing.T, n *Node, name string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("metric %s not exported", name)
	return ""
}

// TestControlAndMetricsServed starts nodes with a control address and reads the
// peers API and /metrics over HTTP.
func TestControlAndMetricsServed(t *testing.T) {
	cfg := loopbackConfig("ctl", nil)
	cfg.Control = "127.0.0.1:0"
	a, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Start(t.Context(), loopbackConfig("peer", nil, a.AdvertiseAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := &control.Client{Base: "http://" + a.ControlAddr()}
	eventually(t, 5*time.Second, "peer listed alive", func() bool {
		ps, _, err := c.ListPeers(t.Context(), control.ListOptions{Status: []string{"alive"}})
		return err == nil && len(ps) == 2 && ps[1].Name == "peer" && ps[0].Local
	})
	resp, err := http.Get("http://" + a.ControlAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`omnirelay_members{state="alive"} 2`, `omnirelay_packets_total{direction="out",type="ping"}`,
		"omnirelay_probe_rtt_seconds_count", "omnirelay_local_health_multiplier 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + a.ControlAddr() + p)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", p, resp.Status, err)
		}
		resp.Body.Close()
	}
}

// TestHostileInputIsCountedNotFatal sends garbage datagrams and streams.
func TestHostileInputIsCountedNotFatal(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	n := nodes[0]
	uc, err := net.Dial("udp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for i := range 50 {
		junk := make([]byte, i*7)
		rand.Read(junk)
		uc.Write(append([]byte("OR"), junk...))
	}
	tc, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0, 0, 0, 5, 1, 2, 3, 4, 5})
	io.ReadAll(tc)
	tc.Close()
	eventually(t, 5*time.Second, "malformed input counted", func() bool { return n.Stats().Malformed > 0 })
	if s, _ := statusOf(nodes[1], n.Name()); s != swim.StatusAlive {
		t.Fatalf("node stopped working after hostile input: %v", s)
	}
}

// TestCloseStopsEveryGoroutine starts and closes nodes with real sockets and a
// control API, and checks the goroutine count returns to where it was.
func TestCloseStopsEveryGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		cfg := loopbackConfig("g", nil)
		cfg.Control = "127.0.0.1:0"
		a, err := Start(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Start(t.Context(), loopbackConfig("h", nil, a.AdvertiseAddr()))
		if err != nil {
			t.Fatal(err)
		}
		sub := a.Subscribe()
		b.Close()
		a.Close()
		if _, ok := <-sub.C; ok {
			for range sub.C {
			}
		}
	}
	http.DefaultClient.CloseIdleConnections()
	eventually(t, 5*time.Second, "goroutines back to the start count", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// TestWatchStreamsRealMembershipChanges reads the SSE watch of a live node while a
// peer crashes: a snapshot first, then suspect and dead events whose ids are the
// correlation ids the node logs.
func TestWatchStreamsRealMembershipChanges(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	srv := httptest.NewServer(nodes[0].Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/control/v1/peers?watch=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	nodes[2].Close()
	sc := bufio.NewScanner(resp.Body)
	var kinds []string
	for sc.Scan() && !slices.Contains(kinds, "dead") {
		line := sc.Text()
		if k, ok := strings.CutPrefix(line, "event: "); ok {
			kinds = append(kinds, k)
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok && kinds[len(kinds)-1] == "dead" {
			var c control.Change
			if err := json.Unmarshal([]byte(d), &c); err != nil {
				t.Fatal(err)
			}
			if c.Peer.Name != nodes[2].Name() || c.ID != CorrelationID(c.Peer.Name, c.Peer.Incarnation, swim.EventDead) {
				t.Errorf("dead event %+v", c)
			}
		}
	}
	if len(kinds) < 3 || kinds[0] != "snapshot" || !slices.Contains(kinds, "suspect") {
		t.Fatalf("watch events %v, want snapshot, ..., suspect, ..., dead", kinds)
	}
}
