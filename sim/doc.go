// Package sim is a deterministic discrete-event simulator that runs the production
// protocol stack (stack.Stack: swim, metadata, lease and shard) for thousands
// of nodes in one process, in the style of CockroachDB's asim: the seed is a
// first-class setting, virtual time only moves when the simulator jumps to the next
// event, and the code under test is the code we ship.
//
// # Engine
//
// A queue of plain event values ordered by (time, sequence) drives everything
// (internal/vnet.Queue, a 4-ary heap); equal times fire in scheduling order, so a run is a pure function of its inputs.
// Virtual time starts at Epoch. Randomness comes from named streams derived from the
// master seed (Stream): "network" for delays, loss and duplication, "formation",
// "scenario/NAME" and "schedule" for faults, and "node/NAME/RESTARTS" for each node
// instance's own *rand.Rand. A node's timer is one pending tick event at its
// NextDeadline; an earlier deadline pushes a new one and the old one is ignored when
// it fires. Every delivered input (time, kind, endpoints, xxhash of the bytes) and
// every membership event is folded into TraceHash: equal seeds give equal hashes.
//
// # Network model (Link, Config)
//
// The link model is internal/vnet's, the one the swim, lease and shard tests run
// their machines on too; sim adds node slots, streams and the MTU around it.
//
//   - one-way delay Latency + uniform [0, Jitter) per datagram (default 0.5–2 ms);
//     reordering falls out of jitter
//   - Loss and Duplicate probabilities; an MTU above which datagrams are dropped
//   - per-link overrides (SetLink, one direction) and a default link (SetDefaultLink)
//   - partitions: symmetric (Partition: sides that only talk within themselves) and
//     one-way (PartitionOneWay); Heal lifts them
//   - streams (push-pull) are request/reply: three one-way delays plus transfer time
//     at Bandwidth to arrive, one back; a crashed target refuses after a round
//     trip, a partitioned one fails after StreamTimeout
//
// # Node faults
//
//   - Crash: the process stops; queued inputs and timers are dropped
//   - Restart: same name, fresh stack and random stream, same or new address, joins
//   - Pause(d): a stop-the-world pause; inputs queue, timers stop, the clock keeps
//     running. At the wake the timers that fell due run first, then the queued
//     inputs in arrival order: a Go runtime resuming from a stop runs expired
//     timers (checkTimers) before it polls the network, so an expired probe or
//     suspicion is acted on before the ack or refutation waiting in the socket
//   - Stall(d): message processing stops for d while timers run on time: the
//     Lifeguard paper's slow-message-processing anomaly (a receive loop stuck
//     behind a slow handler while the probe and suspicion timers fire). Probes go
//     out and time out, suspicions expire, and the acks and refutations that
//     would clear them wait in the inbox until the stall ends
//   - SetSlow(m): each input costs ProcDelay*m of virtual time and inputs queue
//     behind it, while timers still fire on time (and add to the backlog)
//   - SetDrift(r): the node's clock reads start + (virtual-start)*(1+r)
//   - Leave/Stop: graceful leave, then the process exits
//
// Addresses are "10.a.b.c:7946" derived from a slot number; nothing is ever
// contacted.
//
// # Ground truth and metrics
//
// Metrics counts datagrams and bytes sent, drops by cause, and membership events
// judged against ground truth: a suspicion or death is false when, at the moment
// the first node emits it, the member named is running at that address, is not
// leaving, is not paused or stalled and is not slow (claims about paused, stalled
// or slow members are counted apart); each fact is judged once and every node's
// event of it counts the same way. The events of false facts emitted by observers
// that are themselves paused, stalled or slow are also counted apart (*AtDegraded):
// the rest are healthy nodes holding a healthy member suspect or dead. Converged holds when every live node
// has the same Digest and one of them sees exactly the live nodes alive and nobody
// suspect; CheckAgreement checks every live node's view (small clusters).
//
// # Scenarios (Run, `omnirelay sim run`)
//
// A scenario is a value in one table (Scenarios): its name, description, default
// duration and loss, the stack its nodes run (StackSwim, StackLease, StackShard),
// how many nodes join in the measured phase, its fault program and the figures it
// reports. Run runs the same engine for all of them. Each scenario first forms a stable cluster (Form: doubling waves of joins through
// three random earlier nodes, then settle until converged, at most 120 s), then
// measures. Knobs: Options.Nodes (default 100), Seed, Duration (measured phase),
// Loss (every link, measured phase), Profile (lan | memberlist), NoLifeguard,
// PauseMax (pause, gc-pause).
//
//   - join: formed with Nodes-1; one node joins; join_p50/p95/p99/max_ms over every
//     other node of when it first learned the joiner (Duration: longest wait, 30 s)
//   - crash: one random node crashes; detect_p50/p95/p99/max_ms of when each other
//     node declared it dead, suspect_first_ms of the first suspicion (90 s)
//   - leave: one node leaves gracefully and exits 2 s later; leave_*_ms (30 s)
//   - churn: every second a crash (while more than half are live), a restart
//     (half on a new address) or a new node; then quiet until converged, at most
//     120 s: quiet_convergence_ms (60 s of churn)
//   - loss: steady cluster with Loss (default 0.1) on every link (60 s)
//   - pause: max(1, Nodes/50) nodes cycle between 2–8 s running and a Stall of
//     PauseMax/6 to PauseMax (default 24 probe intervals: 1–6 s lan, 4–24 s
//     memberlist; the stall matters against the suspicion timeout, which scales
//     with the probe interval), as in the Lifeguard paper's experiments (120 s).
//     Without Lifeguard a stalled node's own suspicions of healthy members expire
//     while their refutations wait in its inbox; Lifeguard's local health slows
//     its probing and aware suspicion starts its timeouts at the maximum
//   - gc-pause: the same cycle with stop-the-world Pauses: the node's timers stop
//     too, so it rarely holds a suspicion a pause could let expire (120 s)
//   - slow: max(1, Nodes/50) nodes spend 100 ms on every input (CPU-starved: their
//     inputs queue and their acks go out late) for Duration, then recover and the
//     run goes on 30 s; false positives about healthy nodes are what Lifeguard's
//     local health multiplier is meant to prevent (120 s)
//   - partition-heal: two random halves for Duration (default 90 s, longer than
//     the longest suspicion timeout), then healed: heal_convergence_ms until
//     Converged, at most 300 s
//   - leader-crash, leader-partition, leader-pause, leader-flap: every node runs
//     the lease machine too (Options.Voters, default 3: the first nodes vote; each
//     name keeps a lease.MemoryStorage across restarts, saved before its packets
//     leave); drift within ±MaxDrift. failover_ms, elections, election_messages and
//     safety_violations, counted by an exact checker of every node's belief on its
//     own clock (scenario_leader.go)
//   - steady, canary, rolling-upgrade: mixed protocol versions (scenario_versions.go,
//     docs/upgrading.md). A node runs today's build (versions 1..1) or the preview
//     build (1..2 with the ack-health feature), chosen by name whenever an
//     instance starts, so a restart is an upgrade or a rollback. steady: nothing
//     happens (the all-old baseline); canary: Scenario.Preview, 5% of the formed
//     nodes (at least one), are preview builds (60 s); rolling-upgrade: every node
//     is restarted onto the preview build, one every 2 s, feature_early counting
//     10 ms samples of a node with the feature on while an old node runs (must
//     be 0) and feature_on_ms the time from the last restart until every node has
//     it on. All report preview_nodes, feature_on_nodes, v2_nodes, health_reports
//   - region-failover, region-handoff: a model of its own (region.go), not the
//     swim mesh: Options.Clusters clusters (default 2) of three voters running
//     lease.Machine and cluster.Machine, LAN inside, WAN 20-80 ms between, a
//     client polling the registry. The active cluster loses every node
//     (failover) or is drained to the next (handoff); failover_ms,
//     client_switch_ms, dual_active_instants (must be 0), overlap_active_ms;
//     replication_lag_p99_ms is listed in absent (docs/multi-cluster.md)
//
// Schedule is the script language of the property tests: random schedules of
// faults followed by a quiet period after which CheckAgreement must hold. A failing
// schedule is printed in its text form; `omnirelay sim replay FILE` replays it, and
// kept under testdata/schedules it becomes a regression test. Runs of 1,000 nodes and more are gated by OMNIRELAY_HEAVY=1.
package sim
