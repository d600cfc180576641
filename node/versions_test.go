package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// previewTune makes a loopback node a test build of the next protocol version
// (1..wire.PreviewVersion, advertising FeatureAckHealth).
func previewTune(c *swim.Config) {
	lenient(c)
	c.Versions = wire.Versions{Min: 1, Max: wire.PreviewVersion}
	c.Features = wire.FeatureAckHealth
}

func sendVersion(n *Node) uint8 {
	var v uint8
	n.do(func() { v = n.stack.Swim().SendVersion() })
	return v
}

// TestLoopbackMixedVersions: two nodes of the next version and one of today's
// share a cluster on real sockets. The new ones talk version 1 and keep their
// feature off while the old one is alive; nobody is suspected and no packet of
// a version a receiver does not speak is sent. When the old node leaves, the new
// ones switch to version 2 and turn the feature on (acks carry their health).
func TestLoopbackMixedVersions(t *testing.T) {
	nodes := startCluster(t, 3, nil, previewTune, lenient, previewTune)
	old, news := nodes[1], []*Node{nodes[0], nodes[2]}
	time.Sleep(time.Second) // a few probe rounds at version 1
	for _, n := range news {
		if v, on := sendVersion(n), n.HasFeature(wire.FeatureAckHealth); v != 1 || on {
			t.Fatalf("%s with an old member: sends at %d, feature on %v; want 1, off", n.Name(), v, on)
		}
		if st, err := (controlSource{n}).Status(); err != nil || st.Sending != 1 || st.Features != "none" || st.Protocol != "1-2" {
			t.Fatalf("%s status: sending %d, features %q, protocol %q (%v); want 1, none, 1-2", n.Name(), st.Sending, st.Features, st.Protocol, err)
		}
	}
	for _, n := range nodes {
		if got := counter(t, n, "omnirelay_version_mismatches_total"); got != "0" {
			t.Errorf("%s dropped %s packets of a version it does not speak", n.Name(), got)
		}
		if got := n.Stats().Suspicions; got != 0 {
			t.Errorf("%s suspected %d times in a mixed cluster", n.Name(), got)
		}
	}
	if err := old.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	old.Close()
	eventually(t, 10*time.Second, "the old node left", allSee(news, old.Name(), swim.StatusLeft))
	for _, n := range news {
		eventually(t, 5*time.Second, n.Name()+" on version 2 with the feature", func() bool {
			return sendVersion(n) == 2 && n.HasFeature(wire.FeatureAckHealth)
		})
	}
	if st, err := (controlSource{news[0]}).Status(); err != nil || st.Sending != 2 || st.Features != "ack-health" {
		t.Fatalf("status after the upgrade: sending %d, features %q (%v); want 2, ack-health", st.Sending, st.Features, err)
	}
	eventually(t, 5*time.Second, "health reported in acks", func() bool {
		var reports uint64
		news[0].do(func() { reports = news[0].stack.Swim().Stats().HealthReports })
		return reports > 0
	})
}

// TestLoopbackDisjointVersionsRefusedOnBothSides: a node speaking only version 2
// and one speaking only 1 cannot form a cluster, whichever joins whom. Each
// drops the other's frames and logs both versions, so an operator reading either
// log knows which to upgrade; neither adds the other, and each join fails.
func TestLoopbackDisjointVersionsRefusedOnBothSides(t *testing.T) {
	start := func(name string, log *syncBuffer, tune func(*swim.Config)) *Node {
		cfg := loopbackConfig(name, nil)
		cfg.Tune = tune
		cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
		n, err := Start(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	var oldLog, newLog syncBuffer
	old := start("old", &oldLog, lenient)
	nw := start("new", &newLog, func(c *swim.Config) { lenient(c); c.Versions = wire.Versions{Min: 2, Max: 2} })
	for _, j := range [][2]*Node{{nw, old}, {old, nw}} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := j[0].Join(ctx, j[1].AdvertiseAddr())
		cancel()
		if err == nil {
			t.Fatalf("%s joined %s", j[0].Name(), j[1].Name())
		}
	}
	if !strings.Contains(oldLog.String(), "peer_version=2 min_version=1 max_version=1") ||
		!strings.Contains(newLog.String(), "peer_version=1 min_version=2 max_version=2") {
		t.Fatalf("a side did not log both versions:\nold: %s\nnew: %s", oldLog.String(), newLog.String())
	}
	if len(old.Members()) != 1 || len(nw.Members()) != 1 {
		t.Fatalf("old holds %d members, new %d: want each only itself", len(old.Members()), len(nw.Members()))
	}
	for _, n := range []*Node{old, nw} {
		if counter(t, n, "omnirelay_version_mismatches_total") == "0" {
			t.Fatalf("%s logged a mismatch but did not count it", n.Name())
		}
	}
}
