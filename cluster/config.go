package cluster

import (
	"fmt"
	"slices"
	"time"
)

// Config is one cluster's view of the federation. Every cluster must list the
// same Clusters in the same order: a cluster's index there is the residue of its
// failover versions.
type Config struct {
	// Self is this cluster's id; it must be in Clusters.
	Self string
	// Region is where Self runs (reported, not interpreted).
	Region string
	// Clusters are the ids of every cluster of the federation, in a fixed order
	// shared by all of them. Append only: reordering gives two clusters the
	// same versions. At most MaxClusters.
	Clusters []string
	// Peers are the other voters of Self's lease (this node excluded). A new
	// lease holder reads the descriptors from a majority of the voters before it
	// writes, and a write counts (Serving) once a majority holds it, so every
	// holder starts from the last write that counted. Empty: a one-voter cluster.
	Peers []string
	// Priority of Self in an unplanned failover: the live passive cluster with the
	// lowest priority (then the lowest index) promotes first, the others wait
	// Stagger more per better one.
	Priority int
	// Initial is Self's state before any holder has written: exactly one cluster
	// of the federation should start Active, the others Passive. A second one
	// configured Active loses to the one with the higher version as soon as they
	// hear of each other.
	Initial State
	// PromoteAfter is how long the active cluster must have been silent (no record
	// from it received by this cluster's holder) before a passive cluster
	// promotes itself. Raising it rides out longer WAN outages without a failover
	// (and without two clusters serving with different versions during a
	// partition); lowering it shortens failover_ms. Default 5 s: many WAN
	// gossip intervals, well under the 30 s requirement.
	PromoteAfter time.Duration
	// Stagger is added to PromoteAfter for each live passive cluster of better
	// priority, so that with three or more clusters the first in line usually
	// promotes alone. Default 2 s (≫ WAN round trip).
	Stagger time.Duration
}

// MaxClusters bounds Config.Clusters and therefore every batch of descriptors
// accepted from a peer.
const MaxClusters = 64

// DefaultConfig is a config for self among clusters with the default timing.
func DefaultConfig(self string, clusters []string, initial State) Config {
	return Config{
		Self: self, Clusters: slices.Clone(clusters), Initial: initial,
		PromoteAfter: 5 * time.Second,
		Stagger:      2 * time.Second,
	}
}

// Validate names the first bad field; it has no side effects.
func (c Config) Validate() error {
	bad := func(field, why string, a ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, fmt.Sprintf(why, a...))
	}
	switch {
	case c.Self == "":
		return bad("Self", "is empty")
	case len(c.Clusters) == 0 || len(c.Clusters) > MaxClusters:
		return bad("Clusters", "has %d ids, want 1 to %d", len(c.Clusters), MaxClusters)
	case !slices.Contains(c.Clusters, c.Self):
		return bad("Self", "%q is not in Clusters %v", c.Self, c.Clusters)
	case c.Initial != Active && c.Initial != Passive:
		return bad("Initial", "is %v, want active or passive", c.Initial)
	case c.PromoteAfter <= 0:
		return bad("PromoteAfter", "must be positive")
	case c.Stagger < 0:
		return bad("Stagger", "must not be negative")
	}
	for i, p := range c.Peers {
		if p == "" || slices.Contains(c.Peers[:i], p) {
			return bad("Peers", "has an empty or repeated name %q", p)
		}
	}
	seen := map[string]bool{}
	for _, id := range c.Clusters {
		if id == "" || seen[id] {
			return bad("Clusters", "has an empty or repeated id %q", id)
		}
		seen[id] = true
	}
	return nil
}
