package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/shard"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Options select and size one scenario run. The zero value of a field means its
// default.
type Options struct {
	// Scenario is the name of a scenario in Scenarios. Required.
	Scenario string
	// Nodes is the size of the stable cluster formed before the measured phase
	// (join: including the node that joins). Default 100.
	Nodes int
	// Seed is the master seed. Runs with equal Options have equal TraceHash.
	Seed uint64
	// Duration is the length of the measured phase (for join, crash and leave: the
	// longest to wait for every node to learn). Default per scenario.
	Duration time.Duration
	// Loss is the datagram loss probability on every link during the measured
	// phase. The loss scenario defaults it to 0.1; others to 0.
	Loss float64
	// Profile is "lan" (swim.LANProfile, default) or "memberlist"
	// (swim.MemberlistProfile).
	Profile string
	// NoLifeguard turns the three Lifeguard extensions off.
	NoLifeguard bool
	// SignedGossip runs the scenarios with signed self-claims (PROTOCOL.md
	// 10.10), and the leader and shard scenarios with signed lease and shard
	// packets too (10.11), under a simulated authority (swim.SimAuthority): each
	// node starts knowing only its own credential and learns the others' from
	// push-pulls, as with node certificates.
	SignedGossip bool
	// PauseMax is the longest fault of the pause and gc-pause scenarios; each
	// fault lasts uniformly PauseMax/6 to PauseMax. Default 24 probe intervals of
	// the profile (6 s lan, 24 s memberlist): what decides whether a stalled
	// node's suspicions expire is the stall against the suspicion timeout, which
	// scales with the probe interval.
	PauseMax time.Duration
	// Progress, when set, is called about every 16k events with the phase, the
	// virtual time and the events so far (the CLI prints it).
	Progress func(phase string, virtual time.Duration, events uint64)
	// NewStack replaces the production stack (engine tests); nil means
	// internal/stack.Stack configured by Profile and NoLifeguard.
	NewStack StackFactory
	// Voters is the number of voters of the leader-* scenarios (the first nodes);
	// default DefaultVoters (3). At most Nodes.
	Voters int
	// Lease is the lease timing of the leader-* scenarios (Self and Voters are set
	// per node); the zero value means lease.DefaultConfig.
	Lease lease.Config
	// Clusters is the number of clusters of region-failover (three voters each);
	// default 2, at most 9.
	Clusters int
	// Shard is the shard configuration of the reshard-* and drain scenarios; the
	// zero value means shard.DefaultConfig (1024 shards, 1 replica).
	Shard shard.Config
}

// Result is one run's figures. Times in milliseconds are virtual; WallSeconds is
// the only figure that is not reproducible from the seed.
type Result struct {
	Scenario           string  `json:"scenario"`
	Nodes              int     `json:"nodes"`
	Seed               uint64  `json:"seed"`
	Profile            string  `json:"profile"`
	Lifeguard          bool    `json:"lifeguard"`
	Loss               float64 `json:"loss"`
	VirtualSeconds     float64 `json:"virtual_seconds"`   // formation plus measured phase
	FormationSeconds   float64 `json:"formation_seconds"` // stable-cluster formation, not measured
	FormationConverged bool    `json:"formation_converged"`
	MeasuredSeconds    float64 `json:"measured_seconds"`
	WallSeconds        float64 `json:"wall_seconds"`
	Events             uint64  `json:"events"` // all phases

	// Counters below cover the measured phase only.
	MessagesSent              uint64  `json:"messages_sent"`
	BytesSent                 uint64  `json:"bytes_sent"`
	BytesPerNodePerSec        float64 `json:"bytes_per_node_per_sec"`
	StreamsOpened             uint64  `json:"streams_opened"`
	StreamBytes               uint64  `json:"stream_bytes"`
	DroppedLoss               uint64  `json:"dropped_loss"`
	DroppedPartition          uint64  `json:"dropped_partition"`
	DroppedMTU                uint64  `json:"dropped_mtu"`
	FalseSuspicions           uint64  `json:"false_suspicions"`
	FalseDeaths               uint64  `json:"false_deaths"`
	SuspectedPaused           uint64  `json:"suspected_paused"`
	DeadPaused                uint64  `json:"dead_paused"`
	SuspectedSlow             uint64  `json:"suspected_slow"`
	DeadSlow                  uint64  `json:"dead_slow"`
	FalseSuspicionsAtDegraded uint64  `json:"false_suspicions_at_degraded"` // part of false_suspicions emitted by slow, paused or stalled nodes
	FalseDeathsAtDegraded     uint64  `json:"false_deaths_at_degraded"`
	FalseSuspectFacts         uint64  `json:"false_suspect_facts"` // distinct (member, incarnation) falsely suspected
	FalseDeadFacts            uint64  `json:"false_dead_facts"`

	Converged  bool   `json:"converged"`   // at the end of the run, by Sim.Converged (equal digests, truthful views)
	ViewsAgree bool   `json:"views_agree"` // at the end, by Sim.CheckAgreement (every live view is the live set)
	TraceHash  string `json:"trace_hash"`

	JoinP50       *float64 `json:"join_p50_ms,omitempty"`
	JoinP95       *float64 `json:"join_p95_ms,omitempty"`
	JoinP99       *float64 `json:"join_p99_ms,omitempty"`
	JoinMax       *float64 `json:"join_max_ms,omitempty"`
	SuspectFirst  *float64 `json:"suspect_first_ms,omitempty"`
	DetectP50     *float64 `json:"detect_p50_ms,omitempty"`
	DetectP95     *float64 `json:"detect_p95_ms,omitempty"`
	DetectP99     *float64 `json:"detect_p99_ms,omitempty"`
	DetectMax     *float64 `json:"detect_max_ms,omitempty"`
	LeaveP50      *float64 `json:"leave_p50_ms,omitempty"`
	LeaveP95      *float64 `json:"leave_p95_ms,omitempty"`
	LeaveMax      *float64 `json:"leave_max_ms,omitempty"`
	Missing       *int     `json:"missing,omitempty"` // nodes that never learned the measured fact
	HealConverged *float64 `json:"heal_convergence_ms,omitempty"`
	QuietAgree    *float64 `json:"quiet_agree_ms,omitempty"`       // churn: until every view agrees on the live set
	Quiet         *float64 `json:"quiet_convergence_ms,omitempty"` // churn: until Converged (digests equal too)
	Crashes       *int     `json:"crashes,omitempty"`
	Restarts      *int     `json:"restarts,omitempty"`
	Joins         *int     `json:"joins,omitempty"`
	Pauses        *int     `json:"pauses,omitempty"`
	Slow          *int     `json:"slow_nodes,omitempty"`

	MetaP50          *float64 `json:"meta_p50_ms,omitempty"` // meta: when each other node first holds the value
	MetaP99          *float64 `json:"meta_p99_ms,omitempty"`
	MetaMax          *float64 `json:"meta_max_ms,omitempty"`
	MetaBytesPerNode *float64 `json:"meta_bytes_per_node,omitempty"` // meta: bytes sent because of the update, per node
	MetaDeltaBytes   *int     `json:"meta_delta_bytes,omitempty"`    // meta: the encoded one-key delta
	MetaConverged    *bool    `json:"meta_converged,omitempty"`      // meta: every live store has the same digest

	Voters            int      `json:"voters,omitempty"`              // leader-*: voters (the first nodes)
	Failover          *float64 `json:"failover_ms,omitempty"`         // leader-*: fault until another node holds a valid lease
	Elections         *int     `json:"elections,omitempty"`           // leader-*: leases won in the measured phase
	SafetyViolations  *int     `json:"safety_violations,omitempty"`   // leader-*: instants with two believed leases, or epochs not increasing
	FirstViolation    string   `json:"first_violation,omitempty"`     // leader-*: the first one, described
	ElectionMessages  *int     `json:"election_messages,omitempty"`   // leader-*: lease messages from the fault until the new lease
	StaleFenceRefused *bool    `json:"stale_fence_refused,omitempty"` // leader-pause: Fence refused by the woken leader
	EndLeaders        *int     `json:"end_leaders,omitempty"`         // leader-partition/flap: valid leases after heal and 10 s

	Shards              int      `json:"shards,omitempty"`               // reshard-*, drain: shard count
	MovedFraction       *float64 `json:"moved_fraction,omitempty"`       // reshard-*, drain: shards whose owner changed, over all shards
	ReshardMs           *float64 `json:"reshard_ms,omitempty"`           // reshard-join, drain: until every shard is steady on its target again
	ReassignMs          *float64 `json:"reassign_ms,omitempty"`          // reshard-crash: crash until every shard of the node is served elsewhere
	MapConvergence      *float64 `json:"map_convergence_ms,omitempty"`   // reshard-crash: partition heal until every member holds the same map version
	DuplicateDeliveries *int     `json:"duplicate_deliveries,omitempty"` // client messages processed by two different nodes
	LostMessages        *int     `json:"lost_messages,omitempty"`        // client messages never processed
	ClientMessages      *int     `json:"client_messages,omitempty"`      // client messages issued
	ShardViolations     *int     `json:"shard_violations,omitempty"`     // instants at which two nodes believed they served one shard
	ShardEvents         *int     `json:"shard_events,omitempty"`         // shard transitions reported by all nodes
	StaleEpochRejected  *uint64  `json:"stale_epoch_rejected,omitempty"` // leader messages rejected by members for a stale epoch
	ThroughputBefore    *float64 `json:"throughput_before,omitempty"`    // drain: client messages processed per second, 5 s before
	ThroughputDuring    *float64 `json:"throughput_during,omitempty"`    // drain: while the node's shards move (at least 1 s)
	ThroughputAfter     *float64 `json:"throughput_after,omitempty"`     // drain: 5 s after
	RetriesBefore       *int     `json:"retries_before,omitempty"`       // drain: client attempts rejected (or reset) in the 5 s before
	RetriesDuring       *int     `json:"retries_during,omitempty"`       // drain: the same while the shards move

	Clusters       int      `json:"clusters,omitempty"`             // region-failover: clusters of three voters
	ClientSwitch   *float64 `json:"client_switch_ms,omitempty"`     // region-failover: crash until the client is answered by the new active cluster
	DualActive     *int     `json:"dual_active_instants,omitempty"` // region-failover: instants with two clusters active for one failover version
	OverlapActive  *float64 `json:"overlap_active_ms,omitempty"`    // region-failover: time two clusters answered as active (different versions)
	PreviewNodes   *int     `json:"preview_nodes,omitempty"`        // steady, canary, rolling-upgrade: nodes on the preview build at the end
	FeatureOnNodes *int     `json:"feature_on_nodes,omitempty"`     // live nodes whose view has ack-health on at the end
	V2Nodes        *int     `json:"v2_nodes,omitempty"`             // live nodes sending at protocol version 2 at the end
	HealthReports  *uint64  `json:"health_reports,omitempty"`       // acks carrying ack-health that live nodes recorded
	FeatureOnMs    *float64 `json:"feature_on_ms,omitempty"`        // rolling-upgrade: last upgrade until every live node has the feature on
	FeatureEarly   *int     `json:"feature_early,omitempty"`        // rolling-upgrade: samples of a node with the feature on while an old-build node ran
	Upgrades       *int     `json:"upgrades,omitempty"`             // rolling-upgrade: restarts onto the preview build
	// Absent names figures the scenario promises but cannot measure yet.
	Absent []string `json:"absent,omitempty"`
}

// Scenario is one experiment as data: what it is, its defaults, the stack its
// nodes run, its fault program and the figures it reports. Run looks it up by
// name and runs the same engine for every scenario; nothing else in the engine
// knows scenarios by name.
type Scenario struct {
	Name  string
	About string
	// Duration is the default measured-phase length.
	Duration time.Duration
	// Loss is the default datagram loss on every link in the measured phase.
	Loss float64
	// Stack is the protocol stack every node runs.
	Stack StackKind
	// Joiners is how many of Options.Nodes stay out of formation for the
	// measured phase to add.
	Joiners int
	// Preview is the fraction of the formed nodes (at least one when above 0)
	// that run the preview build: protocol versions 1..2 and the ack-health
	// feature (versions.go). StackSwim scenarios only.
	Preview float64
	// Figures are the JSON names of the Result fields the scenario reports on top
	// of the counters every run has (TestScenariosSmall checks that it does).
	Figures []string
	// run is the fault program of the measured phase, with its checks; it fills
	// the figures.
	run func(r *runner) error
	// standalone, when set instead of run, is a scenario with a model of its own
	// (region-failover: several clusters, no swim mesh), given the defaulted
	// Options.
	standalone func(o Options, sc Scenario) (*Result, error)
}

// StackKind is the protocol stack of a scenario's nodes.
type StackKind uint8

const (
	// StackSwim is membership and metadata only (stack without
	// leadership).
	StackSwim StackKind = iota
	// StackLease adds leader election among the voters (Options.Voters, Lease).
	StackLease
	// StackShard adds leadership and shard ownership (Options.Shard).
	StackShard
)

var (
	leaseFigures  = []string{"failover_ms", "elections", "safety_violations", "election_messages"}
	regionFigures = []string{"failover_ms", "client_switch_ms", "dual_active_instants", "overlap_active_ms", "clusters", "absent"}
	shardFigures  = []string{"moved_fraction", "duplicate_deliveries", "lost_messages", "client_messages", "shard_violations", "shard_events", "safety_violations"}
)

// scenarios is the table Run and `omnirelay sim list` read, in list order.
var scenarios = []Scenario{
	{Name: "join", About: "stable cluster of nodes-1, then one node joins; join_*_ms: when each other node first learns it",
		Duration: 30 * time.Second, Joiners: 1, run: runJoin,
		Figures: []string{"join_p50_ms", "join_p95_ms", "join_p99_ms", "join_max_ms", "missing"}},
	{Name: "crash", About: "stable cluster, one node crashes; detect_*_ms: when each other node declares it dead",
		Duration: 90 * time.Second, run: runCrash,
		Figures: []string{"suspect_first_ms", "detect_p50_ms", "detect_p95_ms", "detect_p99_ms", "detect_max_ms", "missing"}},
	{Name: "leave", About: "stable cluster, one node leaves gracefully; leave_*_ms: when each other node learns it left",
		Duration: 30 * time.Second, run: runLeave,
		Figures: []string{"leave_p50_ms", "leave_p95_ms", "leave_max_ms", "missing"}},
	{Name: "churn", About: "joins, crashes and restarts (some on new addresses) every second, then quiet until converged",
		Duration: 60 * time.Second, run: runChurn,
		Figures: []string{"crashes", "restarts", "joins", "quiet_agree_ms", "quiet_convergence_ms"}},
	{Name: "loss", About: "steady cluster under --loss (default 0.1) on every link; counts false suspicions and deaths",
		Duration: 60 * time.Second, Loss: 0.1, run: runLoss,
		Figures: []string{"false_suspicions", "false_deaths", "dropped_loss"}},
	{Name: "pause", About: "2% of nodes (at least one) repeatedly stop processing messages for 1/6 to all of --pause-max (default 24 probe intervals: 6 s lan) while their timers run, as in the Lifeguard experiments; false positives",
		Duration: 120 * time.Second, run: runPause,
		Figures: []string{"pauses", "suspected_paused", "dead_paused", "false_suspicions", "false_deaths"}},
	{Name: "gc-pause", About: "2% of nodes (at least one) repeatedly freeze as in pause, but stop-the-world: timers stop too, and at the wake they run before the queued inputs; false positives",
		Duration: 120 * time.Second, run: runGCPause,
		Figures: []string{"pauses", "suspected_paused", "dead_paused", "false_suspicions", "false_deaths"}},
	{Name: "slow", About: "2% of nodes (at least one) spend 100 ms on every input (CPU-starved, inputs queue up) for the duration; false positives about healthy nodes",
		Duration: 120 * time.Second, run: runSlow,
		Figures: []string{"slow_nodes", "suspected_slow", "dead_slow", "false_suspicions", "false_deaths"}},
	{Name: "partition-heal", About: "split in two halves for --duration (longer than the dead timeout), heal; heal_convergence_ms",
		Duration: 90 * time.Second, run: runPartitionHeal,
		Figures: []string{"heal_convergence_ms", "dropped_partition"}},
	{Name: "leader-crash", About: "voters elect a leader; it crashes; failover_ms until another node holds a valid lease (clock drift within the bound)",
		Duration: 15 * time.Second, Stack: StackLease, run: runLeaderCrash, Figures: leaseFigures},
	{Name: "leader-partition", About: "the leader is cut off alone for --duration, then healed; failover_ms on the majority side, safety throughout",
		Duration: 15 * time.Second, Stack: StackLease, run: runLeaderPartition,
		Figures: append([]string{"end_leaders"}, leaseFigures...)},
	{Name: "leader-pause", About: "the leader pauses twice its lease length; failover_ms, and whether Fence refuses when it wakes (stale_fence_refused)",
		Duration: 15 * time.Second, Stack: StackLease, run: runLeaderPause,
		Figures: append([]string{"stale_fence_refused"}, leaseFigures...)},
	{Name: "leader-flap", About: "the links of random voters flap (lossy, cut off, healthy) every 0.2-2 s; elections and safety",
		Duration: 60 * time.Second, Stack: StackLease, run: runLeaderFlap,
		Figures: []string{"elections", "safety_violations", "end_leaders"}},
	{Name: "reshard-join", About: "shards on (1024 by default), one node joins under a client workload; moved_fraction, reshard_ms, duplicate_deliveries, lost_messages, shard_violations",
		Duration: 60 * time.Second, Stack: StackShard, Joiners: 1, run: runReshardJoin,
		Figures: append([]string{"reshard_ms"}, shardFigures...)},
	{Name: "reshard-crash", About: "shards on, a non-leader crashes under the workload (reassign_ms until its shards are served elsewhere), then another is partitioned 5 s and healed (map_convergence_ms)",
		Duration: 60 * time.Second, Stack: StackShard, run: runReshardCrash,
		Figures: append([]string{"reassign_ms", "map_convergence_ms"}, shardFigures...)},
	{Name: "drain", About: "shards on, the leader drains a node under the workload; throughput_before/during/after, moved_fraction, reshard_ms",
		Duration: 60 * time.Second, Stack: StackShard, run: runDrain,
		Figures: append([]string{"reshard_ms", "throughput_before", "throughput_during", "throughput_after", "retries_before", "retries_during"}, shardFigures...)},
	{Name: "meta", About: "stable cluster, one node sets a metadata key; meta_*_ms: when each other node's store first holds it; converged includes equal metadata digests",
		Duration: 15 * time.Second, run: runMeta,
		Figures: []string{"meta_p50_ms", "meta_p99_ms", "meta_max_ms", "meta_bytes_per_node", "meta_delta_bytes", "meta_converged", "missing"}},
	{Name: "steady", About: "stable cluster, nothing happens: the all-old baseline of canary",
		Duration: 60 * time.Second, run: runSteady, Figures: versionFigures},
	{Name: "canary", About: "stable cluster with 5% of nodes (at least one) on the preview build (protocol 1..2, ack-health): they must talk version 1 with the feature off, and the others must not notice (compare steady)",
		Duration: 60 * time.Second, Preview: 0.05, run: runSteady, Figures: versionFigures},
	{Name: "rolling-upgrade", About: "stable cluster of old nodes restarted one by one onto the preview build, one every 2 s; feature_on_ms from the last restart until every node has ack-health on, feature_early counts it on while an old node ran",
		Duration: 30 * time.Second, run: runRollingUpgrade,
		Figures: append([]string{"feature_on_ms", "feature_early", "upgrades"}, versionFigures...)},
	{Name: "region-failover", About: "--clusters (default 2) clusters of three voters, LAN inside, WAN 20-80 ms between; every node of the active cluster crashes; failover_ms until another cluster answers as active, client_switch_ms until a polling client follows; --nodes is ignored",
		Duration: 30 * time.Second, standalone: runRegionFailover,
		Figures: regionFigures},
	{Name: "region-handoff", About: "as region-failover, but the active cluster's lease holder drains it to the next cluster (planned failover); failover_ms is the gap until that one answers as active",
		Duration: 30 * time.Second, standalone: runRegionHandoff, Figures: regionFigures},
}

// Scenarios lists every scenario, in the order `omnirelay sim list` prints them.
func Scenarios() []Scenario { return slices.Clone(scenarios) }

// Lookup finds a scenario by name.
func Lookup(name string) (Scenario, bool) {
	for _, sc := range scenarios {
		if sc.Name == name {
			return sc, true
		}
	}
	return Scenario{}, false
}

// SwimConfig is the swim configuration of a simulated node for a profile.
func SwimConfig(profile, name, addr string, lifeguard bool) (swim.Config, error) {
	var c swim.Config
	switch profile {
	case "", "lan":
		c = swim.LANProfile(name, addr)
	case "memberlist":
		c = swim.MemberlistProfile(name, addr)
	default:
		return c, fmt.Errorf("%w: Profile %q is not lan or memberlist", ErrConfig, profile)
	}
	c.Lifeguard = swim.Lifeguard{LocalHealth: lifeguard, AwareSuspicion: lifeguard, Buddy: lifeguard}
	return c, nil
}

// simAuthority stands in for the certificate authority of signed runs.
var simAuthority = swim.SimAuthority{Secret: 14}

// hostFactory builds production stacks for a profile already checked by SwimConfig.
// Its nodes share one string intern table: one copy of each name and address per
// run instead of one per node (half the heap at 500 nodes).
func hostFactory(profile string, lifeguard, signed bool, b builds) StackFactory {
	in := wire.NewInterner(1 << 22)
	return HostFactory(func(name, addr string) stack.Config {
		c, _ := SwimConfig(profile, name, addr, lifeguard)
		if b[name] {
			previewBuild(&c)
		}
		c.Interner = in
		if signed {
			c.Auth = simAuthority.Node(name)
		}
		return stack.Config{Swim: c}
	})
}

type runner struct {
	s    *Sim
	o    Options
	res  *Result
	rng  *rand.Rand // the scenario's fault stream
	wall time.Time
	// builds names the nodes on the preview build (versions.go).
	builds builds
	// shards is the shard ground truth of reshard-* and drain runs.
	shards *shardWatch
}

// Run runs one scenario and returns its figures.
func Run(o Options) (*Result, error) {
	sc, ok := Lookup(o.Scenario)
	if !ok {
		return nil, fmt.Errorf("%w: unknown scenario %q (see Scenarios)", ErrConfig, o.Scenario)
	}
	if o.Nodes == 0 {
		o.Nodes = 100
	}
	if o.Profile == "" {
		o.Profile = "lan"
	}
	if o.Duration == 0 {
		o.Duration = sc.Duration
	}
	if o.Loss == 0 {
		o.Loss = sc.Loss
	}
	switch {
	case o.Nodes < 3:
		return nil, fmt.Errorf("%w: Nodes %d < 3", ErrConfig, o.Nodes)
	case o.Duration < 0:
		return nil, fmt.Errorf("%w: Duration %v < 0", ErrConfig, o.Duration)
	case o.Loss < 0 || o.Loss >= 1:
		return nil, fmt.Errorf("%w: Loss %v not in [0,1)", ErrConfig, o.Loss)
	case o.PauseMax < 0:
		return nil, fmt.Errorf("%w: PauseMax %v < 0", ErrConfig, o.PauseMax)
	}
	if sc.standalone != nil {
		return sc.standalone(o, sc)
	}
	sc0, err := SwimConfig(o.Profile, "n", "a", true)
	if err != nil {
		return nil, err
	}
	if o.PauseMax == 0 {
		o.PauseMax = 24 * sc0.ProbeInterval
	}
	factory := o.NewStack
	b := builds{}
	if sc.Preview > 0 && (sc.Stack != StackSwim || factory != nil) {
		return nil, fmt.Errorf("%w: scenario %s runs preview builds of the production swim stack only", ErrConfig, sc.Name)
	}
	var watch *leaseWatch
	var sw *shardWatch
	if sc.Stack != StackSwim {
		if factory != nil {
			return nil, fmt.Errorf("%w: scenario %s needs its own stack (NewStack must be nil)", ErrConfig, sc.Name)
		}
		if err := o.fillLease(); err != nil {
			return nil, err
		}
	}
	switch sc.Stack {
	case StackShard:
		if err := o.fillShard(); err != nil {
			return nil, err
		}
		factory, watch, sw = shardFactory(o.Profile, !o.NoLifeguard, o.SignedGossip, VoterNames(o.Voters), o.Lease, o.Shard)
	case StackLease:
		factory, watch = leaseFactory(o.Profile, !o.NoLifeguard, o.SignedGossip, VoterNames(o.Voters), o.Lease)
	default:
		if factory == nil {
			factory = hostFactory(o.Profile, !o.NoLifeguard, o.SignedGossip, b)
		}
	}
	s, err := New(Config{Seed: o.Seed, NewStack: factory})
	if err != nil {
		return nil, err
	}
	if watch != nil {
		s.watchLeases(watch)
	}
	r := &runner{s: s, o: o, rng: Stream(o.Seed, "scenario/"+sc.Name), wall: time.Now(), shards: sw, builds: b}
	r.choosePreview(o.Nodes-sc.Joiners, sc.Preview)
	r.res = &Result{
		Scenario: sc.Name, Nodes: o.Nodes, Seed: o.Seed, Profile: o.Profile,
		Lifeguard: !o.NoLifeguard, Loss: o.Loss,
	}
	if sc.Stack == StackLease {
		r.res.Voters = o.Voters
	}
	if sw != nil {
		sw.s = s
		r.res.Voters, r.res.Shards = o.Voters, o.Shard.Shards
	}
	s.progress("formation", o.Progress)
	conv, _, err := s.Form(o.Nodes-sc.Joiners, 120*time.Second)
	if err != nil {
		return nil, err
	}
	r.res.FormationConverged = conv
	r.res.FormationSeconds = s.Elapsed().Seconds()
	m0, t0 := s.Metrics(), s.now
	s.progress(sc.Name, o.Progress)
	if o.Loss > 0 {
		l := s.DefaultLink()
		l.Loss = o.Loss
		if err := s.SetDefaultLink(l); err != nil {
			return nil, err
		}
	}
	if err := sc.run(r); err != nil {
		return nil, err
	}
	m := s.Metrics().Sub(m0)
	res := r.res
	res.MeasuredSeconds = time.Duration(s.now - t0).Seconds()
	res.VirtualSeconds = s.Elapsed().Seconds()
	res.WallSeconds = time.Since(r.wall).Seconds()
	res.Events = s.Metrics().Events
	res.MessagesSent, res.BytesSent = m.MessagesSent, m.BytesSent
	if res.MeasuredSeconds > 0 {
		res.BytesPerNodePerSec = float64(m.BytesSent) / float64(o.Nodes) / res.MeasuredSeconds
	}
	res.StreamsOpened, res.StreamBytes = m.StreamsOpened, m.StreamBytes
	res.DroppedLoss, res.DroppedPartition, res.DroppedMTU = m.DroppedLoss, m.DroppedPartition, m.DroppedMTU
	res.FalseSuspicions, res.FalseDeaths = m.FalseSuspicions, m.FalseDeaths
	res.SuspectedPaused, res.DeadPaused = m.SuspectedPaused, m.DeadPaused
	res.SuspectedSlow, res.DeadSlow = m.SuspectedSlow, m.DeadSlow
	res.FalseSuspicionsAtDegraded, res.FalseDeathsAtDegraded = m.FalseSuspicionsAtDegraded, m.FalseDeathsAtDegraded
	res.FalseSuspectFacts, res.FalseDeadFacts = m.FalseSuspectFacts, m.FalseDeadFacts
	res.Converged = s.Converged() && (res.MetaConverged == nil || *res.MetaConverged)
	res.ViewsAgree = s.CheckAgreement() == nil
	res.TraceHash = fmt.Sprintf("%016x", s.TraceHash())
	return res, nil
}

func (s *Sim) progress(phase string, f func(string, time.Duration, uint64)) {
	if f == nil {
		s.onProgress = nil
		return
	}
	s.onProgress = func() { f(phase, s.Elapsed(), s.m.Events) }
}

// Form adds n nodes and joins them into one cluster in waves: node 0 starts alone,
// then each wave joins as many new nodes as are already in (doubling), each through
// three random earlier nodes, spread over 500 ms. It then runs until Converged or
// settle has passed, and reports which, and the virtual time formation took.
func (s *Sim) Form(n int, settle time.Duration) (bool, time.Duration, error) {
	rng := Stream(s.cfg.Seed, "formation")
	start := s.now
	first := len(s.nodes)
	if _, err := s.AddNode(); err != nil {
		return false, 0, err
	}
	const gap = 500 * time.Millisecond
	for formed := 1; formed < n; {
		k := min(formed, n-formed)
		for j := 0; j < k; j++ {
			seeds := make([]string, 0, 3)
			for len(seeds) < min(3, formed) {
				a := s.Addr(first + rng.IntN(formed))
				if !contains(seeds, a) {
					seeds = append(seeds, a)
				}
			}
			s.At(time.Duration(rng.Int64N(int64(gap))), func(s *Sim) {
				i, err := s.AddNode()
				if err != nil {
					panic(err) // the factory worked for node 0 with the same config
				}
				s.Join(i, seeds)
			})
		}
		s.RunFor(gap)
		formed += k
	}
	ok, _ := s.RunUntilTrue(settle, 250*time.Millisecond, s.Converged)
	return ok, time.Duration(s.now - start), nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func ms(d time.Duration) *float64 { v := float64(d) / float64(time.Millisecond); return &v }
func pct(d []time.Duration, p float64) *float64 {
	v := Percentile(d, p)
	return &v
}
func intp(v int) *int { return &v }

// seeds picks up to k distinct random live nodes other than self.
func (r *runner) seeds(self, k int) []string {
	live := r.s.LiveNodes()
	out := make([]string, 0, k)
	for tries := 0; len(out) < k && tries < 10*k; tries++ {
		i := live[r.rng.IntN(len(live))]
		if a := r.s.Addr(i); i != self && !contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// firstTimes records, per observer, the first time an event of one of kinds about
// name arrives, relative to t0.
type firstTimes struct {
	seen map[int]time.Duration
}

func (r *runner) watch(name string, t0 int64, kinds ...swim.EventKind) *firstTimes {
	ft := &firstTimes{seen: make(map[int]time.Duration)}
	r.s.Observe(func(obs int, ev swim.Event) {
		if ev.Member.Name != name || r.s.Name(obs) == name {
			return
		}
		if _, ok := ft.seen[obs]; ok {
			return
		}
		for _, k := range kinds {
			if ev.Kind == k {
				ft.seen[obs] = time.Duration(r.s.now - t0)
				return
			}
		}
	})
	return ft
}

// samples returns the times of the currently live observers (other than skip), and
// how many of them never saw the event.
func (ft *firstTimes) samples(s *Sim, skip int) ([]time.Duration, int) {
	var out []time.Duration
	missing := 0
	for _, i := range s.LiveNodes() {
		if i == skip {
			continue
		}
		if d, ok := ft.seen[i]; ok {
			out = append(out, d)
		} else {
			missing++
		}
	}
	return out, missing
}

func (ft *firstTimes) allSeen(s *Sim, skip int) func() bool {
	return func() bool {
		_, missing := ft.samples(s, skip)
		return missing == 0
	}
}

func runJoin(r *runner) error {
	s := r.s
	s.RunFor(time.Second)
	seeds := r.seeds(-1, 3)
	i, err := s.AddNode()
	if err != nil {
		return err
	}
	ft := r.watch(s.Name(i), s.now, swim.EventJoin, swim.EventAlive, swim.EventUpdate)
	s.Join(i, seeds)
	start := s.now
	s.RunUntilTrue(r.o.Duration, time.Millisecond, ft.allSeen(s, i))
	d, missing := ft.samples(s, i)
	r.res.JoinP50, r.res.JoinP95, r.res.JoinP99, r.res.JoinMax = pct(d, 50), pct(d, 95), pct(d, 99), pct(d, 100)
	r.res.Missing = intp(missing)
	s.RunUntilTrue(r.o.Duration-time.Duration(s.now-start), 100*time.Millisecond, s.Converged)
	return nil
}

func runCrash(r *runner) error {
	s := r.s
	victim := s.LiveNodes()[r.rng.IntN(len(s.LiveNodes()))]
	name, t0 := s.Name(victim), s.now
	var first *float64
	dead := &firstTimes{seen: make(map[int]time.Duration)}
	s.Observe(func(obs int, ev swim.Event) {
		if ev.Member.Name != name {
			return
		}
		if ev.Kind == swim.EventSuspect && first == nil {
			first = ms(time.Duration(s.now - t0))
		}
		if ev.Kind == swim.EventDead {
			if _, ok := dead.seen[obs]; !ok {
				dead.seen[obs] = time.Duration(s.now - t0)
			}
		}
	})
	s.Crash(victim)
	s.RunUntilTrue(r.o.Duration, 10*time.Millisecond, dead.allSeen(s, victim))
	d, missing := dead.samples(s, victim)
	r.res.SuspectFirst = first
	r.res.DetectP50, r.res.DetectP95, r.res.DetectP99, r.res.DetectMax = pct(d, 50), pct(d, 95), pct(d, 99), pct(d, 100)
	r.res.Missing = intp(missing)
	s.RunUntilTrue(r.o.Duration-time.Duration(s.now-t0), 100*time.Millisecond, s.Converged)
	return nil
}

func runLeave(r *runner) error {
	s := r.s
	victim := s.LiveNodes()[r.rng.IntN(len(s.LiveNodes()))]
	t0 := s.now
	ft := r.watch(s.Name(victim), t0, swim.EventLeft)
	s.Leave(victim)
	s.At(2*time.Second, func(s *Sim) { s.Stop(victim) }) // a process exits after its leave broadcast
	s.RunUntilTrue(r.o.Duration, 10*time.Millisecond, ft.allSeen(s, victim))
	d, missing := ft.samples(s, victim)
	r.res.LeaveP50, r.res.LeaveP95, r.res.LeaveMax = pct(d, 50), pct(d, 95), pct(d, 100)
	r.res.Missing = intp(missing)
	// Run past the process exit so the measured phase covers the whole leave.
	s.RunUntil(max(s.now, t0+int64(3*time.Second)))
	s.RunUntilTrue(r.o.Duration-time.Duration(s.now-t0), 100*time.Millisecond, s.Converged)
	return nil
}

// runChurn: every second one fault: a crash (while more than half the formed size
// is live), a restart of a crashed node (half of them on a new address) or a brand
// new node. Then quiet, until converged or 120 s.
func runChurn(r *runner) error {
	s := r.s
	var crashed []int
	crashes, restarts, joins := 0, 0, 0
	for t := time.Duration(0); t < r.o.Duration; t += time.Second {
		live := s.LiveNodes()
		switch x := r.rng.Float64(); {
		case x < 0.4 && len(live) > r.o.Nodes/2:
			i := live[r.rng.IntN(len(live))]
			s.Crash(i)
			crashed = append(crashed, i)
			crashes++
		case x < 0.7 && len(crashed) > 0:
			k := r.rng.IntN(len(crashed))
			i := crashed[k]
			crashed = append(crashed[:k], crashed[k+1:]...)
			if err := s.Restart(i, r.rng.IntN(2) == 0, r.seeds(i, 3)); err != nil {
				return err
			}
			restarts++
		default:
			seeds := r.seeds(-1, 3)
			i, err := s.AddNode()
			if err != nil {
				return err
			}
			s.Join(i, seeds)
			joins++
		}
		s.RunFor(time.Second)
	}
	r.res.Crashes, r.res.Restarts, r.res.Joins = intp(crashes), intp(restarts), intp(joins)
	if l := s.DefaultLink(); l.Loss > 0 {
		l.Loss = 0
		if err := s.SetDefaultLink(l); err != nil {
			return err
		}
	}
	quiet := s.now
	agree := func() bool { return s.CheckAgreement() == nil }
	if ok, d := s.RunUntilTrue(120*time.Second, 100*time.Millisecond, agree); ok {
		r.res.QuietAgree = ms(d)
	}
	if ok, _ := s.RunUntilTrue(120*time.Second-time.Duration(s.now-quiet), 100*time.Millisecond, s.Converged); ok {
		r.res.Quiet = ms(time.Duration(s.now - quiet))
	}
	return nil
}

func runLoss(r *runner) error {
	r.s.RunFor(r.o.Duration)
	return nil
}

// runPause: max(1, nodes/50) nodes cycle: run 2-8 s, pause 1-6 s, for the duration.
// runPause: max(1, nodes/50) nodes cycle between running and a stall of their
// message processing (Stall: timers run, inputs queue), the Lifeguard paper's
// anomaly.
func runPause(r *runner) error { return runPauses(r, (*Sim).Stall) }

// runGCPause is runPause with stop-the-world pauses (Pause: timers stop too).
func runGCPause(r *runner) error { return runPauses(r, (*Sim).Pause) }

// runPauses makes max(1, nodes/50) random nodes cycle between 2-8 s running and
// a fault of PauseMax/6 to PauseMax until the end of the measured phase.
func runPauses(r *runner, fault func(s *Sim, i int, d time.Duration)) error {
	s := r.s
	k := max(1, r.o.Nodes/50)
	lo := r.o.PauseMax / 6
	live := s.LiveNodes()
	pauses := 0
	end := s.now + int64(r.o.Duration)
	for j := 0; j < k; j++ {
		i := live[r.rng.IntN(len(live))]
		var cycle func(s *Sim)
		cycle = func(s *Sim) {
			d := lo + time.Duration(r.rng.Int64N(int64(r.o.PauseMax-lo)+1))
			if s.now+int64(d) > end {
				return
			}
			fault(s, i, d)
			pauses++
			s.At(d+2*time.Second+time.Duration(r.rng.Int64N(int64(6*time.Second))), cycle)
		}
		s.At(time.Duration(r.rng.Int64N(int64(5*time.Second))), cycle)
	}
	s.RunFor(r.o.Duration)
	r.res.Pauses = intp(pauses)
	return nil
}

// runSlow: max(1, nodes/50) nodes process each input in 100 ms instead of 20 µs for
// the duration, then recover; the run continues 30 s so refutations can land.
func runSlow(r *runner) error {
	s := r.s
	live := s.LiveNodes()
	r.rng.Shuffle(len(live), func(a, b int) { live[a], live[b] = live[b], live[a] })
	slow := live[:max(1, r.o.Nodes/50)]
	for _, i := range slow {
		s.SetSlow(i, float64(100*time.Millisecond)/float64(s.cfg.ProcDelay))
	}
	s.RunFor(r.o.Duration)
	for _, i := range slow {
		s.SetSlow(i, 1)
	}
	s.RunFor(30 * time.Second)
	r.res.Slow = intp(len(slow))
	return nil
}

func runPartitionHeal(r *runner) error {
	s := r.s
	live := s.LiveNodes()
	r.rng.Shuffle(len(live), func(a, b int) { live[a], live[b] = live[b], live[a] })
	s.Partition(live[:len(live)/2])
	s.RunFor(r.o.Duration)
	s.Heal()
	if ok, d := s.RunUntilTrue(300*time.Second, 100*time.Millisecond, s.Converged); ok {
		r.res.HealConverged = ms(d)
	}
	return nil
}
