package crdt

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "regenerate ../wire/testdata/meta from metaVectors")

// Metadata test vectors (PROTOCOL.md section 13) live beside the other wire
// vectors: payloads.hex holds one encoded MetaDelta payload (a Delta) or PushPull
// `m` (a Snapshot) per line, payloads.json the decoded form, every field present
// (defaults applied), byte values as hex. TestMetaVectors checks both directions;
// -rewrite regenerates the files.
const metaVectorDir = "../wire/testdata/meta"

type metaVector struct {
	Kind  string `json:"kind"` // "delta" or "snapshot"
	Why   string `json:"why"`
	Value any    `json:"value"`
	delta Delta
	snap  Snapshot
}

func metaVectors(t *testing.T) []metaVector {
	st, err := NewStore("node-a", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	leader, err := st.SetCluster(7, "lease.leader", []byte("node-a"))
	if err != nil {
		t.Fatal(err)
	}
	zone, err := st.Set("zone", []byte("eu-west-1a"))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := NewStore("n4", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	signed.SetAuthority("prod", vectorSigner{})
	grpc, err := signed.Set("grpc", []byte("10.0.0.4:9000"))
	if err != nil {
		t.Fatal(err)
	}
	return []metaVector{
		{Kind: "delta", Why: "node-17 sets zone at 3.42, complete from 3.41 to 3.42", delta: Delta{Node: "node-17", Since: Version{3, 41}, Have: Version{3, 42}, Floor: Version{3, 0},
			Entries: []Entry{{Key: "zone", Value: []byte("eu-west-1a"), Version: Version{3, 42}}}}},
		{Kind: "delta", Why: "its deletion at 3.43: a tombstone, no value", delta: Delta{Node: "node-17", Since: Version{3, 42}, Have: Version{3, 43}, Floor: Version{3, 0},
			Entries: []Entry{{Key: "zone", Version: Version{3, 43}, Deleted: true}}}},
		{Kind: "delta", Why: "a full map whose first entry is of an older epoch than have (its e is written)", delta: Delta{Node: "node-b", Have: Version{2, 5}, Floor: Version{2, 0},
			Entries: []Entry{{Key: "rack", Value: []byte("r1"), Version: Version{1, 3}}, {Key: "weight", Value: []byte("2"), Version: Version{2, 5}}}}},
		{Kind: "delta", Why: "the lease holder node-a publishes itself in the cluster map (n omitted) under lease epoch 7", delta: leader},
		{Kind: "delta", Why: "node-a's first write of its own map", delta: zone},
		{Kind: "snapshot", Why: "node-a's push-pull m: the cluster map first, then node maps by name", snap: st.Snapshot()},
		{Kind: "delta", Why: "signed (cluster label prod): n4's write of grpc at 0.1, g its signature of the cell claim (key id, then Ed25519)", delta: grpc},
		{Kind: "snapshot", Why: "signed: n4's push-pull m, its map with g, its head signature at 0.1", snap: signed.Snapshot()},
	}
}

// vectorSigner signs the vectors' claims with a fixed Ed25519 key (Ed25519 is
// deterministic), behind the key id 0102030405060708, as node certificates do.
type vectorSigner struct{}

var vectorKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func (vectorSigner) Sign(claim []byte) []byte {
	return append([]byte{1, 2, 3, 4, 5, 6, 7, 8}, ed25519.Sign(vectorKey, claim)...)
}

func (vectorSigner) Verify(string, uint64, []byte, []byte) Verdict { return VerdictBad }

// metaJSON renders a delta in the decoded form of the vectors.
func metaJSON(d Delta) map[string]any {
	ver := func(v Version) map[string]any { return map[string]any{"e": v.Epoch, "c": v.Counter} }
	entries := []any{}
	for _, e := range d.Entries {
		entries = append(entries, map[string]any{"k": e.Key, "v": hex.EncodeToString(e.Value),
			"c": e.Version.Counter, "e": e.Version.Epoch, "d": e.Deleted, "g": hex.EncodeToString(e.Sig)})
	}
	return map[string]any{"n": d.Node, "s": ver(d.Since), "h": ver(d.Have), "f": ver(d.Floor), "x": entries,
		"g": hex.EncodeToString(d.Head)}
}

func TestMetaVectors(t *testing.T) {
	vecs := metaVectors(t)
	var lines []string
	for i := range vecs {
		v := &vecs[i]
		if v.Kind == "delta" {
			lines = append(lines, hex.EncodeToString(AppendDelta(nil, v.delta)))
			v.Value = metaJSON(v.delta)
			continue
		}
		lines = append(lines, hex.EncodeToString(AppendSnapshot(nil, v.snap)))
		maps := []any{}
		for _, d := range v.snap.Maps {
			maps = append(maps, metaJSON(d))
		}
		v.Value = map[string]any{"m": maps}
	}
	js, err := json.MarshalIndent(vecs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	hexPath := filepath.Join(metaVectorDir, "payloads.hex")
	jsonPath := filepath.Join(metaVectorDir, "payloads.json")
	if *rewrite {
		if err := os.MkdirAll(metaVectorDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hexPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hexFile, err := os.ReadFile(hexPath)
	if err != nil {
		t.Fatal(err)
	}
	jsonFile, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	// Encoding yields the published bytes and JSON.
	got := strings.Fields(string(hexFile))
	if !reflect.DeepEqual(got, lines) {
		t.Fatalf("payloads.hex differs from the encoding (run with -rewrite after a deliberate change)\n got %q\nwant %q", got, lines)
	}
	if string(jsonFile) != string(js)+"\n" {
		t.Fatalf("payloads.json differs from the vectors (run with -rewrite after a deliberate change)")
	}
	// Decoding the published bytes yields the values.
	for i, line := range got {
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		if vecs[i].Kind == "delta" {
			d, err := DecodeDelta(b, DefaultLimits())
			if err != nil || !reflect.DeepEqual(d, vecs[i].delta) {
				t.Fatalf("vector %d: %v\n got %+v\nwant %+v", i, err, d, vecs[i].delta)
			}
			continue
		}
		s, err := DecodeSnapshot(b, DefaultLimits())
		if err != nil || !reflect.DeepEqual(s, vecs[i].snap) {
			t.Fatalf("vector %d: %v\n got %+v\nwant %+v", i, err, s, vecs[i].snap)
		}
	}
}
