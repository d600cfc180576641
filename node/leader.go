package node

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoLeadership is returned by the leadership methods of a node started without
// Config.Voters.
var ErrNoLeadership = errors.New("node: leadership is not configured (Config.Voters is empty)")

// LeaderInfo is the lease a node knows of.
type LeaderInfo struct {
	// Holder is the leader's name; "" when no lease stands as far as this node
	// knows (Epoch and ValidUntil are then zero).
	Holder string
	// Epoch is the lease's fencing token; successive holders' epochs increase.
	Epoch uint64
	// ValidUntil is when this node stops believing in the lease unless it hears a
	// renewal, on this node's Clock. On the holder it is the holder's conservative
	// deadline: it must stop acting as leader by then (Fence fails from then on).
	// On a voter that accepted the lease it is the voter's hold, later than the
	// holder's own deadline, so it bounds when a new leader may be elected, not
	// when the old one stops. On a non-voter it is what the host learned from the
	// voters' messages. It is not a promise that the holder is alive until then.
	ValidUntil time.Time
}

// leaderState is the leadership part of a Node. The loop owns the fields above
// mu; mu guards the published view below it.
type leaderState struct {
	store lease.Storage
	// saveErr is the error of the last save while it keeps failing (nil once one
	// works), reported by /readyz.
	saveErr error
	// counted is the highest epoch counted in omnirelay_leader_changes_total: a
	// lease at a higher epoch is a new leader, a lapse or a repeat is not.
	counted uint64

	mu      sync.Mutex
	version uint64   // leadership events observed (the "N" of the leaders version)
	voters  []string // voter set in force, sorted
	highest uint64   // highest epoch seen (events and CheckFence)
}

// leaderCorrelationID is the id of a leadership event: the same fact (holder h won
// epoch e) has the same id on every node.
func leaderCorrelationID(kind, holder string, epoch uint64) string {
	var d xxhash.Digest
	d.Reset()
	d.WriteString(kind)
	d.Write([]byte{0})
	d.WriteString(holder)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], epoch)
	d.Write(b[:])
	binary.BigEndian.PutUint64(b[:], d.Sum64())
	return hex.EncodeToString(b[:])
}

// leaseKindName names a lease event kind as logged and audited.
func leaseKindName(k lease.EventKind) string {
	switch k {
	case lease.EventBecameLeader:
		return "became_leader"
	case lease.EventLostLease:
		return "lost_lease"
	case lease.EventLeaderChanged:
		return "leader_changed"
	case lease.EventVotersChanged:
		return "voters_changed"
	}
	return fmt.Sprintf("lease_kind%d", k)
}

// leaseHostConfig fills the lease part of the host config; leadership off: no-op.
func (n *Node) leaseHostConfig(hc *stack.Config) error {
	lc, ok := n.cfg.leaseConfig()
	if !ok {
		return nil
	}
	var store lease.Storage = &lease.MemoryStorage{}
	if n.cfg.LeaseStorage != nil {
		store = n.cfg.LeaseStorage
	} else if n.cfg.DataDir != "" {
		fs, err := NewFileLeaseStorage(n.cfg.DataDir)
		if err != nil {
			return err
		}
		store = fs
	}
	n.lead = &leaderState{store: store, voters: slices.Sorted(slices.Values(lc.Voters))}
	hc.Lease, hc.LeaseStorage = &lc, store
	return nil
}

// driveLease applies the lease part of a Ready, before its packets leave: the
// state the stack offers is saved and the result reported (the stack holds the
// lease packets that depend on it until a save works, and offers the state again
// after a failure), then events are counted, logged and audited. Loop only.
func (n *Node) driveLease(rd *stack.Ready) {
	if n.lead == nil {
		return
	}
	if rd.LeaseState != nil {
		err := n.lead.store.Save(*rd.LeaseState)
		n.stack.Saved(n.clock.Now(), rd.LeaseVersion, err)
		switch {
		case err != nil:
			n.metrics.leaseSaveFailures.Inc()
			if n.lead.saveErr == nil {
				n.log.Error("saving the lease state failed: lease packets are held until a save works", "err", err)
			}
			n.lead.saveErr = err
		case n.lead.saveErr != nil:
			n.lead.saveErr = nil
			n.log.Info("saving the lease state works again")
		}
	}
	for _, e := range rd.LeaseEvents {
		n.leaseEvent(e)
	}
}

func (n *Node) leaseEvent(e lease.Event) {
	l := n.lead
	kind := leaseKindName(e.Kind)
	if (e.Kind == lease.EventBecameLeader || e.Kind == lease.EventLeaderChanged) && e.Holder != "" && e.Epoch > l.counted {
		l.counted = e.Epoch
		n.metrics.leaderChanges.Inc()
	}
	l.mu.Lock()
	l.version++
	l.highest = max(l.highest, e.Epoch)
	if e.Kind == lease.EventVotersChanged {
		l.voters = slices.Sorted(slices.Values(e.Voters))
	}
	l.mu.Unlock()
	id := leaderCorrelationID(kind, e.Holder, e.Epoch)
	if e.Kind == lease.EventVotersChanged {
		id = leaderCorrelationID(kind, fmt.Sprint(e.Voters), e.Epoch)
	}
	level := slog.LevelInfo
	if e.Kind == lease.EventLostLease || (e.Kind == lease.EventLeaderChanged && e.Holder == "") {
		level = slog.LevelWarn
	}
	attrs := []any{"event_id", id, "holder", e.Holder, "epoch", e.Epoch}
	if e.Kind == lease.EventVotersChanged {
		attrs = append(attrs, "voters", e.Voters)
	}
	at := e.At
	if e.Kind == lease.EventLostLease {
		at = e.Ended // the lease ended then, however late this node noticed
		attrs = append(attrs, "ended", e.Ended)
	}
	n.log.Log(context.Background(), level, "lease "+kind, attrs...)
	n.audit(auditRecord{Time: at, Event: kind, ID: id, Holder: e.Holder, Epoch: e.Epoch, Voters: e.Voters})
}

// Leader returns the lease this node knows of (see LeaderInfo); the zero
// LeaderInfo when none stands, leadership is off, or the node is closed.
func (n *Node) Leader() LeaderInfo {
	var li LeaderInfo
	if n.lead == nil {
		return li
	}
	n.do(func() {
		if h, e, until, ok := n.stack.Leader(n.clock.Now()); ok {
			li = LeaderInfo{Holder: h, Epoch: e, ValidUntil: until}
		}
	})
	return li
}

// Fence returns the fencing token (the lease epoch) to attach to every write this
// node makes to an external resource as leader; the resource rejects tokens lower
// than the highest it has seen (CheckFence on a node, or the store's own check).
// It fails with an error wrapping lease.ErrNotLeader unless this node holds a
// valid lease now, ErrNoLeadership when leadership is off, ErrClosed after Close.
// Call it for each write: a token obtained before a pause may be stale after it.
func (n *Node) Fence() (uint64, error) {
	if n.lead == nil {
		return 0, ErrNoLeadership
	}
	var e uint64
	var err error
	if !n.do(func() { e, err = n.stack.Fence(n.clock.Now()) }) {
		return 0, ErrClosed
	}
	if err != nil {
		return 0, fmt.Errorf("node: %s: %w", n.cfg.Name, err)
	}
	return e, nil
}

// CheckFence is the follower side of fencing: it accepts a leader-issued request
// carrying epoch, raising the highest epoch seen, or rejects it with an error
// wrapping lease.ErrStaleEpoch when epoch is below the highest epoch this node has
// seen (a deposed leader's late request), counting it in
// omnirelay_stale_epoch_rejections_total.
func (n *Node) CheckFence(epoch uint64) error {
	if n.lead == nil {
		return ErrNoLeadership
	}
	var err error
	if !n.do(func() { err = n.stack.CheckFence(epoch) }) {
		return ErrClosed
	}
	if errors.Is(err, lease.ErrStaleEpoch) {
		n.metrics.staleEpochs.Inc()
		return err
	}
	if err == nil {
		n.lead.mu.Lock()
		n.lead.highest = max(n.lead.highest, epoch)
		n.lead.mu.Unlock()
	}
	return err
}

// ChangeVoters replaces the voter set, through joint quorums so the old and new
// sets never elect separate leaders. Only the leader can: lease.ErrNotLeader
// elsewhere, lease.ErrChangeInProgress while a change runs. Completion is seen as
// a voters_changed event (log, audit) and in the leaders route.
func (n *Node) ChangeVoters(voters []string) error {
	if n.lead == nil {
		return ErrNoLeadership
	}
	var err error
	if !n.do(func() { err = n.stack.ChangeVoters(n.clock.Now(), voters) }) {
		return ErrClosed
	}
	return err
}

// Leaders implements control.LeaderSource.
func (c controlSource) Leaders() (control.Leaders, error) {
	n := c.n
	if n.lead == nil {
		return control.Leaders{}, control.ErrLeadershipOff
	}
	var li LeaderInfo
	var ok bool
	var members []Member
	if !n.do(func() {
		h, e, until, valid := n.stack.Leader(n.clock.Now())
		li, ok = LeaderInfo{Holder: h, Epoch: e, ValidUntil: until}, valid
		members = n.stack.Swim().Members()
	}) {
		return control.Leaders{}, ErrClosed
	}
	l := n.lead
	l.mu.Lock()
	out := control.Leaders{Version: control.Version{Epoch: n.epoch, N: l.version}.String(),
		Voters: slices.Clone(l.voters),
		Local:  control.LocalLeadership{Name: n.cfg.Name, IsVoter: slices.Contains(l.voters, n.cfg.Name), EpochSeen: max(l.highest, li.Epoch)}}
	l.mu.Unlock()
	for _, v := range out.Voters {
		vs := control.VoterStatus{Name: v, Status: "unknown"}
		if i, found := slices.BinarySearchFunc(members, v, func(m Member, name string) int { return strings.Compare(m.Name, name) }); found {
			vs.Status, vs.Since = members[i].Status.String(), members[i].Since
		}
		out.VoterStatus = append(out.VoterStatus, vs)
	}
	if ok {
		out.Leader = &control.Lease{Holder: li.Holder, Epoch: li.Epoch, ValidUntil: li.ValidUntil, IsLocal: li.Holder == n.cfg.Name}
		out.Local.IsLeader = out.Leader.IsLocal
	}
	return out, nil
}

// ---- audit log ----

// auditQueue bounds the audit records waiting for the writer: a burst of a few
// thousand (a mass join, a refusal flood) is written, a disk that stops answering
// costs at most this many records and never stalls the event loop.
const auditQueue = 4096

// auditLog writes JSON lines to Config.AuditLog from a goroutine of its own, so
// that no caller (the event loop among them) waits on the disk. Records that find
// the queue full are dropped and counted.
type auditLog struct {
	w    io.Writer
	q    chan []byte
	stop chan struct{} // closed by close: write what is queued, then end
	done chan struct{} // closed when the writer has ended
	// failed is whether a write or a drop was logged already; further ones are
	// only counted. Guarded by mu.
	mu     sync.Mutex
	failed bool
}

func newAuditLog(w io.Writer) *auditLog {
	return &auditLog{w: w, q: make(chan []byte, auditQueue), stop: make(chan struct{}), done: make(chan struct{})}
}

// run writes records until close, then writes the rest of the queue.
func (a *auditLog) run(n *Node) {
	defer close(a.done)
	write := func(b []byte) {
		if _, err := a.w.Write(b); err != nil {
			a.fail(n, "writing the audit log failed (further failures are only counted)", err)
		}
	}
	for {
		select {
		case b := <-a.q:
			write(b)
		case <-a.stop:
			for {
				select {
				case b := <-a.q:
					write(b)
				default:
					return
				}
			}
		}
	}
}

func (a *auditLog) fail(n *Node, msg string, err error) {
	n.metrics.auditErrors.Inc()
	a.mu.Lock()
	first := !a.failed
	a.failed = true
	a.mu.Unlock()
	if first {
		n.log.Error(msg, "err", err)
	}
}

// auditFlushWait bounds how long Close waits for the queue to be written: a stuck
// disk must not keep the node from closing.
const auditFlushWait = 5 * time.Second

// close writes out the queue and ends the writer, waiting at most auditFlushWait;
// records queued later, or still queued then, are lost.
func (a *auditLog) close() {
	close(a.stop)
	t := time.NewTimer(auditFlushWait)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C:
	}
}

// auditRecord is one line of the audit log; docs/observability.md has the schema.
type auditRecord struct {
	Time        time.Time `json:"time"`
	Node        string    `json:"node"`
	Event       string    `json:"event"`
	ID          string    `json:"id"`
	Member      string    `json:"member,omitempty"`
	Addr        string    `json:"addr,omitempty"`
	Incarnation *uint64   `json:"incarnation,omitempty"`
	Holder      string    `json:"holder,omitempty"`
	Epoch       uint64    `json:"epoch,omitempty"`
	Voters      []string  `json:"voters,omitempty"`
	// Of shard moves (leader only): the shard, where from and to, the state
	// entered, and whether its owner failed (forced). Of relayed join tokens:
	// From the relaying member, To the signer, Addr the joiner's address as the
	// relaying member reports it.
	Shard  *uint32 `json:"shard,omitempty"`
	From   string  `json:"from,omitempty"`
	To     string  `json:"to,omitempty"`
	State  string  `json:"state,omitempty"`
	Forced bool    `json:"forced,omitempty"`
	// Of control API and certificate events: who (a SPIFFE ID, token:NAME, or
	// the unverified ID a refused certificate claims), from where, what, and why.
	Identity string `json:"identity,omitempty"`
	Role     string `json:"role,omitempty"`
	Remote   string `json:"remote,omitempty"`
	Route    string `json:"route,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Key is the fingerprint of the key of a keyring event (control.KeyFingerprint).
	Key string `json:"key,omitempty"`
	// Of multi-cluster transitions: the cluster and failover version concerned.
	Cluster         string `json:"cluster,omitempty"`
	FailoverVersion uint64 `json:"failover_version,omitempty"`
}

// audit queues r for the audit log, if any. A failed write or a full queue is
// counted and logged (the first time); the node carries on.
func (n *Node) audit(r auditRecord) {
	a := n.auditLog
	if a == nil {
		return
	}
	r.Node = n.cfg.Name
	b, err := json.Marshal(r)
	if err != nil {
		panic("node: encoding our own audit record: " + err.Error())
	}
	select {
	case a.q <- append(b, '\n'):
	default:
		a.fail(n, "audit records dropped: the audit log's queue is full (its disk is slow or stuck; further drops are only counted)",
			fmt.Errorf("%d records queued", auditQueue))
	}
}

// auditMember audits the membership events the audit log keeps: join, leave, dead.
func (n *Node) auditMember(id string, e swim.Event) {
	var kind string
	switch e.Kind {
	case swim.EventJoin:
		kind = "join"
	case swim.EventLeft:
		kind = "leave"
	case swim.EventDead:
		kind = "dead"
	default:
		return
	}
	inc := e.Member.Incarnation
	n.audit(auditRecord{Time: e.At, Event: kind, ID: id, Member: e.Member.Name, Addr: e.Member.Addr, Incarnation: &inc})
}

// ---- metrics ----

// leaderCollector exports the lease machine's state at scrape time; registered only
// when leadership is on, so a cluster without it exports no leadership series (and
// the no-leader alert stays silent).
type leaderCollector struct{ n *Node }

var (
	descLeaseJumps    = prometheus.NewDesc("omnirelay_implausible_total", implausibleHelp, nil, prometheus.Labels{"layer": "lease"})
	descIsLeader      = prometheus.NewDesc("omnirelay_is_leader", "1 while this node holds a valid leader lease, else 0.", nil, nil)
	descLeaseEpoch    = prometheus.NewDesc("omnirelay_lease_epoch", "Highest lease epoch (fencing token) this node has seen.", nil, nil)
	descRenewFailures = prometheus.NewDesc("omnirelay_lease_renew_failures_total", "Lease renewal rounds this node, as leader, did not get a quorum for before the next round (lease.Stats.RoundsLost).", nil, nil)
	descCampaigns     = prometheus.NewDesc("omnirelay_lease_campaigns_total", "Elections this node started.", nil, nil)
	descStaleRounds   = prometheus.NewDesc("omnirelay_lease_stale_rounds_total", "Proposes and Renews this voter dropped as no newer than the last round it accepted of their lease: duplicates or replays (lease.Stats.Stale).", nil, nil)
)

func (c *leaderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeaseJumps
	ch <- descIsLeader
	ch <- descLeaseEpoch
	ch <- descRenewFailures
	ch <- descCampaigns
	ch <- descStaleRounds
}

func (c *leaderCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	var st lease.Stats
	var holder string
	var epoch uint64
	var ok bool
	if !n.do(func() {
		st = n.stack.LeaseStats()
		holder, epoch, _, ok = n.stack.Leader(n.clock.Now())
	}) {
		return
	}
	isLeader := 0.0
	if ok && holder == n.cfg.Name {
		isLeader = 1
	}
	n.lead.mu.Lock()
	highest := max(n.lead.highest, epoch)
	n.lead.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descLeaseJumps, prometheus.CounterValue, float64(st.Implausible))
	ch <- prometheus.MustNewConstMetric(descIsLeader, prometheus.GaugeValue, isLeader)
	ch <- prometheus.MustNewConstMetric(descLeaseEpoch, prometheus.GaugeValue, float64(highest))
	ch <- prometheus.MustNewConstMetric(descRenewFailures, prometheus.CounterValue, float64(st.RoundsLost))
	ch <- prometheus.MustNewConstMetric(descCampaigns, prometheus.CounterValue, float64(st.Campaigns))
	ch <- prometheus.MustNewConstMetric(descStaleRounds, prometheus.CounterValue, float64(st.Stale))
}

// leaderMetrics registers the leadership metrics when leadership is on.
func (m *metrics) leaderMetrics(n *Node) {
	m.auditErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_audit_write_errors_total",
		Help: "Audit log records that could not be written."})
	m.controlRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_control_refused_total",
		Help: "Control API callers refused: unauthenticated (401), forbidden (403), certificate (TLS handshake)."}, []string{"reason"})
	for _, r := range []string{"unauthenticated", "forbidden", "certificate"} {
		m.controlRefused.WithLabelValues(r)
	}
	m.enrollments = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "omnirelay_enrollments_total",
		Help: "Enrollment streams answered: keys (to a node certificate), certificate (a join token redeemed), forwarded (a join token relayed to a signer), refused."}, []string{"result"})
	for _, r := range []string{"keys", "certificate", "forwarded", "refused"} {
		m.enrollments.WithLabelValues(r)
	}
	m.reg.MustRegister(m.auditErrors, m.controlRefused, m.enrollments)
	if n.lead == nil {
		return
	}
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_leader_changes_total",
		Help: "New leaders this node learned of: a lease at an epoch above every one seen before (a lapse is not counted)."})
	m.staleEpochs = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_stale_epoch_rejections_total",
		Help: "Requests CheckFence rejected because their epoch was below the highest seen (a deposed leader's)."})
	m.leaseSaveFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_lease_state_save_failures_total",
		Help: "Lease state saves that failed; the packets of that batch were dropped."})
	m.reg.MustRegister(m.leaderChanges, m.staleEpochs, m.leaseSaveFailures, &leaderCollector{n: n})
}

// auditControl audits a control API decision or a refused certificate, and counts
// the refusals. It runs on connection goroutines, never the loop.
func (n *Node) auditControl(e control.AuditEvent) {
	switch e.Event {
	case "control_unauthenticated":
		n.metrics.controlRefused.WithLabelValues("unauthenticated").Inc()
	case "control_forbidden":
		n.metrics.controlRefused.WithLabelValues("forbidden").Inc()
	case "tls_refused":
		n.metrics.controlRefused.WithLabelValues("certificate").Inc()
	}
	if e.ID == "" {
		e.ID = control.NewEventID()
	}
	if e.Event != "control_request" {
		n.log.Warn("control API refused a caller", "event", e.Event, "event_id", e.ID, "identity", e.Identity,
			"remote", e.Remote, "route", e.Route, "reason", e.Reason)
	}
	n.audit(auditRecord{Time: time.Now(), Event: e.Event, ID: e.ID, Identity: e.Identity, Role: string(e.Role),
		Remote: e.Remote, Route: e.Route, Reason: e.Reason})
}
