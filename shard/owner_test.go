package shard

import (
	"github.com/omnirelay/mesh/lease"

	"slices"
	"testing"
	"time"
)

// ownerAt returns an Owner of node "a" (boot 1) following leader "L" at epoch 5,
// its first renewal sent at t0, and that renewal.
func ownerAt(t *testing.T, t0 time.Time) (*Owner, *Renew) {
	t.Helper()
	o, err := NewOwner(testConfig(16), "a", 1)
	if err != nil {
		t.Fatal(err)
	}
	o.SetLeader(t0, "L", 5)
	return o, lastRenew(t, o)
}

func lastRenew(t *testing.T, o *Owner) *Renew {
	t.Helper()
	var r *Renew
	for _, e := range o.Ready().Messages {
		if m, ok := e.Msg.(*Renew); ok {
			if e.To != "L" {
				t.Fatalf("renewal sent to %q, want the leader L", e.To)
			}
			r = m
		}
	}
	if r == nil {
		t.Fatal("no renewal sent")
	}
	return r
}

// countRenewals is how many renewals the pending outputs hold; it clears them.
func countRenewals(o *Owner) int {
	n := 0
	for _, e := range o.Ready().Messages {
		if _, ok := e.Msg.(*Renew); ok {
			n++
		}
	}
	return n
}

func grant(r *Renew, shards, confirm []uint32) *Grant {
	return &Grant{Epoch: 5, Node: "a", Boot: 1, Seq: r.Seq, Duration: 3 * time.Second, Shards: shards, Confirm: confirm}
}

// The lease counts from the moment the renewal was sent, not from the grant's
// arrival: a grant delayed by 2 s is worth 2 s less.
func TestOwnerLeaseCountsFromRenewalSend(t *testing.T) {
	t0 := simBase
	o, r := ownerAt(t, t0)
	o.Step(t0.Add(2*time.Second), grant(r, []uint32{3}, nil))
	validity := lease.HolderValidity(3*time.Second, 0.01, 100*time.Millisecond)
	if !o.Serving(t0.Add(validity-1), 3) {
		t.Fatal("not serving just before the deadline")
	}
	if o.Serving(t0.Add(validity), 3) {
		t.Fatalf("still serving at send+%v: the lease was counted from receipt", validity)
	}
	if o.Serving(t0.Add(time.Second), 4) {
		t.Fatal("serving a shard that was never granted")
	}
	// A grant that arrives after its lease would have ended adds nothing.
	o2, r2 := ownerAt(t, t0)
	o2.Step(t0.Add(validity), grant(r2, []uint32{3}, nil))
	if len(o2.Held(t0.Add(validity))) != 0 {
		t.Fatal("a grant arriving after its validity started a lease")
	}
}

// Grants apply in renewal order: one answering an older renewal than the last
// applied is ignored, and so is one answering a renewal this process never sent.
func TestOwnerIgnoresOldAndUnknownGrants(t *testing.T) {
	t0 := simBase
	o, r1 := ownerAt(t, t0)
	o.Tick(t0.Add(time.Second))
	r2 := lastRenew(t, o)
	now := t0.Add(1100 * time.Millisecond)
	o.Step(now, grant(r2, []uint32{1}, nil))
	o.Step(now, grant(r1, []uint32{1, 2}, nil))
	if o.Serving(now, 2) {
		t.Fatal("an older grant added a shard after a newer one was applied")
	}
	unknown := grant(r2, []uint32{7}, nil)
	unknown.Seq = 99
	o.Step(now, unknown)
	if o.Serving(now, 7) || o.Stats().StaleGrants != 2 {
		t.Fatalf("stale grants: serving 7 = %v, StaleGrants = %d; want false, 2", o.Serving(now, 7), o.Stats().StaleGrants)
	}
	other := grant(r2, []uint32{8}, nil)
	other.Boot = 2 // meant for another process of this node
	o.Step(now, other)
	if o.Serving(now, 8) || o.Stats().Malformed != 1 {
		t.Fatal("a grant for another boot was applied")
	}
}

// Confirm only extends what the owner still serves; a held shard in neither list
// is dropped.
func TestOwnerConfirmIsExtendOnly(t *testing.T) {
	t0 := simBase
	o, r1 := ownerAt(t, t0)
	o.Step(t0.Add(10*time.Millisecond), grant(r1, []uint32{1, 2}, nil))
	o.Tick(t0.Add(time.Second))
	r2 := lastRenew(t, o)
	if !slices.Equal(r2.Held, []uint32{1, 2}) || r2.Applied != r1.Seq {
		t.Fatalf("renewal reports Held %v Applied %d, want [1 2] %d", r2.Held, r2.Applied, r1.Seq)
	}
	now := t0.Add(1010 * time.Millisecond)
	o.Step(now, grant(r2, nil, []uint32{1, 5}))
	if !o.Serving(t0.Add(3500*time.Millisecond), 1) {
		t.Error("confirmed shard 1 not extended")
	}
	if o.Serving(now, 5) {
		t.Error("Confirm added shard 5, which the owner did not serve")
	}
	if o.Serving(now, 2) {
		t.Error("shard 2, in neither list, still served")
	}
}

// A node rejects leader messages with an epoch below the highest it has seen,
// and counts them.
func TestOwnerRejectsStaleEpochs(t *testing.T) {
	t0 := simBase
	o, r := ownerAt(t, t0)
	o.Step(t0, &Announce{Epoch: 6, Leader: "M", Version: 1, Checksum: 1})
	if l, e := o.Leader(); l != "M" || e != 6 {
		t.Fatalf("leader %s@%d after a newer announcement, want M@6", l, e)
	}
	o.Ready()
	o.Step(t0, grant(r, []uint32{1}, nil))                                // epoch 5
	o.Step(t0, &Release{Epoch: 5, Node: "a", Shards: []uint32{1}})        // epoch 5
	o.Step(t0, &Announce{Epoch: 4, Leader: "K", Version: 9, Checksum: 9}) // epoch 4
	if o.Serving(t0, 1) || o.Stats().StaleEpoch != 3 || o.HighestEpoch() != 6 {
		t.Fatalf("stale: serving=%v StaleEpoch=%d highest=%d", o.Serving(t0, 1), o.Stats().StaleEpoch, o.HighestEpoch())
	}
	if l, _ := o.Leader(); l != "M" {
		t.Fatalf("a stale announcement moved the leader to %s", l)
	}
	n := 0
	for _, e := range o.Ready().Events {
		if e.Kind == EventStaleEpoch {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d stale-epoch events, want 3", n)
	}
}

// A release stops serving at once and tells the leader with a prompt renewal.
func TestOwnerReleasesOnRequest(t *testing.T) {
	t0 := simBase
	o, r := ownerAt(t, t0)
	o.Step(t0.Add(10*time.Millisecond), grant(r, []uint32{1, 2}, nil))
	o.Ready()
	now := t0.Add(200 * time.Millisecond) // past the prompt gap, before the periodic renewal
	o.Step(now, &Release{Epoch: 5, Node: "a", Shards: []uint32{2}})
	if o.Serving(now, 2) || !o.Serving(now, 1) {
		t.Fatal("release did not drop exactly shard 2")
	}
	if r2 := lastRenew(t, o); !slices.Equal(r2.Held, []uint32{1}) {
		t.Fatalf("prompt renewal holds %v, want [1]", r2.Held)
	}
}

func TestOwnerFetchesMapOnMismatch(t *testing.T) {
	t0 := simBase
	o, _ := ownerAt(t, t0)
	m := testMap(t)
	o.Step(t0, &Announce{Epoch: 7, Leader: "L", Version: 3, Checksum: m.Checksum()})
	var asked bool
	for _, e := range o.Ready().Messages {
		_, asked = e.Msg.(*MapRequest)
		if asked {
			break
		}
	}
	if !asked {
		t.Fatal("no map request after an announcement of an unknown map")
	}
	o.Step(t0, m.Wire())
	if o.Map() == nil || o.Map().Checksum() != m.Checksum() {
		t.Fatal("map not applied")
	}
	bad := m.Wire()
	bad.Version, bad.Checksum = 4, 1
	o.Step(t0, bad)
	if o.Map().Version() != 3 || o.Stats().BadMaps != 1 {
		t.Fatal("a map with a wrong checksum was applied or not counted")
	}
}

// An unanswered renewal is repeated after RetryInterval, not RenewInterval; once
// one is answered the owner is back to one renewal per RenewInterval.
func TestOwnerRetriesUnansweredRenewal(t *testing.T) {
	t0 := simBase
	o, r1 := ownerAt(t, t0)
	retry := o.cfg.RetryInterval
	if got := o.NextDeadline(); !got.Equal(t0.Add(retry)) {
		t.Fatalf("next deadline %v after sending, want send+RetryInterval %v", got.Sub(t0), retry)
	}
	o.Tick(t0.Add(retry - 1))
	if n := len(o.Ready().Messages); n != 0 {
		t.Fatalf("%d messages before RetryInterval elapsed", n)
	}
	o.Tick(t0.Add(retry))
	r2 := lastRenew(t, o)
	if r2.Seq <= r1.Seq {
		t.Fatalf("retry has seq %d, want above %d", r2.Seq, r1.Seq)
	}
	renewals := func(at time.Time) int {
		o.Tick(at)
		return countRenewals(o)
	}
	o.Step(t0.Add(retry+time.Millisecond), grant(r2, nil, nil))
	for at := t0.Add(2 * retry); at.Before(t0.Add(retry + o.cfg.RenewInterval)); at = at.Add(retry) {
		if n := renewals(at); n != 0 {
			t.Fatalf("%d renewals at %v after an answered one, before RenewInterval", n, at.Sub(t0))
		}
	}
	if n := renewals(t0.Add(retry + o.cfg.RenewInterval)); n != 1 {
		t.Fatalf("%d renewals at the periodic renewal, want 1", n)
	}
}

// A map that answers a request but is already superseded by a newer announcement
// is followed at once by another request; an unanswered request is repeated after
// RetryInterval.
func TestOwnerReasksUntilItHoldsTheNewestMap(t *testing.T) {
	t0 := simBase
	o, _ := ownerAt(t, t0)
	o.Ready()
	mapOf := func(version uint64) *MapState {
		m, err := NewMap(5, version, 16, nil, make([]string, 16), make([]State, 16))
		if err != nil {
			t.Fatal(err)
		}
		return m.Wire()
	}
	requests := func() int {
		n := 0
		for _, e := range o.Ready().Messages {
			if _, ok := e.Msg.(*MapRequest); ok {
				n++
			}
		}
		return n
	}
	o.Step(t0, &Announce{Epoch: 5, Leader: "L", Version: 2})
	if n := requests(); n != 1 {
		t.Fatalf("%d map requests after an announcement, want 1", n)
	}
	o.Step(t0.Add(time.Millisecond), &Announce{Epoch: 5, Leader: "L", Version: 3})
	if n := requests(); n != 0 {
		t.Fatalf("%d map requests while one is outstanding, want 0", n)
	}
	o.Step(t0.Add(2*time.Millisecond), mapOf(2))
	if n := requests(); n != 1 {
		t.Fatalf("%d map requests after receiving superseded version 2, want 1", n)
	}
	// That request is lost: asked again after RetryInterval, not before.
	asked := t0.Add(2 * time.Millisecond)
	o.Tick(asked.Add(o.cfg.RetryInterval - 1))
	if n := requests(); n != 0 {
		t.Fatalf("%d map requests before RetryInterval", n)
	}
	o.Tick(asked.Add(o.cfg.RetryInterval))
	if n := requests(); n != 1 {
		t.Fatalf("%d map requests after RetryInterval unanswered, want 1", n)
	}
	o.Step(asked.Add(o.cfg.RetryInterval+time.Millisecond), mapOf(3))
	o.Tick(asked.Add(10 * o.cfg.RetryInterval))
	if n := requests(); n != 0 {
		t.Fatalf("%d map requests while holding the newest map", n)
	}
}

// A handover costs round trips, not prompt gaps: the new owner confirms an
// acquired shard at once, and a release request or an announcement of a newer map
// of the leader's term makes the pending renewal leave at once. Anything else
// (a replayed Release or Announce) waits promptGap after the last renewal.
func TestOwnerRenewsAtOnceForHandovers(t *testing.T) {
	t0 := simBase
	o, r1 := ownerAt(t, t0)
	renewals := func(at time.Time, msg Message) int {
		if msg != nil {
			o.Step(at, msg)
		} else {
			o.Tick(at)
		}
		return countRenewals(o)
	}
	ms := time.Millisecond
	g := grant(r1, []uint32{3}, nil)
	g.Version = 2
	if n := renewals(t0.Add(ms), g); n != 1 {
		t.Fatalf("%d renewals on acquiring a shard, want 1 at once (its confirmation)", n)
	}
	o.Step(t0.Add(2*ms), grant(&Renew{Seq: r1.Seq + 1}, []uint32{3}, nil))
	announce := &Announce{Epoch: 5, Leader: "L", Version: 3}
	if n := renewals(t0.Add(3*ms), announce); n != 0 {
		t.Fatalf("%d renewals on a newer map alone, want 0: it does not ask for one", n)
	}
	if n := renewals(t0.Add(4*ms), &Release{Epoch: 5, Node: "a", Shards: []uint32{3}}); n != 1 {
		t.Fatalf("%d renewals on a release request under a newer map, want 1 at once", n)
	}
	// Replays: the same request and announcement again, then a nudge.
	for i, msg := range []Message{&Release{Epoch: 5, Node: "a", Shards: []uint32{3}}, announce, &Release{Epoch: 5, Node: "a"}} {
		if n := renewals(t0.Add(time.Duration(5+i)*ms), msg); n != 0 {
			t.Fatalf("%d renewals on replayed message %d, want 0 before promptGap", n, i)
		}
	}
	// The nudge is pending: it leaves at once when a newer map is announced,
	// whichever of the two arrived first, and else after promptGap.
	if n := renewals(t0.Add(10*ms), &Announce{Epoch: 5, Leader: "L", Version: 4}); n != 1 {
		t.Fatalf("%d renewals when a newer map follows a nudge, want 1 at once", n)
	}
	o.Step(t0.Add(10*ms), grant(&Renew{Seq: r1.Seq + 3}, nil, nil))
	if n := renewals(t0.Add(11*ms), &Release{Epoch: 5, Node: "a"}); n != 0 {
		t.Fatalf("%d renewals on a nudge under a map already reported, want 0", n)
	}
	if n := renewals(t0.Add(10*ms+o.cfg.promptGap()-1), nil); n != 0 {
		t.Fatalf("%d renewals before promptGap, want 0", n)
	}
	if n := renewals(t0.Add(10*ms+o.cfg.promptGap()), nil); n != 1 {
		t.Fatalf("%d renewals at promptGap, want 1", n)
	}
}

// A grant that crossed a Release (it answers a renewal sent before the
// Release arrived) gives the released shard back; the next grant omits it, and
// the owner reports that drop at once, as it reports a Release: otherwise the
// leader learns of the release only from the periodic renewal, a second later.
func TestOwnerReportsADropByOmissionAtOnce(t *testing.T) {
	t0 := simBase
	ms := time.Millisecond
	o, r1 := ownerAt(t, t0)
	o.Step(t0.Add(ms), grant(r1, []uint32{3}, nil))
	r2 := lastRenew(t, o) // confirms shard 3
	o.Step(t0.Add(2*ms), grant(r2, []uint32{3}, nil))
	o.Tick(t0.Add(300 * ms)) // past every prompt gap
	o.Ready()
	// The periodic renewal r3 leaves; the leader drains 3 after answering it
	// (its grant lists 3), and the Release arrives before that grant.
	o.Tick(t0.Add(2 * time.Second))
	r3 := lastRenew(t, o)
	at := t0.Add(2 * time.Second).Add(o.cfg.promptGap() + 5*ms) // the prompt renewal leaves at once
	o.Step(at, &Release{Epoch: 5, Node: "a", Shards: []uint32{3}})
	r4 := lastRenew(t, o)
	if slices.Contains(r4.Held, 3) {
		t.Fatalf("renewal after the release holds %v", r4.Held)
	}
	o.Step(at.Add(ms), grant(r3, []uint32{3}, nil)) // crossed the Release: 3 is back
	o.Ready()
	if !o.Serving(at.Add(ms), 3) {
		t.Fatal("the crossing grant did not give shard 3 back; the test no longer shows the case")
	}
	o.Step(at.Add(2*ms), grant(r4, nil, nil)) // omits 3
	if o.Serving(at.Add(2*ms), 3) {
		t.Fatal("still serving 3 after a grant that omits it")
	}
	if n := countRenewals(o); n != 1 {
		t.Fatalf("%d renewals on dropping a shard a grant omitted, want 1 at once", n)
	}
}
