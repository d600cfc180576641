package wire

import "testing"

func TestSpeaks(t *testing.T) {
	for _, c := range []struct {
		pmin, pmax uint8
		want       bool
	}{
		{1, 1, true},
		{1, 3, true},  // a newer node that still speaks ours
		{0, 1, false}, // 0 is no version
		{0, 0, false}, // also what a missing range reads as
		{2, 2, false}, // no overlap: newer only
		{3, 1, false}, // pn > px
		{2, 1, false},
		{255, 255, false},
	} {
		if got := Speaks(c.pmin, c.pmax); got != c.want {
			t.Errorf("Speaks(%d, %d) = %v, want %v", c.pmin, c.pmax, got, c.want)
		}
	}
}
