package compare

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRunFourNodes runs every implementation with four nodes and checks that each
// phase completed and that traffic and CPU were counted. It checks no speed: figures
// belong in docs/benchmarks.md, from cmd/compare.
func TestRunFourNodes(t *testing.T) {
	for _, impl := range append(slices.Clone(Impls), TLSImpls...) {
		t.Run(impl, func(t *testing.T) {
			t.Parallel()
			r, err := Run(impl, 4, Options{Settle: 200 * time.Millisecond, Steady: time.Second, Crashes: 1,
				Timeout: 60 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if r.Formation <= 0 {
				t.Errorf("formation %v s: want > 0", r.Formation)
			}
			for i, q := range []string{"p50", "p95", "p100"} {
				if r.Join[i] < 0 {
					t.Errorf("join %s not reached", q)
				}
				if r.Crash[i] <= 0 {
					t.Errorf("crash %s = %v: want detected, after the crash", q, r.Crash[i])
				}
			}
			if r.Join[0] > r.Join[2] || r.Crash[0] > r.Crash[2] {
				t.Errorf("quantiles out of order: join %v crash %v", r.Join, r.Crash)
			}
			if r.PacketsPerNodeSec <= 0 || r.UDPBytesPerNodeSec <= r.PacketsPerNodeSec {
				t.Errorf("steady traffic %v packets, %v bytes per node per s: want both counted",
					r.PacketsPerNodeSec, r.UDPBytesPerNodeSec)
			}
			if r.PushPullBytes <= 0 {
				t.Errorf("push-pull exchange of %v bytes: want counted", r.PushPullBytes)
			}
			if r.CPUPerNodeSec <= 0 {
				t.Errorf("CPU %v s per node per s: want > 0", r.CPUPerNodeSec)
			}
		})
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	if _, err := Run("nope", 4, Options{}); !errors.Is(err, ErrUnknownImpl) {
		t.Errorf("unknown impl: got %v, want ErrUnknownImpl", err)
	}
	if _, err := Run(Memberlist, 2, Options{}); err == nil {
		t.Error("n = 2: got nil error, want one")
	}
	if _, err := Run(Memberlist, 4, Options{Crashes: 3}); err == nil {
		t.Error("n = 4, 3 crashes: got nil error, want one")
	}
}

func TestMedians(t *testing.T) {
	got := medians([][3]float64{{1, 2, 3}, {5, -1, 7}, {3, 4, -1}})
	want := [3]float64{3, 4, 7}
	if got != want {
		t.Errorf("odd count: got %v, want %v", got, want)
	}
	got = medians([][3]float64{{1, -1, 2}, {3, -1, 4}})
	want = [3]float64{2, -1, 3}
	if got != want {
		t.Errorf("even count: got %v, want %v", got, want)
	}
}

func TestQuantiles(t *testing.T) {
	t0 := time.Unix(100, 0)
	seen := []time.Time{t0.Add(time.Second), t0.Add(2 * time.Second), t0.Add(3 * time.Second)}
	got := quantiles(t0, seen, 4, 0.5, 0.75, 1)
	want := []float64{2, 3, -1} // 2 of 4, 3 of 4, 4 of 4 (never)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("quantile %d = %v, want %v", i, got[i], want[i])
		}
	}
}
