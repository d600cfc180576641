package stack

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/swim"
)

// Two hosts join through a stream frame exchange and then keep each other alive
// over packets; everything crosses the real codec.
func TestTwoHostsJoinAndProbe(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(name, addr string, seed uint64) *Stack {
		h, err := New(Config{Swim: swim.LANProfile(name, addr)}, rand.New(rand.NewPCG(seed, 0)), now)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	hosts := map[string]*Stack{"a:1": mk("a", "a:1", 1), "b:1": mk("b", "b:1", 2)}
	hosts["b:1"].Join(now, []string{"a:1"})
	var events []swim.Event
	for range 2000 {
		for _, addr := range []string{"a:1", "b:1"} {
			h := hosts[addr]
			r := h.Ready()
			h.Advance()
			events = append(events, r.Events...)
			for _, s := range r.Streams {
				reply := hosts[s.To].HandleStream(now, addr, "", s.Data)
				if reply == nil {
					t.Fatal("no stream reply")
				}
				h.StreamReply(now, s.ID, reply)
			}
			for _, p := range r.Packets {
				hosts[p.To].HandlePacket(now, addr, p.Data)
			}
		}
		next := hosts["a:1"].NextDeadline()
		if d := hosts["b:1"].NextDeadline(); d.Before(next) {
			next = d
		}
		now = next
		for _, h := range hosts {
			if !h.NextDeadline().After(now) {
				h.Tick(now)
			}
		}
	}
	for addr, h := range hosts {
		ms := h.Swim().Members()
		if len(ms) != 2 || ms[0].Status != swim.StatusAlive || ms[1].Status != swim.StatusAlive {
			t.Fatalf("%s sees %v", addr, ms)
		}
		if st := h.Swim().Stats(); st.ProbesSent == 0 || st.ProbesFailed != 0 || st.Malformed != 0 {
			t.Fatalf("%s stats %+v", addr, st)
		}
	}
	if len(events) != 2 {
		t.Fatalf("events %v, want one join on each side", events)
	}
}

func TestMalformedStreamFramesAreCounted(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h, err := New(Config{Swim: swim.LANProfile("a", "a:1")}, rand.New(rand.NewPCG(1, 0)), now)
	if err != nil {
		t.Fatal(err)
	}
	if reply := h.HandleStream(now, "x:1", "", []byte{0, 0, 0, 9, 1, 2}); reply != nil {
		t.Fatal("replied to garbage")
	}
	h.Join(now, []string{"x:1"})
	h.StreamReply(now, h.Ready().Streams[0].ID, []byte("junk"))
	st := h.Swim().Stats()
	if st.Malformed != 2 || st.PushPullsFailed != 1 {
		t.Fatalf("stats %+v", st)
	}
}
