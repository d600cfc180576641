package shard

import (
	"github.com/omnirelay/mesh/lease"

	"errors"
	"strings"
	"testing"
	"time"
)

// A new leader waits out the longest hold any previous leader's grant can have.
func TestFailoverWaitCoversEveryEarlierGrant(t *testing.T) {
	for _, c := range []struct {
		d     time.Duration
		drift float64
	}{{3 * time.Second, 0.01}, {time.Second, 0.1}, {3, 0.5}, {10 * time.Second, 0.25}} {
		if got, hold := FailoverWait(c.d, c.drift), lease.VoterHold(c.d, c.drift); got != hold {
			t.Errorf("FailoverWait(%v, %v) = %v, want the longest hold %v", c.d, c.drift, got, hold)
		}
		if shortest, _ := lease.RealSpan(FailoverWait(c.d, c.drift), c.drift); shortest < c.d-1 { // 1 ns of float rounding, as in lease's own tests
			t.Errorf("FailoverWait(%v, %v) may end %v of real time after the term began, before a grant of %v lapses", c.d, c.drift, shortest, c.d)
		}
	}
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
		"RetryInterval":    func(c *Config) { c.RetryInterval = 2 * time.Second },
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
