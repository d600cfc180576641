// Package compare runs the same loopback scenarios on OmniRelay Mesh's node and on
// hashicorp/memberlist v0.7.0: N nodes in one process on 127.0.0.1 form a cluster,
// idle for a steady window, lose one node to a crash and gain one by a join. Run
// measures one (implementation, N) pair; cmd/compare runs each pair in its own
// process and prints the table.
package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
)

// Implementation names accepted by Run.
const (
	Memberlist     = "memberlist"      // hashicorp/memberlist v0.7.0, DefaultLANConfig
	NodeMemberlist = "node/memberlist" // our node, memberlist profile (the same timers)
	NodeLAN        = "node/lan"        // our node, lan profile (its default)
	// What mutual TLS costs on a running cluster: the lan profile with a packet
	// key, then the same with node certificates of one CA on every stream.
	NodeLANKeys = "node/lan+keys"
	NodeLANMTLS = "node/lan+keys+mtls"
)

// Impls lists the implementations of the comparison with memberlist, in table
// order.
var Impls = []string{Memberlist, NodeMemberlist, NodeLAN}

// TLSImpls are the two runs that measure mutual TLS, without and with it.
var TLSImpls = []string{NodeLANKeys, NodeLANMTLS}

// ErrUnknownImpl means Run was given a name not in Impls.
var ErrUnknownImpl = errors.New("compare: unknown implementation")

// Options shape one run. Zero fields take the defaults below.
type Options struct {
	// Settle is the quiet time after the cluster formed, before the steady window,
	// so formation gossip has drained in every implementation: at N=128 each of
	// the 128 join facts is retransmitted 12 times per node at 200 ms gossip
	// ticks, which still ran 2 s after formation. Default 10 s; shorter windows
	// count formation traffic as steady state, differently per implementation
	// because they form at different speeds.
	Settle time.Duration
	// Steady is the window over which UDP bytes, packets and CPU are measured.
	// Default 8 s; longer averages more probe rounds and gossip ticks.
	Steady time.Duration
	// Crashes is how many nodes are crashed, one after another, to measure crash
	// detection. Default 1; each costs a detection time (seconds with memberlist's
	// timers). Must leave at least 2 live nodes.
	Crashes int
	// Timeout bounds each phase (formation, crash detection, join propagation); a
	// phase that times out reports how far it got. Default 90 s.
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Settle == 0 {
		o.Settle = 10 * time.Second
	}
	if o.Steady == 0 {
		o.Steady = 8 * time.Second
	}
	if o.Crashes == 0 {
		o.Crashes = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Second
	}
	return o
}

// Result is what one run measured. Delays are seconds; -1 means the fraction of
// nodes was not reached within Options.Timeout.
type Result struct {
	Impl string `json:"impl"`
	N    int    `json:"n"`
	// Formation: from the first node's start (all others start at once and join it)
	// until every node lists the N-1 others alive.
	Formation float64 `json:"formation_s"`
	// Crash: one node's sockets close without a leave; delay until 50/95/100% of
	// the survivors declare it dead. The median, per fraction, over CrashTrials:
	// Options.Crashes nodes crashed one after another, each once the previous one
	// was declared dead everywhere.
	Crash       [3]float64   `json:"crash_s"`
	CrashTrials [][3]float64 `json:"crash_trials_s"`
	// Join: after the crashes, a new node joins the first one; delay from its Join
	// call until 50/95/100% of the N-Crashes live others list it alive.
	Join [3]float64 `json:"join_s"`
	// Steady-state traffic and CPU over the window, per node per second: UDP
	// payload bytes and datagrams sent, and getrusage user+system CPU seconds.
	UDPBytesPerNodeSec float64 `json:"udp_bytes_per_node_s"`
	PacketsPerNodeSec  float64 `json:"packets_per_node_s"`
	CPUPerNodeSec      float64 `json:"cpu_s_per_node_s"`
	// Push-pull anti-entropy runs on TCP every PushPullScale(interval, N) per node
	// (30 s in memberlist and our memberlist profile, 15 s in lan, both scaled the
	// same way above 32 nodes), too rarely for a short window to sample fairly: the
	// implementations schedule the first one differently (memberlist within the
	// first interval, ours after it). So it is amortised instead: the bytes of one
	// full push-pull (a second Join by a member, which exchanges both full states;
	// the median of pushPullSamples such joins) divided by the interval.
	PushPullBytes           float64   `json:"push_pull_bytes"`         // median of PushPullSamples
	PushPullSamples         []float64 `json:"push_pull_samples_bytes"` // bytes per stream of each re-join
	PushPullInterval        float64   `json:"push_pull_interval_s"`
	PushPullBytesPerNodeSec float64   `json:"push_pull_bytes_per_node_s"`
	// BytesPerNodeSec is the steady total: UDP plus amortised push-pull.
	BytesPerNodeSec float64 `json:"bytes_per_node_s"`
	// WindowStreamBytes is the TCP payload actually sent during the window (push-pulls
	// that happened to fall in it, fallback probes, digest-triggered syncs), for
	// reference; it is not in BytesPerNodeSec.
	WindowStreamBytes int64 `json:"window_stream_bytes"`
	WindowStreams     int64 `json:"window_streams"`
	// The same per node per second: with a window of several push-pull
	// intervals (-steady 60s), the steady TCP cost as measured, not amortised.
	TCPBytesPerNodeSec float64 `json:"tcp_bytes_per_node_s"`
	StreamsPerNodeSec  float64 `json:"streams_per_node_s"`
	Window             float64 `json:"window_s"`
	// GossipQueued is the broadcasts still queued, summed over the nodes, when the
	// steady window began: 0 means formation gossip had drained. -1 where the
	// implementation does not expose its queue (memberlist).
	GossipQueued int     `json:"gossip_queued_at_steady"`
	Wall         float64 `json:"wall_s"` // the whole run
}

// pushPullSamples is how many re-joins measure the push-pull exchange.
const pushPullSamples = 5

type member interface {
	addr() string
	join(ctx context.Context, seed string) error
	crash()
	stop()
	check() error // reports lost events, which would make the figures wrong
	queued() int  // broadcasts waiting to be gossiped; -1 if not exposed
}

type impl interface {
	start(name string, c *counters, tr *tracker) (member, error)
	pushPullInterval() time.Duration // before scaling by cluster size
}

func lookup(name string) (impl, error) {
	switch name {
	case Memberlist:
		return mlImpl{}, nil
	case NodeMemberlist:
		return ourImpl{profile: node.ProfileMemberlist}, nil
	case NodeLAN:
		return ourImpl{profile: node.ProfileLAN}, nil
	case NodeLANKeys:
		return ourImpl{profile: node.ProfileLAN, keys: packetKey()}, nil
	case NodeLANMTLS:
		pki, err := newBenchPKI()
		if err != nil {
			return nil, err
		}
		return ourImpl{profile: node.ProfileLAN, keys: packetKey(), pki: pki}, nil
	}
	return nil, fmt.Errorf("%w: %q (want one of %v or %v)", ErrUnknownImpl, name, Impls, TLSImpls)
}

func nodeName(i int) string { return fmt.Sprintf("n%03d", i) }

// Run measures implementation name with n nodes (n >= 3). It runs the phases in
// order: formation, settle, steady window, crash detection, join propagation. Run it
// in a process of its own for clean CPU figures.
func Run(name string, n int, opt Options) (res Result, err error) {
	opt = opt.withDefaults()
	if n < 3 || n-opt.Crashes < 2 {
		return Result{}, fmt.Errorf("compare: n = %d with %d crashes: need at least 3 nodes and 2 left alive",
			n, opt.Crashes)
	}
	im, err := lookup(name)
	if err != nil {
		return Result{}, err
	}
	if o, ok := im.(ourImpl); ok && o.pki != nil {
		defer o.pki.close()
	}
	res = Result{Impl: name, N: n}
	begin := time.Now()
	c, tr := &counters{}, newTracker()
	names := make([]string, n)
	for i := range names {
		names[i] = nodeName(i)
	}
	members := make([]member, n+1)
	defer func() {
		var wg sync.WaitGroup
		for _, m := range members {
			if m != nil {
				wg.Go(m.stop)
			}
		}
		wg.Wait()
		for _, m := range members {
			if m != nil {
				if cerr := m.check(); cerr != nil && err == nil {
					err = cerr
				}
			}
		}
		res.Wall = time.Since(begin).Seconds()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), opt.Timeout)
	defer cancel()

	// Formation: the seed, then everyone else at once.
	tr.expect(n - 1)
	t0 := time.Now()
	if members[0], err = im.start(names[0], c, tr); err != nil {
		return res, err
	}
	seed := members[0].addr()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() {
			m, err := im.start(names[i], c, tr)
			if err != nil {
				errs[i] = err
				return
			}
			members[i] = m
			errs[i] = m.join(ctx, seed)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	seen := waitFor(func() []time.Time { return tr.converged(names) }, n, opt.Timeout)
	if len(seen) < n {
		return res, fmt.Errorf("compare: %s n=%d: only %d of %d nodes listed every peer after %v",
			name, n, len(seen), n, opt.Timeout)
	}
	res.Formation = seen[n-1].Sub(t0).Seconds()

	// Steady state.
	time.Sleep(opt.Settle)
	tr0, cpu0, w0 := c.snapshot(), cpuTime(), time.Now()
	for _, m := range members[:n] { // the last slot is the later joiner
		q := m.queued()
		if q < 0 {
			res.GossipQueued = -1
			break
		}
		res.GossipQueued += q
	}
	time.Sleep(opt.Steady)
	tr1, cpu1, w1 := c.snapshot(), cpuTime(), time.Now()
	win := w1.Sub(w0).Seconds()
	per := float64(n) * win
	res.Window = win
	res.UDPBytesPerNodeSec = float64(tr1.packetBytes-tr0.packetBytes) / per
	res.WindowStreamBytes, res.WindowStreams = tr1.streamBytes-tr0.streamBytes, tr1.streams-tr0.streams
	res.TCPBytesPerNodeSec = float64(res.WindowStreamBytes) / per
	res.StreamsPerNodeSec = float64(res.WindowStreams) / per
	res.PacketsPerNodeSec = float64(tr1.packets-tr0.packets) / per
	res.CPUPerNodeSec = (cpu1 - cpu0).Seconds() / per

	// Crash detection: the last nodes die one at a time; the others must declare
	// each dead.
	survivors := names
	for range opt.Crashes {
		victim := len(survivors) - 1
		survivors = survivors[:victim]
		t0 = time.Now()
		members[victim].crash()
		seen = waitFor(func() []time.Time { return tr.died(names[victim], survivors) }, len(survivors), opt.Timeout)
		var q [3]float64
		copy(q[:], quantiles(t0, seen, len(survivors), 0.5, 0.95, 1))
		res.CrashTrials = append(res.CrashTrials, q)
		time.Sleep(time.Second) // let the death's gossip drain
	}
	res.Crash = medians(res.CrashTrials)

	// Join propagation: a new node joins the seed; the survivors must list it.
	newName := nodeName(n)
	if members[n], err = im.start(newName, c, tr); err != nil {
		return res, err
	}
	t0 = time.Now()
	if err := members[n].join(ctx, seed); err != nil {
		return res, err
	}
	seen = waitFor(func() []time.Time { return tr.joined(newName, survivors) }, len(survivors), opt.Timeout)
	copy(res.Join[:], quantiles(t0, seen, len(survivors), 0.5, 0.95, 1))

	// One full push-pull: a member that already knows everyone joins the seed
	// again, pushPullSamples times; the median exchange counts. One sample is not
	// enough: another stream opened in the same instant (a periodic push-pull
	// elsewhere in the cluster, whose bytes fall partly outside the window) halved
	// memberlist's figure in about one run in three.
	for range pushPullSamples {
		time.Sleep(time.Second)
		s0 := c.snapshot()
		if err := members[1].join(ctx, seed); err != nil {
			return res, err
		}
		if s1 := c.snapshot(); s1.streams > s0.streams {
			res.PushPullSamples = append(res.PushPullSamples, float64(s1.streamBytes-s0.streamBytes)/float64(s1.streams-s0.streams))
		}
	}
	if k := len(res.PushPullSamples); k > 0 {
		s := slices.Sorted(slices.Values(res.PushPullSamples))
		res.PushPullBytes = s[k/2]
	}
	interval := swim.PushPullScale(im.pushPullInterval(), n)
	res.PushPullInterval = interval.Seconds()
	res.PushPullBytesPerNodeSec = res.PushPullBytes / interval.Seconds()
	res.BytesPerNodeSec = res.UDPBytesPerNodeSec + res.PushPullBytesPerNodeSec
	return res, nil
}

// medians returns, per fraction, the median over trials; a fraction a trial never
// reached (-1) counts as slower than any other.
func medians(trials [][3]float64) [3]float64 {
	var out [3]float64
	for i := range out {
		var vs []float64
		for _, t := range trials {
			v := t[i]
			if v < 0 {
				v = math.Inf(1)
			}
			vs = append(vs, v)
		}
		slices.Sort(vs)
		m := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			m = (vs[len(vs)/2-1] + m) / 2
		}
		if math.IsInf(m, 1) {
			m = -1
		}
		out[i] = m
	}
	return out
}

// cpuTime is this process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
