package main

import (
	"context"
	"os"
	"testing"
	"time"
)

// execEnv makes the test binary run as the kv command (the scenario starts
// instances as separate processes of this binary).
const execEnv = "KV_EXAMPLE_EXEC"

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The short scenario on real processes: three instances under a light fixed
// load, a fourth joins, one is drained, the fourth is SIGKILLed while it owns
// shards; every acknowledged append is present exactly once at the end. The
// full run with figures is `kv scenario` (docs/benchmarks.md).
func TestScenarioShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four processes")
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	phase := 2 * time.Second
	if os.Getenv("OMNIRELAY_HEAVY") == "1" {
		phase = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := runScenario(ctx, scenarioConfig{
		Bin: bin, Env: []string{execEnv + "=1"}, Dir: t.TempDir(), Shards: 16, Phase: phase,
		Load: loadConfig{Workers: 16, Rate: 50, Keys: 64, ReadPct: 10},
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Phases {
		t.Logf("%-8s ok %d failed %d retries %d p50 %.2f ms p99 %.2f ms max %.2f ms", p.Name, p.OK, p.Failed, p.Retries, p.P50, p.P99, p.Max)
		if p.OK == 0 {
			t.Errorf("phase %s completed no operation", p.Name)
		}
	}
	v := rep.Verify
	t.Logf("verify: %+v", v)
	if v.Acked == 0 {
		t.Fatal("no append was acknowledged")
	}
	if v.Lost != 0 || v.Duplicated != 0 {
		t.Errorf("%d acknowledged appends lost, %d applied twice", v.Lost, v.Duplicated)
	}
}
