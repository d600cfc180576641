package stack

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// A push-pull frame of another cluster label is dropped and counted on both sides
// of an exchange: no reply, no merged view, the asking side's push-pull failed.
func TestForeignStreamFramesAreDropped(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(name, addr, label string) *Stack {
		cfg := swim.LANProfile(name, addr)
		cfg.ClusterLabel = label
		h, err := New(Config{Swim: cfg}, rand.New(rand.NewPCG(1, 0)), now)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a, b := mk("a", "a:1", "prod"), mk("b", "b:1", "staging")
	b.Join(now, []string{"a:1"})
	r := b.Ready()
	b.Advance()
	if len(r.Streams) != 1 {
		t.Fatalf("join sent %d streams", len(r.Streams))
	}
	if reply := a.HandleStream(now, "b:1", r.Streams[0].Data); reply != nil {
		t.Fatal("answered a foreign push-pull")
	}
	if st := a.Swim().Stats(); st.Malformed != 1 || len(a.Swim().Members()) != 1 {
		t.Fatalf("a: stats %+v, members %v", st, a.Swim().Members())
	}

	// A foreign reply (here: a's own push-pull, stamped with a's label) fails b's
	// push-pull instead of merging.
	a.Join(now, []string{"b:1"})
	ra := a.Ready()
	a.Advance()
	if len(ra.Streams) != 1 {
		t.Fatalf("a's join sent %d streams", len(ra.Streams))
	}
	b.HandleStreamReply(now, "a:1", ra.Streams[0].Data)
	if st := b.Swim().Stats(); st.Malformed != 1 || st.PushPullsFailed != 1 || len(b.Swim().Members()) != 1 {
		t.Fatalf("b: stats %+v, members %v", st, b.Swim().Members())
	}

	// The same frames with the right label are accepted: the drop is the label's.
	c := mk("c", "c:1", "prod")
	if reply := c.HandleStream(now, "a:1", ra.Streams[0].Data); reply == nil {
		t.Fatal("same-cluster push-pull not answered")
	}
	_, _, err := wire.DecodeFrame(r.Streams[0].Data, 0, new(wire.Decoder))
	if err != nil {
		t.Fatalf("the foreign frame itself is well formed: %v", err)
	}
}
