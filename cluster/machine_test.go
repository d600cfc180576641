package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/lease"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestNextVersion(t *testing.T) {
	for _, c := range []struct {
		seen   uint64
		i, n   int
		want   uint64
		wantOK bool
	}{
		{0, 0, 2, 2, true}, // k*N + i must exceed seen
		{0, 1, 2, 1, true},
		{1, 0, 2, 2, true},
		{1, 1, 2, 3, true},
		{7, 2, 3, 8, true},
		{8, 2, 3, 11, true},
		{0, 0, 1, 1, true},
		{^uint64(0) - 1, 1, 2, ^uint64(0), true},
		{^uint64(0), 0, 2, 0, false},
	} {
		v, err := NextVersion(c.seen, c.i, c.n)
		if (err == nil) != c.wantOK || v != c.want {
			t.Errorf("NextVersion(%d, %d, %d) = %d, %v; want %d ok=%v", c.seen, c.i, c.n, v, err, c.want, c.wantOK)
		}
		if err == nil && (v <= c.seen || v%uint64(c.n) != uint64(c.i)) {
			t.Errorf("NextVersion(%d, %d, %d) = %d: not above seen or not of the residue", c.seen, c.i, c.n, v)
		}
	}
}

// fed is a federation of one holder machine per cluster exchanging records
// instantly; cut[i] silences cluster i.
type fed struct {
	ms  []*Machine
	ids []string
	cut []bool
	now time.Time
}

func newFed(t *testing.T, n int) *fed {
	t.Helper()
	f := &fed{now: t0}
	for i := range n {
		f.ids = append(f.ids, string(rune('a'+i)))
	}
	for i, id := range f.ids {
		st := Passive
		if i == 0 {
			st = Active
		}
		cfg := DefaultConfig(id, f.ids, st)
		cfg.Priority = i
		m, err := New(cfg, f.now)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetHolder(f.now, 1); err != nil {
			t.Fatal(err)
		}
		f.ms = append(f.ms, m)
		f.cut = append(f.cut, false)
	}
	f.gossip()
	return f
}

// gossip has every uncut cluster send its view to every other uncut one, twice
// (so a reaction to the first round travels too).
func (f *fed) gossip() {
	for range 2 {
		for i, a := range f.ms {
			for j, b := range f.ms {
				if i != j && !f.cut[i] && !f.cut[j] {
					b.Merge(f.now, f.ids[i], a.Descriptors())
				}
			}
		}
	}
}

// run advances time in 500 ms steps, gossiping and ticking.
func (f *fed) run(d time.Duration) {
	for end := f.now.Add(d); f.now.Before(end); {
		f.now = f.now.Add(500 * time.Millisecond)
		f.gossip()
		for i, m := range f.ms {
			if !f.cut[i] {
				m.Tick(f.now)
			}
		}
	}
}

func (f *fed) serving() []string {
	var s []string
	for i, m := range f.ms {
		if m.Serving() && !f.cut[i] {
			s = append(s, f.ids[i])
		}
	}
	return s
}

func TestPlannedHandoffDrainsThenPromotesTargetWithHigherVersion(t *testing.T) {
	f := newFed(t, 2)
	if s := f.serving(); len(s) != 1 || s[0] != "a" {
		t.Fatalf("serving %v, want [a]", s)
	}
	if err := f.ms[0].Drain(f.now, "b"); err != nil {
		t.Fatal(err)
	}
	if f.ms[0].Serving() {
		t.Fatal("a draining cluster still answers as active")
	}
	f.gossip()
	a, b := f.ms[0].Self(), f.ms[1].Self()
	if a.State != Passive || b.State != Active || b.Version <= a.Version {
		t.Fatalf("after handoff a=%+v b=%+v", a, b)
	}
	if s := f.serving(); len(s) != 1 || s[0] != "b" {
		t.Fatalf("serving %v, want [b]", s)
	}
}

func TestUnplannedPromotionAfterPromoteAfterOfSilence(t *testing.T) {
	f := newFed(t, 2)
	f.cut[0] = true
	f.run(4500 * time.Millisecond)
	if f.ms[1].Self().State != Passive {
		t.Fatal("b promoted before PromoteAfter of silence")
	}
	f.run(time.Second)
	if b := f.ms[1].Self(); b.State != Active || b.Version != 3 {
		t.Fatalf("b after 5.5 s of silence: %+v, want active at version 3", b)
	}
	// a comes back: it sees the higher version and steps down.
	f.cut[0] = false
	f.gossip()
	if s := f.serving(); len(s) != 1 || s[0] != "b" || f.ms[0].Self().State != Passive {
		t.Fatalf("after heal serving %v, a %+v", s, f.ms[0].Self())
	}
}

func TestBetterPriorityPromotesFirst(t *testing.T) {
	f := newFed(t, 3)
	f.cut[0] = true
	f.run(10 * time.Second)
	if b, c := f.ms[1].Self(), f.ms[2].Self(); b.State != Active || c.State != Passive {
		t.Fatalf("b %+v c %+v: want only b (priority 1) promoted", b, c)
	}
}

func TestOnlyTheHolderWritesAndStaleEpochsAreFenced(t *testing.T) {
	f := newFed(t, 2)
	a := f.ms[0]
	// Another node of a, holding epoch 2, drains a; its record reaches the old holder.
	cfg := DefaultConfig("a", f.ids, Active)
	n2, _ := New(cfg, f.now)
	if err := n2.Drain(f.now, "b"); !errors.Is(err, ErrNotHolder) {
		t.Fatalf("drain by a non-holder: %v, want ErrNotHolder", err)
	}
	n2.Merge(f.now, "a", a.Descriptors())
	if err := n2.SetHolder(f.now, 2); err != nil {
		t.Fatal(err)
	}
	if err := n2.Drain(f.now, "b"); err != nil {
		t.Fatal(err)
	}
	a.Merge(f.now, "a", n2.Descriptors())
	if a.Holder() || a.Serving() {
		t.Fatal("the deposed holder still writes or serves")
	}
	if err := a.Promote(f.now); !errors.Is(err, ErrNotHolder) {
		t.Fatalf("promote by the deposed holder: %v", err)
	}
	if err := a.SetHolder(f.now, 1); !errors.Is(err, lease.ErrStaleEpoch) {
		t.Fatalf("SetHolder with the old epoch: %v, want ErrStaleEpoch", err)
	}
}

func TestMalformedRecordsAreDroppedAndCounted(t *testing.T) {
	f := newFed(t, 2)
	b := f.ms[1]
	forged := f.ms[0].Self()
	forged.Counter += 10
	forged.Version = 4 // residue 0 is a's, but a forged version 4 = 2*2+0 is fine; 5 is b's
	good := forged
	forged.Version = 5
	bad := []Descriptor{forged, {ID: "zz", State: Active}, {ID: "a", State: 9}}
	for _, d := range bad {
		b.Merge(f.now, "a", []Descriptor{d})
	}
	if st := b.Stats(); st.Malformed != 3 {
		t.Fatalf("malformed %d, want 3", st.Malformed)
	}
	b.Merge(f.now, "a", make([]Descriptor, 3))
	if b.Stats().Oversized != 1 {
		t.Fatal("a batch longer than the federation was not dropped")
	}
	huge := good
	huge.Epoch = 1 << 40
	b.Merge(f.now, "a", []Descriptor{huge})
	if b.Stats().Implausible != 1 {
		t.Fatal("an implausible epoch jump was accepted")
	}
	if got, _ := b.Get("a"); got.Version != 0 {
		t.Fatalf("a's record changed to %+v", got)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		edit  func(*Config)
		field string
	}{
		{func(c *Config) { c.Self = "" }, "Self"},
		{func(c *Config) { c.Self = "x" }, "Self"},
		{func(c *Config) { c.Clusters = []string{"a", "a"}; c.Self = "a" }, "Clusters"},
		{func(c *Config) { c.Initial = Draining }, "Initial"},
		{func(c *Config) { c.PromoteAfter = 0 }, "PromoteAfter"},
	} {
		cfg := DefaultConfig("a", []string{"a", "b"}, Active)
		c.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v", c.field, err)
		}
	}
}

func TestNewHolderReadsAQuorumFirstAndServesOnceAQuorumHoldsItsWrite(t *testing.T) {
	ids := []string{"a", "b"}
	cfg := DefaultConfig("a", ids, Active)
	cfg.Peers = []string{"a1", "a2"}
	m, err := New(cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetHolder(t0, 3); err != nil {
		t.Fatal(err)
	}
	if m.Holder() || m.Ready().Sync != 3 {
		t.Fatalf("holder %v, sync %d: want a quorum read of epoch 3 first", m.Holder(), m.Ready().Sync)
	}
	if err := m.Promote(t0); !errors.Is(err, ErrNotHolder) {
		t.Fatalf("a write during the read: %v", err)
	}
	// A peer that saw the demotion this node missed answers; a stranger's answer
	// does not count.
	demoted := Descriptor{ID: "a", State: Passive, Version: 0, Epoch: 2, Counter: 4}
	bActive := Descriptor{ID: "b", State: Active, Version: 3, Epoch: 1, Counter: 1}
	m.SyncReply(t0, "x9", 3, []Descriptor{demoted, bActive})
	if m.Holder() || m.Stats().Malformed != 1 {
		t.Fatal("an answer from a node that is not a peer counted")
	}
	m.SyncReply(t0, "a2", 3, []Descriptor{demoted, bActive})
	own := m.Self()
	if !m.Holder() || own.State != Passive || own.Epoch != 3 {
		t.Fatalf("after the quorum read: holder %v, own %+v; want the peer's passive record claimed at epoch 3", m.Holder(), own)
	}
	// Forced promotion: not served until a peer holds the new record.
	if err := m.Promote(t0); err != nil {
		t.Fatal(err)
	}
	own = m.Self()
	if own.State != Active || m.Serving() {
		t.Fatalf("own %+v serving %v: want active, not yet serving", own, m.Serving())
	}
	m.Ack("a1", own.Epoch, own.Counter-1)
	if m.Serving() {
		t.Fatal("serving on an ack of an older record")
	}
	m.Ack("a1", own.Epoch, own.Counter)
	if !m.Serving() {
		t.Fatal("not serving with a majority holding the record")
	}
}

// A draining cluster whose target dies before taking over (here: before the
// drain record reaches it) does not leave the federation without an active
// cluster: PromoteAfter after it last heard from the target it takes the active
// role back, with a higher version; and it does not while the target is heard.
func TestDrainingClusterTakesBackWhenTheTargetIsSilent(t *testing.T) {
	f := newFed(t, 2)
	f.cut[1] = true
	if err := f.ms[0].Drain(f.now, "b"); err != nil {
		t.Fatal(err)
	}
	f.run(4500 * time.Millisecond)
	if a := f.ms[0].Self(); a.State != Draining {
		t.Fatalf("a %+v before PromoteAfter: want still draining", a)
	}
	f.run(time.Second)
	if a := f.ms[0].Self(); a.State != Active || a.Version != 2 || a.Handoff != "" {
		t.Fatalf("a after PromoteAfter of b's silence: %+v, want active again at version 2", a)
	}
	if s := f.serving(); len(s) != 1 || s[0] != "a" {
		t.Fatalf("serving %v, want [a]", s)
	}

	// A target that is heard from but slow to take over is waited for.
	g := newFed(t, 2)
	g.ms[1].Resign(g.now) // b's holder is gone: b is heard (its other nodes relay) but cannot promote
	if err := g.ms[0].Drain(g.now, "b"); err != nil {
		t.Fatal(err)
	}
	g.run(10 * time.Second)
	if a := g.ms[0].Self(); a.State != Draining {
		t.Fatalf("a %+v while b is heard: want still draining", a)
	}
}
