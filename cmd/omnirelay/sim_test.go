package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestSimListNamesEveryScenario(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := runSim([]string{"list"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d, stderr %s", rc, errb.String())
	}
	for _, name := range []string{"join", "crash", "leave", "churn", "loss", "pause", "slow", "partition-heal"} {
		if !strings.Contains(out.String(), name+" ") {
			t.Errorf("list lacks %s:\n%s", name, out.String())
		}
	}
}

func TestSimRunJSONHasTheContractFields(t *testing.T) {
	var out, errb bytes.Buffer
	rc := runSim([]string{"run", "--scenario", "crash", "--nodes", "10", "--seed", "5", "--duration", "30s", "--json"}, &out, &errb)
	if rc != 0 {
		t.Fatalf("rc %d, stderr %s", rc, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"scenario", "nodes", "seed", "profile", "virtual_seconds", "wall_seconds", "events",
		"messages_sent", "bytes_sent", "bytes_per_node_per_sec", "converged", "trace_hash", "false_suspicions",
		"false_deaths", "detect_p50_ms", "detect_p95_ms", "detect_max_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if m["scenario"] != "crash" || m["nodes"] != float64(10) || m["seed"] != float64(5) {
		t.Errorf("echoed options wrong: %v %v %v", m["scenario"], m["nodes"], m["seed"])
	}
}

func TestSimRunReport(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := runSim([]string{"run", "--scenario", "join", "--nodes", "8"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d, stderr %s", rc, errb.String())
	}
	if !strings.Contains(out.String(), "join_p99_ms") || !strings.Contains(out.String(), "trace_hash") {
		t.Fatalf("report:\n%s", out.String())
	}
}

func TestSimBadInvocations(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"run"},
		{"run", "--scenario", "nope"},
		{"run", "--scenario", "join", "--nodes", "many"},
		{"run", "--scenario", "join", "--nodes", "2"},
		{"run", "--scenario", "loss", "--loss", "1.5"},
		{"run", "--scenario", "join", "--profile", "wan"},
		{"run", "--scenario", "join", "extra"},
	} {
		var out, errb bytes.Buffer
		if rc := runSim(args, &out, &errb); rc != 2 || errb.Len() == 0 {
			t.Errorf("%q: rc %d stderr %q, want 2 and a message", args, rc, errb.String())
		}
	}
}

func TestSimReplayKeptSchedule(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := runSim([]string{"replay", "../../sim/testdata/schedules/every-op.txt"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d, stdout %s stderr %s", rc, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "ok:") || !strings.Contains(out.String(), "trace_hash") {
		t.Fatalf("output %q", out.String())
	}
	if rc := runSim([]string{"replay", "no-such-file"}, &out, &errb); rc != 2 {
		t.Fatalf("missing file: rc %d, want 2", rc)
	}
}
