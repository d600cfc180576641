package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/cluster"
	"github.com/omnirelay/mesh/control"
)

// startFederatedAgents runs cluster id of three agents, every one a voter and a
// gateway, with the default timers (LAN, lease, WAN pool, --promote-after).
func startFederatedAgents(t *testing.T, bin, dir, id, state, wanSeed string) []*agentProc {
	t.Helper()
	var ps []*agentProc
	voters := id + "1," + id + "2," + id + "3"
	for i := range 3 {
		name := fmt.Sprintf("%s%d", id, i+1)
		args := []string{"--key-file", keyFile(t, dir), "--cluster-label", "fed-" + id, "--voters", voters, "--voter",
			"--data-dir", filepath.Join(dir, name), "--cluster-id", id, "--clusters", "a,b", "--cluster-state", state,
			"--region", "region-" + id, "--gateway", "--wan-bind", "127.0.0.1:0"}
		if i > 0 {
			args = append(args, "--join", ps[0].addrs.Advertise)
		}
		switch {
		case wanSeed != "":
			args = append(args, "--wan-join", wanSeed)
		case i > 0:
			args = append(args, "--wan-join", ps[0].addrs.WAN)
		}
		ps = append(ps, startAgentArgs(t, bin, dir, name, nil, args...))
	}
	return ps
}

func clustersOf(p *agentProc) (control.Clusters, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return (&control.Client{Base: p.addrs.Control}).GetClusters(ctx)
}

// servingAgent is the agent of ps that answers as the active registry, if one
// does; two fail the test.
func servingAgent(t *testing.T, ps []*agentProc) (*agentProc, control.Clusters) {
	t.Helper()
	var who *agentProc
	var view control.Clusters
	for _, p := range ps {
		cs, err := clustersOf(p)
		if err != nil || !cs.Serving {
			continue
		}
		if who != nil {
			t.Fatalf("%s and %s both answer as the active registry", who.addrs.Name, p.addrs.Name)
		}
		who, view = p, cs
	}
	return who, view
}

func versionOf(cs control.Clusters, id string) uint64 {
	for _, d := range cs.Clusters {
		if d.ID == id {
			return d.Version
		}
	}
	return 0
}

// TestFederationAgentsInSeparateProcesses (OMNIRELAY_HEAVY=1): two clusters of
// three agents in separate processes on loopback, default timers. `mesh clusters
// promote b`, asked of an agent of passive b, hands a over to b; then every agent
// of b is killed (SIGKILL) and a promotes itself. The figures go to
// docs/benchmarks.md ("multi-cluster, loopback").
func TestFederationAgentsInSeparateProcesses(t *testing.T) {
	if os.Getenv("OMNIRELAY_HEAVY") != "1" {
		t.Skip("six agent processes and default WAN timers (about a minute): set OMNIRELAY_HEAVY=1 to run")
	}
	dir, bin := buildBinary(t)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"bind": "127.0.0.1:0", "control": "127.0.0.1:0", "log_format": "json"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a := startFederatedAgents(t, bin, dir, "a", "active", "")
	b := startFederatedAgents(t, bin, dir, "b", "passive", a[0].addrs.WAN)
	all := append(append([]*agentProc{}, a...), b...)
	poll(t, 60*time.Second, "a active, seen by every agent with b's endpoints", func() bool {
		if p, _ := servingAgent(t, all); p == nil || !strings.HasPrefix(p.addrs.Name, "a") {
			return false
		}
		for _, p := range all {
			cs, err := clustersOf(p)
			if err != nil || cs.Active != "a" || len(cs.Endpoints) != 1 || !cs.Endpoints[0].Reachable || len(cs.Endpoints[0].Control) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("2x3 agents up and federated, a active: %v", time.Since(start).Round(time.Millisecond))

	_, before := servingAgent(t, all)
	var out, errb bytes.Buffer
	t0 := time.Now()
	if code := run([]string{"mesh", "clusters", "promote", "b", "--addr", b[2].addrs.Control}, &out, &errb); code != 0 {
		t.Fatalf("mesh clusters promote b: exit %d: %s", code, errb.String())
	}
	var after control.Clusters
	poll(t, 20*time.Second, "b active after the planned promotion", func() bool {
		var p *agentProc
		p, after = servingAgent(t, all)
		return p != nil && strings.HasPrefix(p.addrs.Name, "b")
	})
	handoff := time.Since(t0)
	if versionOf(after, "b") <= versionOf(before, "a") {
		t.Fatalf("b active at version %d, a was at %d", versionOf(after, "b"), versionOf(before, "a"))
	}
	poll(t, 10*time.Second, "every agent of a sees b active", func() bool {
		for _, p := range a {
			if cs, err := clustersOf(p); err != nil || cs.Active != "b" {
				return false
			}
		}
		return true
	})

	t1 := time.Now()
	for _, p := range b {
		p.cmd.Process.Kill()
	}
	var promoted control.Clusters
	var unreachable time.Duration // until every agent of a reports b unreachable
	poll(t, 60*time.Second, "a promoted after every agent of b died", func() bool {
		if unreachable == 0 && !slices.ContainsFunc(a, func(p *agentProc) bool {
			cs, err := clustersOf(p)
			return err != nil || len(cs.Endpoints) != 1 || cs.Endpoints[0].Reachable
		}) {
			unreachable = time.Since(t1)
		}
		var p *agentProc
		p, promoted = servingAgent(t, a)
		return p != nil
	})
	failover := time.Since(t1)
	for _, d := range promoted.Clusters {
		if d.ID == "a" && (d.State != cluster.Active || d.Version <= versionOf(after, "b")) {
			t.Fatalf("a promoted as %+v, b was at %d", d, versionOf(after, "b"))
		}
	}
	t.Logf("planned handoff a->b through the CLI: %d ms; unplanned failover b->a after SIGKILL of all of b: %d ms, of which %d ms until every agent of a saw b unreachable (versions %d -> %d -> %d)",
		handoff.Milliseconds(), failover.Milliseconds(), unreachable.Milliseconds(), versionOf(before, "a"), versionOf(after, "b"), versionOf(promoted, "a"))
}
