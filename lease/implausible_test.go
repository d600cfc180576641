package lease

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// One forged Prepare at epoch 2^64-1, delivered to every voter while no lease stood
// (here: just after the leader released it), ended leadership for good: the voters
// promised it and saved the promise, and no candidate had an epoch left above it.
// The jump is refused: a new leader is elected and no promise on disk moves.
func TestForgedPrepareAtExhaustedEpochIsRefused(t *testing.T) {
	c := newCluster(3, 5, nil)
	l := stableLeader(t, c, 5*sec)
	if err := c.nodes[l].m.Release(c.local(l)); err != nil {
		t.Fatal(err)
	}
	c.after(l)
	for j := range c.nodes {
		c.inject(c.net.Now()+3*time.Millisecond, j, &Prepare{Epoch: math.MaxUint64, Candidate: "x"})
	}
	start, led := c.net.Now(), time.Duration(0)
	for c.net.Now() < start+30*sec {
		c.run(c.net.Now() + 10*time.Millisecond)
		if c.leader() >= 0 {
			led += 10 * time.Millisecond
		}
	}
	noViolation(t, c)
	t.Logf("a leader held office %v of the 30 s after the forged Prepare", led)
	if c.leader() < 0 || len(c.acquired) != 2 {
		t.Fatalf("no leader 30 s after the forged Prepare; acquisitions %v", c.acquired)
	}
	for _, nd := range c.nodes {
		if p := nd.store.st.Promised; p > wire.MaxJump {
			t.Fatalf("%s saved promise %d", nd.name, p)
		}
		if nd.m.Stats().Implausible != 1 {
			t.Fatalf("%s stats %+v, want 1 implausible", nd.name, nd.m.Stats())
		}
	}
}

// Each counter a lease message carries may be at most wire.MaxJump above what the
// receiver knows: epochs above the highest epoch seen, a Reject's promise likewise,
// a voter set's epoch not above the message's, and its seq above ours of that epoch.
func TestLeaseCounterJumpBound(t *testing.T) {
	const known = 5 // the voter's promise
	mb := Membership{Voters: abc}
	for _, tc := range []struct {
		name string
		msg  func(j uint64) Message
	}{
		{"prepare epoch", func(j uint64) Message { return &Prepare{Epoch: known + j, Candidate: "b"} }},
		{"propose epoch", func(j uint64) Message {
			return &Propose{Epoch: known + j, Seq: 1, Holder: "b", Duration: sec, Membership: mb}
		}},
		{"renew epoch", func(j uint64) Message {
			return &Renew{Epoch: known + j, Seq: 1, Holder: "b", Duration: sec, Membership: mb}
		}},
		{"renew voter-set seq", func(j uint64) Message {
			return &Renew{Epoch: known, Seq: 1, Holder: "b", Duration: sec, Membership: Membership{Seq: j, Voters: abc}}
		}},
		{"renew round", func(j uint64) Message {
			return &Renew{Epoch: known, Seq: j, Holder: "b", Duration: sec, Membership: mb}
		}},
		{"reject highest", func(j uint64) Message { return &Reject{Epoch: known, Voter: "b", Highest: known + j} }},
	} {
		for _, j := range []uint64{wire.MaxJump, wire.MaxJump + 1} {
			m, quiet := voterAt(t, &MemoryStorage{})
			m.Step(quiet, &Prepare{Epoch: known, Candidate: "b"})
			m.Step(quiet, tc.msg(j))
			if got, want := m.Stats().Implausible, j-wire.MaxJump; got != want {
				t.Errorf("%s at +%d: %d implausible, want %d", tc.name, j, got, want)
			}
		}
	}
	m, quiet := voterAt(t, &MemoryStorage{})
	m.Step(quiet, &Renew{Epoch: 3, Seq: 1, Holder: "b", Duration: sec, Membership: Membership{Epoch: 4, Seq: 1, Voters: abc}})
	if m.Stats().Implausible != 1 || m.Membership().Epoch != 0 {
		t.Fatalf("a voter set newer than its message's epoch was taken: %+v, %+v", m.Membership(), m.Stats())
	}
}

// A voter whose saved promise is already 2^64-1 (written before the bound existed)
// has no epoch to campaign for: it does not wrap to epoch 0, and it does not spin.
func TestNoCampaignPastTheLastEpoch(t *testing.T) {
	store := &MemoryStorage{st: State{Promised: math.MaxUint64, PromisedTo: "x"}}
	m, err := New(DefaultConfig("a", []string{"a"}), store, rand.New(rand.NewPCG(1, 1)), origin)
	if err != nil {
		t.Fatal(err)
	}
	now := origin
	for range 20 {
		now = m.NextDeadline()
		m.Tick(now)
	}
	if st := m.Stats(); st.Campaigns != 0 || st.Implausible != 20 || now.Sub(origin) < 20*m.cfg.BackoffMin {
		t.Fatalf("after 20 deadlines (last at +%v): %+v", now.Sub(origin), st)
	}
}
