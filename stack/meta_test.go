package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"github.com/omnirelay/mesh/swim"
)

// cluster runs hosts over a lossless in-memory network, delivering every output
// at once and jumping to the next deadline.
type cluster struct {
	t      *testing.T
	now    time.Time
	hosts  map[string]*Stack // by address
	addrs  []string
	events map[string][]MetaEvent
}

func newCluster(t *testing.T, n int, cfg func(*Config)) *cluster {
	c := &cluster{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), hosts: map[string]*Stack{},
		events: map[string][]MetaEvent{}}
	for i := range n {
		name, addr := fmt.Sprintf("n%d", i), fmt.Sprintf("n%d:1", i)
		hc := Config{Swim: swim.LANProfile(name, addr)}
		if cfg != nil {
			cfg(&hc)
		}
		h, err := New(hc, rand.New(rand.NewPCG(uint64(i)+1, 7)), c.now)
		if err != nil {
			t.Fatal(err)
		}
		c.hosts[addr] = h
		c.addrs = append(c.addrs, addr)
	}
	return c
}

func (c *cluster) h(i int) *Stack { return c.hosts[c.addrs[i]] }

// drain delivers outputs until nothing is left to deliver at this instant.
func (c *cluster) drain() {
	for busy := true; busy; {
		busy = false
		for _, addr := range c.addrs {
			h := c.hosts[addr]
			r := h.Ready()
			h.Advance()
			c.events[addr] = append(c.events[addr], r.Meta...)
			for _, s := range r.Streams {
				busy = true
				dst, ok := c.hosts[s.To]
				var reply []byte
				if ok {
					reply = dst.HandleStream(c.now, addr, "", s.Data)
				}
				if reply == nil {
					h.StreamFailed(c.now, s.ID)
					continue
				}
				h.StreamReply(c.now, s.ID, reply)
			}
			for _, p := range r.Packets {
				if dst, ok := c.hosts[p.To]; ok { // a crashed node's packets are lost
					busy = true
					dst.HandlePacket(c.now, addr, p.Data)
				}
			}
		}
	}
}

func (c *cluster) run(d time.Duration) {
	end := c.now.Add(d)
	for {
		c.drain()
		next := end
		for _, a := range c.addrs {
			if dl := c.hosts[a].NextDeadline(); !dl.IsZero() && dl.Before(next) {
				next = dl
			}
		}
		if next.After(end) || next.Equal(end) {
			c.now = end
			return
		}
		c.now = next
		for _, a := range c.addrs {
			if h := c.hosts[a]; !h.NextDeadline().After(c.now) {
				h.Tick(c.now)
			}
		}
	}
}

func (c *cluster) form() {
	for i := 1; i < len(c.addrs); i++ {
		c.h(i).Join(c.now, []string{c.addrs[0]})
	}
	c.run(5 * time.Second)
}

func TestMetaSetSpreadsByGossip(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.form()
	before := c.h(4).MetaStats().SnapshotsIn
	if err := c.h(0).SetMeta(c.now, "zone", []byte("eu-1")); err != nil {
		t.Fatal(err)
	}
	c.drain() // no timer: eager push and re-gossip alone
	for i := 1; i < 5; i++ {
		if v, ok := c.h(i).Meta().Get("n0", "zone"); !ok || string(v) != "eu-1" {
			t.Fatalf("n%d: zone=%q %v", i, v, ok)
		}
		evs := c.events[c.addrs[i]]
		if len(evs) != 1 || evs[0].Node != "n0" || evs[0].Key != "zone" || string(evs[0].Value) != "eu-1" || evs[0].Deleted {
			t.Fatalf("n%d events %+v", i, evs)
		}
	}
	if c.h(4).MetaStats().SnapshotsIn != before {
		t.Fatal("a push-pull ran; the test meant gossip only")
	}
	if ev := c.events[c.addrs[0]]; len(ev) != 1 || ev[0].Node != "n0" {
		t.Fatalf("own write event %+v", ev)
	}
	if err := c.h(0).DeleteMeta(c.now, "zone"); err != nil {
		t.Fatal(err)
	}
	c.drain()
	for i := range 5 {
		if _, ok := c.h(i).Meta().Get("n0", "zone"); ok {
			t.Fatalf("n%d still holds the deleted key", i)
		}
		if d := c.h(i).Meta().Digest(); d != c.h(0).Meta().Digest() {
			t.Fatalf("n%d digest differs", i)
		}
	}
}

// Metadata set before joining reaches the cluster: it is announced on Join and
// carried by the join push-pull.
func TestMetaSetBeforeJoin(t *testing.T) {
	c := newCluster(t, 4, nil)
	if err := c.h(3).SetMeta(c.now, "roles", []byte("api,web")); err != nil {
		t.Fatal(err)
	}
	c.form()
	for i := range 3 {
		if v, _ := c.h(i).Meta().Get("n3", "roles"); string(v) != "api,web" {
			t.Fatalf("n%d: roles=%q", i, v)
		}
	}
}

func TestMetaLimitsAreErrors(t *testing.T) {
	c := newCluster(t, 1, func(hc *Config) {
		hc.Meta = crdt.DefaultLimits()
		hc.Meta.MaxKeys = 2
	})
	h := c.h(0)
	cases := []struct {
		key, value string
		want       error
	}{
		{"", "x", crdt.ErrEmptyKey},
		{strings.Repeat("k", 129), "x", crdt.ErrKeyTooLong},
		{"k", strings.Repeat("v", 1025), crdt.ErrValueTooLarge},
	}
	for _, tc := range cases {
		if err := h.SetMeta(c.now, tc.key, []byte(tc.value)); !errors.Is(err, tc.want) {
			t.Errorf("SetMeta(%d-byte key, %d-byte value) = %v, want %v", len(tc.key), len(tc.value), err, tc.want)
		}
	}
	for _, k := range []string{"a", "b"} {
		if err := h.SetMeta(c.now, k, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.SetMeta(c.now, "c", []byte("1")); !errors.Is(err, crdt.ErrTooManyKeys) {
		t.Fatalf("third key: %v", err)
	}
	if err := h.DeleteMeta(c.now, "zzz"); !errors.Is(err, crdt.ErrNotFound) {
		t.Fatalf("delete of a missing key: %v", err)
	}
	if got := h.Meta().NodeMap("n0"); len(got) != 2 {
		t.Fatalf("rejected writes changed the map: %v", got)
	}
	if _, err := New(Config{Swim: swim.LANProfile("x", "x:1"), MetaGCHorizon: -1}, rand.New(rand.NewPCG(1, 1)), c.now); err == nil ||
		!strings.Contains(err.Error(), "MetaGCHorizon") {
		t.Fatalf("negative horizon: %v", err)
	}
}

func TestMetaMalformedPayloadsAreCounted(t *testing.T) {
	c := newCluster(t, 1, nil)
	h := c.h(0)
	h.receiveMeta(time.Time{}, swim.Payload{From: "x:1", Data: []byte{0xc1, 0x00}})
	h.receiveMeta(time.Time{}, swim.Payload{From: "x:1", Data: []byte("junk"), Snapshot: true})
	if st := h.MetaStats(); st.Rejected != 2 || st.DeltasIn != 1 || st.SnapshotsIn != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A crashed member's map goes when swim forgets it (TombstoneTTL after its death),
// and only then.
func TestMetaRemovedWhenMemberForgotten(t *testing.T) {
	c := newCluster(t, 3, func(hc *Config) { hc.MetaGCInterval = time.Second })
	c.form()
	if err := c.h(2).SetMeta(c.now, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	c.drain()
	delete(c.hosts, c.addrs[2]) // crash: its packets go nowhere
	c.addrs = c.addrs[:2]
	c.run(20 * time.Second)
	dead := false
	for _, m := range c.h(0).Swim().Members() {
		dead = dead || (m.Name == "n2" && m.Status == swim.StatusDead)
	}
	if !dead {
		t.Fatal("n2 not declared dead")
	}
	if _, ok := c.h(0).Meta().Get("n2", "k"); !ok {
		t.Fatal("map removed before swim forgot the member")
	}
	c.run(swim.LANProfile("a", "a:1").TombstoneTTL + 2*time.Second)
	if _, ok := c.h(0).Meta().Get("n2", "k"); ok {
		t.Fatal("map of a forgotten member kept")
	}
	if c.h(0).MetaStats().Removed != 1 {
		t.Fatalf("stats %+v", c.h(0).MetaStats())
	}
}

// A value too large for one packet at a small MTU is stored and reported, and
// reaches peers by push-pull instead of gossip.
func TestMetaTooLargeToGossipSpreadsByPushPull(t *testing.T) {
	c := newCluster(t, 2, func(hc *Config) { hc.Swim.MTU = 300 })
	c.form()
	big := []byte(strings.Repeat("v", 1000))
	if err := c.h(0).SetMeta(c.now, "blob", big); !errors.Is(err, ErrMetaGossip) {
		t.Fatalf("SetMeta: %v", err)
	}
	if v, _ := c.h(0).Meta().Get("n0", "blob"); string(v) != string(big) {
		t.Fatal("not stored locally")
	}
	c.run(2 * swim.LANProfile("a", "a:1").PushPullInterval)
	if v, _ := c.h(1).Meta().Get("n0", "blob"); string(v) != string(big) {
		t.Fatal("not carried by push-pull")
	}
}

// A push-pull snapshot leaves out maps that hold nothing: a cluster that uses no
// metadata sends none, and a written map is still sent.
func TestPushPullSnapshotLeavesOutEmptyMaps(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.form()
	maps := func(h *Stack) []string {
		s, err := crdt.DecodeSnapshot(h.snapshot(), crdt.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range s.Maps {
			names = append(names, m.Node)
		}
		return names
	}
	if got := maps(c.h(0)); len(got) != 0 || len(c.h(0).Meta().Names()) == 0 {
		t.Fatalf("no metadata written: snapshot maps %q, store maps %q", got, c.h(0).Meta().Names())
	}
	if err := c.h(2).SetMeta(c.now, "zone", []byte("a")); err != nil {
		t.Fatal(err)
	}
	c.run(time.Second)
	for i := range 4 {
		if got := maps(c.h(i)); len(got) != 1 || got[0] != "n2" {
			t.Fatalf("n%d snapshot maps %q, want [n2]", i, got)
		}
	}
}
