package swim

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func TestRetransmitLimit(t *testing.T) {
	for _, tc := range []struct{ mult, n, want int }{
		{4, 1, 4}, {4, 9, 4}, {4, 10, 8}, {4, 99, 8}, {4, 100, 12},
		{4, 999, 12}, {4, 1000, 16}, {3, 10000, 15}, {4, 0, 0},
	} {
		if got := RetransmitLimit(tc.mult, tc.n); got != tc.want {
			t.Errorf("RetransmitLimit(%d, %d) = %d, want %d", tc.mult, tc.n, got, tc.want)
		}
	}
}

func TestSuspicionMinTimeout(t *testing.T) {
	for _, tc := range []struct {
		mult, n int
		want    time.Duration
	}{
		{4, 0, 4 * time.Second}, {4, 1, 4 * time.Second}, {4, 5, 4 * time.Second},
		{4, 10, 4 * time.Second}, {4, 100, 8 * time.Second}, {4, 1000, 12 * time.Second},
		{5, 10000, 20 * time.Second},
	} {
		if got := SuspicionMinTimeout(tc.mult, tc.n, time.Second); got != tc.want {
			t.Errorf("SuspicionMinTimeout(%d, %d, 1s) = %v, want %v", tc.mult, tc.n, got, tc.want)
		}
	}
}

func TestSuspicionConfirmations(t *testing.T) {
	for _, tc := range []struct{ mult, n, want int }{
		{4, 1, 0}, {4, 2, 0}, {4, 3, 1}, {4, 4, 2}, {4, 100, 2}, {6, 100, 4}, {2, 100, 0}, {1, 100, 0},
	} {
		if got := SuspicionConfirmations(tc.mult, tc.n); got != tc.want {
			t.Errorf("SuspicionConfirmations(%d, %d) = %d, want %d", tc.mult, tc.n, got, tc.want)
		}
	}
}

// Lifeguard: "the suspicion timeout starts at Max and decreases towards Min as
// independent confirmations arrive, logarithmically in their number".
func TestSuspicionTimeoutFallsLogarithmicallyWithConfirmations(t *testing.T) {
	lo, hi := 2*time.Second, 12*time.Second
	for _, tc := range []struct {
		c, k int
		want time.Duration
	}{
		{0, 3, 12 * time.Second},
		{1, 3, 7 * time.Second},         // log 2 / log 4 = 1/2 of the way
		{2, 3, 4075 * time.Millisecond}, // log 3 / log 4 = 0.79248..., truncated to ms
		{3, 3, 2 * time.Second},
		{7, 3, 2 * time.Second}, // more than k: the minimum
		{0, 0, 2 * time.Second}, // nothing to wait for
		{5, 0, 2 * time.Second},
		{-1, 3, 12 * time.Second},
	} {
		if got := SuspicionTimeout(tc.c, tc.k, lo, hi); got != tc.want {
			t.Errorf("SuspicionTimeout(%d, %d, 2s, 12s) = %v, want %v", tc.c, tc.k, got, tc.want)
		}
	}
	if got := SuspicionTimeout(0, 3, 5*time.Second, 5*time.Second); got != 5*time.Second {
		t.Errorf("lo == hi: got %v", got)
	}
}

func TestScaleByHealth(t *testing.T) {
	for _, tc := range []struct {
		d      time.Duration
		health int
		want   time.Duration
	}{
		{250 * time.Millisecond, 0, 250 * time.Millisecond},
		{250 * time.Millisecond, 1, 500 * time.Millisecond},
		{time.Second, 7, 8 * time.Second},
	} {
		if got := ScaleByHealth(tc.d, tc.health); got != tc.want {
			t.Errorf("ScaleByHealth(%v, %d) = %v, want %v", tc.d, tc.health, got, tc.want)
		}
	}
}

func TestApplyHealthDeltaIsBounded(t *testing.T) {
	for _, tc := range []struct{ h, delta, max, want int }{
		{0, -1, 8, 0}, {0, 1, 8, 1}, {3, 2, 8, 5}, {7, 1, 8, 7}, {0, 10, 8, 7}, {5, -9, 8, 0}, {0, 3, 1, 0},
	} {
		if got := ApplyHealthDelta(tc.h, tc.delta, tc.max); got != tc.want {
			t.Errorf("ApplyHealthDelta(%d, %d, %d) = %d, want %d", tc.h, tc.delta, tc.max, got, tc.want)
		}
	}
}

func TestPushPullScale(t *testing.T) {
	base := 30 * time.Second
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, base}, {32, base}, {33, 2 * base}, {64, 2 * base}, {65, 3 * base},
		{1024, 6 * base}, {10000, 10 * base},
	} {
		if got := PushPullScale(base, tc.n); got != tc.want {
			t.Errorf("PushPullScale(30s, %d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestGossipDrain(t *testing.T) {
	for _, tc := range []struct {
		mult, n, nodes int
		iv, want       time.Duration
	}{
		{4, 128, 3, 200 * time.Millisecond, 800 * time.Millisecond}, // memberlist profile: 12 transmissions, 4 ticks
		{4, 31, 3, 50 * time.Millisecond, 150 * time.Millisecond},   // LAN: 8 transmissions, 3 ticks
		{4, 1, 3, 50 * time.Millisecond, 100 * time.Millisecond},    // alone: 4 transmissions, 2 ticks
		{4, 10000, 1, time.Second, 20 * time.Second},
		{0, 100, 3, time.Second, time.Second}, // no retransmissions: still one tick
	} {
		if got := GossipDrain(tc.mult, tc.n, tc.nodes, tc.iv); got != tc.want {
			t.Errorf("GossipDrain(%d, %d, %d, %v) = %v, want %v", tc.mult, tc.n, tc.nodes, tc.iv, got, tc.want)
		}
	}
}

// The digest is specified byte by byte in PROTOCOL.md; this pins the encoding.
func TestEagerPace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	iv := 50 * time.Millisecond
	for _, tc := range []struct {
		name      string
		next, now time.Time
		burst     int
		ok        bool
		want      time.Time
	}{
		{"fresh budget", time.Time{}, t0, 4, true, t0.Add(iv)},
		{"earned in the past", t0.Add(-time.Hour), t0, 4, true, t0.Add(iv)},
		{"burst not spent", t0.Add(3 * iv), t0, 4, true, t0.Add(4 * iv)},
		{"burst spent", t0.Add(3*iv + 1), t0, 4, false, t0.Add(3*iv + 1)},
		{"burst 1: one at a time", t0.Add(1), t0, 1, false, t0.Add(1)},
		{"burst 1, earned", t0, t0, 1, true, t0.Add(iv)},
		{"burst 0 counts as 1", t0, t0, 0, true, t0.Add(iv)},
	} {
		ok, next := EagerPace(tc.next, tc.now, iv, tc.burst)
		if ok != tc.ok || !next.Equal(tc.want) {
			t.Errorf("%s: EagerPace = %v, %v; want %v, %v", tc.name, ok, next.Sub(t0), tc.ok, tc.want.Sub(t0))
		}
	}
}

func TestMemberHashEncoding(t *testing.T) {
	b := []byte("node-a\x00\x00\x00\x00\x00\x00\x00\x01\x07\x01")
	if got, want := MemberHash("node-a", 0x107, StatusSuspect), xxhash.Sum64(b); got != want {
		t.Fatalf("MemberHash = %x, want %x", got, want)
	}
	long := strings.Repeat("x", 300)
	if MemberHash(long, 1, StatusAlive) == MemberHash(long, 2, StatusAlive) {
		t.Fatal("long names: incarnation not hashed")
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	ok := LANProfile("a", "127.0.0.1:1")
	if err := ok.Validate(); err != nil {
		t.Fatalf("LANProfile: %v", err)
	}
	ml := MemberlistProfile("a", "127.0.0.1:1")
	if err := ml.Validate(); err != nil {
		t.Fatalf("MemberlistProfile: %v", err)
	}
	if ml.ProbeInterval != time.Second || ml.ProbeTimeout != 500*time.Millisecond ||
		ml.GossipInterval != 200*time.Millisecond || ml.PushPullInterval != 30*time.Second {
		t.Fatalf("MemberlistProfile timers differ from memberlist's DefaultLANConfig: %+v", ml)
	}
	// Same timers as memberlist, our protocol: nothing of it switched off but the
	// final probe, which would cost a full 1 s probe period per detection.
	if ml.EagerFanout != ok.EagerFanout || ml.ReconnectInterval != ok.ReconnectInterval ||
		ml.DigestSyncInterval != ok.DigestSyncInterval || ml.EagerFanout == 0 {
		t.Fatalf("MemberlistProfile switches part of the protocol off: %+v", ml)
	}
	if ml.FinalProbe || !ok.FinalProbe {
		t.Fatalf("FinalProbe: memberlist profile %v (want off), LAN profile %v (want on)", ml.FinalProbe, ok.FinalProbe)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Name", func(c *Config) { c.Name = "" }},
		{"Addr", func(c *Config) { c.Addr = "" }},
		{"MTU", func(c *Config) { c.MTU = 100 }},
		{"ProbeInterval", func(c *Config) { c.ProbeInterval = 0 }},
		{"ProbeTimeout", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }},
		{"IndirectChecks", func(c *Config) { c.IndirectChecks = -1 }},
		{"GossipInterval", func(c *Config) { c.GossipInterval = 0 }},
		{"GossipNodes", func(c *Config) { c.GossipNodes = 0 }},
		{"EagerFanout", func(c *Config) { c.EagerFanout = -1 }},
		{"SuspicionMult", func(c *Config) { c.SuspicionMult = 0 }},
		{"SuspicionMaxTimeoutMult", func(c *Config) { c.SuspicionMaxTimeoutMult = 0 }},
		{"RetransmitMult", func(c *Config) { c.RetransmitMult = 0 }},
		{"PushPullInterval", func(c *Config) { c.PushPullInterval = -1 }},
		{"ReconnectInterval", func(c *Config) { c.ReconnectInterval = -1 }},
		{"TombstoneTTL", func(c *Config) { c.TombstoneTTL = 0 }},
		{"AwarenessMaxMultiplier", func(c *Config) { c.AwarenessMaxMultiplier = 0 }},
		{"DigestSyncInterval", func(c *Config) { c.DigestSyncInterval = -1 }},
		{"DigestEvery", func(c *Config) { c.DigestEvery = -1 }},
		{"QueueLimit", func(c *Config) { c.QueueLimit = 0 }},
	} {
		c := LANProfile("a", "127.0.0.1:1")
		tc.mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field+" ") {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
}

// Test vector of PROTOCOL.md 10.6: a view of node-a (alive, incarnation 0) and
// node-b (suspect, incarnation 7). Another implementation must get the same values.
func TestDigestVector(t *testing.T) {
	a, b := MemberHash("node-a", 0, StatusAlive), MemberHash("node-b", 7, StatusSuspect)
	if a != 0xe34b48b7cd30b202 || b != 0xb5379101b37c3ba9 || a+b != 0x9882d9b980acedab {
		t.Fatalf("a=%016x b=%016x sum=%016x", a, b, a+b)
	}
}
