package shard

import (
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestDeadlineMath(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		d        time.Duration
		drift    float64
		margin   time.Duration
		validity time.Duration // OwnerValidity
		hold     time.Duration // LeaderHold, FailoverWait
	}{
		{3 * time.Second, 0.01, 100 * ms, 2870 * ms, 3030 * ms}, // defaults
		{3 * time.Second, 0, 0, 3 * time.Second, 3 * time.Second},
		{time.Second, 0.1, 0, 900 * ms, 1100 * ms},
		{time.Second, 0.1, 900 * ms, 0, 1100 * ms}, // useless grant
		{3, 0.5, 0, 1, 5}, // floor(1.5), ceil(4.5): rounding toward safety
		{10 * time.Second, 0.25, time.Second, 6500 * ms, 12500 * ms},
	} {
		if got := OwnerValidity(c.d, c.drift, c.margin); got != c.validity {
			t.Errorf("OwnerValidity(%v, %v, %v) = %v, want %v", c.d, c.drift, c.margin, got, c.validity)
		}
		if got := LeaderHold(c.d, c.drift); got != c.hold {
			t.Errorf("LeaderHold(%v, %v) = %v, want %v", c.d, c.drift, got, c.hold)
		}
		if got := FailoverWait(c.d, c.drift); got != c.hold {
			t.Errorf("FailoverWait(%v, %v) = %v, want %v", c.d, c.drift, got, c.hold)
		}
		sent := simBase.Add(time.Hour)
		if got := OwnerExpiry(sent, c.d, c.drift, c.margin); !got.Equal(sent.Add(c.validity)) {
			t.Errorf("OwnerExpiry = %v, want sent+%v", got, c.validity)
		}
		if got := LeaderExpiry(sent, c.d, c.drift); !got.Equal(sent.Add(c.hold)) {
			t.Errorf("LeaderExpiry = %v, want sent+%v", got, c.hold)
		}
	}
}

func TestRealSpan(t *testing.T) {
	for _, c := range []struct {
		local             time.Duration
		drift             float64
		shortest, longest time.Duration
	}{
		{time.Second, 0, time.Second, time.Second},
		{1250 * time.Millisecond, 0.25, time.Second, 1666666667},
		{3, 0.5, 2, 6},
	} {
		s, l := RealSpan(c.local, c.drift)
		if s != c.shortest || l != c.longest {
			t.Errorf("RealSpan(%v, %v) = %v, %v; want %v, %v", c.local, c.drift, s, l, c.shortest, c.longest)
		}
	}
}

// The safety argument in numbers: the longest real time an owner can serve after
// sending its renewal ends before the shortest real time the leader holds the
// grant after answering (which is later), for any lease, drift and margin ≥ 2 ns
// (1 ns of each side's rounding).
func TestOwnerStopsBeforeLeaderLetsGo(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := time.Duration(rapid.Int64Range(1, int64(time.Hour)).Draw(t, "d"))
		drift := rapid.Float64Range(0, 0.49).Draw(t, "drift")
		margin := time.Duration(rapid.Int64Range(2, int64(time.Second)).Draw(t, "margin"))
		v := OwnerValidity(d, drift, margin)
		if v <= 0 {
			return
		}
		_, ownerLongest := RealSpan(v, drift)
		leaderShortest, _ := RealSpan(LeaderHold(d, drift), drift)
		if ownerLongest >= leaderShortest {
			t.Fatalf("owner may serve %v of real time, leader holds only %v", ownerLongest, leaderShortest)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for field, mutate := range map[string]func(*Config){
		"Shards":           func(c *Config) { c.Shards = 0 },
		"Replicas":         func(c *Config) { c.Replicas = 0 },
		"LeaseDuration":    func(c *Config) { c.LeaseDuration = 0 },
		"MaxDrift":         func(c *Config) { c.MaxDrift = 0.5 },
		"Margin":           func(c *Config) { c.Margin = 3 * time.Second },
		"RenewInterval":    func(c *Config) { c.RenewInterval = 2900 * time.Millisecond },
		"MaxMoves":         func(c *Config) { c.MaxMoves = 0 },
		"AnnounceInterval": func(c *Config) { c.AnnounceInterval = -1 },
	} {
		c := DefaultConfig()
		mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want ErrInvalidConfig naming the field", field, err)
		}
	}
}
