package rendezvous

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func without(list []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == name })
}

// Removing a node changes only the shards it owned: there, the survivors keep their
// order and the next-ranked node fills the last slot. A primary moves only off the
// removed node.
func TestLeaveMovesOnlyTheLeaversShards(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 2, 12)
		shards := rapid.IntRange(1, 64).Draw(t, "shards")
		r := rapid.IntRange(1, len(nodes)-1).Draw(t, "replicas")
		gone := rapid.IntRange(0, len(nodes)-1).Draw(t, "leaver")
		left := slices.Delete(slices.Clone(nodes), gone, gone+1)
		name := nodes[gone].Name
		before, after := mustBuild(t, nodes, shards, r), mustBuild(t, left, shards, r)
		for s := range uint32(shards) {
			o, n := before.Owners(s), after.Owners(s)
			if !slices.Contains(o, name) {
				if !slices.Equal(o, n) {
					t.Fatalf("shard %d without %s changed: %v -> %v", s, name, o, n)
				}
				continue
			}
			if !slices.Equal(n[:r-1], without(o, name)) || slices.Contains(o, n[r-1]) {
				t.Fatalf("shard %d: %v -> %v after %s left", s, o, n, name)
			}
			if o[0] != n[0] && o[0] != name {
				t.Fatalf("shard %d: primary %s moved though %s left", s, o[0], name)
			}
		}
	})
}

// Adding a node changes only the shards it enters: it takes some slot, the others
// keep their order, and the last one drops off.
func TestJoinMovesShardsOnlyToTheJoiner(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 1, 12)
		shards := rapid.IntRange(1, 64).Draw(t, "shards")
		r := rapid.IntRange(1, len(nodes)).Draw(t, "replicas")
		joiner := Node{Name: "joiner", Weight: rapid.Float64Range(0.05, 20).Draw(t, "weight")}
		before := mustBuild(t, nodes, shards, r)
		after := mustBuild(t, append(slices.Clone(nodes), joiner), shards, r)
		for s := range uint32(shards) {
			o, n := before.Owners(s), after.Owners(s)
			if !slices.Contains(n, joiner.Name) {
				if !slices.Equal(o, n) {
					t.Fatalf("shard %d changed without the joiner: %v -> %v", s, o, n)
				}
				continue
			}
			if !slices.Equal(without(n, joiner.Name), o[:r-1]) {
				t.Fatalf("shard %d: %v -> %v on join", s, o, n)
			}
		}
	})
}

func TestDiffReportsExactlyTheChangedShards(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genNodes(t, 1, 10)
		b := genNodes(t, 1, 10)
		shards := rapid.IntRange(1, 64).Draw(t, "shards")
		ta := mustBuild(t, a, shards, rapid.IntRange(1, len(a)).Draw(t, "ra"))
		tb := mustBuild(t, b, shards, rapid.IntRange(1, len(b)).Draw(t, "rb"))
		d, err := DiffTables(ta, tb)
		if err != nil {
			t.Fatal(err)
		}
		var moved []Move
		primaries, added := 0, 0
		for s := range uint32(shards) {
			o, n := ta.Owners(s), tb.Owners(s)
			if slices.Equal(o, n) {
				continue
			}
			moved = append(moved, Move{Shard: s, Old: o, New: n})
			if o[0] != n[0] {
				primaries++
			}
			for _, x := range n {
				if !slices.Contains(o, x) {
					added++
				}
			}
		}
		if !slices.EqualFunc(d.Moved, moved, func(x, y Move) bool {
			return x.Shard == y.Shard && slices.Equal(x.Old, y.Old) && slices.Equal(x.New, y.New)
		}) {
			t.Fatalf("Moved = %v, want %v", d.Moved, moved)
		}
		if d.PrimaryMoves != primaries || d.MovedFraction != float64(primaries)/float64(shards) {
			t.Fatalf("primary moves %d (%v), want %d", d.PrimaryMoves, d.MovedFraction, primaries)
		}
		if d.OwnersAdded != added || d.OwnerMovedFraction != float64(added)/float64(shards*tb.Replicas()) {
			t.Fatalf("owners added %d (%v), want %d", d.OwnersAdded, d.OwnerMovedFraction, added)
		}
	})
	x := mustBuild(t, equalNodes(3, "n"), 10, 1)
	y := mustBuild(t, equalNodes(3, "n"), 11, 1)
	if _, err := DiffTables(x, y); !errors.Is(err, ErrShardCountMismatch) {
		t.Fatalf("err %v, want ErrShardCountMismatch", err)
	}
}

// reshard holds the moved fractions of one-node reshards of an equal-weight
// cluster: primaries and owners (DiffTables' two fractions), per leave and per join.
type reshard struct {
	leavePrim, leaveOwn, joinPrim, joinOwn []float64
}

// measureReshards removes each of leavers from an n-node cluster, and separately adds
// joiners new nodes, one at a time, diffing each result against the original.
func measureReshards(t *testing.T, n, shards, r int, leavers []int, joiners int) reshard {
	nodes := equalNodes(n, "node")
	base := mustBuild(t, nodes, shards, r)
	diff := func(next []Node) Diff {
		d, err := DiffTables(base, mustBuild(t, next, shards, r))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var m reshard
	for _, i := range leavers {
		d := diff(slices.Delete(slices.Clone(nodes), i, i+1))
		m.leavePrim = append(m.leavePrim, d.MovedFraction)
		m.leaveOwn = append(m.leaveOwn, d.OwnerMovedFraction)
	}
	for j := range joiners {
		d := diff(append(slices.Clone(nodes), Node{Name: fmt.Sprintf("joiner-%d", j), Weight: 1}))
		m.joinPrim = append(m.joinPrim, d.MovedFraction)
		m.joinOwn = append(m.joinOwn, d.OwnerMovedFraction)
	}
	return m
}

func meanMax(xs []float64) (mean, hi float64) {
	for _, x := range xs {
		mean += x
		hi = max(hi, x)
	}
	return mean / float64(len(xs)), hi
}

// check logs the measured fractions and fails if any exceeds 1/n + 2%.
func (m reshard) check(t *testing.T, n, shards, r int) {
	t.Helper()
	limit := 1/float64(n) + 0.02
	for _, c := range []struct {
		what string
		xs   []float64
	}{{"leave primaries", m.leavePrim}, {"leave owners", m.leaveOwn}, {"join primaries", m.joinPrim}, {"join owners", m.joinOwn}} {
		mean, hi := meanMax(c.xs)
		t.Logf("n=%d S=%d R=%d %-15s over %3d reshards: mean %.5f max %.5f (1/n = %.5f)", n, shards, r, c.what, len(c.xs), mean, hi, 1/float64(n))
		if hi > limit {
			t.Errorf("n=%d S=%d R=%d %s: max moved fraction %.4f above 1/n+2%% = %.4f", n, shards, r, c.what, hi, limit)
		}
	}
}

// The target: an unforced reshard moves at most 1/n + 2% of shards when one
// of n nodes joins or leaves (n ≥ 10, S ≥ 1000). The expectation is 1/n for a leave
// and 1/(n+1) for a join; the 2% covers sampling noise, whose standard deviation is
// sqrt(p(1-p)/S), under 1% at S = 1000. Names are fixed, so this cannot flake.
func TestJoinLeaveMovesAboutOneNth(t *testing.T) {
	cases := []struct{ n, shards, r, joiners int }{
		{10, 1000, 1, 10},
		{10, 1000, 3, 10},
		{10, 10000, 3, 5},
		{25, 1000, 3, 5},
		{50, 2000, 3, 3},
	}
	for _, c := range cases {
		every := make([]int, c.n)
		for i := range every {
			every[i] = i
		}
		m := measureReshards(t, c.n, c.shards, c.r, every, c.joiners)
		m.check(t, c.n, c.shards, c.r)
		// Over every possible leaver the mean primary moved fraction is exactly
		// 1/n: each shard's primary leaves in exactly one of the n reshards, and
		// only then does the shard's primary move.
		if mean, _ := meanMax(m.leavePrim); math.Abs(mean-1/float64(c.n)) > 1e-12 {
			t.Errorf("n=%d: mean primary moved over all leavers %.6f, want 1/n", c.n, mean)
		}
	}
}

func heavy() bool { return os.Getenv("OMNIRELAY_HEAVY") == "1" }

// The heavy version: 1,000 nodes, 10,000 shards, a sample of leavers and joiners.
func TestJoinLeaveMovesAboutOneNthHeavy(t *testing.T) {
	if !heavy() {
		t.Skip("set OMNIRELAY_HEAVY=1 to run (1,000 nodes × 10,000 shards, ~20 builds)")
	}
	const n, shards, r = 1000, 10000, 3
	m := measureReshards(t, n, shards, r, []int{0, 3, 42, 99, 250, 500, 640, 777, 998, 999}, 10)
	m.check(t, n, shards, r)
}

// Raising one node's weight moves shards only to it, and lowering it only away
// from it: the other nodes' scores, hence their relative order, are unchanged.
func TestWeightChangeMovesOnlyThatNodesShards(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 2, 12)
		shards := rapid.IntRange(1, 64).Draw(t, "shards")
		r := rapid.IntRange(1, len(nodes)).Draw(t, "replicas")
		i := rapid.IntRange(0, len(nodes)-1).Draw(t, "node")
		factor := rapid.Float64Range(1.01, 10).Draw(t, "factor")
		name := nodes[i].Name
		if nodes[i].Weight*factor > MaxWeight {
			t.Skip("weight would leave the allowed range")
		}
		heavier := slices.Clone(nodes)
		heavier[i].Weight *= factor
		low, high := mustBuild(t, nodes, shards, r), mustBuild(t, heavier, shards, r)
		for s := range uint32(shards) {
			o, n := low.Owners(s), high.Owners(s)
			if o[0] != n[0] && n[0] != name {
				t.Fatalf("shard %d: primary %s -> %s though only %s got heavier", s, o[0], n[0], name)
			}
			if slices.Contains(o, name) && !slices.Contains(n, name) {
				t.Fatalf("shard %d: %s dropped from %v -> %v when heavier", s, name, o, n)
			}
			rest := without(n, name)
			if !slices.Equal(rest, without(o, name)[:len(rest)]) {
				t.Fatalf("shard %d: others reordered %v -> %v", s, o, n)
			}
		}
	})
}

// A node of weight 2 is primary of about twice the shards of a node of weight 1:
// node i wins with probability w_i / Σw. Every node's count must lie within 4.5
// standard deviations of its binomial expectation, and the weight-2 group's total
// within 0.1 of twice the weight-1 group's (about 3.7 standard deviations). Fixed names and weights: deterministic.
func TestPrimariesFollowWeights(t *testing.T) {
	const shards = 30000
	var nodes []Node
	for i := range 10 {
		nodes = append(nodes, Node{Name: fmt.Sprintf("light-%d", i), Weight: 1})
		nodes = append(nodes, Node{Name: fmt.Sprintf("heavy-%d", i), Weight: 2})
	}
	nodes = append(nodes, Node{Name: "big", Weight: 7.5}, Node{Name: "tiny", Weight: 0.25})
	total := 0.0
	for _, n := range nodes {
		total += n.Weight
	}
	counts := mustBuild(t, nodes, shards, 3).PrimaryCounts()
	light, heavy := 0, 0
	for _, n := range nodes {
		p := n.Weight / total
		want := p * shards
		sd := math.Sqrt(shards * p * (1 - p))
		got := counts[n.Name]
		if math.Abs(float64(got)-want) > 4.5*sd {
			t.Errorf("%s (weight %v): %d primaries, want %.0f ± %.0f", n.Name, n.Weight, got, want, 4.5*sd)
		}
		switch n.Weight {
		case 1:
			light += got
		case 2:
			heavy += got
		}
	}
	ratio := float64(heavy) / float64(light)
	t.Logf("weight-2 group / weight-1 group = %d / %d = %.3f", heavy, light, ratio)
	if math.Abs(ratio-2) > 0.1 {
		t.Errorf("weight-2 nodes own %.3f× the shards of weight-1 nodes, want 2 ± 0.1", ratio)
	}
}
