package swim

import (
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

func aliveBcast(node string, inc uint64) *broadcast {
	return &broadcast{kind: kindMembership, key: node,
		msg: wire.AppendMessage(nil, &wire.Alive{Node: node, Addr: node + ":1", Incarnation: inc, ProtoMin: 1, ProtoMax: 1})}
}

// fillNames packs a packet of mtu bytes and returns which messages went in.
func fillNames(t *testing.T, qs *queues, mtu, limit int) []string {
	t.Helper()
	p := wire.NewPacker(mtu, 0)
	qs.fill(p)
	var names []string
	var r wire.PacketReader
	var d wire.Decoder
	if _, err := r.Reset(p.Bytes()); err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		switch r.Type() {
		case wire.TypeAlive:
			var a wire.Alive
			if err := d.Decode(r.Body(), &a); err != nil {
				t.Fatal(err)
			}
			names = append(names, fmt.Sprintf("%s@%d", a.Node, a.Incarnation))
		case wire.TypeUser:
			names = append(names, "user")
		case wire.TypeMetaDelta:
			names = append(names, "meta")
		}
	}
	qs.commit(limit)
	return names
}

// memberlist queue.go: broadcasts go out fewest-transmitted first.
func TestQueueSendsFewestSentFirst(t *testing.T) {
	qs := newQueues(100)
	for _, n := range []string{"a", "b", "c"} {
		qs.push(aliveBcast(n, 1))
	}
	if got := fillNames(t, &qs, wire.DefaultMTU, 10); len(got) != 3 {
		t.Fatalf("first packet %v", got)
	}
	qs.push(aliveBcast("d", 1))
	one := wire.HeaderSize + wire.ChecksumSize + len(aliveBcast("d", 1).msg)
	if got := fillNames(t, &qs, one, 10); fmt.Sprint(got) != "[d@1]" {
		t.Fatalf("packet with room for one carried %v, want the unsent d", got)
	}
	// Equal counts take turns: a, b, c were sent once, d once now.
	seen := map[string]bool{}
	for range 4 {
		for _, n := range fillNames(t, &qs, one, 10) {
			seen[n] = true
		}
	}
	if len(seen) != 4 {
		t.Fatalf("equal counts did not take turns: %v", seen)
	}
}

// memberlist queue.go: newer news about a member replaces queued older news.
func TestQueueNewerFactReplacesOlder(t *testing.T) {
	qs := newQueues(100)
	qs.push(aliveBcast("a", 1))
	qs.push(aliveBcast("b", 1))
	qs.push(aliveBcast("a", 2))
	if qs.Len() != 2 {
		t.Fatalf("len %d", qs.Len())
	}
	got := fillNames(t, &qs, wire.DefaultMTU, 10)
	if len(got) != 2 || got[0] != "a@2" && got[1] != "a@2" {
		t.Fatalf("packet %v", got)
	}
}

func TestQueueRetiresAtTransmitLimit(t *testing.T) {
	qs := newQueues(100)
	qs.push(aliveBcast("a", 1))
	for i := range 3 {
		if got := fillNames(t, &qs, wire.DefaultMTU, 3); len(got) != 1 {
			t.Fatalf("send %d: %v", i, got)
		}
	}
	if qs.Len() != 0 {
		t.Fatalf("still queued after the limit: %d", qs.Len())
	}
}

func TestQueueIsBoundedDroppingTheMostSent(t *testing.T) {
	qs := newQueues(3)
	qs.push(aliveBcast("old", 1))
	fillNames(t, &qs, wire.DefaultMTU, 10)
	qs.push(aliveBcast("x", 1))
	qs.push(aliveBcast("y", 1))
	qs.push(aliveBcast("z", 1))
	if qs.Len() != 3 || qs.dropped != 1 {
		t.Fatalf("len %d dropped %d", qs.Len(), qs.dropped)
	}
	if got := fillNames(t, &qs, wire.DefaultMTU, 10); len(got) != 3 || fmt.Sprint(got) == "" {
		t.Fatalf("packet %v", got)
	}
	for _, n := range fillNames(t, &qs, wire.DefaultMTU, 10) {
		if n == "old@1" {
			t.Fatal("the most-sent broadcast survived")
		}
	}
}

// Membership gossip at scale must not starve metadata and user messages: every kind
// gets a share of every packet.
func TestUserAndMetaNotStarvedByMembershipGossip(t *testing.T) {
	qs := newQueues(1024)
	for i := range 1000 {
		qs.push(aliveBcast(fmt.Sprintf("node-with-a-longish-name-%04d", i), 1))
	}
	qs.push(&broadcast{kind: kindUser, msg: wire.AppendMessage(nil, &wire.User{Payload: make([]byte, 300)})})
	qs.push(&broadcast{kind: kindMeta, msg: wire.AppendMessage(nil, &wire.MetaDelta{Payload: make([]byte, 300)})})
	got := fillNames(t, &qs, wire.DefaultMTU, 10)
	var user, meta, members int
	for _, n := range got {
		switch n {
		case "user":
			user++
		case "meta":
			meta++
		default:
			members++
		}
	}
	if user != 1 || meta != 1 || members == 0 {
		t.Fatalf("packet: %d user, %d meta, %d membership", user, meta, members)
	}
}

// User and metadata payloads are sent RetransmitLimit times by whoever broadcasts
// them; the layer above re-broadcasts what is new to it (the seam the metadata CRDT
// uses), which makes them spread by infection to every member.
func TestBroadcastsReachEveryMemberWhenRelayed(t *testing.T) {
	nt := newNet(t, 12, 9, nil)
	nt.joinAll()
	nt.runUntil(10*time.Second, 10*time.Millisecond, nt.converged)
	src := nt.node("n2")
	if err := src.m.BroadcastUser(nt.now, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := src.m.BroadcastMeta(nt.now, "k", []byte("delta")); err != nil {
		t.Fatal(err)
	}
	if err := src.m.BroadcastUser(nt.now, make([]byte, wire.DefaultMTU)); err != ErrPayloadTooLarge {
		t.Fatalf("oversized payload: %v", err)
	}
	relayed := map[*tnode]bool{src: true}
	for range 100 {
		nt.run(20 * time.Millisecond)
		for _, nd := range nt.nodes {
			if !relayed[nd] && containsPayload(nd.user, "hello") && containsPayload(nd.meta, "delta") {
				relayed[nd] = true
				nd.m.BroadcastUser(nt.now, []byte("hello"))
				nd.m.BroadcastMeta(nt.now, "k", []byte("delta"))
			}
		}
	}
	if len(relayed) != len(nt.nodes) {
		t.Fatalf("%d of %d nodes got both payloads", len(relayed), len(nt.nodes))
	}
}

func containsPayload(ps []Payload, s string) bool {
	for _, p := range ps {
		if string(p.Data) == s && !p.Snapshot {
			return true
		}
	}
	return false
}
