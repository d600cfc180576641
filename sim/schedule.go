package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Schedule is a reproducible fault script for a small cluster: form Nodes nodes,
// apply Steps at their times (measured from the end of formation), then lift every
// partition and all loss and run Quiet more; at the end every live node must agree
// with ground truth (Sim.CheckAgreement). Its text form is what property tests print
// when they fail and what testdata/schedules/*.txt hold:
//
//	nodes 6 seed 42 profile lan quiet 2m0s
//	1.5s crash 3
//	2s partition 0,1,2
//	3s oneway 0,1>4
//	4s heal
//	5s pause 2 3s       (stop-the-world; stall: message processing only, timers run)
//	6s loss 0.2
//	7s restart 3        (same address; restart-new: a new one)
//	8s join             (a new node through three live seeds)
//	9s leave 1          (graceful; the process stops 2s later)
//
// Steps that do not apply (crashing a crashed node, restarting a live one) do
// nothing, so generators need not track state.
type Schedule struct {
	Nodes   int
	Seed    uint64
	Profile string
	Quiet   time.Duration
	Steps   []Step
}

// Step is one line of a Schedule.
type Step struct {
	At   time.Duration
	Op   string        // crash, restart, restart-new, join, leave, partition, oneway, heal, pause, stall, loss
	Node int           // crash, restart, restart-new, leave, pause, stall
	For  time.Duration // pause, stall
	Loss float64       // loss
	A, B []int         // partition: side A; oneway: from A to B
}

func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		x, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

func (st Step) String() string {
	switch st.Op {
	case "crash", "restart", "restart-new", "leave":
		return fmt.Sprintf("%v %s %d", st.At, st.Op, st.Node)
	case "pause", "stall":
		return fmt.Sprintf("%v %s %d %v", st.At, st.Op, st.Node, st.For)
	case "loss":
		return fmt.Sprintf("%v loss %v", st.At, st.Loss)
	case "partition":
		return fmt.Sprintf("%v partition %s", st.At, ints(st.A))
	case "oneway":
		return fmt.Sprintf("%v oneway %s>%s", st.At, ints(st.A), ints(st.B))
	}
	return fmt.Sprintf("%v %s", st.At, st.Op)
}

func (sc Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodes %d seed %d profile %s quiet %v\n", sc.Nodes, sc.Seed, sc.Profile, sc.Quiet)
	for _, st := range sc.Steps {
		b.WriteString(st.String() + "\n")
	}
	return b.String()
}

// ParseSchedule reads the text form of a Schedule (blank lines and lines starting
// with # are ignored).
func ParseSchedule(text string) (Schedule, error) {
	var sc Schedule
	header := false
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		bad := func(err error) (Schedule, error) {
			return Schedule{}, fmt.Errorf("%w: schedule line %d %q: %v", ErrConfig, n+1, line, err)
		}
		if !header {
			if _, err := fmt.Sscanf(line, "nodes %d seed %d profile %s quiet %s", &sc.Nodes, &sc.Seed, &sc.Profile, new(string)); err != nil || len(f) != 8 {
				return bad(fmt.Errorf("want `nodes N seed S profile P quiet D`"))
			}
			q, err := time.ParseDuration(f[7])
			if err != nil {
				return bad(err)
			}
			sc.Quiet, header = q, true
			continue
		}
		if len(f) < 2 {
			return bad(fmt.Errorf("want `TIME OP [ARGS]`"))
		}
		at, err := time.ParseDuration(f[0])
		if err != nil {
			return bad(err)
		}
		st := Step{At: at, Op: f[1]}
		args := f[2:]
		need := map[string]int{"crash": 1, "restart": 1, "restart-new": 1, "leave": 1, "pause": 2, "stall": 2, "loss": 1, "partition": 1, "oneway": 1, "heal": 0, "join": 0}
		k, ok := need[st.Op]
		if !ok {
			return bad(fmt.Errorf("unknown op %q", st.Op))
		}
		if len(args) != k {
			return bad(fmt.Errorf("%s takes %d arguments", st.Op, k))
		}
		switch st.Op {
		case "crash", "restart", "restart-new", "leave", "pause", "stall":
			if st.Node, err = strconv.Atoi(args[0]); err != nil {
				return bad(err)
			}
			if st.Op == "pause" || st.Op == "stall" {
				if st.For, err = time.ParseDuration(args[1]); err != nil {
					return bad(err)
				}
			}
		case "loss":
			if st.Loss, err = strconv.ParseFloat(args[0], 64); err != nil {
				return bad(err)
			}
		case "partition":
			if st.A, err = parseInts(args[0]); err != nil {
				return bad(err)
			}
		case "oneway":
			a, b, ok := strings.Cut(args[0], ">")
			if !ok {
				return bad(fmt.Errorf("oneway wants FROM>TO"))
			}
			if st.A, err = parseInts(a); err != nil {
				return bad(err)
			}
			if st.B, err = parseInts(b); err != nil {
				return bad(err)
			}
		}
		sc.Steps = append(sc.Steps, st)
	}
	if !header {
		return Schedule{}, fmt.Errorf("%w: schedule has no header line", ErrConfig)
	}
	return sc, nil
}

// RandomSchedule draws a schedule of up to maxSteps faults over span for a
// cluster of nodes, from rng.
func RandomSchedule(rng *rand.Rand, nodes, maxSteps int, span time.Duration) Schedule {
	sc := Schedule{Nodes: nodes, Seed: rng.Uint64() % 1e6, Profile: "lan", Quiet: 2 * time.Minute}
	ops := []string{"crash", "restart", "restart-new", "join", "leave", "partition", "oneway", "heal", "pause", "stall", "loss"}
	total := nodes
	for k := rng.IntN(maxSteps) + 1; k > 0; k-- {
		st := Step{At: time.Duration(rng.Int64N(int64(span))).Truncate(time.Millisecond), Op: ops[rng.IntN(len(ops))]}
		switch st.Op {
		case "crash", "restart", "restart-new", "leave":
			st.Node = rng.IntN(total)
		case "join":
			total++
		case "pause", "stall":
			st.Node = rng.IntN(total)
			st.For = time.Duration(500+rng.IntN(8000)) * time.Millisecond
		case "loss":
			st.Loss = float64(rng.IntN(31)) / 100
		case "partition", "oneway":
			perm := rng.Perm(total)
			cut := 1 + rng.IntN(total-1)
			st.A, st.B = perm[:cut], perm[cut:]
			slices.Sort(st.A)
			slices.Sort(st.B)
			if st.Op == "partition" {
				st.B = nil
			}
		}
		sc.Steps = append(sc.Steps, st)
	}
	slices.SortStableFunc(sc.Steps, func(a, b Step) int { return int(a.At - b.At) })
	return sc
}

// RunSchedule plays sc against stacks from factory (nil: the production host
// stack of sc.Profile, Lifeguard on) and returns the simulation and the result of
// the final agreement check.
func RunSchedule(sc Schedule, factory StackFactory) (*Sim, error) {
	if factory == nil {
		profile := sc.Profile
		if _, err := SwimConfig(profile, "n", "a", true); err != nil {
			return nil, err
		}
		factory = hostFactory(profile, true, false, nil)
	}
	s, err := New(Config{Seed: sc.Seed, NewStack: factory})
	if err != nil {
		return nil, err
	}
	if _, _, err := s.Form(sc.Nodes, time.Minute); err != nil {
		return nil, err
	}
	rng := Stream(sc.Seed, "schedule")
	t0 := s.now
	valid := func(i int) bool { return i >= 0 && i < len(s.nodes) }
	seeds := func(self int) []string {
		var out []string
		live := s.LiveNodes()
		for _, j := range rng.Perm(len(live)) {
			if live[j] != self && len(out) < 3 {
				out = append(out, s.Addr(live[j]))
			}
		}
		return out
	}
	for _, st := range sc.Steps {
		s.RunUntil(t0 + int64(st.At))
		switch st.Op {
		case "crash":
			if valid(st.Node) && s.Up(st.Node) {
				s.Crash(st.Node)
			}
		case "restart", "restart-new":
			if valid(st.Node) && !s.Up(st.Node) {
				if err := s.Restart(st.Node, st.Op == "restart-new", seeds(st.Node)); err != nil {
					return s, err
				}
			}
		case "join":
			sd := seeds(-1)
			i, err := s.AddNode()
			if err != nil {
				return s, err
			}
			s.Join(i, sd)
		case "leave":
			if valid(st.Node) && s.Live(st.Node) {
				i := st.Node
				s.Leave(i)
				gen := s.nodes[i].gen
				s.At(2*time.Second, func(s *Sim) {
					if s.nodes[i].gen == gen {
						s.Stop(i)
					}
				})
			}
		case "pause":
			if valid(st.Node) {
				s.Pause(st.Node, st.For)
			}
		case "stall":
			if valid(st.Node) {
				s.Stall(st.Node, st.For)
			}
		case "loss":
			l := s.DefaultLink()
			l.Loss = st.Loss
			if err := s.SetDefaultLink(l); err != nil {
				return s, err
			}
		case "heal":
			s.Heal()
		case "partition", "oneway":
			a, b := clip(st.A, len(s.nodes)), clip(st.B, len(s.nodes))
			if st.Op == "partition" {
				s.Partition(a)
			} else {
				s.PartitionOneWay(a, b)
			}
		}
	}
	s.Heal()
	l := s.DefaultLink()
	l.Loss = 0
	if err := s.SetDefaultLink(l); err != nil {
		return s, err
	}
	s.RunFor(sc.Quiet)
	return s, s.CheckAgreement()
}

func clip(xs []int, n int) []int {
	var out []int
	for _, x := range xs {
		if x >= 0 && x < n {
			out = append(out, x)
		}
	}
	return out
}
