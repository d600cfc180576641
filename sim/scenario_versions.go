package sim

import (
	"math"
	"time"

	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Mixed protocol versions (PROTOCOL.md section 7, docs/upgrading.md). A node runs
// either today's build (versions 1..1, no features) or the preview build (1..2,
// ack-health), chosen by name each time an instance starts: restarting a node
// after changing its entry in builds is an upgrade or a rollback.

var versionFigures = []string{"preview_nodes", "feature_on_nodes", "v2_nodes", "health_reports", "false_suspicions", "false_deaths"}

// builds holds the names of the nodes on the preview build.
type builds map[string]bool

// previewBuild makes c a preview build's swim configuration.
func previewBuild(c *swim.Config) {
	c.Versions = wire.Versions{Min: 1, Max: wire.PreviewVersion}
	c.Features = wire.FeatureAckHealth
}

// choosePreview puts round(frac*n) (at least one when frac > 0) of the first n
// node names, chosen by the scenario stream, on the preview build before they
// start.
func (r *runner) choosePreview(n int, frac float64) {
	if frac <= 0 {
		return
	}
	k := max(1, int(math.Round(frac*float64(n))))
	for _, i := range r.rng.Perm(n)[:k] {
		r.builds[nodeName(i)] = true
	}
}

// versionView is what a simulated node reports about versions and features.
type versionView interface {
	HasFeature(wire.Features) bool
	SendVersion() uint8
	HealthReports() uint64
}

func (h hostStack) SendVersion() uint8    { return h.Swim().SendVersion() }
func (h hostStack) HealthReports() uint64 { return h.Swim().Stats().HealthReports }

// oldRunning reports whether a node of today's build is running.
func (r *runner) oldRunning() bool {
	for _, i := range r.s.LiveNodes() {
		if !r.builds[r.s.Name(i)] {
			return true
		}
	}
	return false
}

// featureOnAll reports whether every live node has ack-health on.
func (r *runner) featureOnAll() bool {
	for _, i := range r.s.LiveNodes() {
		if v, ok := r.s.Stack(i).(versionView); !ok || !v.HasFeature(wire.FeatureAckHealth) {
			return false
		}
	}
	return true
}

// fillVersionFigures fills the figures every mixed-version scenario reports.
func (r *runner) fillVersionFigures() {
	preview, on, v2 := 0, 0, 0
	var reports uint64
	for _, i := range r.s.LiveNodes() {
		if r.builds[r.s.Name(i)] {
			preview++
		}
		v, ok := r.s.Stack(i).(versionView)
		if !ok {
			continue
		}
		if v.HasFeature(wire.FeatureAckHealth) {
			on++
		}
		if v.SendVersion() == 2 {
			v2++
		}
		reports += v.HealthReports()
	}
	r.res.PreviewNodes, r.res.FeatureOnNodes, r.res.V2Nodes, r.res.HealthReports = &preview, &on, &v2, &reports
}

// runSteady runs the formed cluster, mixed or not, untouched for the duration.
func runSteady(r *runner) error {
	r.s.RunFor(r.o.Duration)
	r.fillVersionFigures()
	return nil
}

// runRollingUpgrade restarts every node, one every 2 s in a random order, onto
// the preview build (same address, so the others see a restart, not a new node),
// sampling every 10 ms whether any node has the feature on while an old node
// still runs. Then it waits up to Duration for every node to have it on.
func runRollingUpgrade(r *runner) error {
	s := r.s
	order := r.rng.Perm(len(s.LiveNodes()))
	live := s.LiveNodes()
	early := 0
	sample := func() {
		if !r.oldRunning() {
			return
		}
		for _, i := range s.LiveNodes() {
			if v, ok := s.Stack(i).(versionView); ok && v.HasFeature(wire.FeatureAckHealth) {
				early++
			}
		}
	}
	for k, j := range order {
		i := live[j]
		r.builds[s.Name(i)] = true
		seed := s.Addr(live[order[(k+1)%len(order)]])
		if err := s.Restart(i, false, []string{seed}); err != nil {
			return err
		}
		if k < len(order)-1 {
			s.RunUntilTrue(2*time.Second, 10*time.Millisecond, func() bool { sample(); return false })
		}
	}
	t0 := s.now
	ok, _ := s.RunUntilTrue(r.o.Duration, 10*time.Millisecond, r.featureOnAll)
	if ok {
		r.res.FeatureOnMs = ms(time.Duration(s.now - t0))
	}
	s.RunFor(2 * time.Second) // some probes with the feature on, for health_reports
	s.RunUntilTrue(r.o.Duration, 100*time.Millisecond, s.Converged)
	n := len(order)
	r.res.FeatureEarly, r.res.Upgrades = &early, &n
	r.fillVersionFigures()
	return nil
}
