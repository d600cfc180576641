package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/swim"
)

// leaseNet is a tiny driver: hosts by address, datagrams delivered 1 ms after they
// leave, streams answered in place, lease state saved before packets leave.
type leaseNet struct {
	t        *testing.T
	now      time.Time
	hosts    map[string]*Stack
	order    []string
	storages map[string]*lease.MemoryStorage
	inflight []flight
	events   map[string][]lease.Event
	down     map[string]bool
	// diskFails names the nodes whose saves fail; leaseSent counts the lease
	// packets each address sent.
	diskFails map[string]bool
	leaseSent map[string]int
}

type flight struct {
	at       time.Time
	from, to string
	data     []byte
}

// newSignedLeaseNet is newLeaseNet with every host signing under ca, as node
// certificates make them.
func newSignedLeaseNet(t *testing.T, names []string, voters int, ca *swim.SimAuthority) *leaseNet {
	return newLeaseNet(t, names, voters, func(c *Config) { c.Swim.Auth = ca.Node(c.Swim.Name) })
}

// newLeaseNet starts names, the first voters of them voting; opts adjust each
// host's Config before it starts.
func newLeaseNet(t *testing.T, names []string, voters int, opts ...func(*Config)) *leaseNet {
	n := &leaseNet{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), hosts: map[string]*Stack{},
		storages: map[string]*lease.MemoryStorage{}, events: map[string][]lease.Event{}, down: map[string]bool{}}
	for i, name := range names {
		st := &lease.MemoryStorage{}
		lc := lease.DefaultConfig(name, names[:voters])
		cfg := Config{Swim: swim.LANProfile(name, name+":1"), Lease: &lc, LeaseStorage: st}
		for _, o := range opts {
			o(&cfg)
		}
		h, err := New(cfg, rand.New(rand.NewPCG(uint64(i+1), 7)), n.now)
		if err != nil {
			t.Fatal(err)
		}
		n.hosts[name+":1"] = h
		n.order = append(n.order, name+":1")
		n.storages[name] = st
		if i > 0 {
			h.Join(n.now, []string{names[0] + ":1"})
		}
	}
	return n
}

func (n *leaseNet) flush() {
	for _, addr := range n.order {
		if n.down[addr] {
			continue
		}
		h := n.hosts[addr]
		// A second round sends what Saved released; more is left for the next flush.
		for round := 0; round < 2 && (round == 0 || h.HasReady()); round++ {
			n.flushOne(addr, h)
		}
	}
}

func (n *leaseNet) flushOne(addr string, h *Stack) {
	r := h.Ready()
	if r.LeaseState != nil {
		name := h.cfg.Swim.Name
		if n.diskFails[name] {
			h.Saved(n.now, r.LeaseVersion, errDiskFull)
		} else {
			if err := n.storages[name].Save(*r.LeaseState); err != nil {
				n.t.Fatal(err)
			}
			h.Saved(n.now, r.LeaseVersion, nil)
		}
	}
	n.events[addr] = append(n.events[addr], r.LeaseEvents...)
	for _, s := range r.Streams {
		if n.down[s.To] {
			h.StreamFailed(n.now, s.ID)
			continue
		}
		reply := n.hosts[s.To].HandleStream(n.now, addr, "", s.Data)
		h.StreamReply(n.now, s.ID, reply)
	}
	n.send(addr, r.Packets)
	h.Advance()
}

var errDiskFull = errors.New("disk full")

func (n *leaseNet) send(from string, ps []swim.Packet) {
	for _, p := range ps {
		if isLeasePacket(p.Data) {
			if n.leaseSent == nil {
				n.leaseSent = map[string]int{}
			}
			n.leaseSent[from]++
		}
		n.inflight = append(n.inflight, flight{at: n.now.Add(time.Millisecond), from: from, to: p.To, data: p.Data})
	}
}

// run advances to now+d, delivering packets and ticking hosts in time order.
func (n *leaseNet) run(d time.Duration) {
	end := n.now.Add(d)
	for {
		n.flush()
		next := end
		for _, addr := range n.order {
			if dl := n.hosts[addr].NextDeadline(); !n.down[addr] && !dl.IsZero() && dl.Before(next) {
				next = dl
			}
		}
		for _, f := range n.inflight {
			if f.at.Before(next) {
				next = f.at
			}
		}
		if next.Before(n.now) {
			next = n.now
		}
		n.now = next
		var later []flight
		for _, f := range n.inflight {
			if f.at.After(n.now) {
				later = append(later, f)
			} else if h, ok := n.hosts[f.to]; ok && !n.down[f.to] {
				h.HandlePacket(n.now, f.from, f.data)
			}
		}
		n.inflight = later
		for _, addr := range n.order {
			if h := n.hosts[addr]; !n.down[addr] && !h.NextDeadline().After(n.now) {
				h.Tick(n.now)
			}
		}
		if !n.now.Before(end) {
			n.flush()
			return
		}
	}
}

// settle runs a cluster of voters a..c and non-voter d for 10 s and returns its
// one leader, the leader's epoch and d, which must name that leader.
func (n *leaseNet) settle() (*Stack, uint64, *Stack) {
	n.run(10 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		n.t.Fatalf("leaders %v, want one", ls)
	}
	leader := n.hosts[ls[0]]
	e1, _ := leader.Fence(n.now)
	d := n.hosts["d:1"]
	if h, e, _, ok := d.Leader(n.now); !ok || e != e1 || h != leader.cfg.Swim.Name {
		n.t.Fatalf("non-voter Leader = %q %d %v, want %s %d", h, e, ok, leader.cfg.Swim.Name, e1)
	}
	return leader, e1, d
}

func (n *leaseNet) leaders() []string {
	var out []string
	for _, addr := range n.order {
		if !n.down[addr] && n.hosts[addr].IsLeader(n.now) {
			out = append(out, addr)
		}
	}
	return out
}

// Three voters and a non-voter: one leader emerges through real packets, the
// non-voter learns it from the cluster map, every voter saved its promise, and a
// crash of the leader moves the lease to another voter at a higher epoch, which
// fences the old one.
func TestHostLeaseElectsAndFailsOver(t *testing.T) {
	n := newLeaseNet(t, []string{"a", "b", "c", "d"}, 3)
	n.run(10 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v, want one", ls)
	}
	old := n.hosts[ls[0]]
	oldName := old.cfg.Swim.Name
	e1, err := old.Fence(n.now)
	if err != nil || e1 == 0 {
		t.Fatalf("leader Fence = %d, %v", e1, err)
	}
	for _, addr := range n.order {
		h, _, _, ok := n.hosts[addr].Leader(n.now)
		if !ok || h != oldName {
			t.Fatalf("%s: Leader = %q, %v; want %s", addr, h, ok, oldName)
		}
	}
	for _, v := range []string{"a", "b", "c"} {
		if st, _ := n.storages[v].Load(); st.Promised == 0 {
			t.Fatalf("voter %s saved no promise", v)
		}
	}
	if st, _ := n.storages["d"].Load(); st.Promised != 0 {
		t.Fatalf("non-voter d promised %d", st.Promised)
	}
	if !slices.ContainsFunc(n.events["d:1"], func(e lease.Event) bool {
		return e.Kind == lease.EventLeaderChanged && e.Holder == oldName && e.Epoch == e1
	}) {
		t.Fatalf("non-voter events %+v lack the leader", n.events["d:1"])
	}

	n.down[ls[0]] = true
	n.run(10 * time.Second)
	ls2 := n.leaders()
	if len(ls2) != 1 || ls2[0] == ls[0] {
		t.Fatalf("after the crash leaders %v", ls2)
	}
	e2, err := n.hosts[ls2[0]].Fence(n.now)
	if err != nil || e2 <= e1 {
		t.Fatalf("new epoch %d (%v), old %d", e2, err, e1)
	}
	d := n.hosts["d:1"]
	if h, e, _, ok := d.Leader(n.now); !ok || e != e2 || h != n.hosts[ls2[0]].cfg.Swim.Name {
		t.Fatalf("non-voter Leader = %q %d %v", h, e, ok)
	}
	if err := d.CheckFence(e1); !errors.Is(err, lease.ErrStaleEpoch) {
		t.Fatalf("CheckFence(old epoch) = %v", err)
	}
	if err := d.CheckFence(e2); err != nil {
		t.Fatalf("CheckFence(current epoch) = %v", err)
	}
	if got := d.LeaseHostStats().Fenced; got != 1 {
		t.Fatalf("Fenced = %d, want 1", got)
	}
}

// A lone voter whose peers swim has never seen cannot route its Prepares: they are
// dropped and counted, and it never leads.
func TestHostLeaseUnroutableCounted(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lc := lease.DefaultConfig("a", []string{"a", "b", "c"})
	h, err := New(Config{Swim: swim.LANProfile("a", "a:1"), Lease: &lc, LeaseStorage: &lease.MemoryStorage{}},
		rand.New(rand.NewPCG(1, 1)), now)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		now = h.NextDeadline()
		h.Tick(now)
		h.Saved(now, h.Ready().LeaseVersion, nil) // releases the held lease packets
		for _, p := range h.Ready().Packets {
			if isLeasePacket(p.Data) {
				t.Fatalf("lease packet to %s with no known address", p.To)
			}
		}
		h.Advance()
	}
	if h.LeaseStats().Campaigns == 0 || h.LeaseHostStats().Unroutable == 0 || h.IsLeader(now) {
		t.Fatalf("campaigns %d unroutable %d leader %v", h.LeaseStats().Campaigns, h.LeaseHostStats().Unroutable, h.IsLeader(now))
	}
}

// Garbage in a packet that looks like a lease packet is counted, never a panic.
func TestHostLeaseMalformedCounted(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lc := lease.DefaultConfig("a", []string{"a"})
	h, err := New(Config{Swim: swim.LANProfile("a", "a:1"), Lease: &lc, LeaseStorage: &lease.MemoryStorage{}},
		rand.New(rand.NewPCG(1, 1)), now)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 20)
	junk[9] = 33
	h.HandlePacket(now, "x:1", junk)
	if h.LeaseHostStats().Malformed != 1 {
		t.Fatalf("stats %+v", h.LeaseHostStats())
	}
}

func TestHostLeaseConfigValidate(t *testing.T) {
	lc := lease.DefaultConfig("a", []string{"a"})
	for _, c := range []Config{
		{Swim: swim.LANProfile("a", "a:1"), Lease: &lc},
		{Swim: swim.LANProfile("b", "b:1"), Lease: &lc, LeaseStorage: &lease.MemoryStorage{}},
	} {
		if err := c.Validate(); err == nil {
			t.Fatalf("%+v validated", c)
		}
	}
}

// Without Lease the host reports no leader and refuses Fence and ChangeVoters.
func TestHostWithoutLease(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h, err := New(Config{Swim: swim.LANProfile("a", "a:1")}, rand.New(rand.NewPCG(1, 1)), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := h.Leader(now); ok {
		t.Fatal("leader without lease")
	}
	if _, err := h.Fence(now); !errors.Is(err, lease.ErrNotLeader) {
		t.Fatal(err)
	}
	if err := h.ChangeVoters(now, []string{"a"}); !errors.Is(err, lease.ErrNotLeader) {
		t.Fatal(err)
	}
}

// A leader that leaves gracefully releases its lease first: another voter leads
// well before the released lease would have expired.
func TestHostLeaseLeaveReleases(t *testing.T) {
	n := newLeaseNet(t, []string{"a", "b", "c"}, 3)
	n.run(10 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v", ls)
	}
	n.hosts[ls[0]].Leave(n.now)
	n.run(time.Second)
	if ls2 := n.leaders(); len(ls2) != 1 || ls2[0] == ls[0] {
		t.Fatalf("1 s after the leader left, leaders %v (was %v)", ls2, ls)
	}
}

// A holder re-elected at a higher epoch rewrites LeaderKey with the same value: no
// change of value, so no metadata event. The non-voter must still follow the epoch
// (it went on naming the old one: the chaos suite, after 5 minutes of loss).
func TestNonVoterFollowsReElectionOfTheSameHolder(t *testing.T) {
	n := newLeaseNet(t, []string{"a", "b", "c", "d"}, 3)
	leader, e1, d := n.settle()
	// The same holder's write of a later epoch, as its re-election publishes it.
	delta, err := leader.meta.store.SetCluster(e1+3, LeaderKey, []byte(leader.cfg.Swim.Name))
	if err != nil {
		t.Fatal(err)
	}
	a, err := d.meta.store.Apply(delta)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range a.Changes {
		if c.Key == LeaderKey {
			t.Fatalf("the rewrite of the same value made a change %+v: the test proves nothing", c)
		}
	}
	d.observeClusterLeader(n.now, nil) // no event: the rewrite changed no value
	if h, e, _, ok := d.Leader(n.now); !ok || e != e1+3 || h != leader.cfg.Swim.Name {
		t.Fatalf("non-voter Leader = %q %d %v after the re-election, want %s %d", h, e, ok, leader.cfg.Swim.Name, e1+3)
	}
}

// With signed metadata (PROTOCOL.md section 13) the cluster map takes only the
// holder of its epoch: voters publish the holder they accepted (AcceptedKey), the
// non-voter follows the leader once a majority did, and a cluster-map write
// signed by voter u (not the leader) for a later epoch that nobody accepted
// waits as an unknown signer until two of the three voters publish u for it.
func TestSignedNonVoterTakesTheHolderTheVotersConfirm(t *testing.T) {
	ca := swim.SimAuthority{Secret: 9}
	n := newSignedLeaseNet(t, []string{"a", "b", "c", "d"}, 3, &ca)
	leader, e1, d := n.settle()
	if got := d.holderOf(e1); got != leader.cfg.Swim.Name {
		t.Fatalf("non-voter's holder of epoch %d: %q", e1, got)
	}
	// u (a real voter's key, not the holder of any later epoch) writes epoch e1+5.
	u := "a"
	if leader.cfg.Swim.Name == u {
		u = "b"
	}
	e2 := e1 + 5
	uStore, err := crdt.NewStore(u, crdt.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	uStore.SetAuthority("", &metaAuth{h: n.hosts[u+":1"], auth: ca.Node(u), budget: -1})
	usurp, err := uStore.SetCluster(e2, LeaderKey, []byte(u))
	if err != nil {
		t.Fatal(err)
	}
	before := d.MetaStats().UnknownSigner
	d.receiveMeta(n.now, swim.Payload{From: u + ":1", Data: crdt.AppendDelta(nil, usurp)})
	d.process(n.now)
	if h, e, _, _ := d.Leader(n.now); h == u || e == e2 {
		t.Fatalf("the non-voter took %s's unconfirmed epoch %d: Leader %q %d", u, e2, h, e)
	}
	if d.MetaStats().UnknownSigner == before || len(d.meta.pending) != 1 {
		t.Fatalf("%s's write not counted as an unknown signer and kept: %+v, %d kept", u, d.MetaStats(), len(d.meta.pending))
	}
	// One voter confirming is not a majority; two are.
	accept := func(voter string) {
		v := n.hosts[voter+":1"]
		delta, err := v.meta.store.Set(AcceptedKey, []byte(fmt.Sprintf("%d %s", e2, u)))
		if err != nil {
			t.Fatal(err)
		}
		d.receiveMeta(n.now, swim.Payload{From: voter + ":1", Data: crdt.AppendDelta(nil, delta)})
		d.process(n.now)
	}
	accept("a")
	if got := d.holderOf(e2); got != "" {
		t.Fatalf("one voter of three confirmed %q", got)
	}
	accept("c")
	if got := d.holderOf(e2); got != u {
		t.Fatalf("two voters of three confirmed %s, holderOf says %q", u, got)
	}
	if h, e, _, _ := d.Leader(n.now); h != u || e != e2 {
		t.Fatalf("the kept write was not applied once confirmed: Leader %q %d", h, e)
	}
}
