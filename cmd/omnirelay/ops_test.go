package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
)

// TestOperatorCommandsAgainstRealNodes: meta set/delete, status (one node and
// --cluster), join, force-leave's refusal, a peers watch line, and leave, which
// closes Left.
func TestOperatorCommandsAgainstRealNodes(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	a, err := node.Start(t.Context(), node.Config{Name: "alpha", Bind: "127.0.0.1:0", Control: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := node.Start(t.Context(), node.Config{Name: "beta", Bind: "127.0.0.1:0", Control: "127.0.0.1:0", Logger: quiet,
		Meta: map[string]string{"control": "http://" + "127.0.0.1:1"}}) // unreachable on purpose: --cluster must say so
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	addr, baddr := a.ControlAddr(), b.ControlAddr()
	mesh := func(want int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(append([]string{"mesh"}, args...), &out, &errOut); code != want {
			t.Fatalf("mesh %s: exit %d, want %d; %s%s", strings.Join(args, " "), code, want, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	mesh(0, "join", "--addr", baddr, a.AdvertiseAddr())
	poll(t, 5*time.Second, "alpha sees beta", func() bool { return len(a.Members()) == 2 })

	mesh(0, "meta", "set", "--addr", addr, "zone=eu-1")
	poll(t, 5*time.Second, "beta learns alpha's zone", func() bool { return b.Meta("alpha")["zone"] == "eu-1" })
	mesh(0, "meta", "delete", "--addr", addr, "zone")
	if out := mesh(1, "meta", "delete", "--addr", addr, "zone"); !strings.Contains(out, "unknown_key") {
		t.Errorf("second delete: %s", out)
	}
	if out := mesh(2, "meta", "set", "--addr", addr, "novalue"); !strings.Contains(out, "KEY=VALUE") {
		t.Errorf("meta set without =: %s", out)
	}

	if out := mesh(0, "status", "--addr", addr); !strings.Contains(out, "alpha") || !strings.Contains(out, "1 alive") {
		t.Errorf("status:\n%s", out)
	}
	out := mesh(0, "status", "--cluster", "--addr", addr, "--timeout", "3s")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "alpha") || !strings.Contains(lines[1], "1-1") ||
		!strings.Contains(lines[2], "beta") || !strings.Contains(lines[2], "127.0.0.1:1") {
		t.Errorf("status --cluster:\n%s", out)
	}
	if out := mesh(1, "members", "force-leave", "--addr", addr, "beta"); !strings.Contains(out, "member_live") {
		t.Errorf("force-leave of a live member: %s", out)
	}
	if out := mesh(1, "leaders", "step-down", "--addr", addr); !strings.Contains(out, "leadership_off") {
		t.Errorf("step-down without leadership: %s", out)
	}

	mesh(0, "leave", "--addr", baddr)
	select {
	case <-b.Left():
	default:
		t.Fatal("beta's Left not closed after mesh leave")
	}
	poll(t, 5*time.Second, "alpha sees beta left", func() bool {
		for _, m := range a.Members() {
			if m.Name == "beta" {
				return m.Status.String() == "left"
			}
		}
		return false
	})
}

func TestShardSummaryCounts(t *testing.T) {
	m := control.ShardMap{Epoch: 3, Version: 9, Count: 5, Leader: "a", Shards: []control.Shard{
		{ID: 0, Owner: "a", State: "steady", Target: "a"},
		{ID: 1, Owner: "c", State: "draining", Target: "b"},
		{ID: 2, Owner: "c", State: "draining", Target: "a"},
		{ID: 3, Owner: "", State: "rebalancing", Target: "b"},
		{ID: 4, Owner: "b", State: "steady", Target: "b"},
	}}
	s := summarize(m)
	if s.Moving != 2 || s.Parked != 1 || s.Nodes["c"].Outgoing != 2 || s.Nodes["c"].Target != 0 || s.Nodes["b"].Incoming != 1 || s.Nodes["a"].Owned != 1 || s.Nodes["b"].Target != 3 {
		t.Fatalf("summary %+v a=%+v b=%+v c=%+v", s, *s.Nodes["a"], *s.Nodes["b"], *s.Nodes["c"])
	}
	var out bytes.Buffer
	printSummary(&out, s)
	if !strings.Contains(out.String(), "2 moving, 1 parked") || !strings.Contains(out.String(), "draining") {
		t.Fatalf("printed:\n%s", out.String())
	}
}

// TestWatchPeersPrintsChanges: the --watch printer writes the snapshot line, then
// one line per membership change, until its context ends.
func TestWatchPeersPrintsChanges(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	a, err := node.Start(t.Context(), node.Config{Name: "alpha", Bind: "127.0.0.1:0", Control: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(t.Context())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- watchPeers(ctx, &control.Client{Base: "http://" + a.ControlAddr()}, "", out, "") }()
	poll(t, 5*time.Second, "snapshot line", func() bool { return strings.Contains(out.String(), "snapshot: 1 peers") })
	b, err := node.Start(t.Context(), node.Config{Name: "beta", Bind: "127.0.0.1:0", Join: []string{a.AdvertiseAddr()}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	poll(t, 5*time.Second, "join line", func() bool { return strings.Contains(out.String(), " join beta "+b.AdvertiseAddr()) })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
}
