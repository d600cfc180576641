package node

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/swim"
)

// A stranger that differs from a two-node cluster by its key, its lack of a key,
// or its cluster label cannot merge membership views over push-pull streams: its
// join fails, its view never gains a member, the cluster never learns it, and the
// seed counts what it refused. Packets alone would not stop it: a join is a stream.
func TestStrangerCannotMergeViewsOverStreams(t *testing.T) {
	k1, k2 := key(t), key(t)
	for _, tc := range []struct {
		name                 string
		clusterKeys, strKeys [][]byte
		strLabel             string
		counted              func(t *testing.T, seed *Node) bool // the seed counted the refused frames
	}{
		{"other key", [][]byte{k1}, [][]byte{k2}, "", decryptFailed},
		{"no key", [][]byte{k1}, nil, "", decryptFailed},
		{"key to a plain cluster", nil, [][]byte{k1}, "", malformedSeen},
		{"other label", [][]byte{k1}, [][]byte{k1}, "staging", foreignSeen},
		{"other label, plain", nil, nil, "staging", foreignSeen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mn := NewMemNetwork()
				mk := func(name, addr string, keys [][]byte, label string, join ...string) *Node {
					cfg := memConfig(t, mn, name, addr, join...)
					cfg.Keys, cfg.ClusterLabel = keys, label
					n := startMem(t, cfg)
					t.Cleanup(func() { n.Close() })
					return n
				}
				a := mk("a", "10.0.0.1:7946", tc.clusterKeys, "")
				b := mk("b", "10.0.0.2:7946", tc.clusterKeys, "", "10.0.0.1:7946")
				waitFor(t, 5*time.Second, "cluster formed", allSee([]*Node{a, b}, "b", swim.StatusAlive))

				s := mk("s", "10.0.0.9:7946", tc.strKeys, tc.strLabel)
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
				defer cancel()
				if err := s.Join(ctx, a.AdvertiseAddr()); !errors.Is(err, ErrNoSeedAnswered) {
					t.Fatalf("stranger's join: %v, want ErrNoSeedAnswered", err)
				}
				if !tc.counted(t, a) {
					t.Errorf("seed did not count the refused frames: stats %+v", a.Stats())
				}
				// Swim keeps trying the seed (reconnects); nothing ever merges.
				time.Sleep(30 * time.Second)
				synctest.Wait()
				if ms := s.Members(); len(ms) != 1 {
					t.Errorf("stranger's view gained members: %v", ms)
				}
				for _, n := range []*Node{a, b} {
					if st, _ := statusOf(n, "s"); st != 255 {
						t.Errorf("%s learned the stranger: %v", n.Name(), n.Members())
					}
				}
			})
		})
	}
}

func decryptFailed(t *testing.T, n *Node) bool {
	return counter(t, n, "omnirelay_decrypt_failures_total") != "0"
}

func malformedSeen(_ *testing.T, n *Node) bool { return n.Stats().Malformed > 0 }

// foreignSeen: frames of another cluster label count as foreign, as its packets do
// (PROTOCOL.md 2.4).
func foreignSeen(_ *testing.T, n *Node) bool { return n.Stats().ForeignPackets > 0 }
