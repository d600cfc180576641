package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
)

// leadersVia runs `mesh leaders status -o json` against agent p.
func leadersVia(p *agentProc) (control.Leaders, error) {
	var out, errOut bytes.Buffer
	var l control.Leaders
	if code := run([]string{"mesh", "leaders", "status", "--addr", p.addrs.Control, "-o", "json", "--timeout", "2s"}, &out, &errOut); code != 0 {
		return l, fmt.Errorf("exit %d: %s", code, errOut.String())
	}
	return l, json.Unmarshal(out.Bytes(), &l)
}

// agreedVia is the holder and epoch every agent's leaders route reports, or ""
// while they differ or none stands.
func agreedVia(agents []*agentProc) (string, uint64) {
	var holder string
	var epoch uint64
	for i, p := range agents {
		l, err := leadersVia(p)
		if err != nil || l.Leader == nil || (i > 0 && (l.Leader.Holder != holder || l.Leader.Epoch != epoch)) {
			return "", 0
		}
		holder, epoch = l.Leader.Holder, l.Leader.Epoch
	}
	return holder, epoch
}

// TestVoterAgentsElectAndFailOver runs three voter agents in separate processes,
// each with its own data dir and audit log: `mesh leaders status` names the same
// leader on all three; killing it (SIGKILL) moves the lease to another agent at a
// higher epoch, which the survivors agree on and audit.
func TestVoterAgentsElectAndFailOver(t *testing.T) {
	dir, bin := buildBinary(t)
	var agents []*agentProc
	byName := map[string]*agentProc{}
	for _, name := range []string{"a", "b", "c"} {
		ad := filepath.Join(dir, name)
		os.MkdirAll(ad, 0o700)
		cfg := strings.Replace(fastConfig, "{", fmt.Sprintf(`{"voters": ["a", "b", "c"], "voter": true, "data_dir": %q, "audit_log": %q,`,
			filepath.Join(ad, "data"), filepath.Join(ad, "audit.jsonl")), 1)
		if err := os.WriteFile(filepath.Join(ad, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var join []string
		if len(agents) > 0 {
			join = []string{agents[0].addrs.Advertise}
		}
		p := startAgent(t, bin, ad, name, join...)
		agents = append(agents, p)
		byName[name] = p
	}
	var holder string
	var epoch uint64
	poll(t, 15*time.Second, "three agents agree on a leader", func() bool {
		holder, epoch = agreedVia(agents)
		return holder != ""
	})
	l, err := leadersVia(byName[holder])
	if err != nil || !l.Local.IsLeader || !l.Leader.IsLocal || !l.Local.IsVoter || strings.Join(l.Voters, ",") != "a,b,c" {
		t.Fatalf("the leader's own view: %+v, %v", l, err)
	}

	killed := time.Now()
	byName[holder].cmd.Process.Kill()
	var survivors []*agentProc
	for _, p := range agents {
		if p.addrs.Name != holder {
			survivors = append(survivors, p)
		}
	}
	var newHolder string
	var newEpoch uint64
	poll(t, 10*time.Second, "survivors agree on a new leader", func() bool {
		newHolder, newEpoch = agreedVia(survivors)
		return newHolder != "" && newHolder != holder
	})
	t.Logf("%s@%d -> %s@%d in %v", holder, epoch, newHolder, newEpoch, time.Since(killed).Round(10*time.Millisecond))
	if newEpoch <= epoch {
		t.Fatalf("new leader at epoch %d, not above %d", newEpoch, epoch)
	}

	// The survivors' audit logs hold the joins and both leaders, as JSON lines.
	for _, p := range survivors {
		b, err := os.ReadFile(filepath.Join(dir, p.addrs.Name, "audit.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for line := range strings.Lines(string(b)) {
			var r struct {
				Event, Member, Holder, ID string
				Epoch                     uint64
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.ID == "" {
				t.Fatalf("%s audit line %q: %v", p.addrs.Name, line, err)
			}
			switch r.Event {
			case "join":
				seen["join "+r.Member] = true
			case "leader_changed", "became_leader":
				seen[fmt.Sprint(r.Holder, "@", r.Epoch)] = true
			}
		}
		for _, want := range []string{"join " + holder, fmt.Sprint(holder, "@", epoch), fmt.Sprint(newHolder, "@", newEpoch)} {
			if !seen[want] {
				t.Errorf("%s's audit log lacks %q:\n%s", p.addrs.Name, want, b)
			}
		}
	}
}
