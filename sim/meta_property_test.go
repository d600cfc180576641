package sim

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/omnirelay/mesh/crdt"
	"pgregory.net/rapid"
)

func newMetaSim(t interface{ Fatal(...any) }, seed uint64, n int) *Sim {
	s, err := New(Config{Seed: seed, NewStack: hostFactory("lan", true, false, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.Form(n, 60*time.Second); err != nil || !ok {
		t.Fatal("formation did not converge: ", err)
	}
	return s
}

// checkMetaAgrees checks that every live node holds exactly what each live writer
// holds for itself, and that all digests are equal.
func checkMetaAgrees(t interface{ Fatalf(string, ...any) }, s *Sim) {
	live := s.LiveNodes()
	for _, w := range live {
		want := s.MetaStore(w).NodeMap(s.Name(w))
		for _, i := range live {
			if got := s.MetaStore(i).NodeMap(s.Name(w)); !maps.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("%s holds %q for %s, which holds %q", s.Name(i), got, s.Name(w), want)
			}
		}
	}
	if !s.MetaConverged() {
		t.Fatalf("metadata digests differ")
	}
}

// Random writes and deletes on random nodes, under loss, partitions, heals and
// restarts (a restarted node starts with no metadata), then a quiet period: every live node ends with the same metadata as its writers
// hold (equal digests), whatever was lost on the way.
func TestPropertyMetaConvergesAfterFaults(t *testing.T) {
	keys := []string{"zone", "role", "load", "version"}
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(3, 10).Draw(rt, "nodes")
		s := newMetaSim(rt, rapid.Uint64().Draw(rt, "seed"), n)
		link := s.DefaultLink()
		for range rapid.IntRange(1, 30).Draw(rt, "steps") {
			i := rapid.IntRange(0, n-1).Draw(rt, "node")
			switch rapid.IntRange(0, 6).Draw(rt, "op") {
			case 0, 1:
				v := fmt.Sprint(rapid.IntRange(0, 9).Draw(rt, "value"))
				if err := s.SetMeta(i, rapid.SampledFrom(keys).Draw(rt, "key"), []byte(v)); err != nil {
					rt.Fatal(err)
				}
			case 2:
				err := s.DeleteMeta(i, rapid.SampledFrom(keys).Draw(rt, "key"))
				if err != nil && !errors.Is(err, crdt.ErrNotFound) {
					rt.Fatal(err)
				}
			case 3:
				l := link
				l.Loss = rapid.Float64Range(0, 0.3).Draw(rt, "loss")
				if err := s.SetDefaultLink(l); err != nil {
					rt.Fatal(err)
				}
			case 4:
				cut := rapid.IntRange(1, n-1).Draw(rt, "cut")
				var a, b []int
				for j := range n {
					if j < cut {
						a = append(a, j)
					} else {
						b = append(b, j)
					}
				}
				s.Partition(a, b)
			case 5:
				s.Heal()
			case 6: // crash and restart with an empty store: its previous life must be superseded
				seed := s.Addr((i + 1) % n)
				if err := s.Restart(i, false, []string{seed}); err != nil {
					rt.Fatal(err)
				}
			}
			s.RunFor(time.Duration(rapid.IntRange(0, 3000).Draw(rt, "ms")) * time.Millisecond)
		}
		s.Heal()
		if err := s.SetDefaultLink(link); err != nil {
			rt.Fatal(err)
		}
		// Quiet: push-pulls (every 30 s in the lan profile at this size) repair
		// whatever gossip lost.
		if ok, _ := s.RunUntilTrue(5*time.Minute, time.Second, s.MetaConverged); !ok {
			rt.Fatalf("metadata did not converge within 5 min of quiet")
		}
		checkMetaAgrees(rt, s)
	})
}

func TestMetaScenarioFigures(t *testing.T) {
	n := 30
	if os.Getenv("OMNIRELAY_HEAVY") == "1" {
		n = 1000
	}
	res, err := Run(Options{Scenario: "meta", Nodes: n, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.MetaP99 == nil || res.Missing == nil || *res.Missing != 0 || !res.Converged || res.MetaConverged == nil || !*res.MetaConverged {
		t.Fatalf("result %+v", res)
	}
	if *res.MetaP99 >= 500 {
		t.Fatalf("meta p99 %.0f ms, target < 500 ms", *res.MetaP99)
	}
	if *res.MetaBytesPerNode <= 0 {
		t.Fatalf("update cost %.0f bytes per node", *res.MetaBytesPerNode)
	}
	t.Logf("%d nodes: meta p50 %.0f p99 %.0f max %.0f ms; %.0f bytes per node; delta %d bytes",
		n, *res.MetaP50, *res.MetaP99, *res.MetaMax, *res.MetaBytesPerNode, *res.MetaDeltaBytes)
}
