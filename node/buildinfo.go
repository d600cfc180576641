package node

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/omnirelay/mesh/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Build describes the running binary, as `omnirelay version` prints it and
// omnirelay_build_info labels it.
type Build struct {
	// Version is the module version of the main package ("v1.2.0"), "(devel)" for
	// a build from a work tree, suffixed by the VCS revision when Go stamped one.
	Version string `json:"version"`
	Go      string `json:"go"` // the Go release that built it
	// ProtocolMin..ProtocolMax are the wire protocol versions this build accepts;
	// it sends ProtocolMax (PROTOCOL.md, version rules).
	ProtocolMin uint8 `json:"protocol_min"`
	ProtocolMax uint8 `json:"protocol_max"`
}

// Protocol is the protocol range as "MIN-MAX" ("1-1").
func (b Build) Protocol() string {
	return strconv.Itoa(int(b.ProtocolMin)) + "-" + strconv.Itoa(int(b.ProtocolMax))
}

// BuildInfo reports the running binary (runtime/debug.ReadBuildInfo, read once).
var BuildInfo = sync.OnceValue(func() Build {
	b := Build{Version: "(unknown)", Go: runtime.Version(), ProtocolMin: wire.MinProtocolVersion, ProtocolMax: wire.ProtocolVersion}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		b.Version += "+" + rev
		if dirty {
			b.Version += ".dirty"
		}
	}
	return b
})

// buildInfoMetric is omnirelay_build_info: always 1, labelled with the build, so
// a query joins it to any other series to see which versions a fleet runs.
func buildInfoMetric() prometheus.Collector {
	b := BuildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "omnirelay_build_info",
		Help:        "Always 1; the labels name the binary's version, Go release and accepted wire protocol range (MIN-MAX).",
		ConstLabels: prometheus.Labels{"version": b.Version, "go": b.Go, "protocol": b.Protocol()}})
	g.Set(1)
	return g
}
