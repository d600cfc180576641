package wire

import (
	"math"
	"testing"
)

func TestPlausible(t *testing.T) {
	for _, tc := range []struct {
		known, got uint64
		want       bool
	}{
		{0, 0, true},
		{5, 3, true}, // lower values are the caller's to judge (stale), never implausible
		{0, MaxJump, true},
		{0, MaxJump + 1, false},
		{7, 7 + MaxJump, true},
		{7, 8 + MaxJump, false},
		{0, math.MaxUint64, false},
		{math.MaxUint64 - MaxJump, math.MaxUint64, true},
		{math.MaxUint64, 0, true},
	} {
		if got := Plausible(tc.known, tc.got); got != tc.want {
			t.Errorf("Plausible(%d, %d) = %v, want %v", tc.known, tc.got, got, tc.want)
		}
	}
}
