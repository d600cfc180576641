package sim

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
)

func TestStreamsAreStableAndIndependent(t *testing.T) {
	a, b := Stream(7, "network"), Stream(7, "network")
	for i := 0; i < 10; i++ {
		if x, y := a.Uint64(), b.Uint64(); x != y {
			t.Fatalf("same seed and name diverged at draw %d: %x vs %x", i, x, y)
		}
	}
	if Stream(7, "network").Uint64() == Stream(7, "faults").Uint64() {
		t.Fatal("different names gave the same first draw")
	}
	if Stream(7, "network").Uint64() == Stream(8, "network").Uint64() {
		t.Fatal("different seeds gave the same first draw")
	}
}

func newRecSim(t *testing.T, n int, cfg Config) (*Sim, []*recorder) {
	t.Helper()
	var recs []*recorder
	cfg.NewStack = func(name, addr string, rng *rand.Rand, now time.Time) (Stack, error) {
		r := &recorder{}
		recs = append(recs, r)
		return r, nil
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := s.AddNode(); err != nil {
			t.Fatal(err)
		}
	}
	return s, recs
}

// fixed is a link with a fixed delay and nothing else.
var fixed = Link{Latency: time.Millisecond}

func TestPacketArrivesAfterLinkDelayAndProcessing(t *testing.T) {
	s, recs := newRecSim(t, 2, Config{Link: fixed, ProcDelay: 10 * time.Microsecond})
	recs[0].out.Packets = []swim.Packet{{To: s.Addr(1), Data: []byte("hi")}}
	s.afterInput(0, s.now)
	s.RunFor(time.Second)
	want := []call{{"packet", time.Millisecond + 10*time.Microsecond, s.Addr(0), "hi"}}
	if !slices.Equal(recs[1].calls, want) {
		t.Fatalf("calls = %+v, want %+v", recs[1].calls, want)
	}
	if m := s.Metrics(); m.MessagesSent != 1 || m.BytesSent != 2 {
		t.Fatalf("metrics = %+v", m)
	}
}

func TestPauseQueuesInputsAndDelaysTimers(t *testing.T) {
	s, recs := newRecSim(t, 2, Config{Link: fixed, ProcDelay: time.Nanosecond})
	recs[1].deadline = Epoch().Add(500 * time.Millisecond)
	s.afterInput(1, s.now)
	s.Pause(1, 2*time.Second)
	s.At(100*time.Millisecond, func(s *Sim) {
		recs[0].out.Packets = []swim.Packet{{To: s.Addr(1), Data: []byte("a")}, {To: s.Addr(1), Data: []byte("b")}}
		s.afterInput(0, s.now)
	})
	s.RunFor(3 * time.Second)
	got := recs[1].calls
	// At the wake the timer that fell due during the pause runs first (a Go
	// runtime runs expired timers before it polls the network), then the inputs
	// in the order they arrived, each after the ProcDelay (1ns) of the one before.
	wake := 2 * time.Second
	want := []call{{"tick", wake, "", ""}, {"packet", wake + 1, s.Addr(0), "a"}, {"packet", wake + 2, s.Addr(0), "b"}}
	if !slices.Equal(got, want) {
		t.Fatalf("calls = %+v, want %+v", got, want)
	}
}

func TestPauseExtendedWhilePausedWakesAtTheNewEnd(t *testing.T) {
	s, recs := newRecSim(t, 2, Config{Link: fixed})
	recs[1].deadline = Epoch().Add(500 * time.Millisecond)
	s.afterInput(1, s.now)
	s.Pause(1, time.Second)
	s.At(900*time.Millisecond, func(s *Sim) { s.Pause(1, time.Second) })
	s.RunFor(3 * time.Second)
	want := []call{{"tick", 1900 * time.Millisecond, "", ""}}
	if got := recs[1].calls; !slices.Equal(got, want) {
		t.Fatalf("calls = %+v, want %+v", got, want)
	}
}

func TestPauseInsideStallRunsTimersAtTheWake(t *testing.T) {
	s, recs := newRecSim(t, 2, Config{Link: fixed})
	recs[1].deadline = Epoch().Add(500 * time.Millisecond)
	s.afterInput(1, s.now)
	s.Stall(1, 3*time.Second)
	s.Pause(1, time.Second)
	s.At(100*time.Millisecond, func(s *Sim) {
		recs[0].out.Packets = []swim.Packet{{To: s.Addr(1), Data: []byte("a")}}
		s.afterInput(0, s.now)
	})
	s.RunFor(4 * time.Second)
	want := []call{{"tick", time.Second, "", ""}, {"packet", 3 * time.Second, s.Addr(0), "a"}}
	if got := recs[1].calls; !slices.Equal(got, want) {
		t.Fatalf("calls = %+v, want %+v", got, want)
	}
}

func TestStallDelaysInputsButNotTimers(t *testing.T) {
	s, recs := newRecSim(t, 2, Config{Link: fixed, ProcDelay: time.Nanosecond})
	recs[1].deadline = Epoch().Add(500 * time.Millisecond)
	s.afterInput(1, s.now)
	s.Stall(1, 2*time.Second)
	s.At(100*time.Millisecond, func(s *Sim) {
		recs[0].out.Packets = []swim.Packet{{To: s.Addr(1), Data: []byte("a")}, {To: s.Addr(1), Data: []byte("b")}}
		s.afterInput(0, s.now)
	})
	s.RunFor(3 * time.Second)
	end := 2 * time.Second
	want := []call{{"tick", 500 * time.Millisecond, "", ""}, {"packet", end, s.Addr(0), "a"}, {"packet", end + 1, s.Addr(0), "b"}}
	if got := recs[1].calls; !slices.Equal(got, want) {
		t.Fatalf("calls = %+v, want %+v", got, want)
	}
}

func TestCrashDropsEverythingAndRestartIsFresh(t *testing.T) {
	s, recs := newRecSim(t, 2, Config{Link: fixed})
	recs[1].deadline = Epoch().Add(time.Second)
	s.afterInput(1, s.now)
	recs[0].out.Packets = []swim.Packet{{To: s.Addr(1), Data: []byte("x")}}
	s.afterInput(0, s.now)
	s.Crash(1)
	s.RunFor(2 * time.Second)
	if len(recs[1].calls) != 0 {
		t.Fatalf("crashed node saw %+v", recs[1].calls)
	}
	old := s.Addr(1)
	if err := s.Restart(1, true, []string{s.Addr(0)}); err != nil {
		t.Fatal(err)
	}
	fresh := s.Stack(1).(*recorder)
	if s.Addr(1) == old || fresh == recs[1] {
		t.Fatalf("restart: addr %s (old %s), same stack %v", s.Addr(1), old, fresh == recs[1])
	}
	recs[0].out.Packets = []swim.Packet{{To: old, Data: []byte("to-old")}, {To: s.Addr(1), Data: []byte("to-new")}}
	s.afterInput(0, s.now)
	s.RunFor(time.Second)
	want := []call{{"join", 2 * time.Second, "", ""}, {"packet", 2*time.Second + time.Millisecond + 20*time.Microsecond, s.Addr(0), "to-new"}}
	if !slices.Equal(fresh.calls, want) {
		t.Fatalf("restarted node calls = %+v, want %+v", fresh.calls, want)
	}
}

func TestStreamsReplyOrFail(t *testing.T) {
	s, recs := newRecSim(t, 3, Config{Link: fixed, ProcDelay: time.Nanosecond, StreamTimeout: 5 * time.Second})
	recs[1].reply = []byte("pong")
	recs[0].out.Streams = []stack.Stream{{To: s.Addr(1), Data: []byte("ping")}, {To: s.Addr(2), Data: []byte("ping")}}
	s.Crash(2)
	s.afterInput(0, s.now)
	s.RunFor(time.Second)
	// Three one-way delays to the target, one back; refusal after a round trip.
	// Transfer time of 4 bytes at 1 Gbit/s is 32ns.
	want := []call{
		{"failed", 2*time.Millisecond + 1, s.Addr(2), ""},
		{"reply", 4*time.Millisecond + 2 + 64, s.Addr(1), "pong"},
	}
	if !slices.Equal(recs[0].calls, want) {
		t.Fatalf("calls = %+v, want %+v", recs[0].calls, want)
	}
	s.Partition([]int{0})
	recs[0].out.Streams = []stack.Stream{{To: s.Addr(1), Data: []byte("ping")}}
	s.afterInput(0, s.now)
	s.RunFor(10 * time.Second)
	last := recs[0].calls[len(recs[0].calls)-1]
	if last.what != "failed" || last.at != time.Second+5*time.Second+1 {
		t.Fatalf("stream into a partition: last call %+v, want failed after the timeout", last)
	}
}

func TestPartitionsMTUAndOneWay(t *testing.T) {
	s, recs := newRecSim(t, 3, Config{Link: fixed, MTU: 10})
	send := func(from, to int, data string) {
		recs[from].out.Packets = []swim.Packet{{To: s.Addr(to), Data: []byte(data)}}
		s.afterInput(int32(from), s.now)
		s.RunFor(time.Second)
	}
	send(0, 1, "this is longer than ten")
	s.PartitionOneWay([]int{0}, []int{1})
	send(0, 1, "blocked")
	send(1, 0, "back")
	send(0, 2, "other")
	s.Partition([]int{0, 1}, []int{2})
	send(0, 1, "same")
	send(1, 2, "across")
	s.Heal()
	send(1, 2, "healed")
	got := func(i int) (out []string) {
		for _, c := range recs[i].calls {
			out = append(out, c.data)
		}
		return out
	}
	if g := got(0); !slices.Equal(g, []string{"back"}) {
		t.Errorf("node 0 got %q", g)
	}
	if g := got(1); !slices.Equal(g, []string{"same"}) {
		t.Errorf("node 1 got %q", g)
	}
	if g := got(2); !slices.Equal(g, []string{"other", "healed"}) {
		t.Errorf("node 2 got %q", g)
	}
	if m := s.Metrics(); m.DroppedMTU != 1 || m.DroppedPartition != 2 {
		t.Errorf("drops: mtu %d partition %d, want 1 and 2", m.DroppedMTU, m.DroppedPartition)
	}
}

func TestClockDrift(t *testing.T) {
	s, recs := newRecSim(t, 1, Config{Link: fixed})
	s.RunFor(time.Second)
	s.SetDrift(0, 0.25) // local clock runs 25% fast from virtual 1s
	s.RunFor(4 * time.Second)
	if got, want := s.localTime(s.nodes[0]).Sub(Epoch()), 6*time.Second; got != want {
		t.Fatalf("local time at virtual 5s = %v, want %v", got, want)
	}
	// A local deadline 5s ahead comes 4s of virtual time later.
	recs[0].deadline = Epoch().Add(11 * time.Second)
	s.afterInput(0, s.now)
	s.RunFor(10 * time.Second)
	if c := recs[0].calls; len(c) != 1 || c[0].at != 11*time.Second {
		t.Fatalf("calls = %+v, want one tick at local 11s", c)
	}
	if s.nodes[0].virtual(int64(11*time.Second)) != int64(9*time.Second) {
		t.Fatal("local 11s should map to virtual 9s")
	}
}

func TestGroundTruthAccounting(t *testing.T) {
	s, _ := newRecSim(t, 4, Config{Link: fixed})
	s.Crash(1)
	s.Pause(2, time.Second)
	ev := func(kind swim.EventKind, i int, addr string) {
		s.account(0, swim.Event{Kind: kind, Member: swim.Member{Name: s.Name(i), Addr: addr}})
	}
	ev(swim.EventSuspect, 1, s.Addr(1)) // crashed: a true suspicion
	ev(swim.EventSuspect, 2, s.Addr(2)) // paused
	ev(swim.EventSuspect, 3, s.Addr(3)) // healthy: false
	ev(swim.EventDead, 3, s.Addr(3))    // healthy: false
	ev(swim.EventDead, 3, s.Addr(3))    // the same fact again, from another observer
	ev(swim.EventDead, 3, "10.9.9.9:1") // an old instance: not false
	ev(swim.EventDead, 2, s.Addr(2))    // paused
	s.RunFor(2 * time.Second)
	ev(swim.EventDead, 2, s.Addr(2)) // awake now, but the fact was judged while paused
	s.SetSlow(3, 10)
	ev(swim.EventSuspect, 3, s.Addr(3)) // already judged false
	s.account(0, swim.Event{Kind: swim.EventDead, Member: swim.Member{Name: s.Name(3), Addr: s.Addr(3), Incarnation: 1}})
	s.SetSlow(0, 5)
	ev(swim.EventSuspect, 3, s.Addr(3)) // a false fact, now emitted by a slow observer
	m := s.Metrics()
	if m.FalseSuspicionsAtDegraded != 1 || m.FalseDeathsAtDegraded != 0 {
		t.Errorf("at degraded observers: suspicions %d deaths %d, want 1 and 0", m.FalseSuspicionsAtDegraded, m.FalseDeathsAtDegraded)
	}
	if m.DeadSlow != 1 || m.SuspectedSlow != 0 {
		t.Errorf("slow: suspected %d dead %d, want 0 and 1", m.SuspectedSlow, m.DeadSlow)
	}
	s.SetSlow(0, 1)
	s.SetSlow(3, 1)
	s.Stall(0, time.Second)
	dead := func(obs, i int, inc uint64) {
		s.account(int32(obs), swim.Event{Kind: swim.EventDead, Member: swim.Member{Name: s.Name(i), Addr: s.Addr(i), Incarnation: inc}})
	}
	dead(0, 3, 2) // a false fact emitted by a stalled observer
	dead(3, 0, 5) // about a stalled member: counted with the paused
	m = s.Metrics()
	if m.FalseDeathsAtDegraded != 1 || m.FalseDeadFacts != 2 {
		t.Errorf("stalled observer: false deaths there %d, false dead facts %d, want 1 and 2", m.FalseDeathsAtDegraded, m.FalseDeadFacts)
	}
	m.Deaths -= 2
	m.FalseDeaths--
	m.DeadPaused--
	m.FalseDeadFacts--
	m.Suspicions--
	m.FalseSuspicions-- // leave out the slow observer's event
	got := []uint64{m.Suspicions, m.FalseSuspicions, m.SuspectedPaused, m.Deaths, m.FalseDeaths, m.DeadPaused, m.FalseSuspectFacts, m.FalseDeadFacts}
	if want := []uint64{4, 2, 1, 6, 2, 2, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("suspicions, false, paused, deaths, false, paused, facts = %v, want %v", got, want)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	d := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		in   []time.Duration
		p    float64
		want float64
	}{
		{nil, 50, 0},
		{d(5), 99, 5},
		{d(4, 1, 3, 2), 50, 2},
		{d(4, 1, 3, 2), 75, 3},
		{d(4, 1, 3, 2), 100, 4},
		{d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 95, 10},
		{d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9},
	} {
		if got := Percentile(c.in, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no NewStack: err = %v", err)
	}
	if _, err := New(Config{NewStack: newToy, Link: Link{Loss: 2}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("loss 2: err = %v", err)
	}
	for _, o := range []Options{{Scenario: "nope"}, {Scenario: "join", Nodes: 2}, {Scenario: "loss", Loss: 1}, {Scenario: "join", Profile: "wan"}} {
		if _, err := Run(o); !errors.Is(err, ErrConfig) {
			t.Errorf("Run(%+v): err = %v, want ErrConfig", o, err)
		}
	}
}

func runToy(t *testing.T, seed uint64) *Sim {
	t.Helper()
	s, err := New(Config{Seed: seed, NewStack: newToy, Link: Link{Latency: time.Millisecond, Jitter: 3 * time.Millisecond, Loss: 0.05, Duplicate: 0.05}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Form(20, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.Pause(3, 2*time.Second)
	s.SetSlow(4, 50)
	s.SetDrift(5, 0.01)
	s.RunFor(5 * time.Second)
	return s
}

func TestSameSeedSameTraceDifferentSeedDifferentTrace(t *testing.T) {
	a, b, c := runToy(t, 1), runToy(t, 1), runToy(t, 2)
	if a.TraceHash() != b.TraceHash() {
		t.Fatalf("seed 1 twice: %x vs %x", a.TraceHash(), b.TraceHash())
	}
	if a.Metrics() != b.Metrics() {
		t.Fatalf("seed 1 twice: metrics differ:\n%+v\n%+v", a.Metrics(), b.Metrics())
	}
	if a.TraceHash() == c.TraceHash() {
		t.Fatal("seeds 1 and 2 gave the same trace hash")
	}
}

func TestFormConvergesAndChecksAgree(t *testing.T) {
	s := runToy(t, 3)
	if !s.Converged() {
		t.Fatal("toy cluster did not converge")
	}
	if err := s.CheckAgreement(); err != nil {
		t.Fatal(err)
	}
	// The toy has no failure detector: after a crash everyone still calls the
	// crashed node alive, which the checks must catch.
	s.Crash(7)
	if s.Converged() {
		t.Fatal("Converged with a crashed node still listed alive")
	}
	if err := s.CheckAgreement(); !errors.Is(err, ErrDisagree) {
		t.Fatalf("CheckAgreement = %v, want ErrDisagree", err)
	}
}

func TestRunWithInjectedStack(t *testing.T) {
	res, err := Run(Options{Scenario: "loss", Nodes: 10, Seed: 4, Duration: 5 * time.Second, NewStack: newToy})
	if err != nil {
		t.Fatal(err)
	}
	if !res.FormationConverged || !res.Converged || res.MessagesSent == 0 || res.DroppedLoss == 0 || res.Loss != 0.1 {
		t.Fatalf("result %+v", res)
	}
	if res.MeasuredSeconds != 5 {
		t.Fatalf("measured %v s, want 5", res.MeasuredSeconds)
	}
}

// pinger sends one 64-byte datagram to a random node every 10ms and ignores what
// it receives: next to nothing, so BenchmarkEngine measures the engine.
type pinger struct {
	recorder
	rng   *rand.Rand
	peers []string
	next  time.Time
	data  []byte
}

func (p *pinger) Tick(now time.Time) {
	p.next = now.Add(10 * time.Millisecond)
	p.out.Packets = append(p.out.Packets, swim.Packet{To: p.peers[p.rng.IntN(len(p.peers))], Data: p.data})
}
func (p *pinger) HandlePacket(now time.Time, from string, data []byte) {}
func (p *pinger) NextDeadline() time.Time                              { return p.next }

// BenchmarkEngine measures the simulator's own cost per event (network model,
// heap, trace hash) with a stack that does almost nothing.
func BenchmarkEngine(b *testing.B) {
	const n = 1000
	peers := make([]string, n)
	for i := range peers {
		peers[i] = addrOf(i)
	}
	s, err := New(Config{Seed: 1, NewStack: func(name, addr string, rng *rand.Rand, now time.Time) (Stack, error) {
		return &pinger{rng: rng, peers: peers, next: now, data: make([]byte, 64)}, nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := s.AddNode(); err != nil {
			b.Fatal(err)
		}
	}
	s.RunFor(time.Second)
	start := s.Metrics().Events
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.RunFor(100 * time.Millisecond)
	}
	ev := float64(s.Metrics().Events - start)
	b.ReportMetric(b.Elapsed().Seconds()*1e9/ev, "ns/event")
}

func TestLinkOverridesAndSlowNodes(t *testing.T) {
	s, recs := newRecSim(t, 3, Config{Link: fixed, ProcDelay: time.Millisecond})
	if err := s.SetLink(0, 1, Link{Latency: 5 * time.Millisecond, Duplicate: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLink(0, 2, Link{Latency: time.Millisecond, Loss: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLink(1, 2, Link{Loss: -1}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative loss accepted: %v", err)
	}
	s.SetSlow(0, 3)
	recs[0].out.Packets = []swim.Packet{{To: s.Addr(1), Data: []byte("x")}, {To: s.Addr(2), Data: []byte("y")}}
	s.afterInput(0, s.now)
	recs[1].out.Packets = []swim.Packet{{To: s.Addr(2), Data: []byte("z")}}
	s.afterInput(1, s.now)
	s.RunFor(time.Second)
	// Node 0 is 3x slow: its outputs leave after 3ms, then 5ms on the overridden
	// link, twice (duplication); node 1 takes the copy after spending 1ms on the
	// first. Node 1 -> 2 uses the default link and normal speed.
	want1 := []call{{"packet", 8 * time.Millisecond, s.Addr(0), "x"}, {"packet", 9 * time.Millisecond, s.Addr(0), "x"}}
	if !slices.Equal(recs[1].calls, want1) {
		t.Errorf("node 1 calls = %+v, want %+v", recs[1].calls, want1)
	}
	want2 := []call{{"packet", 2 * time.Millisecond, s.Addr(1), "z"}}
	if !slices.Equal(recs[2].calls, want2) {
		t.Errorf("node 2 calls = %+v, want %+v", recs[2].calls, want2)
	}
	if m := s.Metrics(); m.DroppedLoss != 1 || m.Duplicated != 1 {
		t.Errorf("loss %d dup %d, want 1 and 1", m.DroppedLoss, m.Duplicated)
	}
}
