package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Options are a run's settings; zero values take the defaults in brackets.
type Options struct {
	Agents   int           // agents [the scenario's default: 5, churn 6]
	Voters   int           // voters n1..nV [3]
	Shards   int           // shard count [64]
	Kills    int           // leader-kill: leader kills [3]
	Hold     time.Duration // partitions: how long the partition stands [10s]
	Duration time.Duration // loss and churn: how long the fault lasts [loss 60s, churn 20s]
	Loss     int           // loss: percent dropped on every link, each way [10]
	Pause    time.Duration // pause: how long the leader stays stopped [8s]
	Seed     uint64        // random choices (churn) [the time]
	AgentBin string        // a built omnirelay binary [go build ./cmd/omnirelay]
	// LogDir, when set, receives the agents' logs and audit logs of a run that
	// failed (LogDir/SCENARIO-PREFIX/), for the postmortem.
	LogDir string
	Logf   func(format string, args ...any)
	// KVBin is the sample service and load generator [go build ./examples/kv]:
	// a kv instance runs beside every agent and kv loadgen drives it from the
	// hub namespace through the whole scenario. NoLoad runs none.
	KVBin  string
	NoLoad bool
	// UpgradeBin is the build the rolling-upgrade scenario restarts the agents
	// onto [go build -tags omnirelay_preview ./cmd/omnirelay: versions 1..2,
	// ack-health]; AgentBin is the build they start on.
	UpgradeBin string
}

// Targets the report checks measured times against (docs/chaos.md): the
// requirements' leader failover bound.
const failoverTarget = 5 * time.Second

// Timeouts after which a measured step fails the scenario.
const (
	formTimeout    = 60 * time.Second
	detectTimeout  = 30 * time.Second
	failTimeout    = 30 * time.Second
	convergeTimout = 60 * time.Second
	samplePeriod   = 100 * time.Millisecond
)

// Measure is one timed step: from a fault (or its end) to a condition seen in
// the agents' reports. Times are upper bounds at the sampling resolution
// (100 ms plus a round's duration).
type Measure struct {
	Kind  string  `json:"kind"` // formation, detection, failover, convergence
	Fault string  `json:"fault"`
	Ms    float64 `json:"ms"`
	OK    bool    `json:"ok"` // false: not seen within the timeout (Ms is the timeout)
}

// Summary condenses the measures of one kind.
type Summary struct {
	N      int     `json:"n"`
	MinMs  float64 `json:"min_ms"`
	P50Ms  float64 `json:"p50_ms"`
	MaxMs  float64 `json:"max_ms"`
	Failed int     `json:"failed,omitempty"`
}

// Event is a fault or step, at its offset from the start of the run.
type Event struct {
	Ms   float64 `json:"t_ms"`
	What string  `json:"what"`
}

// Report is the JSON a run writes.
type Report struct {
	Scenario   string             `json:"scenario"`
	Started    time.Time          `json:"started"`
	DurationS  float64            `json:"duration_s"`
	Agents     int                `json:"agents"`
	Voters     int                `json:"voters"`
	Shards     int                `json:"shards"`
	Seed       uint64             `json:"seed"`
	Params     map[string]string  `json:"params"`
	Machine    string             `json:"machine"`
	Summaries  map[string]Summary `json:"summaries"` // by kind
	Measures   []Measure          `json:"measures"`
	Invariants Invariants         `json:"invariants"`
	// FalseSuspicions counts (observer, peer) transitions from alive to suspect
	// or dead of a peer that was up and reachable (loss scenario).
	FalseSuspicions int `json:"false_suspicions"`
	// FalseDeaths counts the transitions to dead among them (the simulator's
	// loss target is zero).
	FalseDeaths int `json:"false_deaths"`
	// LeaderChanges counts leases (holder, epoch) beyond the first seen while
	// the fault stood.
	LeaderChanges int        `json:"leader_changes"`
	Load          LoadReport `json:"load"`
	Events        []Event    `json:"events"`
	Pass          bool       `json:"pass"`
	// Failures are safety violations, steps not seen within their timeout and
	// agents that exited by themselves; TargetMisses are times over a target.
	Failures     []string `json:"failures"`
	TargetMisses []string `json:"target_misses"`
}

// Runner drives one scenario on one cluster.
type Runner struct {
	opts     Options
	c        *Cluster
	lab      *Lab
	obs      *Observer
	rng      *rand.Rand
	rep      *Report
	t0       time.Time
	last     Round
	prev     map[[2]string]string // (observer, peer) -> status, for false suspicions
	leases   map[string]bool      // "holder/epoch" seen while counting
	counting bool                 // count false suspicions and leader changes
	load     *kvLoad              // nil without load
	gate     func(Round)          // an extra check of every round (rolling upgrade)
}

// phase marks a load phase (a fault begins, its recovery, steady again).
func (r *Runner) phase(name string) {
	if r.load != nil {
		r.load.phase(name)
	}
}

// serviceSettled, with load, times how long after since (a fault's end) the kv
// service's own shard map settled (kind "service"), and resumes the steady
// phase then: the recovery phase lasts until both the agents and the service
// have recovered. Without load it does nothing.
func (r *Runner) serviceSettled(ctx context.Context, fault string, since time.Time) error {
	if r.load == nil {
		return nil
	}
	kv := r.obs.KV()
	_, err := r.measure(ctx, "service", fault, since, convergeTimout, func(Round) bool {
		up := r.c.Up()
		return shardsSettled(up)(kv.Sample(ctx, up))
	})
	r.phase(phaseSteady)
	return err
}

// checkLoad fails a run whose load lost or duplicated an acknowledged write, or
// did not report.
func (r *Runner) checkLoad() {
	l := r.rep.Load
	switch {
	case l.Status == "failed":
		r.fail("load: %s", l.Note)
	case l.Writes != nil && (l.Writes.Lost > 0 || l.Writes.Duplicated > 0):
		r.fail("load: %d acknowledged writes lost, %d duplicated (of %d acknowledged)", l.Writes.Lost, l.Writes.Duplicated, l.Writes.Acked)
	}
	if l.Writes != nil {
		r.event("load: %d acknowledged writes, %d lost, %d duplicated", l.Writes.Acked, l.Writes.Lost, l.Writes.Duplicated)
	}
}

// Scenario is one named fault script.
type Scenario struct {
	Name    string
	Summary string
	agents  int
	run     func(ctx context.Context, r *Runner) error
}

// Scenarios lists the suite in the order nightly runs it.
func Scenarios() []Scenario { return scenarios }

// Lookup finds a scenario by name.
func Lookup(name string) (Scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

func (o *Options) defaults(s Scenario) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Agents, s.agents)
	def(&o.Voters, 3)
	def(&o.Shards, 64)
	def(&o.Kills, 3)
	def(&o.Loss, 10)
	defD(&o.Hold, 10*time.Second)
	defD(&o.Pause, 8*time.Second)
	if s.Name == "churn" {
		defD(&o.Duration, 20*time.Second)
	}
	defD(&o.Duration, 60*time.Second)
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Run runs scenario s on a fresh lab and cluster and tears everything down,
// also when ctx is cancelled or the scenario panics. The error is for a run that
// could not be set up or was interrupted; a scenario that ran and failed returns
// its report with Pass false.
func Run(ctx context.Context, s Scenario, opts Options) (rep *Report, err error) {
	opts.defaults(s)
	rep = &Report{
		Scenario: s.Name, Started: time.Now().UTC(), Agents: opts.Agents, Voters: opts.Voters, Shards: opts.Shards, Seed: opts.Seed,
		Params:    map[string]string{},
		Machine:   fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()),
		Summaries: map[string]Summary{},
		Load:      LoadReport{Status: "none", Note: "no load yet: the sample service and load generator of issue 17 do not exist; Options.Load is the hook"},
		Failures:  []string{}, TargetMisses: []string{},
	}
	lab, err := NewLab(ctx, opts.Agents)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := lab.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("chaos: cleanup: %w", cerr)
		}
	}()
	defer func() {
		if opts.LogDir != "" && (err != nil || !rep.Pass) {
			if kerr := keepLogs(lab, filepath.Join(opts.LogDir, s.Name+"-"+lab.Prefix)); kerr != nil {
				opts.Logf("keeping the logs: %v", kerr)
			} else {
				opts.Logf("agent logs kept in %s", filepath.Join(opts.LogDir, s.Name+"-"+lab.Prefix))
			}
		}
	}()
	bin := opts.AgentBin
	if bin == "" {
		if bin, err = BuildAgent(ctx, lab.Dir); err != nil {
			return nil, err
		}
	}
	if !opts.NoLoad && opts.KVBin == "" {
		if opts.KVBin, err = BuildKV(ctx, lab.Dir); err != nil {
			return nil, err
		}
	}
	if s.Name == "rolling-upgrade" && opts.UpgradeBin == "" {
		if opts.UpgradeBin, err = BuildPreviewAgent(ctx, lab.Dir); err != nil {
			return nil, err
		}
	}
	r := &Runner{opts: opts, lab: lab, rng: rand.New(rand.NewPCG(opts.Seed, 0x636861)), rep: rep, t0: time.Now(),
		prev: map[[2]string]string{}, leases: map[string]bool{}}
	cc := ClusterConfig{Agents: opts.Agents, Voters: opts.Voters, Shards: opts.Shards, Bin: bin}
	if !opts.NoLoad {
		cc.KV = opts.KVBin
	}
	r.c, err = NewCluster(ctx, lab, cc, r.event)
	if err != nil {
		return nil, err
	}
	defer r.c.Close() // before keepLogs and lab.Close: processes first, then their logs and namespaces
	if r.obs, err = NewObserver(lab, r.c); err != nil {
		return nil, err
	}
	defer r.obs.Close()
	defer func() { // before the agents stop: what they say of themselves at the end
		if opts.LogDir != "" && (err != nil || !rep.Pass) {
			dir := filepath.Join(opts.LogDir, s.Name+"-"+lab.Prefix)
			if serr := r.obs.Snapshot(context.Background(), r.c.Up(), dir); serr != nil {
				opts.Logf("snapshot of the agents' reports: %v", serr)
			}
		}
	}()
	if err := r.c.StartAll(); err != nil {
		return nil, err
	}
	if _, err := r.measure(ctx, "formation", "start", r.t0, formTimeout, converged(r.all())); err != nil {
		return nil, err
	}
	if !opts.NoLoad {
		if r.load, err = startLoad(lab, r.c, opts.KVBin, opts.Agents); err != nil {
			return nil, err
		}
		defer func() { // a run that could not go on ends the load generator too
			if r.load != nil {
				r.load.kill()
			}
		}()
		r.event("load: kv loadgen, %d workers, %d ops/s, warmup %s, then steady state for %s", loadWorkers, loadRate, loadWarmup, loadSteady)
		if err := r.serviceSettled(ctx, "start", r.t0); err != nil {
			return nil, err
		}
		if err := r.hold(ctx, loadWarmup); err != nil {
			return nil, err
		}
		r.phase(phaseSteady)
		if err := r.hold(ctx, loadSteady); err != nil {
			return nil, err
		}
	}
	if !r.failed() {
		if err := s.run(ctx, r); err != nil {
			return nil, err
		}
	}
	if r.load != nil {
		r.phase(phaseSteady)
		rep.Load = r.load.stop(ctx)
		r.load = nil
		r.checkLoad()
	}
	r.finish()
	return rep, nil
}

// keepLogs copies each agent's log and audit log into dir.
func keepLogs(lab *Lab, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 1; i <= lab.nodes; i++ {
		for _, f := range []string{"agent.log", "audit.jsonl", "kv.log"} {
			b, err := os.ReadFile(filepath.Join(lab.Dir, name(i), f))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, name(i)+"-"+f), b, 0o644)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Runner) all() []int {
	all := make([]int, r.opts.Agents)
	for i := range all {
		all[i] = i + 1
	}
	return all
}

func (r *Runner) event(format string, args ...any) {
	what := fmt.Sprintf(format, args...)
	r.rep.Events = append(r.rep.Events, Event{Ms: ms(time.Since(r.t0)), What: what})
	r.opts.Logf("%7.1fs %s", time.Since(r.t0).Seconds(), what)
}

func (r *Runner) fail(format string, args ...any) {
	r.rep.Failures = append(r.rep.Failures, fmt.Sprintf(format, args...))
	r.event("FAIL "+format, args...)
}

func (r *Runner) failed() bool { return len(r.rep.Failures) > 0 }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sample takes one round of every agent up and checks it.
func (r *Runner) sample(ctx context.Context) Round {
	round := r.obs.Sample(ctx, r.c.Up())
	before := r.rep.Invariants.Violations()
	r.rep.Invariants.Check(round)
	if r.gate != nil {
		r.gate(round)
	}
	if r.rep.Invariants.Violations() > before && len(r.rep.Invariants.Examples) > 0 {
		r.event("VIOLATION %s", r.rep.Invariants.Examples[len(r.rep.Invariants.Examples)-1])
	}
	for _, e := range r.c.Exited() {
		r.fail("%s", e)
	}
	if r.load.exited() {
		r.rep.Load = r.load.stop(ctx)
		r.load = nil
		r.fail("load: kv loadgen exited while the scenario ran: %s", r.rep.Load.Note)
	}
	up := r.c.Up()
	for _, v := range round.Views {
		if v.Err != "" {
			continue
		}
		if r.counting && v.Holder != "" {
			r.leases[fmt.Sprintf("%s/%d", v.Holder, v.Epoch)] = true
		}
		for peer, status := range v.Peers {
			k := [2]string{name(v.Node), peer}
			if was := r.prev[k]; r.counting && was != status && slices.Contains(up, index(peer)) {
				if was == "alive" && (status == "suspect" || status == "dead") {
					r.rep.FalseSuspicions++
				}
				if status == "dead" {
					r.rep.FalseDeaths++
				}
			}
			r.prev[k] = status
		}
	}
	r.last = round
	return round
}

// waitUntil samples every samplePeriod until cond holds or timeout passes.
func (r *Runner) waitUntil(ctx context.Context, timeout time.Duration, cond func(Round) bool) (Round, bool, error) {
	start := time.Now()
	for {
		tick := time.Now()
		round := r.sample(ctx)
		if cond(round) {
			return round, true, nil
		}
		if time.Since(start) > timeout {
			return round, false, nil
		}
		select {
		case <-ctx.Done():
			return round, false, ctx.Err()
		case <-time.After(samplePeriod - time.Since(tick)):
		}
	}
}

// hold keeps sampling for d.
func (r *Runner) hold(ctx context.Context, d time.Duration) error {
	_, _, err := r.waitUntil(ctx, d, func(Round) bool { return false })
	return err
}

// measure times cond from since and records it; a timeout is a failure.
func (r *Runner) measure(ctx context.Context, kind, fault string, since time.Time, timeout time.Duration, cond func(Round) bool) (Round, error) {
	round, ok, err := r.waitUntil(ctx, timeout, cond)
	if err != nil {
		return round, err
	}
	m := Measure{Kind: kind, Fault: fault, Ms: ms(round.At.Sub(since)), OK: ok}
	r.rep.Measures = append(r.rep.Measures, m)
	if !ok {
		r.fail("%s after %s not seen within %s; last round: %s", kind, fault, timeout, describe(round))
	} else {
		r.event("%s after %s: %.0f ms", kind, fault, m.Ms)
	}
	if ok && kind == "failover" && round.At.Sub(since) > failoverTarget {
		r.rep.TargetMisses = append(r.rep.TargetMisses, fmt.Sprintf("failover after %s took %.0f ms, target %s", fault, m.Ms, failoverTarget))
	}
	return round, nil
}

// describe is a round in one line, for failure messages.
func describe(round Round) string {
	s := ""
	for _, v := range sortedViews(round) {
		if v.Err != "" {
			s += fmt.Sprintf("[%s: %s] ", name(v.Node), v.Err)
			continue
		}
		var ps []string
		for p, st := range v.Peers {
			if st != "alive" {
				ps = append(ps, p+"="+st)
			}
		}
		sort.Strings(ps)
		s += fmt.Sprintf("[%s: leader %s/%d seen %d map %d.%d %s owned %d steady %d/%d not-alive %v] ", name(v.Node), v.Holder, v.Epoch, v.EpochSeen, v.MapEpoch, v.MapVersion, v.Checksum, v.Owned, v.Steady, v.Count, ps)
	}
	return s
}

// leader is the holder every agent up agrees on, after waiting for convergence.
func (r *Runner) leader() int {
	for _, v := range r.last.Views {
		if v.Err == "" && v.Holder != "" {
			return index(v.Holder)
		}
	}
	return 0
}

func (r *Runner) epoch() uint64 {
	for _, v := range r.last.Views {
		if v.Err == "" {
			return v.Epoch
		}
	}
	return 0
}

func (r *Runner) finish() {
	byKind := map[string][]Measure{}
	for _, m := range r.rep.Measures {
		byKind[m.Kind] = append(byKind[m.Kind], m)
	}
	for k, ms := range byKind {
		var vals []float64
		s := Summary{N: len(ms)}
		for _, m := range ms {
			if !m.OK {
				s.Failed++
				continue
			}
			vals = append(vals, m.Ms)
		}
		if len(vals) > 0 {
			sort.Float64s(vals)
			s.MinMs, s.P50Ms, s.MaxMs = vals[0], vals[len(vals)/2], vals[len(vals)-1]
		}
		r.rep.Summaries[k] = s
	}
	if len(r.leases) > 0 {
		r.rep.LeaderChanges = len(r.leases) - 1
	}
	if n := r.rep.Invariants.Violations(); n > 0 {
		r.rep.Failures = append(r.rep.Failures, fmt.Sprintf("%d invariant violations (two leaders same epoch %d, two leaders at once %d, shard served twice %d, feature before upgrade %d)",
			n, r.rep.Invariants.TwoLeadersSameEpoch, r.rep.Invariants.TwoLeadersAtOnce, r.rep.Invariants.ShardServedTwice, r.rep.Invariants.FeatureEarly))
	}
	if r.rep.FalseDeaths > 0 {
		r.rep.TargetMisses = append(r.rep.TargetMisses, fmt.Sprintf("%d false deaths of agents that were up, target 0", r.rep.FalseDeaths))
	}
	r.rep.DurationS = time.Since(r.t0).Seconds()
	r.rep.Pass = len(r.rep.Failures) == 0 && len(r.rep.TargetMisses) == 0
}

// SummaryTable is the markdown table nightly writes: one row per report, then
// the scenarios the budget skipped.
func SummaryTable(reports []*Report, skipped []string) string {
	var b strings.Builder
	b.WriteString("| scenario | result | agents | detection p50/max ms | failover p50/max ms | convergence p50/max ms | two leaders | shard twice | gating | false suspicions / deaths | leader changes | load ops/s steady → fault | load p99 ms steady → fault | writes acked / lost / dup | s |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	cell := func(r *Report, kind string) string {
		s, ok := r.Summaries[kind]
		if !ok {
			return "—"
		}
		c := fmt.Sprintf("%.0f / %.0f (n=%d)", s.P50Ms, s.MaxMs, s.N)
		if s.Failed > 0 {
			c += fmt.Sprintf(", %d timed out", s.Failed)
		}
		return c
	}
	load := func(l LoadReport, f func(*LoadFigures) string) string {
		if l.Status != "ran" {
			return l.Status
		}
		at := func(p *LoadFigures) string {
			if p == nil {
				return "—"
			}
			return f(p)
		}
		return at(l.Steady) + " → " + at(l.Fault)
	}
	for _, r := range reports {
		result := "pass"
		if !r.Pass {
			result = "**FAIL**: " + strings.Join(append(append([]string{}, r.Failures...), r.TargetMisses...), "; ")
			if len(result) > 300 {
				result = result[:300] + "…"
			}
		}
		inv := r.Invariants
		gating := "—"
		if r.Scenario == "rolling-upgrade" {
			gating = fmt.Sprint(inv.FeatureEarly)
			if s, ok := r.Summaries["feature_on"]; ok && s.Failed == 0 {
				gating += fmt.Sprintf(", on after %.0f ms", s.MaxMs)
			}
		}
		writes := "—"
		if w := r.Load.Writes; w != nil {
			writes = fmt.Sprintf("%d / %d / %d", w.Acked, w.Lost, w.Duplicated)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %d+%d | %d | %s | %d / %d | %d | %s | %s | %s | %.0f |\n", r.Scenario, result, r.Agents,
			cell(r, "detection"), cell(r, "failover"), cell(r, "convergence"),
			inv.TwoLeadersSameEpoch, inv.TwoLeadersAtOnce, inv.ShardServedTwice, gating, r.FalseSuspicions, r.FalseDeaths, r.LeaderChanges,
			load(r.Load, func(p *LoadFigures) string { return fmt.Sprintf("%.0f", p.RPS) }),
			load(r.Load, func(p *LoadFigures) string { return fmt.Sprintf("%.0f", p.P99Ms) }),
			writes, r.DurationS)
	}
	for _, s := range skipped {
		fmt.Fprintf(&b, "| %s | **skipped**: over the time budget | | | | | | | | | | | | | |\n", s)
	}
	return b.String()
}
