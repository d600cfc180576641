package node

import (
	"net/netip"
	"testing"

	"github.com/omnirelay/mesh/swim"
	"pgregory.net/rapid"
)

// TestLivePeersMatchTheView: after any sequence of events, the incrementally kept
// set answers as one rebuilt from each member's last event (the view): a few names
// on a few addresses, so members share IPs and, at times, one address.
func TestLivePeersMatchTheView(t *testing.T) {
	names := []string{"self", "a", "b", "c", "d"}
	addrs := []string{"10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1", "[::ffff:10.0.0.2]:2", "no-port"}
	statuses := []swim.Status{swim.StatusAlive, swim.StatusSuspect, swim.StatusDead, swim.StatusLeft}
	kinds := []swim.EventKind{swim.EventJoin, swim.EventUpdate, swim.EventSuspect, swim.EventAlive, swim.EventDead, swim.EventLeft, EventMeta}
	rapid.Check(t, func(t *rapid.T) {
		p := newLivePeers("self")
		view := map[string]Member{}
		for range rapid.IntRange(0, 40).Draw(t, "batches") {
			var evs []swim.Event
			for range rapid.IntRange(1, 4).Draw(t, "events") {
				m := Member{Name: rapid.SampledFrom(names).Draw(t, "name"), Addr: rapid.SampledFrom(addrs).Draw(t, "addr"),
					Status: rapid.SampledFrom(statuses).Draw(t, "status")}
				k := rapid.SampledFrom(kinds).Draw(t, "kind")
				evs = append(evs, swim.Event{Kind: k, Member: m})
				if k != EventMeta {
					view[m.Name] = m
				}
			}
			p.apply(evs)
			checkLivePeers(t, p, view, names, addrs)
		}
	})
}

func checkLivePeers(t *rapid.T, p *livePeers, view map[string]Member, names, addrs []string) {
	live := func(m Member) bool {
		return m.Name != "" && m.Name != "self" && (m.Status == swim.StatusAlive || m.Status == swim.StatusSuspect)
	}
	for _, name := range names {
		if got, want := p.has(name), live(view[name]); got != want {
			t.Fatalf("has(%s) = %v, want %v (view %v)", name, got, want, view)
		}
	}
	for _, addr := range addrs {
		got := p.nameAt(addr)
		m, ok := view[got]
		var anyAt bool
		for _, v := range view {
			anyAt = anyAt || (live(v) && v.Addr == addr)
		}
		if (got == "") == anyAt || (got != "" && (!ok || !live(m) || m.Addr != addr)) {
			t.Fatalf("nameAt(%s) = %q, want a live member there, or \"\" if none (view %v)", addr, got, view)
		}
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		var want bool
		for _, v := range view {
			if ap, err := netip.ParseAddrPort(v.Addr); err == nil && live(v) {
				want = want || ap.Addr().Unmap() == netip.MustParseAddr(ip)
			}
		}
		if got := p.hasIP(netip.MustParseAddr(ip)); got != want {
			t.Fatalf("hasIP(%s) = %v, want %v (view %v)", ip, got, want, view)
		}
	}
}
