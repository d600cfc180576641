package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/swim"
)

// memConfig is a node on the in-memory network with the LAN profile.
func memConfig(t *testing.T, mn *MemNetwork, name, addr string, join ...string) Config {
	t.Helper()
	tr, err := mn.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	return Config{Name: name, Transport: tr, Join: join, Logger: slog.New(slog.DiscardHandler)}
}

func startMem(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	return n
}

// statusOf is name's status in n's view, or -1 when n does not know it.
func statusOf(n *Node, name string) (swim.Status, uint64) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m.Status, m.Incarnation
		}
	}
	return 255, 0
}

// waitFor advances virtual time in small steps until cond holds, failing after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
	}
	return time.Since(start)
}

func allSee(nodes []*Node, name string, want swim.Status) func() bool {
	return func() bool {
		for _, n := range nodes {
			if s, _ := statusOf(n, name); s != want {
				return false
			}
		}
		return true
	}
}

// TestCrashDetectedAndRestartRejoins runs five nodes on the in-memory network in
// virtual time: one crashes (transport closed, no leave), every survivor declares it
// dead; it restarts at the same address and everyone sees it alive again at a higher
// incarnation.
func TestCrashDetectedAndRestartRejoins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		var nodes []*Node
		for i := range 5 {
			var join []string
			if i > 0 {
				join = []string{"10.0.0.0:7946"}
			}
			nodes = append(nodes, startMem(t, memConfig(t, mn, fmt.Sprintf("n%d", i), fmt.Sprintf("10.0.0.%d:7946", i), join...)))
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		for i := range nodes {
			waitFor(t, 10*time.Second, "everyone alive", allSee(nodes, fmt.Sprintf("n%d", i), swim.StatusAlive))
		}
		sub := nodes[0].Subscribe()
		defer sub.Close()
		_, inc0 := statusOf(nodes[0], "n3")

		nodes[3].Close()
		survivors := []*Node{nodes[0], nodes[1], nodes[2], nodes[4]}
		took := waitFor(t, 30*time.Second, "n3 dead everywhere", allSee(survivors, "n3", swim.StatusDead))
		t.Logf("crash detected by all survivors after %v (virtual)", took)

		var kinds []string
		for len(sub.C) > 0 {
			ev := <-sub.C
			if ev.Member.Name == "n3" {
				kinds = append(kinds, KindName(ev.Kind))
				if ev.ID != CorrelationID("n3", ev.Member.Incarnation, ev.Kind) {
					t.Errorf("event id %s does not follow CorrelationID", ev.ID)
				}
			}
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != "dead" {
			t.Errorf("n0's events about n3: %v, want ... dead", kinds)
		}

		nodes[3] = startMem(t, memConfig(t, mn, "n3", "10.0.0.3:7946", "10.0.0.0:7946"))
		waitFor(t, 30*time.Second, "n3 alive again", allSee(nodes, "n3", swim.StatusAlive))
		for _, n := range nodes {
			if _, inc := statusOf(n, "n3"); inc <= inc0 {
				t.Errorf("%s sees n3 at incarnation %d, want > %d", n.Name(), inc, inc0)
			}
		}
	})
}

// TestJoinRetriesWithBackoffThenReportsEverySeed: no seed listens; Start retries
// with growing waits until its context ends and names each seed's failure.
func TestJoinRetriesWithBackoffThenReportsEverySeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfg := memConfig(t, mn, "lonely", "10.0.0.9:7946", "10.0.0.1:7946", "10.0.0.2:7946")
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		n, err := Start(ctx, cfg)
		if n != nil || !errors.Is(err, ErrNoSeedAnswered) {
			t.Fatalf("Start = %v, %v; want ErrNoSeedAnswered", n, err)
		}
		if time.Since(start) != 3*time.Second {
			t.Errorf("gave up after %v, want the ctx's 3s", time.Since(start))
		}
		msg := err.Error()
		for _, want := range []string{"10.0.0.1:7946: ", "10.0.0.2:7946: ", "connection refused", "round(s)"} {
			if !contains(msg, want) {
				t.Errorf("error %q lacks %q", msg, want)
			}
		}
		// With 200ms doubling to 5s (±25%), 3s allows 4 rounds at most and 3 at least.
		var rounds int
		fmt.Sscanf(msg[len(ErrNoSeedAnswered.Error()):], " (context deadline exceeded): %d round(s)", &rounds)
		if rounds < 3 || rounds > 5 {
			t.Errorf("%d join rounds in 3s; error %q", rounds, msg)
		}
	})
}

// TestJoinSucceedsWhenSeedAppearsLater: the seed starts after the joiner's first
// rounds failed; the retry finds it.
func TestJoinSucceedsWhenSeedAppearsLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfgB := memConfig(t, mn, "b", "10.0.0.2:7946", "10.0.0.1:7946")
		type res struct {
			n   *Node
			err error
		}
		done := make(chan res, 1)
		go func() {
			n, err := Start(t.Context(), cfgB)
			done <- res{n, err}
		}()
		time.Sleep(time.Second)
		a := startMem(t, memConfig(t, mn, "a", "10.0.0.1:7946"))
		defer a.Close()
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.n.Close()
		waitFor(t, 5*time.Second, "a sees b", func() bool { s, _ := statusOf(a, "b"); return s == swim.StatusAlive })
	})
}

func TestJoinBackoffDoublesAndCaps(t *testing.T) {
	base, maxWait := 200*time.Millisecond, 5*time.Second
	for _, tc := range []struct {
		rounds int
		u      float64
		want   time.Duration
	}{
		{1, 0.5, 200 * time.Millisecond},
		{2, 0.5, 400 * time.Millisecond},
		{5, 0.5, 3200 * time.Millisecond},
		{6, 0.5, 5 * time.Second}, // 6400ms capped
		{60, 0.5, 5 * time.Second},
		{1, 0, 150 * time.Millisecond},
		{6, 0.9999, 6249750 * time.Microsecond},
	} {
		if got := JoinBackoff(base, maxWait, tc.rounds, tc.u); got.Round(time.Microsecond) != tc.want {
			t.Errorf("JoinBackoff(round %d, u %v) = %v, want %v", tc.rounds, tc.u, got, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// offsetClock is a Clock a year ahead of the (virtual) system clock.
type offsetClock struct{ SystemClock }

func (offsetClock) Now() time.Time { return time.Now().Add(365 * 24 * time.Hour) }

// TestLoopReadsTimeOnlyThroughTheClock: with an injected clock, every time the state
// machine sees (event times, Since) comes from it.
func TestLoopReadsTimeOnlyThroughTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfgA := memConfig(t, mn, "a", "10.0.0.1:7946")
		cfgA.Clock = offsetClock{}
		a := startMem(t, cfgA)
		defer a.Close()
		sub := a.Subscribe()
		b := startMem(t, memConfig(t, mn, "b", "10.0.0.2:7946", "10.0.0.1:7946"))
		defer b.Close()
		ev := <-sub.C
		future := time.Now().Add(364 * 24 * time.Hour)
		if ev.Member.Name != "b" || ev.At.Before(future) {
			t.Fatalf("event %s at %v: not from the injected clock", ev.Member.Name, ev.At)
		}
		for _, m := range a.Members() {
			if m.Since.Before(future) {
				t.Errorf("%s Since %v: not from the injected clock", m.Name, m.Since)
			}
		}
	})
}
