package rendezvous

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/vectors.json from the current code")

// vector pins one placement. Placement is part of the protocol: nodes of
// different versions and architectures must build the same table from the same
// inputs, so a change of any owner or checksum is a compatibility break, not a
// refactor. The file also lets an outside implementation check itself. It passes
// unchanged under GOARCH=386 and GOAMD64=v3; under v3, removing lnUnit's explicit
// float64 conversions lets the compiler emit FMAs and changes the score digest.
type vector struct {
	Nodes    []Node     `json:"nodes"`
	Shards   int        `json:"shards"`
	Replicas int        `json:"replicas"`
	Checksum string     `json:"checksum"` // Table.Checksum, hex
	Owners   [][]string `json:"owners"`   // per shard, primary first
	// Scores of the first node for shards 0..3, as IEEE-754 bits in hex: the
	// exact ln and division results, which must agree on every architecture.
	Scores []string `json:"scores"`
	// xxhash64 over the bits of Score for every (shard, node) pair, in shard then
	// name order: one changed ulp anywhere changes it.
	ScoreDigest string `json:"score_digest"`
	// Keys and their shards under ShardForString.
	Keys map[string]uint32 `json:"keys"`
}

func vectorInputs() []vector {
	weighted := []Node{
		{"alpha", 1}, {"bravo", 2}, {"charlie", 0.5}, {"delta", 3.25},
		{"echo-with-a-name-of-28-bytes", 1}, {"foxtrot.example.internal:7946", 1.5},
		{"a-name-long-enough-to-span-two-32-byte-xxhash-stripes", 1},
	}
	big := make([]Node, 200)
	for i := range big {
		big[i] = Node{Name: fmt.Sprintf("10.0.%d.%d:7946", i/16, i%16), Weight: float64(1 + i%4)}
	}
	return []vector{
		{Nodes: equalNodes(5, "node"), Shards: 64, Replicas: 3},
		{Nodes: weighted, Shards: 50, Replicas: 2},
		{Nodes: big, Shards: 100, Replicas: 1},
	}
}

func computeVector(t *testing.T, v vector) vector {
	tab := mustBuild(t, v.Nodes, v.Shards, v.Replicas)
	v.Checksum = strconv.FormatUint(tab.Checksum(), 16)
	v.Owners = nil
	for s := range uint32(v.Shards) {
		v.Owners = append(v.Owners, tab.Owners(s))
	}
	v.Scores = nil
	for s := range uint32(4) {
		v.Scores = append(v.Scores, strconv.FormatUint(math.Float64bits(Score(s, v.Nodes[0])), 16))
	}
	var d xxhash.Digest
	d.Reset()
	for s := range uint32(v.Shards) {
		for _, n := range tab.Nodes() {
			_, _ = d.Write(binary.BigEndian.AppendUint64(nil, math.Float64bits(Score(s, n))))
		}
	}
	v.ScoreDigest = strconv.FormatUint(d.Sum64(), 16)
	v.Keys = map[string]uint32{}
	for _, k := range []string{"", "user:1", "user:2", "order/2026/11/27", "日本語"} {
		v.Keys[k] = tab.ShardForString(k)
	}
	return v
}

func TestPlacementVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	var got []vector
	for _, v := range vectorInputs() {
		got = append(got, computeVector(t, v))
	}
	if *rewrite {
		b, err := json.MarshalIndent(got, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []vector
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%s has %d vectors, code has %d", path, len(want), len(got))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Checksum != g.Checksum {
			t.Errorf("vector %d: checksum %s, want %s", i, g.Checksum, w.Checksum)
		}
		for s := range w.Owners {
			if !slices.Equal(w.Owners[s], g.Owners[s]) {
				t.Errorf("vector %d shard %d: owners %v, want %v", i, s, g.Owners[s], w.Owners[s])
			}
		}
		if w.ScoreDigest != g.ScoreDigest {
			t.Errorf("vector %d: score digest %s, want %s", i, g.ScoreDigest, w.ScoreDigest)
		}
		if !slices.Equal(w.Scores, g.Scores) {
			t.Errorf("vector %d: scores %v, want %v", i, g.Scores, w.Scores)
		}
		for k, s := range w.Keys {
			if g.Keys[k] != s {
				t.Errorf("vector %d key %q: shard %d, want %d", i, k, g.Keys[k], s)
			}
		}
	}
}
