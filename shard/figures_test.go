package shard

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// TestFigures measures the numbers quoted in docs/shards.md. Heavy: run with
//
//	OMNIRELAY_HEAVY=1 go test ./shard -run TestFigures -v
func TestFigures(t *testing.T) {
	if os.Getenv("OMNIRELAY_HEAVY") != "1" {
		t.Skip("figures for docs/shards.md; set OMNIRELAY_HEAVY=1 to run")
	}
	t.Run("moved fraction", func(t *testing.T) {
		const shards = 4096
		for _, n := range []int{10, 20, 50} {
			for _, join := range []bool{true, false} {
				var sum float64
				const runs = 3
				for seed := range uint64(runs) {
					_, _, moved := reshard(t, n, shards, join, seed+1)
					f := float64(len(moved)) / shards
					if f > 1/float64(n)+0.02 {
						t.Errorf("n=%d join=%v: moved %.4f > 1/n + 2%%", n, join, f)
					}
					sum += f
				}
				what := "leave (drain)"
				if join {
					what = "join"
				}
				t.Logf("n=%-3d %-13s moved %.4f (1/n = %.4f, mean of %d runs, S=%d)", n, what, sum/runs, 1/float64(n), runs, shards)
			}
		}
	})
	for _, detect := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("reassignment after death, detected after %v", detect), func(t *testing.T) { figureReassign(t, detect) })
	}
}

// figureReassign crashes one of 10 nodes at a random instant, 200 times, and
// measures from the leader learning of the death (detect after it) until all the
// node's shards are served elsewhere.
func figureReassign(t *testing.T, detect time.Duration) {
	cfg := DefaultConfig()
	cfg.Shards = 256
	var lat []time.Duration
	for seed := range uint64(200) {
		w := newWorld(cfg, seed+1, 10)
		w.detect = detect
		w.elect("node-00")
		w.run(6 * time.Second)
		at := 6*time.Second + time.Duration(w.rng.Int64N(int64(2*time.Second)))
		victim := fmt.Sprintf("node-%02d", 1+w.rng.IntN(9))
		w.at(at-w.net.Now(), func() { w.crash(victim) })
		w.run(at + w.detect + 3*cfg.LeaseDuration)
		w.report(t)
		l := w.reassignLatencies()
		if len(l) != 1 || l[0] < 0 {
			t.Fatalf("seed %d: reassignment not measured: %v", seed, l)
		}
		lat = append(lat, l[0])
	}
	p50, p99, worst := percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 1)
	li := float64(cfg.LeaseDuration)
	t.Logf("death known -> all its shards served elsewhere, 200 crashes of 1 of 10 nodes, S=256, default timing (lease %v), detection %v after the crash:", cfg.LeaseDuration, detect)
	t.Logf("  p50 %v (%.2f lease intervals)  p99 %v (%.2f)  max %v (%.2f)",
		p50.Round(time.Millisecond), float64(p50)/li, p99.Round(time.Millisecond), float64(p99)/li, worst.Round(time.Millisecond), float64(worst)/li)
	if worst > 2*cfg.LeaseDuration {
		t.Errorf("max %v above 2 lease intervals", worst)
	}
}
