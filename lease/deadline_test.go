package lease

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestDeadlineMath(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		d      time.Duration
		drift  float64
		margin time.Duration
		holder time.Duration // HolderValidity
		voter  time.Duration // VoterHold
	}{
		{3 * sec, 0.01, 100 * ms, 2870 * ms, 3030 * ms}, // defaults
		{3 * sec, 0, 0, 3 * sec, 3 * sec},               // perfect clocks: both equal d
		{10 * sec, 0.05, 0, 9500 * ms, 10500 * ms},
		{time.Second, 0.25, 500 * ms, 250 * ms, 1250 * ms},
		{time.Second, 0.25, 750 * ms, 0, 1250 * ms}, // margin eats the lease
		{7, 0.5 - 1e-9, 0, 3, 11},                   // rounding: holder down, voter up
	} {
		if got := HolderValidity(tc.d, tc.drift, tc.margin); got != tc.holder {
			t.Errorf("HolderValidity(%v, %v, %v) = %v, want %v", tc.d, tc.drift, tc.margin, got, tc.holder)
		}
		if got := VoterHold(tc.d, tc.drift); got != tc.voter {
			t.Errorf("VoterHold(%v, %v) = %v, want %v", tc.d, tc.drift, got, tc.voter)
		}
		start := origin.Add(time.Hour)
		if got := HolderDeadline(start, tc.d, tc.drift, tc.margin); !got.Equal(start.Add(tc.holder)) {
			t.Errorf("HolderDeadline = %v, want start+%v", got, tc.holder)
		}
		if got := VoterExpiry(start, tc.d, tc.drift); !got.Equal(start.Add(tc.voter)) {
			t.Errorf("VoterExpiry = %v, want start+%v", got, tc.voter)
		}
		if got := QuietPeriod(tc.d, tc.drift); got != tc.voter {
			t.Errorf("QuietPeriod = %v, want the longest hold %v", got, tc.voter)
		}
	}
}

func TestRealSpan(t *testing.T) {
	for _, tc := range []struct {
		local       time.Duration
		drift       float64
		short, long time.Duration
	}{
		{3 * sec, 0, 3 * sec, 3 * sec},
		{1010 * time.Millisecond, 0.01, 1000 * time.Millisecond, 1020202021},
		{3 * sec, 0.5, 2 * sec, 6 * sec},
	} {
		s, l := RealSpan(tc.local, tc.drift)
		if s != tc.short || l != tc.long {
			t.Errorf("RealSpan(%v, %v) = %v, %v; want %v, %v", tc.local, tc.drift, s, l, tc.short, tc.long)
		}
	}
}

// The safety inequality of docs/lease.md, over many timings: the latest real
// instant the holder can still act (its validity stretched by the slowest clock)
// comes at least margin/(1-ρ) before the earliest real instant a voter can let the
// lease go (its hold shrunk by the fastest clock), even if the voter accepted the
// instant the proposal left.
func TestHolderAlwaysStopsBeforeAnyVoterExpires(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		d := time.Duration(1 + rng.Int64N(int64(time.Minute)))
		drift := rng.Float64() * 0.49
		margin := time.Duration(rng.Int64N(int64(d / 2)))
		hv := HolderValidity(d, drift, margin)
		if hv <= 0 {
			continue
		}
		_, holderEnd := RealSpan(hv, drift)
		voterEnd, _ := RealSpan(VoterHold(d, drift), drift)
		_, marginReal := RealSpan(margin, drift)
		// One nanosecond of slack per rounding step (three of them).
		if holderEnd+marginReal > voterEnd+3 {
			t.Fatalf("d=%v drift=%v margin=%v: holder acts until %v real, voter may expire at %v", d, drift, margin, holderEnd, voterEnd)
		}
	}
}

func TestBackoffStaysInBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	lo, hi := 100*time.Millisecond, 300*time.Millisecond
	var sawLow, sawHigh bool
	for range 10000 {
		b := backoff(rng, lo, hi)
		if b < lo || b > hi {
			t.Fatalf("backoff %v outside [%v, %v]", b, lo, hi)
		}
		sawLow = sawLow || b < lo+20*time.Millisecond
		sawHigh = sawHigh || b > hi-20*time.Millisecond
	}
	if !sawLow || !sawHigh {
		t.Fatal("backoff does not spread over its range")
	}
	if b := backoff(rng, lo, lo); b != lo {
		t.Fatalf("degenerate range: %v", b)
	}
}
