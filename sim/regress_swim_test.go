package sim

import (
	"testing"
	"time"
)

// Regression: after churn with restarts, digests never became equal (a node that
// never knew an old instance of a member does not learn its tombstone, and
// tombstones counted in the digest), so digest-sync push-pulls ran for the whole
// TombstoneTTL although every view was the live set. Seed 3 reproduced it.
func TestRegressChurnDigestsConverge(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		res, err := Run(Options{Scenario: "churn", Nodes: 12, Seed: seed, Duration: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if !res.ViewsAgree || !res.Converged {
			t.Fatalf("seed %d: views agree %v, digests converged %v", seed, res.ViewsAgree, res.Converged)
		}
	}
}
