package lease

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var abc = []string{"a", "b", "c"}

// voterAt builds voter "a" of {a,b,c} started at origin on store, and returns the
// instant its quiet period ends.
func voterAt(t *testing.T, store *MemoryStorage) (*Machine, time.Time) {
	t.Helper()
	cfg := DefaultConfig("a", abc)
	m, err := New(cfg, store, rand.New(rand.NewPCG(1, 1)), origin)
	if err != nil {
		t.Fatal(err)
	}
	m.Ready()
	return m, origin.Add(QuietPeriod(cfg.LeaseDuration, cfg.MaxDrift))
}

// only returns the single message of rd sent to to.
func only(t *testing.T, rd Ready, to string) Message {
	t.Helper()
	if len(rd.Messages) != 1 || rd.Messages[0].To != to {
		t.Fatalf("want one message to %s, got %+v", to, rd.Messages)
	}
	return rd.Messages[0].Msg
}

func TestPromiseIsSavedBeforeItIsSent(t *testing.T) {
	m, quiet := voterAt(t, &MemoryStorage{})
	m.Step(quiet, &Prepare{Epoch: 5, Candidate: "b"})
	rd := m.Ready()
	if _, ok := only(t, rd, "b").(*Promise); !ok {
		t.Fatalf("want a Promise, got %+v", rd.Messages[0].Msg)
	}
	if rd.State == nil || rd.State.Promised != 5 || rd.State.PromisedTo != "b" {
		t.Fatalf("the Ready carrying the Promise must carry the promise to save: %+v", rd.State)
	}
	// A retransmitted Prepare changes nothing to save.
	m.Step(quiet, &Prepare{Epoch: 5, Candidate: "b"})
	if rd := m.Ready(); rd.State != nil {
		t.Fatalf("nothing changed, yet State to save: %+v", rd.State)
	}
}

func TestVoterRules(t *testing.T) {
	mb := Membership{Voters: abc}
	for _, tc := range []struct {
		name  string
		setup []Message // stepped after the quiet period, answers discarded
		req   Message
		want  string // "promise", "accept", or "reject" plus the reason field
	}{
		{"fresh voter promises", nil, &Prepare{Epoch: 1, Candidate: "b"}, "promise"},
		{"lower epoch refused", []Message{&Prepare{Epoch: 5, Candidate: "b"}}, &Prepare{Epoch: 4, Candidate: "c"}, "reject highest=5"},
		{"same epoch to another refused", []Message{&Prepare{Epoch: 5, Candidate: "b"}}, &Prepare{Epoch: 5, Candidate: "c"}, "reject highest=5"},
		{"same epoch to same candidate again", []Message{&Prepare{Epoch: 5, Candidate: "b"}}, &Prepare{Epoch: 5, Candidate: "b"}, "promise"},
		{"standing lease blocks a higher epoch", []Message{&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb}}, &Prepare{Epoch: 9, Candidate: "c"}, "reject holder=b"},
		{"standing lease does not block its holder", []Message{&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb}}, &Prepare{Epoch: 9, Candidate: "b"}, "promise"},
		{"propose without prepare (Paxos phase 2)", nil, &Propose{Epoch: 3, Seq: 1, Holder: "c", Duration: 3 * sec, Membership: mb}, "accept"},
		{"propose below promise refused", []Message{&Prepare{Epoch: 5, Candidate: "b"}}, &Propose{Epoch: 4, Seq: 1, Holder: "c", Duration: 3 * sec, Membership: mb}, "reject highest=5"},
		{"renew of another holder refused while lease stands", []Message{&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb}}, &Renew{Epoch: 6, Seq: 1, Holder: "c", Duration: 3 * sec, Membership: mb}, "reject holder=b"},
		{"renew by a holder we missed", nil, &Renew{Epoch: 7, Seq: 4, Holder: "c", Duration: 3 * sec, Membership: mb}, "accept"},
		{"released lease no longer blocks", []Message{&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb}, &Release{Epoch: 5, Holder: "b"}}, &Prepare{Epoch: 9, Candidate: "c"}, "promise"},
		{"release of another epoch ignored", []Message{&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb}, &Release{Epoch: 4, Holder: "b"}}, &Prepare{Epoch: 9, Candidate: "c"}, "reject holder=b"},
		{"older voter set refused", []Message{&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: Membership{Epoch: 5, Seq: 1, Voters: abc, Joint: []string{"b", "c", "d"}}}, &Release{Epoch: 5, Holder: "b"}}, &Prepare{Epoch: 9, Candidate: "c"}, "reject membership=5.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, quiet := voterAt(t, &MemoryStorage{})
			for _, s := range tc.setup {
				m.Step(quiet, s)
			}
			m.Ready()
			m.Step(quiet.Add(time.Millisecond), tc.req)
			rd := m.Ready()
			if len(rd.Messages) != 1 {
				t.Fatalf("want one answer, got %+v", rd.Messages)
			}
			var got string
			switch r := rd.Messages[0].Msg.(type) {
			case *Promise:
				got = "promise"
			case *Accept:
				got = "accept"
			case *Reject:
				switch {
				case r.Membership != nil:
					got = "reject membership=" + itoa(r.Membership.Epoch) + "." + itoa(r.Membership.Seq)
				case r.Holder != "":
					got = "reject holder=" + r.Holder
				default:
					got = "reject highest=" + itoa(r.Highest)
				}
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestRestartedVoterNeverLowersPromiseAndStaysQuiet(t *testing.T) {
	store := &MemoryStorage{}
	m, quiet := voterAt(t, store)
	m.Step(quiet, &Prepare{Epoch: 7, Candidate: "b"})
	if rd := m.Ready(); rd.State != nil {
		_ = store.Save(*rd.State)
	}
	// Restart: a new machine on the same storage, at a later instant.
	restart := quiet.Add(time.Minute)
	m2, err := New(DefaultConfig("a", abc), store, rand.New(rand.NewPCG(2, 2)), restart)
	if err != nil {
		t.Fatal(err)
	}
	if got := m2.st.Promised; got != 7 {
		t.Fatalf("restarted voter promises %d, want 7", got)
	}
	m2.Step(restart.Add(time.Second), &Prepare{Epoch: 8, Candidate: "c"})
	if _, ok := only(t, m2.Ready(), "c").(*Reject); !ok {
		t.Fatal("a voter must grant nothing within QuietPeriod of starting")
	}
	after := restart.Add(QuietPeriod(3*sec, 0.01))
	m2.Step(after, &Prepare{Epoch: 6, Candidate: "c"})
	if r, ok := only(t, m2.Ready(), "c").(*Reject); !ok || r.Highest != 7 {
		t.Fatalf("lower epoch after restart: %+v, want Reject{Highest: 7}", r)
	}
	m2.Step(after, &Prepare{Epoch: 8, Candidate: "c"})
	if _, ok := only(t, m2.Ready(), "c").(*Promise); !ok {
		t.Fatal("after the quiet period a higher epoch is promised")
	}
}

func TestMalformedInputIsCountedAndDropped(t *testing.T) {
	m, quiet := voterAt(t, &MemoryStorage{})
	bad := []Message{
		nil,
		&Prepare{Epoch: 0, Candidate: "b"},
		&Prepare{Epoch: 1},
		&Propose{Epoch: 1, Seq: 1, Holder: "b", Duration: time.Hour, Membership: Membership{Voters: abc}}, // longer than we grant
		&Propose{Epoch: 1, Seq: 1, Holder: "b", Duration: 3 * sec},                                        // no voters
		&Renew{Epoch: 1, Seq: 0, Holder: "b", Duration: 3 * sec, Membership: Membership{Voters: abc}},
		&Release{Epoch: 1},
		&Promise{Epoch: 1},
		&Accept{Epoch: 1, Seq: 1},
		&Reject{Epoch: 1, Voter: "b", Membership: &Membership{Voters: []string{"x", "x"}}},
	}
	for _, msg := range bad {
		m.Step(quiet, msg)
	}
	if got := m.Stats().Malformed; got != uint64(len(bad)) {
		t.Fatalf("Malformed = %d, want %d", got, len(bad))
	}
	if rd := m.Ready(); len(rd.Messages) != 0 || rd.State != nil {
		t.Fatalf("malformed input produced output: %+v", rd)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"Self", func(c *Config) { c.Self = "" }},
		{"Voters", func(c *Config) { c.Voters = nil }},
		{"Voters", func(c *Config) { c.Voters = []string{"a", "a"} }},
		{"LeaseDuration", func(c *Config) { c.LeaseDuration = 0 }},
		{"MaxDrift", func(c *Config) { c.MaxDrift = 0.5 }},
		{"Margin", func(c *Config) { c.Margin = -1 }},
		{"Margin", func(c *Config) { c.Margin = 3 * sec }},
		{"RenewInterval", func(c *Config) { c.RenewInterval = 0 }},
		{"RenewInterval", func(c *Config) { c.RenewInterval = 2900 * time.Millisecond }},
		{"BackoffMin", func(c *Config) { c.BackoffMin = -1 }},
		{"BackoffMax", func(c *Config) { c.BackoffMax = c.BackoffMin - 1 }},
		{"AttemptTimeout", func(c *Config) { c.AttemptTimeout = 0 }},
	} {
		cfg := DefaultConfig("a", abc)
		tc.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v", tc.field, err)
		}
	}
	if err := DefaultConfig("a", abc).Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

func TestFenceChecker(t *testing.T) {
	var f FenceChecker
	steps := []struct {
		observe, check uint64
		ok             bool
	}{
		{0, 3, true},  // first leader
		{0, 3, true},  // same epoch again
		{5, 4, false}, // saw 5 elsewhere: 4 is stale
		{0, 5, true},
		{0, 9, true},
		{0, 8, false},
	}
	for i, s := range steps {
		f.ObserveEpoch(s.observe)
		err := f.CheckFence(s.check)
		if (err == nil) != s.ok || (err != nil && !errors.Is(err, ErrStaleEpoch)) {
			t.Fatalf("step %d: CheckFence(%d) = %v", i, s.check, err)
		}
	}
	if f.Rejected() != 2 || f.Highest() != 9 {
		t.Fatalf("Rejected=%d Highest=%d, want 2, 9", f.Rejected(), f.Highest())
	}
}

func TestReleaseHandsOverQuickly(t *testing.T) {
	c := newCluster(3, 12, nil)
	l := stableLeader(t, c, 5*sec)
	if err := c.nodes[l].m.Release(c.local(l)); err != nil {
		t.Fatal(err)
	}
	c.after(l)
	if c.nodes[l].m.IsLeader(c.local(l)) {
		t.Fatal("still leader after Release")
	}
	from := c.net.Now()
	c.run(c.net.Now() + sec) // far less than a lease: only Release can explain a new leader
	noViolation(t, c)
	if nl := c.leader(); nl < 0 || nl == l {
		t.Fatalf("no other leader within 1 s of a release (got %d)", nl)
	}
	if took := c.acquired[len(c.acquired)-1].at - from; took > 500*time.Millisecond {
		t.Errorf("handover took %v", took)
	}
	if err := c.nodes[l].m.Release(c.local(l)); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Release by a follower: %v", err)
	}
}

// A voter takes a Propose or Renew only when it is newer than the last round it
// accepted of the same lease: a duplicate or replay is dropped unanswered and
// extends nothing, while a restarted holder's new epoch starts its rounds afresh.
func TestVoterTakesOnlyNewerRounds(t *testing.T) {
	mb := Membership{Voters: abc}
	m, quiet := voterAt(t, &MemoryStorage{})
	renew := func(at time.Time, msg Message) []Envelope {
		m.Step(at, msg)
		return m.Ready().Messages
	}
	if got := renew(quiet, &Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb}); len(got) != 1 {
		t.Fatalf("propose: %+v", got)
	}
	if got := renew(quiet.Add(sec), &Renew{Epoch: 5, Seq: 2, Holder: "b", Duration: 3 * sec, Membership: mb}); len(got) != 1 {
		t.Fatalf("renew: %+v", got)
	}
	_, _, until, _ := m.Leader(quiet.Add(sec))
	for _, replay := range []Message{
		&Renew{Epoch: 5, Seq: 2, Holder: "b", Duration: 3 * sec, Membership: mb},
		&Renew{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb},
		&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb},
	} {
		if got := renew(quiet.Add(2*sec), replay); len(got) != 0 {
			t.Fatalf("replayed %+v answered: %+v", replay, got)
		}
	}
	if _, _, u, _ := m.Leader(quiet.Add(2 * sec)); !u.Equal(until) {
		t.Fatalf("replays moved the lease's expiry from %v to %v", until, u)
	}
	if got := m.Stats().Stale; got != 3 {
		t.Fatalf("Stale = %d, want 3", got)
	}
	// b restarted: a new epoch, its round counter from 1 again.
	got := renew(quiet.Add(2*sec), &Propose{Epoch: 6, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb})
	if len(got) != 1 {
		t.Fatalf("restarted holder's propose: %+v", got)
	}
	if _, ok := got[0].Msg.(*Accept); !ok {
		t.Fatalf("restarted holder's propose refused: %+v", got[0].Msg)
	}
}

// A voter that promised an epoch to a candidate who then gave it up (a lease of a
// lower epoch won meanwhile) refused that leader's renewals for as long as it
// reigned, and was lost to its quorum (seen in the chaos suite and in node's TLS
// test: the voter campaigned again and again and never learned the leader). The
// candidate's Release of the epoch frees the promise; a Release of another
// candidate's epoch does not.
func TestReleasedPromiseLetsTheWinnerBack(t *testing.T) {
	mb := Membership{Voters: abc}
	m, quiet := voterAt(t, &MemoryStorage{})
	d := DefaultConfig("a", abc).LeaseDuration
	m.Step(quiet, &Prepare{Epoch: 2, Candidate: "c"})
	if _, ok := only(t, m.Ready(), "c").(*Promise); !ok {
		t.Fatal("no promise to c")
	}
	m.Step(quiet, &Renew{Epoch: 1, Seq: 5, Holder: "b", Duration: d, Membership: mb})
	if _, ok := only(t, m.Ready(), "b").(*Reject); !ok {
		t.Fatal("a renewal below the promise was not refused: the test proves nothing")
	}
	m.Step(quiet, &Release{Epoch: 2, Holder: "b"}) // not the promised candidate
	m.Step(quiet, &Release{Epoch: 1, Holder: "c"}) // not the promised epoch
	if rd := m.Ready(); rd.State != nil {
		t.Fatalf("a Release of another promise changed what is saved: %+v", rd.State)
	}
	m.Step(quiet, &Release{Epoch: 2, Holder: "c"})
	rd := m.Ready()
	if rd.State == nil || rd.State.Promised != 0 || rd.State.PromisedTo != "" {
		t.Fatalf("the released promise was not dropped and saved: %+v", rd.State)
	}
	m.Step(quiet, &Renew{Epoch: 1, Seq: 6, Holder: "b", Duration: d, Membership: mb})
	if _, ok := only(t, m.Ready(), "b").(*Accept); !ok {
		t.Fatal("the leader's renewal was refused after the promise was released")
	}
	if h, e, _, ok := m.Leader(quiet); !ok || h != "b" || e != 1 {
		t.Fatalf("Leader = %q %d %v, want b 1", h, e, ok)
	}
	if got := m.Stats().PromisesReleased; got != 1 {
		t.Fatalf("PromisesReleased %d, want 1", got)
	}
}

// A candidate that got a promise but then finds a lease standing (it accepted
// another holder's Propose while it prepared) gives its attempt up and releases
// the promises it got.
func TestFailedPrepareReleasesItsPromises(t *testing.T) {
	mb := Membership{Voters: abc}
	m, quiet := voterAt(t, &MemoryStorage{})
	at := quiet.Add(time.Hour)
	m.Tick(at) // no lease: campaign
	var epoch uint64
	for _, o := range m.Ready().Messages {
		if p, ok := o.Msg.(*Prepare); ok {
			epoch = p.Epoch
		}
	}
	if epoch == 0 {
		t.Fatal("no campaign")
	}
	m.Step(at, &Propose{Epoch: epoch, Seq: 1, Holder: "c", Duration: DefaultConfig("a", abc).LeaseDuration, Membership: mb})
	m.Ready()
	m.Step(at, &Promise{Epoch: epoch, Voter: "b"}) // a quorum with our own promise, which c's lease now refuses
	var released bool
	for _, o := range m.Ready().Messages {
		if r, ok := o.Msg.(*Release); ok && r.Epoch == epoch && r.Holder == "a" && o.To == "b" {
			released = true
		}
	}
	if !released {
		t.Fatal("the failed attempt did not release b's promise")
	}
}
