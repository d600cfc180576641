package node

import (
	crand "crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/wire"
)

// rawPacket is one plain packet of cluster label carrying m.
func rawPacket(label string, m wire.Message) []byte {
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash(label))
	p.Add(m)
	return p.Bytes()
}

// TestDroppedPacketsAreCountedNotAccepted sends a voter packets it must drop, in the
// clear and sealed: pings and lease packets of another cluster label are counted as
// foreign and their messages are not counted as received; packets of protocol
// version 2 are counted as version mismatches and logged with both versions, once a
// minute per source host.
func TestDroppedPacketsAreCountedNotAccepted(t *testing.T) {
	clearAndSealed(t, func(t *testing.T, mn *MemNetwork, cfg Config, logs *syncBuffer, kr *wire.Keyring) {
		cfg.Voters, cfg.Voter, cfg.DataDir = []string{"n0", "n1", "n2"}, true, t.TempDir()
		cfg.Insecure = kr == nil
		n := startMem(t, cfg)
		defer n.Close()
		seal := func(b []byte) []byte {
			if kr == nil {
				return b
			}
			s, err := wire.Seal(kr, b, crand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		tr, err := mn.Listen("10.0.0.9:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		tr2, err := mn.Listen("10.0.0.9:7000") // the same host, another port
		if err != nil {
			t.Fatal(err)
		}
		defer tr2.Close()
		// send seals each copy afresh (a sealed copy sent twice is a replay)
		// and, for version > 0, sets it in the header, which is in the clear
		// and checked before opening.
		send := func(tr Transport, plain []byte, version byte, times int) {
			for range times {
				b := seal(plain)
				if version > 0 {
					b[2] = version
				}
				if err := tr.WriteTo(b, n.Addr()); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
		}
		ping := &wire.Ping{Seq: 1, Target: "n0", Source: "x", SourceAddr: "10.0.0.9:7946"}
		send(tr, rawPacket("other", ping), 0, 3)
		send(tr, rawPacket("other", &lease.Prepare{Epoch: 7, Candidate: "x"}), 0, 2)
		newer := rawPacket("", ping)
		send(tr, newer, 2, 4)
		send(tr2, newer, 2, 1)
		for prefix, want := range map[string]string{
			`omnirelay_messages_total{direction="in",type="ping"}`:  "0",
			`omnirelay_packets_total{direction="in",type="ping"}`:   "0",
			`omnirelay_messages_total{direction="in",type="other"}`: "0",
			"omnirelay_foreign_packets_total":                       "5",
			"omnirelay_version_mismatches_total":                    "5",
			"omnirelay_malformed_total":                             "0",
			"omnirelay_decrypt_failures_total":                      "0",
		} {
			if got := metricLine(t, n, prefix+" "); got != prefix+" "+want {
				t.Errorf("%q, want %s", got, want)
			}
		}
		lines := func() int { return strings.Count(logs.String(), "peer_version=2 min_version=1 max_version=1") }
		if got := lines(); got != 1 {
			t.Errorf("%d version mismatch log lines for 5 packets from one host, want 1:\n%s", got, logs.String())
		}
		time.Sleep(versionLogEvery)
		send(tr, newer, 2, 1)
		if got := lines(); got != 2 {
			t.Errorf("%d version mismatch log lines a minute later, want 2", got)
		}
	})
}

// clearAndSealed runs f in virtual time twice, as subtests: with node n0's config
// on a new in-memory network, logging to logs, first without keys (kr nil), then
// with a key whose keyring is kr.
func clearAndSealed(t *testing.T, f func(t *testing.T, mn *MemNetwork, cfg Config, logs *syncBuffer, kr *wire.Keyring)) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mn := NewMemNetwork()
				logs := &syncBuffer{}
				cfg := memConfig(t, mn, "n0", "10.0.0.1:7946")
				cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
				var kr *wire.Keyring
				if sealed {
					cfg.Keys = [][]byte{make([]byte, wire.KeySize)}
					kr, _ = wire.NewKeyring(cfg.Keys[0])
				}
				f(t, mn, cfg, logs, kr)
			})
		})
	}
}

// TestVersionMismatchedFramesAreCountedAndLogged sends stream frames of protocol
// version 2, in the clear and sealed: each is counted as a version mismatch (not as
// malformed or as a decrypt failure), logged with both versions, and the stream is
// closed without a reply.
func TestVersionMismatchedFramesAreCountedAndLogged(t *testing.T) {
	clearAndSealed(t, func(t *testing.T, mn *MemNetwork, cfg Config, logs *syncBuffer, kr *wire.Keyring) {
		frame, err := wire.EncodeFrame(&wire.PushPull{}, wire.ClusterHash(""))
		if err != nil {
			t.Fatal(err)
		}
		if kr != nil {
			if frame, err = wire.SealFrame(kr, frame, crand.Reader); err != nil {
				t.Fatal(err)
			}
		}
		frame[6] = 2 // protocol version 2, in the clear in both forms
		n := startMem(t, cfg)
		defer n.Close()
		tr, err := mn.Listen("10.0.0.9:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for range 2 {
			conn, err := tr.Dial(t.Context(), n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			conn.Write(frame)
			if reply, _ := io.ReadAll(conn); len(reply) != 0 {
				t.Errorf("a reply of %d bytes to a version 2 frame", len(reply))
			}
			conn.Close()
		}
		for prefix, want := range map[string]string{
			"omnirelay_version_mismatches_total": "2",
			"omnirelay_malformed_total":          "0",
			"omnirelay_decrypt_failures_total":   "0",
		} {
			if got := metricLine(t, n, prefix+" "); got != prefix+" "+want {
				t.Errorf("%q, want %s", got, want)
			}
		}
		if got := strings.Count(logs.String(), "peer_version=2 min_version=1 max_version=1"); got != 1 {
			t.Errorf("%d version mismatch log lines for 2 frames from one host, want 1:\n%s", got, logs.String())
		}
	})
}

// TestMemberOfNoCommonVersionIsRefusedCountedAndLogged announces members whose
// protocol ranges share no version with this node's (2..2, 3..1, 0..0), in the
// clear and sealed: none is added, each is counted, and the log names both
// ranges, once per 10 s.
func TestMemberOfNoCommonVersionIsRefusedCountedAndLogged(t *testing.T) {
	clearAndSealed(t, func(t *testing.T, mn *MemNetwork, cfg Config, logs *syncBuffer, kr *wire.Keyring) {
		cfg.Insecure = kr == nil
		n := startMem(t, cfg)
		defer n.Close()
		tr, err := mn.Listen("10.0.0.9:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for i, r := range [][2]uint8{{2, 2}, {3, 1}, {0, 0}} {
			b := rawPacket("", &wire.Alive{Node: fmt.Sprintf("x%d", i), Addr: "10.0.0.9:7946", ProtoMin: r[0], ProtoMax: r[1]})
			if kr != nil {
				if b, err = wire.Seal(kr, b, crand.Reader); err != nil {
					t.Fatal(err)
				}
			}
			if err := tr.WriteTo(b, n.Addr()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
		}
		if got := len(n.Members()); got != 1 {
			t.Errorf("%d members after three refused announcements, want 1", got)
		}
		if got, want := metricLine(t, n, "omnirelay_members_version_refused_total "), "omnirelay_members_version_refused_total 3"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
		if got := strings.Count(logs.String(), "member=x0 addr=10.0.0.9:7946 peer_min_version=2 peer_max_version=2 min_version=1 max_version=1"); got != 1 {
			t.Errorf("%d log lines naming both ranges, want 1 (the others within 10 s held back):\n%s", got, logs.String())
		}
	})
}
