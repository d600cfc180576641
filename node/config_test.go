package node

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/swim"
)

func TestValidateNamesTheBadField(t *testing.T) {
	ok := Config{Name: "a", Bind: "127.0.0.1:0"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for field, mut := range map[string]func(*Config){
		"Name":           func(c *Config) { c.Name = "" },
		"Bind":           func(c *Config) { c.Bind = "nope" },
		"Advertise":      func(c *Config) { c.Bind = "0.0.0.0:7946" },
		"Join[1]":        func(c *Config) { c.Join = []string{"h:1", "h:x"} },
		"Control":        func(c *Config) { c.Control = "7947" },
		"Profile":        func(c *Config) { c.Profile = "wan" },
		"MTU":            func(c *Config) { c.MTU = 100 },
		"Keys[0]":        func(c *Config) { c.Keys = [][]byte{[]byte("short")} },
		"JoinBackoffMax": func(c *Config) { c.JoinBackoff = time.Minute },
		"ProbeTimeout":   func(c *Config) { c.Tune = func(s *swim.Config) { s.ProbeTimeout = s.ProbeInterval } },
	} {
		c := ok
		mut(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	c := ok
	c.Bind, c.Advertise = "0.0.0.0:7946", "10.1.2.3:0"
	if err := c.Validate(); err != nil {
		t.Errorf("wildcard bind with advertise: %v", err)
	}
	if got := c.advertiseAddr("0.0.0.0:4567"); got != "10.1.2.3:4567" {
		t.Errorf("advertise port 0 -> %s, want the bound port", got)
	}
}

func TestEncryptionShrinksSwimMTU(t *testing.T) {
	c := Config{Name: "a", Keys: [][]byte{make([]byte, 32)}}.withDefaults()
	if got := c.swimConfig("h:1").MTU; got != 1400-28 {
		t.Fatalf("swim MTU %d with encryption, want 1372", got)
	}
}

// TestSlowSubscriberLosesOldestEventsNotTheLoop: a subscriber that never reads has
// a 2-slot buffer; the loop keeps running and the newest events are kept.
func TestSlowSubscriberLosesOldestEventsNotTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfg := memConfig(t, mn, "a", "10.0.0.1:7946")
		cfg.EventBuffer = 2
		a := startMem(t, cfg)
		defer a.Close()
		sub := a.Subscribe()
		var others []*Node
		for _, name := range []string{"b", "c", "d", "e"} {
			others = append(others, startMem(t, memConfig(t, mn, name, "10.0.1."+name[:0]+string('0'+rune(len(others)))+":7946", "10.0.0.1:7946")))
		}
		waitFor(t, 5*time.Second, "a sees all", func() bool { return len(a.Members()) == 5 })
		for _, o := range others {
			o.Close()
		}
		waitFor(t, 30*time.Second, "all dead", func() bool {
			for _, m := range a.Members() {
				if m.Name != "a" && m.Status != swim.StatusDead {
					return false
				}
			}
			return true
		})
		if sub.Dropped() == 0 || len(sub.C) != 2 {
			t.Fatalf("dropped %d, buffered %d", sub.Dropped(), len(sub.C))
		}
		<-sub.C
		if last := <-sub.C; last.Kind != swim.EventDead {
			t.Errorf("newest buffered event is %s, want dead", KindName(last.Kind))
		}
		sub.Close()
		if _, ok := <-sub.C; ok {
			t.Error("C still open after Close")
		}
	})
}

// TestLeadershipWithoutKeysNeedsInsecure: leadership or shards without packet keys
// are refused, naming Keys and the Insecure opt-out; with the opt-out the node runs,
// warns and exports omnirelay_insecure 1; with keys it exports 0. A membership-only
// node without keys is allowed, and flagged the same way.
func TestLeadershipWithoutKeysNeedsInsecure(t *testing.T) {
	voters := func(c *Config) { c.Voters, c.Voter, c.DataDir = []string{"a", "b", "c"}, true, t.TempDir() }
	for name, mod := range map[string]func(*Config){
		"voters": voters,
		"shards": func(c *Config) { voters(c); c.Shards = 8 },
	} {
		c := Config{Name: "a", Bind: "127.0.0.1:0"}
		mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Keys is empty") || !strings.Contains(err.Error(), "Insecure") {
			t.Errorf("%s without keys: %v, want a refusal naming Keys and Insecure", name, err)
		}
		c.Insecure = true
		if err := c.Validate(); err != nil {
			t.Errorf("%s with Insecure: %v", name, err)
		}
		c.Insecure, c.Keys = false, [][]byte{testKey}
		if err := c.Validate(); err != nil {
			t.Errorf("%s with keys: %v", name, err)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		for _, tc := range []struct {
			name string
			mod  func(*Config)
			want string
		}{
			{"insecure", func(c *Config) { voters(c); c.Insecure = true }, "1"},
			{"membership only", func(c *Config) {}, "1"},
			{"keyed", func(c *Config) { voters(c); c.Keys = [][]byte{testKey} }, "0"},
		} {
			logs := &syncBuffer{}
			c := memConfig(t, mn, "a", "10.0.0.1:0")
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			tc.mod(&c)
			n := startMem(t, c)
			if got := metricLine(t, n, "omnirelay_insecure "); got != "omnirelay_insecure "+tc.want {
				t.Errorf("%s: %q, want %s", tc.name, got, tc.want)
			}
			warned := strings.Contains(logs.String(), "level=WARN msg=\"running without packet keys")
			if warned != (tc.want == "1") {
				t.Errorf("%s: warned %v; logs:\n%s", tc.name, warned, logs.String())
			}
			n.Close()
		}
	})
}
