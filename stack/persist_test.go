package stack

import (
	"reflect"
	"testing"
	"time"
)

// formLeaseNet forms three voters a, b, c with one leader, and returns the
// network, the leader's address and the others'.
func formLeaseNet(t *testing.T) (n *leaseNet, leader string, others []string) {
	n = newLeaseNet(t, []string{"a", "b", "c"}, 3)
	n.run(10 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v, want one", ls)
	}
	for _, addr := range n.order {
		if addr != ls[0] {
			others = append(others, addr)
		}
	}
	return n, ls[0], others
}

// Ready is a read: two calls return the same batch, and only Advance clears it.
func TestReadyIsAReadAdvanceClears(t *testing.T) {
	n := newLeaseNet(t, []string{"a", "b"}, 1)
	h := n.hosts["b:1"]
	h.Tick(n.now.Add(time.Second))
	r1, r2 := h.Ready(), h.Ready()
	if !reflect.DeepEqual(r1, r2) {
		t.Fatalf("Ready twice differs:\n%+v\n%+v", r1, r2)
	}
	if len(r1.Packets)+len(r1.Streams) == 0 {
		t.Fatal("nothing to send after a join and a tick")
	}
	h.Advance()
	if r := h.Ready(); len(r.Packets)+len(r.Streams)+len(r.Events) != 0 || h.HasReady() {
		t.Fatalf("after Advance: %d packets, %d streams, %d events", len(r.Packets), len(r.Streams), len(r.Events))
	}
}

// Persist-before-send in the stack: while a voter's saves fail it sends no lease
// packet (its promises are not on disk), its state is offered again by every Ready,
// and membership goes on; with the leader down and one voter's disk failing, the
// third voter alone is no majority, so nobody leads. Once the disk works, the held
// packets leave and a leader is elected.
func TestLeasePacketsHeldWhileSavesFail(t *testing.T) {
	n, leader, others := formLeaseNet(t)
	sick, other := others[0], others[1]
	n.diskFails = map[string]bool{n.hosts[sick].cfg.Swim.Name: true}
	n.down[leader] = true
	before := n.leaseSent[sick]
	n.run(15 * time.Second)
	if got := n.leaseSent[sick]; got != before {
		t.Fatalf("voter with a failing disk sent %d lease packets", got-before)
	}
	if ls := n.leaders(); len(ls) != 0 {
		t.Fatalf("leaders %v while the only other voter cannot save", ls)
	}
	r := n.hosts[sick].Ready()
	if r.LeaseState == nil {
		t.Fatal("unsaved state not offered again")
	}
	if len(n.hosts[sick].Swim().Members()) != 3 || n.hosts[other].LeaseStats().Campaigns == 0 {
		t.Fatalf("members %d, campaigns %d", len(n.hosts[sick].Swim().Members()), n.hosts[other].LeaseStats().Campaigns)
	}

	delete(n.diskFails, n.hosts[sick].cfg.Swim.Name)
	n.run(15 * time.Second)
	if n.leaseSent[sick] == before {
		t.Fatal("held lease packets never left after the disk recovered")
	}
	if st, _ := n.storages[n.hosts[sick].cfg.Swim.Name].Load(); st.Promised == 0 {
		t.Fatal("recovered voter saved nothing")
	}
	if ls := n.leaders(); len(ls) != 1 {
		t.Fatalf("after recovery leaders %v, want one", ls)
	}
}
