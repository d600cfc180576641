package crdt

import (
	"errors"
	"math"
	"testing"
)

// forged is a one-key delta of map node at version v, as a forger would write it.
func forged(node string, v Version, value string) Delta {
	return Delta{Node: node, Since: Version{Epoch: v.Epoch}, Have: v, Floor: Version{Epoch: v.Epoch},
		Entries: []Entry{{Key: "zone", Value: []byte(value), Version: v}}}
}

// One forged delta of b's map at epoch 2^64-1 froze b's metadata everywhere: its
// refutation had no epoch left (ErrVersionExhausted), so the forged value stood
// over every later write of b. The jump is refused; b's own writes go on winning.
func TestForgedEpochCannotFreezeANodeMap(t *testing.T) {
	a, b := newTestStore(t, "a"), newTestStore(t, "b")
	apply(t, a, must[Delta](t)(b.Set("zone", []byte("eu-1"))))
	evil := forged("b", Version{Epoch: math.MaxUint64, Counter: 1}, "evil")
	if _, err := a.Apply(evil); !errors.Is(err, ErrImplausible) {
		t.Errorf("a took b's map at epoch 2^64-1: %v", err)
	}
	if _, err := b.Apply(evil); !errors.Is(err, ErrImplausible) {
		t.Errorf("b took a claim about its own map at epoch 2^64-1: %v", err)
	}
	apply(t, a, must[Delta](t)(b.Set("zone", []byte("eu-2"))))
	if v, _ := a.Get("b", "zone"); string(v) != "eu-2" {
		t.Fatalf("a sees b.zone = %q after b wrote eu-2", v)
	}
	checkInvariants(t, a)
	if _, ok := a.MapDigest("x"); ok {
		t.Fatal("a refused delta created a map")
	}
	if _, err := a.Apply(forged("x", Version{Epoch: MaxVersionJump + 1}, "v")); !errors.Is(err, ErrImplausible) {
		t.Fatalf("unknown map x at epoch 2^32+1: %v", err)
	}
	if _, ok := a.MapDigest("x"); ok {
		t.Fatal("a refused delta of an unknown map left the map behind")
	}
}

// One forged cluster delta at lease epoch 2^64-1 fenced every later leader out of
// the cluster map (ErrFenced). The jump is refused and the leader writes on.
func TestForgedEpochCannotFenceTheClusterMap(t *testing.T) {
	a := newTestStore(t, "a")
	must[Delta](t)(a.SetCluster(3, "k", []byte("v")))
	if _, err := a.Apply(forged(Cluster, Version{Epoch: math.MaxUint64, Counter: 1}, "evil")); !errors.Is(err, ErrImplausible) {
		t.Errorf("cluster map at epoch 2^64-1: %v", err)
	}
	if _, err := a.SetCluster(4, "k", []byte("v2")); err != nil {
		t.Fatalf("the leader of epoch 4 cannot write: %v", err)
	}
}

func TestVersionJumpBound(t *testing.T) {
	const j = MaxVersionJump
	for _, tc := range []struct {
		v, known Version
		want     bool
	}{
		{Version{5, 3}, Version{5, 9}, true},
		{Version{4, math.MaxUint64}, Version{5, 0}, true}, // older epochs are the merge's to judge
		{Version{5, 9 + j}, Version{5, 9}, true},
		{Version{5, 10 + j}, Version{5, 9}, false},
		{Version{5 + j, j}, Version{5, 9}, true},
		{Version{6 + j, 1}, Version{5, 9}, false},
		{Version{6, j + 1}, Version{5, 9}, false}, // a new epoch counts from 1
		{Version{math.MaxUint64, 0}, Version{}, false},
	} {
		if got := tc.v.plausibleFrom(tc.known); got != tc.want {
			t.Errorf("%v from %v: %v, want %v", tc.v, tc.known, got, tc.want)
		}
	}
}
