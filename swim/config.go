package swim

import (
	"errors"
	"fmt"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns; the message
// names the offending field.
var ErrInvalidConfig = errors.New("swim: invalid config")

// DefaultMaxMembers is Config.MaxMembers in both profiles.
const DefaultMaxMembers = 10_000

// Lifeguard switches the three Lifeguard extensions (Dadgar et al. 2017) on or off.
// All three are on in both profiles; turning one off is for experiments.
type Lifeguard struct {
	// LocalHealth enables the Local Health Multiplier: missed acks, missing nacks
	// and refutations of our own suspicion raise it, successful probes lower it,
	// and probe interval and timeout are multiplied by it. Also makes indirect
	// probes ask for nacks. Off: fixed interval and timeout, no nacks.
	LocalHealth bool
	// AwareSuspicion enables Local Health Aware Suspicion: a suspicion timeout
	// starts at SuspicionMaxTimeoutMult times the minimum and falls toward the
	// minimum as independent confirmations arrive (SuspicionTimeout). Off: every
	// suspicion lasts the minimum.
	AwareSuspicion bool
	// Buddy enables the buddy system: a probe of a suspect member carries the
	// suspicion first, so the suspect learns of it (and refutes) at once.
	Buddy bool
}

// Config configures a Machine. Build one with LANProfile or MemberlistProfile and
// adjust; zero values are not defaults. Durations are virtual or wall time alike:
// the machine never reads a clock.
type Config struct {
	// Name is this node's unique name in the cluster. Required.
	Name string
	// Addr is the host:port peers send packets to (and open streams to). Required.
	Addr string
	// ClusterLabel is hashed into every packet header (wire.ClusterHash); packets
	// carrying another label's hash are dropped, so two clusters sharing a network
	// never merge. Empty is a valid label.
	ClusterLabel string
	// MTU bounds every packet we build, header to checksum (bytes). Default
	// wire.DefaultMTU (1400). Raising it packs more gossip per packet but risks IP
	// fragmentation; lowering it slows dissemination. Minimum 256.
	MTU int

	// ProbeInterval is the time between two probes of this node, before the local
	// health multiplier. LAN default 250 ms (memberlist 1 s). Lowering it detects
	// failures sooner and costs one ping per interval per node.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct ping waits for its ack before indirect
	// probes are sent, before the local health multiplier. Must be below
	// ProbeInterval. LAN default 100 ms: a LAN round trip is about 1 ms, so this
	// leaves room for a 100 ms pause of the target (GC, scheduling) while leaving
	// 150 ms of the interval for indirect probes. memberlist: 500 ms.
	ProbeTimeout time.Duration
	// IndirectChecks is k, the number of members asked to probe a target that
	// missed its direct ack. Default 3. Raising it lowers false positives caused by
	// one lossy path at the cost of k more pings per failed probe.
	IndirectChecks int
	// GossipInterval is the period of the gossip tick, which sends queued
	// broadcasts to GossipNodes random members. LAN default 50 ms (memberlist
	// 200 ms). Lowering it spreads facts faster at more packets per second; new
	// facts are pushed eagerly anyway (EagerFanout).
	GossipInterval time.Duration
	// GossipNodes is how many random members each gossip tick sends to. Default 3.
	GossipNodes int
	// EagerFanout is how many random members a fact learned for the first time is
	// pushed to at once, without waiting for the gossip tick. Default 5 (both
	// profiles); 0 disables eager push, as in hashicorp/memberlist. Propagation
	// then takes about log_fanout(n) network hops instead of as many gossip
	// intervals. Push epidemics leave a fraction of about e^-fanout of the nodes
	// to the next gossip tick: at 3, a 128-node join in the simulator had such a
	// straggler (a 200 ms tail at memberlist's timers) in 14 of 40 seeds, at 4 in
	// 2, at 5 in none. It costs bytes only for new facts (about +10% under 10%
	// loss, where false suspicions and refutations are new facts; nothing in a
	// steady cluster). Pushes are paced (EagerPace): EagerBurst at once, then one
	// per GossipInterval, so a mass join cannot turn every packet into
	// EagerFanout more.
	EagerFanout int
	// SuspicionMult scales the minimum suspicion timeout:
	// SuspicionMult * max(1, log10(n)) * ProbeInterval for n live members. Default 4.
	// Raising it gives a suspect more time to refute (fewer false positives,
	// slower detection). Also sets the confirmations that drive a suspicion
	// to its minimum: SuspicionMult - 2 (at most n - 2).
	//
	// Pause tolerance: a node that stops answering (GC or VM pause, SIGSTOP) for
	// longer than about one probe period plus the minimum timeout is declared dead
	// and must refute when it resumes. With the LAN profile at 200 nodes the
	// minimum is 2.3 s, so pauses over about 3 s are deaths. Simulator, lan, 200
	// nodes (crash seeds 1-3; pause seeds 1-2, 2% of nodes pausing 1-6 s, ~57
	// pauses): SuspicionMult 4 detects a crash in 2.8-3.3 s (p50) with 27-32 of the
	// pauses declared dead; 5: 3.4-3.8 s, 24-27; 6: 4.0-4.4 s, 21-22. Each step
	// costs about 0.58 s of detection for about 3 fewer paused nodes declared dead
	// out of 57, and no step removes them: the default stays 4. Clusters whose
	// nodes pause for seconds should raise ProbeInterval or SuspicionMult knowing
	// that detection slows in proportion (the memberlist profile, 1 s probes,
	// tolerates pauses up to about 9 s).
	SuspicionMult int
	// SuspicionMaxTimeoutMult is the ratio of the longest suspicion timeout (no
	// confirmations, with AwareSuspicion) to the minimum. Default 6.
	SuspicionMaxTimeoutMult int
	// RetransmitMult sets how often each broadcast is sent:
	// RetransmitMult * ceil(log10(n+1)) times for n live members. Default 4.
	// Raising it makes delivery to every member more likely at more bytes.
	RetransmitMult int
	// PushPullInterval is the base period of anti-entropy: a full-state exchange
	// with one random member. The period grows with cluster size (PushPullScale) so
	// the cluster-wide rate stays bounded. LAN default 15 s, memberlist 30 s; 0
	// disables periodic push-pull (joins, reconnects and digest syncs still use it).
	PushPullInterval time.Duration
	// ReconnectInterval is the base period at which a node push-pulls with a
	// random dead or left member's address, or a seed: this is what re-merges two
	// halves of a partition that outlasted the suspicion timeout. Scaled with
	// cluster size like PushPullInterval. Default 10 s (both profiles); 0
	// disables, as in hashicorp/memberlist, which never re-merges on its own.
	ReconnectInterval time.Duration
	// TombstoneTTL is how long a dead or left member is remembered before it is
	// collected. While remembered, its incarnation beats any alive claim of the
	// same or lower incarnation (no stale resurrection) and its address is a
	// reconnect candidate. Default 1 h. Raising it costs memory per departed node;
	// lowering it below the longest partition you want to heal leaves only seeds
	// to heal through.
	TombstoneTTL time.Duration
	// AwarenessMaxMultiplier bounds the local health multiplier: probe interval
	// and timeout are multiplied by 1..AwarenessMaxMultiplier. Default 8.
	AwarenessMaxMultiplier int
	// DigestSyncInterval: when digests received on probes have disagreed with our
	// own for this long, push-pull with the disagreeing peer; at most one such
	// push-pull per interval. Default 3 s in both profiles (longer than a fact
	// takes to spread); 0 disables, as in hashicorp/memberlist.
	DigestSyncInterval time.Duration
	// DigestEvery: while the cluster is quiet, our digest rides on every
	// DigestEvery-th probe only; it rides on every probe while our view changed,
	// or a peer's digest disagreed with ours, within the last 2 ×
	// DigestSyncInterval (divergence is then possible, and a disagreeing node
	// keeps hearing digests until it syncs). Default 4 in both profiles; 0 or 1
	// puts it on every probe. Raising it saves about 18 B per probe skipped (a
	// fifth of a quiet node's UDP bytes at 1) but lets a divergence that arose
	// without any view change (a lost fact) go unnoticed for up to DigestEvery
	// probe intervals longer. Ignored when DigestSyncInterval is 0.
	DigestEvery int
	// FinalProbe: when a suspicion times out, probe the suspect once more (a ping
	// carrying the suspicion, and 2×IndirectChecks indirect pings, all at once) and
	// declare it dead only if nothing answers within the health-scaled
	// ProbeInterval; an answer restarts the suspicion at its minimum. Gossip leaves a
	// node without a given refutation with probability about e^-(retransmissions
	// per node), which over thousands of false suspicions under packet loss is a
	// steady trickle of false deaths; the final probe (and the suspect answering a
	// stale suspicion with its current Alive) closes that gap at the cost of one
	// probe period of detection time. On in LANProfile (≤ 250 ms); off in
	// MemberlistProfile, where it would cost a full second per crash detection
	// (hashicorp/memberlist has no final probe either). Off, a suspicion that
	// reaches Lifeguard's maximum timeout without one independent confirmation
	// still gets a final probe: nobody else's probe failed meanwhile, so a missed
	// refutation is the likelier story, and real crashes are confirmed well
	// before the maximum (this removed the false deaths the simulator still saw
	// at memberlist's timers under 10% loss).
	FinalProbe bool
	// QueueLimit bounds each broadcast queue (membership, metadata, user) in
	// messages. When full, the most-transmitted message is dropped (counted in
	// Stats.BroadcastsDropped). Default 1024.
	QueueLimit int

	// MaxMembers caps the member table: alive, suspect, dead and left records, this
	// node included. Default 10,000 (both profiles): a 10,000-node cluster fits
	// (about 90 B a record, so ~1 MB), and 100,000 injected fake members do not.
	// A new member beyond the cap first evicts a tombstone, when there is one (a
	// live member outranks the memory of a departed one, whose stale resurrection
	// is then possible again); otherwise it is refused and counted
	// (Stats.MembersRefused), and neither held nor gossiped. A refused member that
	// is real is not lost: it still probes and gossips to us, and push-pull keeps
	// offering it, so it is taken once there is room (fake members fail their
	// probes, turn into tombstones, and those give way). Raise it for larger
	// clusters; lowering it below the cluster size makes views partial.
	MaxMembers int
	// CheckAddr, when set, vets every address taken from a received message (Alive,
	// push-pull node states, Ping and IndirectPing reply and target addresses): a
	// refused one makes the message malformed (counted in Stats.Malformed, dropped).
	// node sets wire.CheckAddr, so only IP-literal host:port addresses get into the
	// view and nothing a peer sends can make the host resolve a name. nil: any
	// non-empty string is an address (the simulator and tests).
	CheckAddr func(addr string) error

	// Lifeguard switches the Lifeguard extensions; all on by default.
	Lifeguard Lifeguard

	// Versions is the range of protocol versions this node speaks and announces;
	// zero is wire.DefaultVersions (what a release speaks, 1..1). Only tests set
	// it, to 1..wire.PreviewVersion, to run mixed-version clusters (PROTOCOL.md
	// section 7): a node sends at the highest version every member it holds
	// speaks, so raising Max alone changes nothing on the wire while an older
	// member is held.
	Versions wire.Versions
	// Features are the protocol features this node advertises (wire.Features);
	// each is used only while every live member advertises it (Machine.Features).
	// Zero in both profiles: no release has gated behaviour yet; tests of the
	// preview version set wire.FeatureAckHealth.
	Features wire.Features

	// Interner, when set, is the string table the machine's decoder interns
	// member names and addresses in, shared with other machines of the process
	// (the simulator runs thousands): each name is then held once per process
	// instead of once per node. Default nil: a table of the machine's own. Not
	// safe for concurrent use, so only machines driven by one goroutine may share.
	Interner *wire.Interner
	// Auth, when set, makes the machine strict about self-claims (PROTOCOL.md
	// 10.10): it signs its own Alive and Leave, and applies another member's
	// Alive, Leave or push-pull record only with that member's valid signature,
	// so a holder of the packet key cannot speak as another member. nil (a
	// cluster without node certificates) signs and checks nothing. Every member
	// of a strict cluster must set it: a strict node refuses unsigned claims.
	Auth Authenticator
}

// LANProfile is our fast default for a LAN with millisecond round trips: probes
// every 250 ms with a 100 ms ack timeout, gossip every 50 ms, eager push to 5
// members, push-pull every 15 s (scaled), reconnects every 10 s (scaled), all of
// Lifeguard on. Failure detection of a crashed node in a 100-node cluster takes a
// probe round to notice plus SuspicionMult*2*250 ms = 2 s to 12 s of suspicion.
func LANProfile(name, addr string) Config {
	return Config{
		Name:                    name,
		Addr:                    addr,
		MTU:                     wire.DefaultMTU,
		ProbeInterval:           250 * time.Millisecond,
		ProbeTimeout:            100 * time.Millisecond,
		IndirectChecks:          3,
		GossipInterval:          50 * time.Millisecond,
		GossipNodes:             3,
		EagerFanout:             5,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		RetransmitMult:          4,
		PushPullInterval:        15 * time.Second,
		ReconnectInterval:       10 * time.Second,
		TombstoneTTL:            time.Hour,
		AwarenessMaxMultiplier:  8,
		DigestSyncInterval:      3 * time.Second,
		DigestEvery:             4,
		FinalProbe:              true,
		QueueLimit:              1024,
		MaxMembers:              DefaultMaxMembers,
		Lifeguard:               Lifeguard{LocalHealth: true, AwareSuspicion: true, Buddy: true},
	}
}

// MemberlistProfile is our protocol at hashicorp/memberlist's DefaultLANConfig
// timers: probes every 1 s with a 500 ms ack timeout, gossip every 200 ms to 3
// members, push-pull every 30 s, SuspicionMult 4, RetransmitMult 4, Lifeguard on.
// Eager push, reconnects and digest syncs stay on as in LANProfile, so comparing
// it with memberlist at equal timers measures what the protocol itself changes:
// eager push makes join and leave propagation a matter of network hops instead of
// 200 ms gossip hops. FinalProbe is off: at 1 s probes it adds up to a full
// second to every crash detection, so detection stays no slower than
// memberlist's; unconfirmed suspicions still get one (see FinalProbe), which keeps
// the simulator at zero false deaths at these timers with Lifeguard on (200 nodes,
// 10% loss, 300 s, seeds 1-5; docs/benchmarks.md, section sim).
func MemberlistProfile(name, addr string) Config {
	c := LANProfile(name, addr)
	c.ProbeInterval = time.Second
	c.ProbeTimeout = 500 * time.Millisecond
	c.GossipInterval = 200 * time.Millisecond
	c.GossipNodes = 3
	c.SuspicionMult = 4
	c.SuspicionMaxTimeoutMult = 6
	c.RetransmitMult = 4
	c.PushPullInterval = 30 * time.Second
	c.IndirectChecks = 3
	c.AwarenessMaxMultiplier = 8
	c.FinalProbe = false
	return c
}

// WANProfile is the pool of gateways between clusters (round trips of 20 to
// 200 ms, loss more likely), derived from hashicorp/memberlist's
// DefaultWANConfig: gossip every 500 ms to 4 members, SuspicionMult 6, push-pull
// every 60 s. Two changes, because here a probe that fails is what starts a
// failover between clusters (docs/multi-cluster.md): probes every 1 s with a
// 500 ms ack timeout instead of 5 s and 3 s (still over twice the longest WAN
// round trip), and no local health scaling (AwarenessMaxMultiplier 1 instead of
// 8). When a whole cluster dies, every surviving gateway's probes of its
// gateways fail, and Lifeguard reads that as its own ill health and slows its
// probing: at memberlist's timers a failover between two clusters of three
// gateways took 51.6 s on loopback, with 1 s probes and the multiplier capped
// at 3 7 to 15 s, uncapped 1 s probes 6.6 to 8.4 s (docs/benchmarks.md,
// "multi-cluster, loopback"). What the multiplier protects against, a slow
// prober suspecting healthy members, costs little here: a failover needs every
// gateway of the active cluster unseen by every gateway of the others.
// Declaring a gateway dead still takes SuspicionMult probe intervals of
// suspicion, scaled by the pool's size.
func WANProfile(name, addr string) Config {
	c := LANProfile(name, addr)
	c.ProbeInterval = time.Second
	c.ProbeTimeout = 500 * time.Millisecond
	c.GossipInterval = 500 * time.Millisecond
	c.GossipNodes = 4
	c.SuspicionMult = 6
	c.PushPullInterval = 60 * time.Second
	c.ReconnectInterval = 30 * time.Second
	c.DigestSyncInterval = 10 * time.Second
	c.AwarenessMaxMultiplier = 1 // no local health scaling: see above
	c.FinalProbe = false         // it would add a probe interval to every detection
	return c
}

// Validate reports the first invalid field, wrapping ErrInvalidConfig. It has no
// side effects.
func (c *Config) Validate() error {
	bad := func(field, why string) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, why)
	}
	switch {
	case c.Name == "":
		return bad("Name", "is empty")
	case len(c.Name) > wire.MaxString:
		return bad("Name", fmt.Sprintf("is longer than %d bytes", wire.MaxString))
	case c.Versions.OrDefault().Validate() != nil:
		return bad("Versions", c.Versions.OrDefault().Validate().Error())
	case c.Features&^wire.KnownFeatures != 0:
		return bad("Features", fmt.Sprintf("has bits %#x this build does not implement (known: %s)", uint64(c.Features&^wire.KnownFeatures), wire.KnownFeatures))
	case c.Addr == "":
		return bad("Addr", "is empty")
	case len(c.Addr) > wire.MaxString:
		return bad("Addr", fmt.Sprintf("is longer than %d bytes", wire.MaxString))
	case c.MTU < 256:
		return bad("MTU", "must be at least 256")
	case c.ProbeInterval <= 0:
		return bad("ProbeInterval", "must be positive")
	case c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval:
		return bad("ProbeTimeout", "must be positive and below ProbeInterval")
	case c.IndirectChecks < 0:
		return bad("IndirectChecks", "must not be negative")
	case c.GossipInterval <= 0:
		return bad("GossipInterval", "must be positive")
	case c.GossipNodes < 1:
		return bad("GossipNodes", "must be at least 1")
	case c.EagerFanout < 0:
		return bad("EagerFanout", "must not be negative")
	case c.SuspicionMult < 1:
		return bad("SuspicionMult", "must be at least 1")
	case c.SuspicionMaxTimeoutMult < 1:
		return bad("SuspicionMaxTimeoutMult", "must be at least 1")
	case c.RetransmitMult < 1:
		return bad("RetransmitMult", "must be at least 1")
	case c.PushPullInterval < 0:
		return bad("PushPullInterval", "must not be negative")
	case c.ReconnectInterval < 0:
		return bad("ReconnectInterval", "must not be negative")
	case c.TombstoneTTL <= 0:
		return bad("TombstoneTTL", "must be positive")
	case c.AwarenessMaxMultiplier < 1:
		return bad("AwarenessMaxMultiplier", "must be at least 1")
	case c.DigestSyncInterval < 0:
		return bad("DigestSyncInterval", "must not be negative")
	case c.DigestEvery < 0:
		return bad("DigestEvery", "must not be negative")
	case c.QueueLimit < 1:
		return bad("QueueLimit", "must be at least 1")
	case c.MaxMembers < 2:
		return bad("MaxMembers", "must be at least 2 (this node and one peer)")
	}
	return nil
}
