package node

import (
	"net/http"

	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are one node's Prometheus metrics, in a Registry of their own (never the
// global one), so several nodes in one process each export their own.
// docs/observability.md lists them.
type metrics struct {
	mismatches *prometheus.GaugeVec // omnirelay_config_mismatches
	reg        *prometheus.Registry

	packets  [2][256]prometheus.Counter // [dir][first message type]
	pbytes   [2][256]prometheus.Counter
	messages [2][256]prometheus.Counter

	bytesSealedIn     prometheus.Counter
	bytesSealedOut    prometheus.Counter
	decryptFailures   prometheus.Counter
	replayed          prometheus.Counter
	versionMismatches prometheus.Counter
	inboundDropped    prometheus.Counter
	subscriberDropped prometheus.Counter
	netErrors         *prometheus.CounterVec
	memberEvents      *prometheus.CounterVec
	metaChanges       prometheus.Counter
	pushPullDuration  prometheus.Histogram
	probeRTT          prometheus.Histogram

	// Leadership (leader.go); nil when leadership is off.
	leaderChanges     prometheus.Counter
	staleEpochs       prometheus.Counter
	leaseSaveFailures prometheus.Counter
	auditErrors       prometheus.Counter
	controlRefused    *prometheus.CounterVec
	enrollments       *prometheus.CounterVec
	shardMoves        *prometheus.CounterVec // nil: shard routing off
}

const (
	dirIn  = 0
	dirOut = 1
)

var dirNames = [2]string{"in", "out"}

// netErrorOps are the op labels of omnirelay_network_errors_total.
var netErrorOps = []string{"read", "write", "accept", "stream", "stream_read", "stream_write", "stream_refused",
	"stream_evicted", "stream_idle", "frame_budget"}

// typeName labels a message type; unknown types share one label so a hostile peer
// cannot blow up the label set.
func typeName(t wire.MsgType) string {
	switch t {
	case wire.TypePing:
		return "ping"
	case wire.TypeIndirectPing:
		return "indirect_ping"
	case wire.TypeAck:
		return "ack"
	case wire.TypeNack:
		return "nack"
	case wire.TypeAlive:
		return "alive"
	case wire.TypeSuspect:
		return "suspect"
	case wire.TypeDead:
		return "dead"
	case wire.TypeLeave:
		return "leave"
	case wire.TypePushPull:
		return "push_pull"
	case wire.TypeUser:
		return "user"
	case wire.TypeMetaDelta:
		return "meta_delta"
	case wire.TypeDigest:
		return "digest"
	}
	return "other"
}

// claimsRefusedHelp is shared by the reasons of omnirelay_claims_refused_total.
const claimsRefusedHelp = "With node certificates: Alive, Leave and push-pull records, metadata map deltas, and lease and shard packets, refused, by reason: forged (not signed by their member or map writer, or a packet speaking for another member), unsigned, unknown_signer (no certificate held for the signer yet, or the holder of a cluster-map epoch unknown), over_budget (not verified: the packet had used its 16 verifications)."

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	packets := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_packets_total",
		Help: "Gossip packets (after decryption), by direction and the type of their first message."},
		[]string{"direction", "type"})
	pbytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_packet_bytes_total",
		Help: "Bytes of plain gossip packets, by direction and the type of their first message."},
		[]string{"direction", "type"})
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_messages_total",
		Help: "Messages inside gossip packets (piggybacked gossip included), by direction and type."},
		[]string{"direction", "type"})
	f(packets)
	f(pbytes)
	f(messages)
	for d := range 2 {
		for t := range 256 {
			name := typeName(wire.MsgType(t))
			m.packets[d][t] = packets.WithLabelValues(dirNames[d], name)
			m.pbytes[d][t] = pbytes.WithLabelValues(dirNames[d], name)
			m.messages[d][t] = messages.WithLabelValues(dirNames[d], name)
		}
	}
	wireBytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_wire_bytes_total",
		Help: "Bytes of UDP payload as sent or received (sealed size when encrypted)."}, []string{"direction"})
	f(wireBytes)
	m.bytesSealedIn = wireBytes.WithLabelValues("in")
	m.bytesSealedOut = wireBytes.WithLabelValues("out")
	m.decryptFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_decrypt_failures_total",
		Help: "Received packets and stream frames dropped because the keyring did not open them (plain, unknown key, tampered)."})
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_replayed_total",
		Help: "Received sealed packets and stream frames that opened but were dropped as replays (sender counter seen before or below its window, or sealed for the other channel)."})
	replaySenders := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "omnirelay_replay_senders",
		Help: "Senders whose replay window this node remembers (at most wire.DefaultReplaySenders)."}, func() float64 {
		if n.replay == nil {
			return 0
		}
		return float64(n.replay.Senders())
	})
	replayEvicted := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "omnirelay_replay_senders_evicted_total",
		Help: "Senders whose replay window was forgotten to make room for others: until such a sender seals again, a recorded packet of it can be taken once."}, func() float64 {
		if n.replay == nil {
			return 0
		}
		return float64(n.replay.Evicted())
	})
	m.versionMismatches = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_version_mismatches_total",
		Help: "Received packets and stream frames dropped because their protocol version is outside the range this node speaks (logged with both versions, once a minute per source)."})
	m.inboundDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_inbound_packets_dropped_total",
		Help: "Received packets dropped because the event loop's queue was full."})
	m.subscriberDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_subscriber_events_dropped_total",
		Help: "Membership events dropped from slow Subscribe readers' full buffers."})
	m.netErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_network_errors_total",
		Help: "Network errors, by operation."}, []string{"op"})
	for _, op := range netErrorOps {
		m.netErrors.WithLabelValues(op) // a healthy node exports zeros, so rates exist
	}
	m.memberEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_member_events_total",
		Help: "Membership events this node observed, by kind (join, update, suspect, alive, dead, left)."}, []string{"kind"})
	for k := swim.EventJoin; k <= swim.EventLeft; k++ {
		m.memberEvents.WithLabelValues(KindName(k))
	}
	insecure := prometheus.NewGauge(prometheus.GaugeOpts{Name: "omnirelay_insecure",
		Help: "1 when this node runs without packet keys (unauthenticated packets and streams), else 0."})
	if len(n.cfg.Keys) == 0 {
		insecure.Set(1)
	}
	f(insecure)
	queueLimit := prometheus.NewGauge(prometheus.GaugeOpts{Name: "omnirelay_gossip_queue_limit",
		Help: "Bound of each gossip queue (membership, metadata, user) in messages: the length at which broadcasts are dropped."})
	queueLimit.Set(float64(n.cfg.swimConfig(n.addr).QueueLimit))
	f(queueLimit)
	f(m.memberEvents)
	m.pushPullDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "omnirelay_pushpull_duration_seconds",
		Help:    "Duration of stream exchanges (push-pull, join) this node started, dial to reply, failures included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15)})
	m.probeRTT = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "omnirelay_probe_rtt_seconds",
		Help:    "Round-trip time of direct pings this node sent and got an ack for from the same address.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15)})
	f(m.decryptFailures)
	f(m.replayed)
	f(replaySenders)
	f(replayEvicted)
	f(m.versionMismatches)
	f(m.inboundDropped)
	f(m.subscriberDropped)
	m.metaChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_meta_changes_total",
		Help: "Peer metadata changes (a key set or deleted on some member) this node observed, its own included."})
	f(m.metaChanges)
	f(m.netErrors)
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "omnirelay_certs_refused_total",
		Help: "Member certificate chains carried in push-pulls that did not verify against the trust bundle and mesh policy."},
		func() float64 {
			if n.certs == nil {
				return 0
			}
			return float64(n.certs.refused.Load())
		}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "omnirelay_inbound_frame_bytes",
		Help: "Bytes reserved by inbound stream request frames being read or answered (bounded by a fixed budget)."},
		func() float64 { used, _ := n.budget.inUse(); return float64(used) }))
	f(m.pushPullDuration)
	f(m.probeRTT)
	f(&swimCollector{n: n})
	f(buildInfoMetric())
	m.mismatches = newMismatchGauge()
	f(m.mismatches)
	f(&metaCollector{n: n})
	m.leaderMetrics(n)
	m.shardMetrics(n)
	if n.fed != nil {
		m.reg.MustRegister(&fedCollector{n: n})
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// countPacket counts a plain packet and its messages. Runs on the loop. A packet
// that does not parse (its error is returned), or a received one of another
// cluster label, is not counted here: the state machine counts it as malformed or foreign, and its messages were
// never accepted.
func (n *Node) countPacket(dir int, data []byte) error {
	m := n.metrics
	hdr, err := n.reader.Reset(data)
	if err != nil {
		return err
	}
	if dir == dirIn && hdr.CheckCluster(n.clusterHash) != nil {
		return nil
	}
	first := true
	for n.reader.Next() {
		t := n.reader.Type()
		if first {
			m.packets[dir][t].Inc()
			m.pbytes[dir][t].Add(float64(len(data)))
			first = false
		}
		m.messages[dir][t].Inc()
	}
	return nil
}

// swimCollector exports the membership machine's counters at scrape time.
type swimCollector struct{ n *Node }

// implausibleHelp is shared by the omnirelay_implausible_total series of every
// layer (swim, lease, shard): the registry requires one help text per name.
const implausibleHelp = "Peer messages refused because a counter (incarnation, epoch, version) jumped more than 2^32 above the value held (PROTOCOL.md 4.1), and own counter steps refused rather than wrapped."

var (
	descMembers  = prometheus.NewDesc("omnirelay_members", "Members in this node's view, by state (itself included).", []string{"state"}, nil)
	descHealth   = prometheus.NewDesc("omnirelay_local_health_multiplier", "Lifeguard local health multiplier: probe interval and timeout are scaled by it (1 = healthy).", nil, nil)
	descQueue    = prometheus.NewDesc("omnirelay_gossip_queue_length", "Broadcasts waiting in the gossip queues.", nil, nil)
	descInc      = prometheus.NewDesc("omnirelay_local_incarnation", "This node's incarnation number (grows with each refutation).", nil, nil)
	descDigest   = prometheus.NewDesc("omnirelay_membership_digest", "Digest of this node's membership view (low 52 bits, exact in a float): equal on every node once views agree.", nil, nil)
	counterDescs = []struct {
		desc *prometheus.Desc
		get  func(swim.Stats) uint64
	}{
		{prometheus.NewDesc("omnirelay_implausible_total", implausibleHelp, nil, prometheus.Labels{"layer": "swim"}), func(s swim.Stats) uint64 { return s.Implausible }},
		{prometheus.NewDesc("omnirelay_probes_sent_total", "Direct probes (pings) this node started.", nil, nil), func(s swim.Stats) uint64 { return s.ProbesSent }},
		{prometheus.NewDesc("omnirelay_probes_failed_total", "Probes that ended with no ack, direct or relayed.", nil, nil), func(s swim.Stats) uint64 { return s.ProbesFailed }},
		{prometheus.NewDesc("omnirelay_indirect_probes_sent_total", "Indirect-ping requests sent after missed direct acks.", nil, nil), func(s swim.Stats) uint64 { return s.IndirectProbesSent }},
		{prometheus.NewDesc("omnirelay_nacks_received_total", "Nacks received from intermediaries of indirect probes.", nil, nil), func(s swim.Stats) uint64 { return s.NacksReceived }},
		{prometheus.NewDesc("omnirelay_suspicions_total", "Members that turned suspect in this node's view.", nil, nil), func(s swim.Stats) uint64 { return s.Suspicions }},
		{prometheus.NewDesc("omnirelay_refutations_total", "Times this node raised its incarnation to refute a suspicion of itself.", nil, nil), func(s swim.Stats) uint64 { return s.Refutations }},
		{prometheus.NewDesc("omnirelay_deaths_total", "Members declared dead in this node's view (graceful leaves excluded).", nil, nil), func(s swim.Stats) uint64 { return s.Deaths }},
		{prometheus.NewDesc("omnirelay_pushpulls_total", "Push-pull exchanges this node started (periodic, join, reconnect, digest sync).", nil, nil), func(s swim.Stats) uint64 { return s.PushPulls }},
		{prometheus.NewDesc("omnirelay_pushpulls_failed_total", "Push-pull exchanges this node started that failed.", nil, nil), func(s swim.Stats) uint64 { return s.PushPullsFailed }},
		{prometheus.NewDesc("omnirelay_digest_syncs_total", "Push-pulls started because view digests kept disagreeing.", nil, nil), func(s swim.Stats) uint64 { return s.DigestSyncs }},
		{prometheus.NewDesc("omnirelay_broadcasts_sent_total", "Broadcast messages piggybacked on packets (one per packet carrying it).", nil, nil), func(s swim.Stats) uint64 { return s.BroadcastsSent }},
		{prometheus.NewDesc("omnirelay_broadcasts_dropped_total", "Broadcasts dropped from a full gossip queue before their retransmit budget.", nil, nil), func(s swim.Stats) uint64 { return s.BroadcastsDropped }},
		{prometheus.NewDesc("omnirelay_eager_deferred_total", "Eager pushes held back by the eager pace (PROTOCOL.md 10.4); their facts went with the gossip tick.", nil, nil), func(s swim.Stats) uint64 { return s.EagerDeferred }},
		{prometheus.NewDesc("omnirelay_malformed_total", "Malformed packets, messages or stream frames dropped (membership, lease and shard).", nil, nil), func(s swim.Stats) uint64 { return s.Malformed }},
		{prometheus.NewDesc("omnirelay_foreign_packets_total", "Packets and stream frames of another cluster label dropped (membership, lease and shard).", nil, nil), func(s swim.Stats) uint64 { return s.ForeignPackets }},
		{prometheus.NewDesc("omnirelay_misdirected_pings_total", "Pings for another node name (the address was reused), unanswered.", nil, nil), func(s swim.Stats) uint64 { return s.MisdirectedPings }},
		{prometheus.NewDesc("omnirelay_members_refused_total", "New members refused: the member table was at its cap (MaxMembers) with no tombstone to evict.", nil, nil), func(s swim.Stats) uint64 { return s.MembersRefused }},
		{prometheus.NewDesc("omnirelay_replies_dropped_total", "Answers not sent because one received packet or push-pull had used its answer budget.", nil, nil), func(s swim.Stats) uint64 { return s.RepliesDropped }},
		{prometheus.NewDesc("omnirelay_members_version_refused_total", "Member announcements (Alive, push-pull state) refused because their protocol version range is invalid or shares no version with this node's.", nil, nil), func(s swim.Stats) uint64 { return s.VersionsRefused }},
		{prometheus.NewDesc("omnirelay_indirect_probes_refused_total", "Indirect-probe requests for a member this node does not know, not run.", nil, nil), func(s swim.Stats) uint64 { return s.IndirectRefused }},
		{prometheus.NewDesc("omnirelay_claims_refused_total", claimsRefusedHelp, nil, prometheus.Labels{"reason": "forged"}), func(s swim.Stats) uint64 { return s.ClaimsForged }},
		{prometheus.NewDesc("omnirelay_claims_refused_total", claimsRefusedHelp, nil, prometheus.Labels{"reason": "unsigned"}), func(s swim.Stats) uint64 { return s.ClaimsUnsigned }},
		{prometheus.NewDesc("omnirelay_claims_refused_total", claimsRefusedHelp, nil, prometheus.Labels{"reason": "unknown_signer"}), func(s swim.Stats) uint64 { return s.ClaimsUnknownSigner }},
		{prometheus.NewDesc("omnirelay_claims_refused_total", claimsRefusedHelp, nil, prometheus.Labels{"reason": "over_budget"}), func(s swim.Stats) uint64 { return s.ClaimsOverBudget }},
		{prometheus.NewDesc("omnirelay_cert_syncs_total", "Push-pulls started to fetch the certificates of members whose claims this node could not verify yet.", nil, nil), func(s swim.Stats) uint64 { return s.CertSyncs }},
		{prometheus.NewDesc("omnirelay_sign_failures_total", "Claims of this node that its certificate's key could not sign (they leave unsigned, and strict peers refuse them).", nil, nil), func(s swim.Stats) uint64 { return s.SignFailures }},
	}
)

func (c *swimCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembers
	ch <- descHealth
	ch <- descQueue
	ch <- descInc
	ch <- descDigest
	for _, d := range counterDescs {
		ch <- d.desc
	}
}

func (c *swimCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	var st swim.Stats
	var health int
	var ms []Member
	var digest uint64
	if !n.do(func() {
		sw := n.stack.Swim()
		st, health, ms, digest = sw.Stats(), sw.LocalHealth(), sw.Members(), sw.Digest().Hash
		// Lease and shard packets never reach swim: their drops count in the same series.
		ls, ss := n.stack.LeaseHostStats(), n.stack.ShardHostStats()
		st.ForeignPackets += ls.Foreign + ss.Foreign
		st.Malformed += ls.Malformed + ss.Malformed
		addPacketAuth(&st, ls.Auth, ss.Auth)
		// Metadata cells refused by their signatures count with the self-claims.
		mst := n.stack.MetaStats()
		st.ClaimsForged += mst.Forged
		st.ClaimsUnsigned += mst.Unsigned
		st.ClaimsUnknownSigner += mst.UnknownSigner
		st.ClaimsOverBudget += mst.OverBudget
	}) {
		n.mu.Lock()
		st, health, ms, digest = n.stats, n.health, n.members, n.digest
		n.mu.Unlock()
	}
	var by [4]int
	var inc uint64
	for _, m := range ms {
		if int(m.Status) < len(by) {
			by[m.Status]++
		}
		if m.Name == n.cfg.Name {
			inc = m.Incarnation
		}
	}
	for s, count := range by {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(count), swim.Status(s).String())
	}
	ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, float64(health+1))
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(st.QueueLen))
	ch <- prometheus.MustNewConstMetric(descInc, prometheus.GaugeValue, float64(inc))
	ch <- prometheus.MustNewConstMetric(descDigest, prometheus.GaugeValue, float64(digest&(1<<52-1)))
	for _, d := range counterDescs {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.get(st)))
	}
}
