package node

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/omnirelay/mesh/stack"
	"github.com/prometheus/client_golang/prometheus"
)

// Metadata keys through which nodes compare the settings that must be identical
// cluster-wide. A node publishes its own (unless Config.Meta sets the key) and
// names every peer whose value differs.
const (
	ShardCountMetaKey = "shard_count" // Config.Shards, when shard routing is on
	VoterSetMetaKey   = "voter_set"   // Config.Voters, sorted, comma-separated
)

// clusterSettings is what this node publishes under the keys above.
func (c Config) clusterSettings() map[string]string {
	out := map[string]string{}
	if c.Shards > 0 {
		out[ShardCountMetaKey] = strconv.Itoa(c.Shards)
	}
	if len(c.Voters) > 0 {
		out[VoterSetMetaKey] = strings.Join(slices.Sorted(slices.Values(c.Voters)), ",")
	}
	return out
}

// withClusterSettings adds the cluster settings to meta (a copy), keeping any key
// meta sets itself.
func withClusterSettings(meta map[string]string, c Config) map[string]string {
	out := maps.Clone(meta)
	for k, v := range c.clusterSettings() {
		if _, own := out[k]; !own {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

var mismatchSettings = map[string]string{ShardCountMetaKey: "shards", VoterSetMetaKey: "voters"}

// checkSettings compares the cluster settings peers publish with ours and records
// each disagreement (warn) or its end. Loop only (the mutex of warn is its own).
func (n *Node) checkSettings(evs []stack.MetaEvent) {
	ours := n.cfg.clusterSettings()
	for _, e := range evs {
		setting, ok := mismatchSettings[e.Key]
		if !ok || e.Node == n.cfg.Name {
			continue
		}
		kind := setting + "/" + e.Node
		theirs := string(e.Value)
		if e.Deleted || theirs == ours[e.Key] {
			n.clearWarning(kind)
			continue
		}
		mine := ours[e.Key]
		if mine == "" {
			mine = "none"
		}
		n.warn(kind, setting, "peer "+e.Node+" runs with "+setting+" "+theirs+", this node with "+mine+
			": every node of a cluster needs the same --"+setting+" (restart the odd one with the cluster's value)")
	}
}

// warn records a detected misconfiguration under kind, logging it at ERROR and
// counting it the first time; `mesh status` lists the standing ones.
func (n *Node) warn(kind, setting, msg string) {
	n.warnMu.Lock()
	defer n.warnMu.Unlock()
	if n.warned[kind] == msg {
		return
	}
	if n.warned == nil {
		n.warned = map[string]string{}
	}
	if _, had := n.warned[kind]; !had {
		n.metrics.mismatches.WithLabelValues(setting).Inc()
	}
	n.warned[kind] = msg
	n.log.Error("misconfiguration: " + msg)
}

func (n *Node) clearWarning(kind string) {
	n.warnMu.Lock()
	defer n.warnMu.Unlock()
	if _, had := n.warned[kind]; had {
		setting, _, _ := strings.Cut(kind, "/")
		n.metrics.mismatches.WithLabelValues(setting).Dec()
		delete(n.warned, kind)
		n.log.Info("misconfiguration resolved", "what", kind)
	}
}

// warnings lists the standing misconfigurations, sorted.
func (n *Node) warnings() []string {
	n.warnMu.Lock()
	defer n.warnMu.Unlock()
	return slices.Sorted(maps.Values(n.warned))
}

func newMismatchGauge() *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "omnirelay_config_mismatches",
		Help: "Peers whose published cluster-wide setting (shards, voters) differs from this node's, and other standing misconfigurations (name), by setting."},
		[]string{"setting"})
	for _, s := range []string{"shards", "voters", "name"} {
		g.WithLabelValues(s)
	}
	return g
}
