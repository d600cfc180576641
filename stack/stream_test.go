package stack

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// A push-pull frame of another cluster label is dropped and counted as foreign (as
// its packets are) on both sides of an exchange: no reply, no merged view, the
// asking side's push-pull failed.
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
	if reply := a.HandleStream(now, "b:1", "", r.Streams[0].Data); reply != nil {
		t.Fatal("answered a foreign push-pull")
	}
	if st := a.Swim().Stats(); st.ForeignPackets != 1 || st.Malformed != 0 || len(a.Swim().Members()) != 1 {
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
	b.StreamReply(now, r.Streams[0].ID, ra.Streams[0].Data)
	if st := b.Swim().Stats(); st.ForeignPackets != 1 || st.Malformed != 0 || st.PushPullsFailed != 1 || len(b.Swim().Members()) != 1 {
		t.Fatalf("b: stats %+v, members %v", st, b.Swim().Members())
	}

	// The same frames with the right label are accepted: the drop is the label's.
	c := mk("c", "c:1", "prod")
	if reply := c.HandleStream(now, "a:1", "", ra.Streams[0].Data); reply == nil {
		t.Fatal("same-cluster push-pull not answered")
	}
	_, _, err := wire.DecodeFrame(r.Streams[0].Data, 0, new(wire.Decoder))
	if err != nil {
		t.Fatalf("the foreign frame itself is well formed: %v", err)
	}
}

// Streams are told apart by id, not by peer: with a push-pull and a shard stream
// open to the same peer, the push-pull's failure fails the push-pull (swim counts
// it) and leaves the shard stream open, and the shard stream's failure is not
// charged to swim.
func TestStreamFailureChargedToItsOwnStream(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lc := lease.DefaultConfig("a", []string{"a"})
	sc := testShardConfig()
	h, err := New(Config{Swim: swim.LANProfile("a", "a:1"), Lease: &lc, LeaseStorage: &lease.MemoryStorage{}, Shard: &sc},
		rand.New(rand.NewPCG(1, 1)), now)
	if err != nil {
		t.Fatal(err)
	}
	h.stream("b:1", []byte("a shard frame"), true)
	h.Join(now, []string{"b:1"})
	var shardID, ppID uint64
	for _, s := range h.Ready().Streams {
		if h.streams[s.ID].shard {
			shardID = s.ID
		} else {
			ppID = s.ID
		}
	}
	if shardID == 0 || ppID == 0 {
		t.Fatalf("streams %+v: want a shard stream and a push-pull", h.Ready().Streams)
	}
	h.Advance()
	h.StreamFailed(now, ppID)
	if got := h.Swim().Stats().PushPullsFailed; got != 1 {
		t.Fatalf("PushPullsFailed = %d after the push-pull failed, want 1", got)
	}
	if _, open := h.streams[shardID]; !open {
		t.Fatal("the push-pull's failure closed the shard stream")
	}
	h.StreamFailed(now, shardID)
	if got := h.Swim().Stats().PushPullsFailed; got != 1 {
		t.Fatalf("PushPullsFailed = %d after the shard stream failed, want still 1", got)
	}
	if len(h.streams) != 0 {
		t.Fatalf("streams still open: %v", h.streams)
	}
}

// A frame of a known type that streams do not carry (a Ping) is not answered and is
// counted as malformed, as a request and as a reply (PROTOCOL.md section 5).
func TestNonPushPullFramesAreCounted(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h, err := New(Config{Swim: swim.LANProfile("a", "a:1")}, rand.New(rand.NewPCG(1, 0)), now)
	if err != nil {
		t.Fatal(err)
	}
	ping, err := wire.EncodeFrame(&wire.Ping{Seq: 1, Target: "a", Source: "x", SourceAddr: "10.0.0.9:1"}, wire.ClusterHash(""))
	if err != nil {
		t.Fatal(err)
	}
	if reply := h.HandleStream(now, "10.0.0.9:1", "", ping); reply != nil {
		t.Fatal("answered a Ping frame")
	}
	h.Join(now, []string{"10.0.0.9:1"})
	h.StreamReply(now, h.Ready().Streams[0].ID, ping)
	if st := h.Swim().Stats(); st.Malformed != 2 || st.PushPullsFailed != 1 {
		t.Fatalf("stats %+v, want 2 malformed and the push-pull failed", st)
	}
}
