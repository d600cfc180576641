package sim

import (
	"fmt"
	"time"

	"github.com/omnirelay/mesh/lease"
)

// regionWarmup is how long the federation runs before the fault: leases are won
// in well under a second and the views meet over the WAN in one gossip round.
const regionWarmup = 10 * time.Second

// runRegionFailover is the region-failover scenario: Options.Clusters clusters
// (default 2) of three voters, the active cluster "a" loses every node at once,
// and the model runs for Options.Duration. failover_ms is the crash until a node
// of another cluster answers as active; client_switch_ms until the client has an
// answer from it.
func runRegionFailover(o Options, sc Scenario) (*Result, error) { return runRegion(o, sc, false) }

// runRegionHandoff is region-handoff: the same federation, but a's lease holder
// drains a to b (`mesh clusters promote b`); failover_ms is the gap from the
// drain until b answers as active.
func runRegionHandoff(o Options, sc Scenario) (*Result, error) { return runRegion(o, sc, true) }

func runRegion(o Options, sc Scenario, planned bool) (*Result, error) {
	wall := time.Now()
	if o.Clusters == 0 {
		o.Clusters = 2
	}
	lc := o.Lease
	if lc.LeaseDuration == 0 {
		lc = lease.DefaultConfig("", nil)
	}
	m, err := newRegionModel(o.Clusters, o.Seed, lc, 0, o.Loss)
	if err != nil {
		return nil, err
	}
	res := &Result{Scenario: sc.Name, Nodes: len(m.nodes), Seed: o.Seed, Profile: "region", Loss: o.Loss,
		Clusters: o.Clusters, Voters: regionVoters,
		Absent: []string{"replication_lag_p99_ms"}} // replication is not built
	m.net.Run(regionWarmup)
	res.FormationSeconds = regionWarmup.Seconds()
	res.FormationConverged = m.converged() == nil && m.client.follows == m.ids[0]

	t0, sent0 := m.net.Now(), m.sent
	var failover, switched *float64
	m.served = func(at time.Duration, ci int) {
		if ci != 0 && failover == nil {
			failover = ms(at - t0)
		}
	}
	m.switched = func(at time.Duration, cl string) {
		if cl != m.ids[0] && switched == nil {
			switched = ms(at - t0)
		}
	}
	if planned {
		h := m.holder(0)
		if h < 0 {
			return nil, fmt.Errorf("region-handoff: cluster a has no lease holder after the warm-up")
		}
		if err := m.operate(h, func(nd *regionNode) error { return nd.cm.Drain(m.now(), m.ids[1]) }); err != nil {
			return nil, fmt.Errorf("region-handoff: drain: %w", err)
		}
	} else {
		for _, i := range m.clusterNodes(0) {
			m.crash(i)
		}
	}
	m.net.Run(t0 + o.Duration)

	res.Failover, res.ClientSwitch = failover, switched
	dual := m.dual
	res.DualActive, res.FirstViolation = &dual, m.firstDual
	res.OverlapActive = ms(m.overlap)
	res.MeasuredSeconds = (m.net.Now() - t0).Seconds()
	res.VirtualSeconds = m.net.Now().Seconds()
	res.Events, res.MessagesSent = m.events, m.sent-sent0
	res.Converged = m.converged() == nil
	res.ViewsAgree = res.Converged
	res.TraceHash = fmt.Sprintf("%016x", m.hash.Sum64())
	res.WallSeconds = time.Since(wall).Seconds()
	return res, nil
}
