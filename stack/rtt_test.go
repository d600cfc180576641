package stack

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/swim"
)

// Round-trip samples come from the stack (swim knows when each probe left): with
// every datagram taking 1 ms each way, each direct probe's sample is 2 ms and names
// the member probed. node no longer re-decodes packets to time them.
func TestRTTSamplesFromProbes(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hosts := map[string]*Stack{}
	for i, name := range []string{"a", "b"} {
		h, err := New(Config{Swim: swim.LANProfile(name, name+":1")}, rand.New(rand.NewPCG(uint64(i+1), 3)), now)
		if err != nil {
			t.Fatal(err)
		}
		hosts[name+":1"] = h
	}
	hosts["b:1"].Join(now, []string{"a:1"})
	type flight struct {
		at       time.Time
		from, to string
		data     []byte
	}
	var inflight []flight
	var rtts []swim.RTT
	for now.Before(time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)) {
		for _, addr := range []string{"a:1", "b:1"} {
			h := hosts[addr]
			r := h.Ready()
			h.Advance()
			rtts = append(rtts, r.RTTs...)
			for _, s := range r.Streams {
				h.StreamReply(now, s.ID, hosts[s.To].HandleStream(now, addr, "", s.Data))
			}
			for _, p := range r.Packets {
				inflight = append(inflight, flight{now.Add(time.Millisecond), addr, p.To, p.Data})
			}
		}
		next := hosts["a:1"].NextDeadline()
		if d := hosts["b:1"].NextDeadline(); d.Before(next) {
			next = d
		}
		for _, f := range inflight {
			if f.at.Before(next) {
				next = f.at
			}
		}
		now = next
		var later []flight
		for _, f := range inflight {
			if f.at.After(now) {
				later = append(later, f)
			} else {
				hosts[f.to].HandlePacket(now, f.from, f.data)
			}
		}
		inflight = later
		for _, h := range hosts {
			if !h.NextDeadline().After(now) {
				h.Tick(now)
			}
		}
	}
	if len(rtts) < 10 {
		t.Fatalf("%d RTT samples in 10 s of probing", len(rtts))
	}
	for _, r := range rtts {
		if r.Sample != 2*time.Millisecond || (r.Member != "a" && r.Member != "b") {
			t.Fatalf("sample %+v, want 2ms to a or b", r)
		}
	}
}
