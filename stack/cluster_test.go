package stack

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	fed "github.com/omnirelay/mesh/cluster"
)

// federated makes each host of a leaseNet a node of cluster self of clusters a
// and b, starting in state st; the other voters are its Peers.
func federated(self string, st fed.State) func(*Config) {
	return func(c *Config) {
		cc := fed.DefaultConfig(self, []string{"a", "b"}, st)
		for _, v := range c.Lease.Voters {
			if v != c.Swim.Name {
				cc.Peers = append(cc.Peers, v)
			}
		}
		c.Cluster = &cc
	}
}

// servingHosts are the hosts that answer as the active registry.
func (n *leaseNet) servingHosts() []string {
	var out []string
	for _, addr := range n.order {
		if v, ok := n.hosts[addr].Clusters(); ok && !n.down[addr] && v.Serving {
			out = append(out, addr)
		}
	}
	return out
}

func relay(t *testing.T, h *Stack, now time.Time, r Remote) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SetMeta(now, RemoteKeyPrefix+r.Descriptor.ID, b); err != nil {
		t.Fatal(err)
	}
}

// The lease holder writes its cluster's descriptor under its epoch into the
// cluster map, every node merges it, and the holder answers as the active
// registry only once its voters acknowledge it: with the acks (the voters'
// cluster.held) withheld, it never does.
func TestClusterHolderWritesAndServesOnceAcked(t *testing.T) {
	n := newLeaseNet(t, []string{"a1", "a2", "a3"}, 3, federated("a", fed.Active))
	n.run(10 * time.Second)
	ls := n.leaders()
	if len(ls) != 1 {
		t.Fatalf("leaders %v, want one", ls)
	}
	epoch, _ := n.hosts[ls[0]].Fence(n.now)
	if s := n.servingHosts(); !slices.Equal(s, ls) {
		t.Fatalf("serving %v, want the leader %v", s, ls)
	}
	for _, addr := range n.order {
		v, _ := n.hosts[addr].Clusters()
		own := v.Descriptors[0]
		if own.ID != "a" || own.State != fed.Active || own.Epoch != epoch || v.Active != "a" {
			t.Fatalf("%s holds %+v (active %q), want a active written under epoch %d", addr, own, v.Active, epoch)
		}
	}

	// A second quorum read at the same epoch (the lease lapsed and came back)
	// completes from the records the voters already published for it.
	h := n.hosts[ls[0]]
	h.clus.m.Resign(n.now)
	h.clus.epoch = 0
	n.run(time.Second)
	if s := n.servingHosts(); !slices.Equal(s, ls) {
		t.Fatalf("serving %v after a second read at epoch %d, want the leader %v", s, epoch, ls)
	}

	// Without acknowledgements: the voters' held records never reach the holder.
	m := newLeaseNet(t, []string{"a1", "a2", "a3"}, 3, federated("a", fed.Active))
	for _, addr := range m.order {
		m.hosts[addr].clus.peers = nil // the glue ignores every voter's cluster.held
	}
	m.run(10 * time.Second)
	if len(m.leaders()) != 1 || len(m.servingHosts()) != 0 {
		t.Fatalf("leaders %v, serving %v without acks: want one leader, none serving", m.leaders(), m.servingHosts())
	}
}

// A passive cluster's holder does not promote while a gateway relays the active
// cluster as reachable, and does PromoteAfter (5 s) after the relays say it is
// not, within one RelayInterval; the promotion takes the cluster's next version.
func TestClusterPromotesWhenRelaysSayActiveIsUnreachable(t *testing.T) {
	n := newLeaseNet(t, []string{"b1", "b2", "b3"}, 3, federated("b", fed.Passive))
	n.run(3 * time.Second)
	gw := n.hosts["b2:1"]
	active := fed.Descriptor{ID: "a", State: fed.Active, Version: 0, Epoch: 4, Counter: 1}
	relay(t, gw, n.now, Remote{Descriptor: active, Reachable: true, Control: []string{"http://a1:7070"}})
	n.run(20 * time.Second)
	if s := n.servingHosts(); len(s) != 0 {
		t.Fatalf("b serves (%v) while a is reachable", s)
	}
	v, _ := n.hosts["b1:1"].Clusters()
	if v.Active != "a" || !v.Remotes["a"].Reachable || !slices.Equal(v.Remotes["a"].Control, []string{"http://a1:7070"}) {
		t.Fatalf("b1 sees %+v, want a active and reachable at its control URL", v)
	}
	before := n.hosts["b3:1"].ClusterVersion()
	n.run(3 * time.Second) // relays refreshed six times, nothing changed
	if after := n.hosts["b3:1"].ClusterVersion(); after != before {
		t.Fatalf("b3's view version moved %d -> %d with no change: watchers would hear of every refresh", before, after)
	}
	cut := n.now
	relay(t, gw, n.now, Remote{Descriptor: active})
	n.run(fed.DefaultConfig("b", nil, fed.Passive).PromoteAfter - 100*time.Millisecond)
	if s := n.servingHosts(); len(s) != 0 {
		t.Fatalf("b serves (%v) %v after a became unreachable, before PromoteAfter", s, n.now.Sub(cut))
	}
	n.run(RelayInterval + 500*time.Millisecond) // the promotion, then one LAN round of acks
	s := n.servingHosts()
	if len(s) != 1 {
		t.Fatalf("serving %v %v after a became unreachable, want b's holder", s, n.now.Sub(cut))
	}
	v, _ = n.hosts[s[0]].Clusters()
	if own := v.Descriptors[1]; own.ID != "b" || own.State != fed.Active || own.Version != 3 {
		t.Fatalf("b promoted itself as %+v, want active at version 3 (the first k*2+1 above its own initial 1)", own)
	}
}

// A relay counts only while swim holds its gateway alive: a gateway that died
// saying the active cluster was reachable does not hold off the promotion.
func TestClusterIgnoresRelaysOfDeadGateways(t *testing.T) {
	n := newLeaseNet(t, []string{"b1", "b2", "b3", "g"}, 3, federated("b", fed.Passive))
	n.run(3 * time.Second)
	relay(t, n.hosts["g:1"], n.now, Remote{Descriptor: fed.Descriptor{ID: "a", State: fed.Active, Epoch: 2, Counter: 1}, Reachable: true})
	n.run(10 * time.Second)
	if s := n.servingHosts(); len(s) != 0 {
		t.Fatalf("b serves (%v) while its gateway relays a as reachable", s)
	}
	n.down["g:1"] = true
	n.run(30 * time.Second)
	if s := n.servingHosts(); len(s) != 1 {
		t.Fatalf("serving %v after the only gateway died, want b's holder", s)
	}
}

// Relayed records that do not decode, or name another cluster than their key,
// are dropped and counted.
func TestClusterDropsMalformedRelays(t *testing.T) {
	n := newLeaseNet(t, []string{"b1", "b2", "b3"}, 3, federated("b", fed.Passive))
	n.run(3 * time.Second)
	gw := n.hosts["b2:1"]
	if err := gw.SetMeta(n.now, RemoteKeyPrefix+"a", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Remote{Descriptor: fed.Descriptor{ID: "b", State: fed.Active, Version: 1}})
	if err := gw.SetMeta(n.now, RemoteKeyPrefix+"a", b); err != nil {
		t.Fatal(err)
	}
	n.run(time.Second)
	for _, addr := range n.order {
		hs, _ := n.hosts[addr].ClusterHostStats()
		v, _ := n.hosts[addr].Clusters()
		if hs.Malformed != 2 || len(v.Remotes) != 0 {
			t.Fatalf("%s: %d malformed, remotes %v: want both relays dropped and counted", addr, hs.Malformed, v.Remotes)
		}
	}
}
