package shard

import (
	"github.com/omnirelay/mesh/lease"

	"errors"
	"fmt"
	"time"

	"github.com/omnirelay/mesh/rendezvous"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns; the message
// names the offending field.
var ErrInvalidConfig = errors.New("shard: invalid config")

// Config configures a Controller and an Owner. Build one with DefaultConfig and
// adjust; zero values are not defaults. Every node of a cluster must run with the
// same Shards, Replicas, LeaseDuration and MaxDrift: the safety argument
// (docs/shards.md) compares an owner's deadline with the leader's hold, both
// computed from these values.
type Config struct {
	// Shards is the shard count S, fixed for the cluster's lifetime (keys map to
	// shard xxhash64(key) mod S, rendezvous package doc). Default 1024. Raising it
	// evens out load (each node's share of shards concentrates around its weight
	// share) and makes each move smaller, at the cost of larger maps (a few bytes
	// per shard) and a leader scan per tick linear in S.
	Shards int
	// Replicas is the number of owners per shard in the published placement
	// (primary first). Only the primary holds an ownership lease and serves; the
	// others are where replicas of the shard's data belong. Default 1. Capped at the
	// number of eligible nodes when the table is built.
	Replicas int
	// LeaseDuration is the length d of an ownership lease, measured from the
	// moment the owner SENT the renewal that earned it. Default 3 s. A dead owner's
	// shards are served elsewhere about d*(1+MaxDrift) after its death is known
	// (docs/shards.md), and a new leader waits as long before handing out shards
	// that nobody re-confirmed, so raising it slows recovery; lowering it makes a
	// healthy owner lose its shards after shorter network stalls.
	LeaseDuration time.Duration
	// RenewInterval is the time between two renewals by an owner (one message per
	// node, whatever its shard count). Default 1 s: an owner survives about
	// LeaseDuration*(1-MaxDrift)/RenewInterval - 1 ≈ 2 lost renewals. Must be below
	// lease.HolderValidity(LeaseDuration). Lowering it costs one message per node per
	// interval at the leader.
	RenewInterval time.Duration
	// RetryInterval is how soon an owner renews again when its last renewal got
	// no Grant, instead of waiting RenewInterval, and how soon it asks again for a
	// map it asked for and did not receive. Default 50 ms: one gossip interval of
	// the LAN profile and tens of LAN round trips, so a healthy leader's answer
	// beats it. A member cut off while the map changed learns the new version
	// from the Grant to its first renewal after the heal, so it holds the new map
	// within RetryInterval plus two round trips (renewal, map); with RenewInterval
	// alone that took up to a second. Retries happen only while unanswered: a
	// cut-off owner sends 1/RetryInterval = 20 small messages a second into the
	// void, a healthy one none; but a leader that stalls longer than RetryInterval
	// receives up to RenewInterval/RetryInterval = 20 times the usual renewal
	// rate until it answers, so raise it for clusters of thousands of nodes or
	// round trips near it (WAN). Lowering it speeds catching up after a partition
	// at that message cost; RenewInterval turns retries off. Must be in
	// (0, RenewInterval].
	RetryInterval time.Duration
	// MaxDrift is the bound ρ on how fast or slow any node's clock runs relative to
	// real time (0.01 = ±1 %). Default 0.01, 100 times what quartz clocks drift.
	// Raising it shortens the owner's usable lease (d*(1-ρ)) and lengthens the
	// leader's hold (d*(1+ρ)); if real drift exceeds it two owners can overlap.
	// Must be in [0, 0.5).
	MaxDrift float64
	// Margin is subtracted from the owner's deadline on its own clock, so it stops
	// serving that much earlier than the drift bound alone requires: it covers the
	// time between checking Serving and the work taking effect. Default 100 ms.
	Margin time.Duration
	// MaxMoves is K, the most shards that move at once away from owners that are
	// alive (joins, weight changes, operator drains): each move hands a shard's
	// work to a node that may have to warm up. Shards of suspect, dead or departed
	// owners are not served anyway and are reassigned without waiting for a slot.
	// Default 16. Raising it rebalances faster and loads new owners harder.
	MaxMoves int
	// AnnounceInterval is how often the leader repeats its map version and
	// checksum to every member, on top of announcing each change at once, so a
	// member that missed an announcement (or a new leader) catches up. Default 2 s.
	// Lowering it costs one message per member per interval.
	AnnounceInterval time.Duration
}

// DefaultConfig returns the default timing for a LAN cluster (see each field).
func DefaultConfig() Config {
	return Config{
		Shards:           1024,                   // ~100 per node at 10 nodes
		Replicas:         1,                      // primary only
		LeaseDuration:    3 * time.Second,        // same as the leader lease
		RenewInterval:    time.Second,            // ~2 spare renewals per lease
		RetryInterval:    50 * time.Millisecond,  // the LAN gossip interval
		MaxDrift:         0.01,                   // 100x what real clocks drift
		Margin:           100 * time.Millisecond, // owner stops >= 100 ms early
		MaxMoves:         16,                     // bounded warm-up load
		AnnounceInterval: 2 * time.Second,        // repair lost announcements
	}
}

// Validate reports the first invalid field; it has no side effects.
func (c Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, why) }
	switch {
	case c.Shards < 1 || c.Shards > rendezvous.MaxShards:
		return bad("Shards", fmt.Sprintf("must be in [1, %d]", rendezvous.MaxShards))
	case c.Replicas < 1:
		return bad("Replicas", "must be at least 1")
	case c.Shards*c.Replicas > rendezvous.MaxOwnerEntries:
		return bad("Replicas", "makes Shards*Replicas exceed rendezvous.MaxOwnerEntries")
	case c.LeaseDuration <= 0:
		return bad("LeaseDuration", "must be positive")
	case !(c.MaxDrift >= 0 && c.MaxDrift < 0.5):
		return bad("MaxDrift", "must be in [0, 0.5)")
	case c.Margin < 0:
		return bad("Margin", "must not be negative")
	case lease.HolderValidity(c.LeaseDuration, c.MaxDrift, c.Margin) <= 0:
		return bad("Margin", "leaves no valid lease: LeaseDuration*(1-MaxDrift)-Margin <= 0")
	case c.RenewInterval <= 0:
		return bad("RenewInterval", "must be positive")
	case c.RenewInterval >= lease.HolderValidity(c.LeaseDuration, c.MaxDrift, c.Margin):
		return bad("RenewInterval", "must be below LeaseDuration*(1-MaxDrift)-Margin")
	case c.RetryInterval <= 0 || c.RetryInterval > c.RenewInterval:
		return bad("RetryInterval", "must be in (0, RenewInterval]")
	case c.MaxMoves < 1:
		return bad("MaxMoves", "must be at least 1")
	case c.AnnounceInterval <= 0:
		return bad("AnnounceInterval", "must be positive")
	}
	return nil
}

// promptGap is the usual shortest time between two renewals of one owner:
// renewals triggered by events (a new leader, a release request) wait at least
// this long after the previous one, so a burst of them costs one message, not
// one per event. Owner.promptAt names the bounded exceptions.
func (c Config) promptGap() time.Duration { return c.RenewInterval / 16 }

// holdMax is the longest the leader keeps a renewal unanswered while a shard
// on its way to that owner waits for its current owner's release (Controller,
// "held renewals"): below RetryInterval, so the owner never renews again for
// want of an answer, and a small part of any lease.
func (c Config) holdMax() time.Duration { return c.RetryInterval / 2 }
