package stack

import (
	"testing"
	"time"

	"github.com/omnirelay/mesh/swim"
)

// One address directory, one policy for lease and shard alike: a voter swim has
// declared dead keeps its address, so the holder's lease messages to it are sent
// (not counted unroutable) and reach it the moment it is back; a graceful leave
// forgets it.
func TestDirectoryKeepsTheDeadUntilLeave(t *testing.T) {
	n, leader, others := formLeaseNet(t)
	gone := others[0]
	name := n.hosts[gone].cfg.Swim.Name
	n.down[gone] = true
	n.run(30 * time.Second)
	h := n.hosts[leader]
	dead := false
	for _, m := range h.Swim().Members() {
		dead = dead || m.Name == name && m.Status == swim.StatusDead
	}
	if !dead || h.addrs.live(name) {
		t.Fatalf("%s not dead in the leader's view (dead %v, live %v)", name, dead, h.addrs.live(name))
	}
	before := h.LeaseHostStats().Unroutable
	n.run(5 * time.Second)
	if got := h.LeaseHostStats().Unroutable; got != before {
		t.Fatalf("%d lease messages to the dead voter counted unroutable", got-before)
	}
	if addr, ok := h.addrs.lookup(name); !ok || addr != gone {
		t.Fatalf("directory has %q, %v for the dead voter; want %s", addr, ok, gone)
	}
	h.addrs.track([]swim.Event{{Kind: swim.EventLeft, Member: swim.Member{Name: name, Addr: gone}}})
	if _, ok := h.addrs.lookup(name); ok {
		t.Fatal("a graceful leave did not forget the address")
	}
}
