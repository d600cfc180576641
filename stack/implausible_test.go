package stack

import (
	"math"
	"testing"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// crdt cannot import wire, so it keeps its own copy of the bound: they must agree.
func TestVersionJumpBoundsAgree(t *testing.T) {
	if crdt.MaxVersionJump != wire.MaxJump {
		t.Fatalf("crdt.MaxVersionJump %d, wire.MaxJump %d", crdt.MaxVersionJump, wire.MaxJump)
	}
	if crdt.MaxSigBytes != wire.MaxSig {
		t.Fatalf("crdt.MaxSigBytes %d, wire.MaxSig %d", crdt.MaxSigBytes, wire.MaxSig)
	}
}

// A forged metadata delta at epoch 2^64-1 is dropped and counted as implausible.
func TestMetaImplausibleVersionIsCounted(t *testing.T) {
	c := newCluster(t, 1, nil)
	h := c.h(0)
	v := crdt.Version{Epoch: math.MaxUint64, Counter: 1}
	d := crdt.Delta{Node: "x", Since: crdt.Version{Epoch: v.Epoch}, Have: v, Floor: crdt.Version{Epoch: v.Epoch},
		Entries: []crdt.Entry{{Key: "zone", Value: []byte("evil"), Version: v}}}
	h.receiveMeta(c.now, swim.Payload{From: "10.0.0.9:1", Data: crdt.AppendDelta(nil, d)})
	if st := h.MetaStats(); st.Rejected != 1 || st.Implausible != 1 {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := h.Meta().MapDigest("x"); ok {
		t.Fatal("the forged map was kept")
	}
}
