package sim

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestScheduleTextRoundTrips(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := Stream(rapid.Uint64().Draw(t, "seed"), "gen")
		sc := RandomSchedule(rng, rapid.IntRange(3, 12).Draw(t, "nodes"), 10, time.Minute)
		back, err := ParseSchedule(sc.String())
		if err != nil {
			t.Fatalf("parse of\n%s: %v", sc, err)
		}
		if !reflect.DeepEqual(back, sc) {
			t.Fatalf("round trip changed the schedule:\n%s\nvs\n%s", sc, back)
		}
	})
}

func TestParseScheduleRejectsBadLines(t *testing.T) {
	for _, text := range []string{
		"",
		"1s crash 1",
		"nodes 3 seed 1 profile lan quiet 10s\n1s explode 2",
		"nodes 3 seed 1 profile lan quiet 10s\n1s crash",
		"nodes 3 seed 1 profile lan quiet 10s\nsoon crash 1",
		"nodes 3 seed 1 profile lan quiet 10s\n1s oneway 1,2",
		"nodes 3 seed 1 profile lan quiet 10s\n1s pause 1 long",
	} {
		if _, err := ParseSchedule(text); err == nil {
			t.Errorf("ParseSchedule(%q) accepted it", text)
		}
	}
}

func TestToyScheduleWithoutCrashesAgrees(t *testing.T) {
	sc, err := ParseSchedule(`nodes 6 seed 9 profile lan quiet 20s
1s partition 0,1,2
2s pause 4 3s
3s loss 0.3
4s join
5s heal`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RunSchedule(sc, newToy); err != nil {
		t.Fatal(err)
	}
}

// failed prints a schedule so it can be kept as a regression case.
func failed(t interface{ Fatalf(string, ...any) }, sc Schedule, err error) {
	t.Fatalf("%v\nreplay: save this as sim/testdata/schedules/NAME.txt, then `go run ./cmd/omnirelay sim replay FILE` or `go test ./sim -run TestScheduleRegressions`:\n%s", err, sc)
}

// TestAgreementAfterQuietPeriod is the main invariant: after any schedule of joins,
// crashes, restarts, leaves, partitions, pauses, stalls and loss, and a quiet period with
// the network healed, every live node sees exactly the live nodes alive and no
// live node is dead or suspect in anyone's view.
func TestAgreementAfterQuietPeriod(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		rng := Stream(rapid.Uint64().Draw(rt, "seed"), "gen")
		sc := RandomSchedule(rng, rapid.IntRange(3, 10).Draw(rt, "nodes"), 8, time.Minute)
		if _, err := RunSchedule(sc, nil); err != nil {
			failed(rt, sc, err)
		}
	})
}

// TestScheduleRegressions replays every schedule kept under testdata/schedules.
func TestScheduleRegressions(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "schedules", "*.txt"))
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := ParseSchedule(string(b))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := RunSchedule(sc, nil); err != nil {
				failed(t, sc, err)
			}
		})
	}
}
