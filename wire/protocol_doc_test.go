package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/vmihailenco/msgpack/v5"
)

// These tests read PROTOCOL.md and the vector files as an outside implementer
// would: bodies are decoded by a generic msgpack library (never by this package's
// codec), and keys, types and defaults come from the document's tables.

// docTable is one body table of PROTOCOL.md: key → type, and the type number of
// a message (0 for a nested map).
type docTable struct {
	typ   int
	keys  []string
	types map[string]string
}

var (
	docHeading = regexp.MustCompile(`^\*\*([A-Za-z]+)(?: \((\d+)\))?\*\*`)
	docAlso    = regexp.MustCompile(`and \*\*([A-Za-z]+) \((\d+)\)\*\*`)
	docRow     = regexp.MustCompile("^\\| `([a-z]+)` \\| [A-Za-z]+ \\| ([^|]+) \\|")
)

// protocolTables parses the body tables of sections 11 to 13: a bold name (with its
// type number for a message), optionally "and **Other (n)**", then a
// Key | Field | Type | Meaning table.
func protocolTables(t *testing.T) map[string]*docTable {
	raw, err := os.ReadFile("../PROTOCOL.md")
	noErr(t, err)
	doc := string(raw)
	start, end := strings.Index(doc, "\n## 11. "), strings.Index(doc, "\n## 14. ")
	check(t, start > 0 && end > start, "PROTOCOL.md: sections 11 to 13 not found")
	tables := map[string]*docTable{}
	var pending []string // names waiting for their table
	var cur []*docTable
	for _, line := range strings.Split(doc[start:end], "\n") {
		if m := docHeading.FindStringSubmatch(line); m != nil && !strings.HasPrefix(line, "**Receiver") {
			pending, cur = nil, nil
			for _, n := range append([][]string{m}, docAlso.FindAllStringSubmatch(line, -1)...) {
				typ, _ := strconv.Atoi(n[2])
				tables[n[1]] = &docTable{typ: typ, types: map[string]string{}}
				pending = append(pending, n[1])
			}
			continue
		}
		if strings.HasPrefix(line, "| Key | Field | Type |") {
			cur = nil
			for _, n := range pending {
				cur = append(cur, tables[n])
			}
			pending = nil
			continue
		}
		if m := docRow.FindStringSubmatch(line); m != nil {
			for _, tb := range cur {
				tb.keys = append(tb.keys, m[1])
				tb.types[m[1]] = strings.TrimSpace(m[2])
			}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			cur = nil
		}
	}
	for name, tb := range tables {
		if len(tb.keys) == 0 {
			delete(tables, name) // a bold word that heads no table
		}
	}
	return tables
}

// docValue converts a generically decoded msgpack value of the document type typ
// into the shape of the vectors' JSON (json.Number for numbers, hex for bytes),
// checking it has that type. key selects the two byte fields with a structure of
// their own (ShardMap `ow` and `ss`).
func docValue(tables map[string]*docTable, typ, key string, v any) (any, error) {
	if base, ok := strings.CutSuffix(typ, " or nil"); ok {
		if v == nil {
			return nil, nil
		}
		typ = base
	}
	if elem, ok := strings.CutPrefix(typ, "array of "); ok {
		arr, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%v is not an array", v)
		}
		out := []any{}
		for _, e := range arr {
			c, err := docValue(tables, elem, "", e)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	}
	if tb, ok := tables[typ]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%v is not a map", v)
		}
		return docMap(tables, tb, m)
	}
	num := func(u uint64) json.Number { return json.Number(strconv.FormatUint(u, 10)) }
	switch typ {
	case "uint8", "uint32", "uint63", "uint64":
		bits := map[string]uint{"uint8": 8, "uint32": 32, "uint63": 63, "uint64": 64}[typ]
		u, ok := docUint(v)
		if !ok || (bits < 64 && u>>bits != 0) {
			return nil, fmt.Errorf("%v is not a %s", v, typ)
		}
		return num(u), nil
	case "string", "str":
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%v is not a str", v)
		}
		return s, nil
	case "bool":
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%v is not a bool", v)
		}
		return b, nil
	case "float64":
		f, ok := v.(float64)
		if !ok {
			return nil, fmt.Errorf("%v is not a float 64", v)
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
	case "bytes", "bin", "shardset":
		b, ok := v.([]byte)
		if !ok {
			return nil, fmt.Errorf("%v is not a bin", v)
		}
		if typ == "bin" || (typ == "bytes" && key != "ow" && key != "ss") {
			return fmt.Sprintf("%x", b), nil
		}
		out := []any{}
		var total uint64
		for i := 0; len(b) > 0; i++ {
			if key == "ss" {
				out, b = append(out, num(uint64(b[0]))), b[1:]
				continue
			}
			u, w := binary.Uvarint(b)
			if w <= 0 {
				return nil, fmt.Errorf("bad uvarint in %x", b)
			}
			b = b[w:]
			if typ == "shardset" {
				if i > 0 && u == 0 {
					return nil, fmt.Errorf("shardset not ascending")
				}
				total += u
				u = total
			}
			out = append(out, num(u))
		}
		return out, nil
	}
	return nil, fmt.Errorf("type %q is not one the document defines", typ)
}

func docUint(v any) (uint64, bool) {
	switch v := v.(type) {
	case int8, int16, int32, int64:
		i := reflectInt(v)
		return uint64(i), i >= 0
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	}
	return 0, false
}

func reflectInt(v any) int64 {
	switch v := v.(type) {
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	}
	return v.(int64)
}

// docMap converts a decoded body by its table. Every key must be in the table;
// keys left out read as the zero value of their type (section 13: an Entry's
// `e` reads as its Delta's `h` epoch, filled in by the caller).
func docMap(tables map[string]*docTable, tb *docTable, m map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range m {
		typ, ok := tb.types[k]
		if !ok {
			return nil, fmt.Errorf("key %q is in no table row", k)
		}
		c, err := docValue(tables, typ, k, v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out[k] = c
	}
	for _, k := range tb.keys {
		if _, ok := out[k]; !ok {
			out[k] = docZero(tables, tb.types[k], k)
		}
	}
	return out, nil
}

func docZero(tables map[string]*docTable, typ, key string) any {
	switch {
	case strings.HasSuffix(typ, " or nil"):
		return nil
	case strings.HasPrefix(typ, "array of"), typ == "shardset", typ == "bytes" && (key == "ow" || key == "ss"):
		return []any{}
	case typ == "string", typ == "str", typ == "bin", typ == "bytes":
		return ""
	case typ == "bool":
		return false
	case tables[typ] != nil:
		z, _ := docMap(tables, tables[typ], map[string]any{})
		return z
	}
	return json.Number("0")
}

// genericBody decodes one msgpack body with the generic library.
func genericBody(t *testing.T, body []byte) map[string]any {
	var m map[string]any
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	noErr(t, dec.Decode(&m))
	_, err := dec.DecodeInterface()
	check(t, err != nil, "bytes after the body")
	return m
}

// docMessage splits `type | uvarint length | body` (section 3.1).
func docMessage(t *testing.T, b []byte) (int, []byte) {
	n, w := binary.Uvarint(b[1:])
	check(t, w > 0 && uint64(len(b)-1-w) == n, "length %d of %x does not match", n, b)
	return int(b[0]), b[1+w:]
}

func readJSON(t *testing.T, path string, v any) {
	raw, err := os.ReadFile(path)
	noErr(t, err)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	noErr(t, dec.Decode(v))
}

func readHexLines(t *testing.T, path string) [][]byte {
	raw, err := os.ReadFile(path)
	noErr(t, err)
	var out [][]byte
	for _, l := range strings.Fields(string(raw)) {
		out = append(out, mustHex(l))
	}
	return out
}

type docVector struct {
	Type int            `json:"type"`
	Name string         `json:"name"`
	Body map[string]any `json:"body"`
}

// Every lease, shard and metadata vector, decoded generically, has exactly the keys
// and types of its PROTOCOL.md table and equals its JSON.
func TestVectorsMatchProtocolTables(t *testing.T) {
	tables := protocolTables(t)
	seen := map[string]bool{}
	for _, dir := range []string{"testdata/lease", "testdata/shard"} {
		lines := readHexLines(t, dir+"/messages.hex")
		var vecs []docVector
		readJSON(t, dir+"/messages.json", &vecs)
		check(t, len(lines) == len(vecs), "%s: %d lines, %d JSON vectors", dir, len(lines), len(vecs))
		for i, b := range lines {
			typ, body := docMessage(t, b)
			tb := tables[vecs[i].Name]
			check(t, tb != nil, "%s %d: PROTOCOL.md has no table for %s", dir, i, vecs[i].Name)
			check(t, tb.typ == typ && vecs[i].Type == typ, "%s %d: type %d, JSON %d, PROTOCOL.md %d", dir, i, typ, vecs[i].Type, tb.typ)
			generic := genericBody(t, body)
			check(t, len(generic) == len(tb.keys), "%s %d (%s): %d keys, the table has %d: our sender writes every field", dir, i, vecs[i].Name, len(generic), len(tb.keys))
			got, err := docMap(tables, tb, generic)
			noErr(t, err)
			equal(t, vecs[i].Body, got)
			seen[vecs[i].Name] = true
		}
	}
	var metas []struct {
		Kind  string         `json:"kind"`
		Value map[string]any `json:"value"`
	}
	readJSON(t, "testdata/meta/payloads.json", &metas)
	lines := readHexLines(t, "testdata/meta/payloads.hex")
	check(t, len(lines) == len(metas), "meta: %d lines, %d JSON vectors", len(lines), len(metas))
	for i, b := range lines {
		name := map[string]string{"delta": "Delta", "snapshot": "Snapshot"}[metas[i].Kind]
		generic := genericBody(t, b)
		deltas := []any{generic}
		if name == "Snapshot" {
			deltas, _ = generic["m"].([]any)
		}
		for _, d := range deltas {
			d, ok := d.(map[string]any)
			check(t, ok, "meta %d: a delta that is not a map", i)
			docEntryEpochs(d)
		}
		got, err := docMap(tables, tables[name], generic)
		noErr(t, err)
		equal(t, metas[i].Value, got)
		seen[name] = true
	}
	// Every message table has a vector.
	for name, tb := range tables {
		check(t, tb.typ == 0 || seen[name], "PROTOCOL.md's %s (%d) has no vector", name, tb.typ)
	}
}

// docEntryEpochs applies section 13's one default that is not zero, to a
// generically decoded Delta: an Entry without `e` has the Delta's `h` epoch.
func docEntryEpochs(d map[string]any) {
	var epoch any = uint64(0)
	if h, ok := d["h"].(map[string]any); ok && h["e"] != nil {
		epoch = h["e"]
	}
	entries, _ := d["x"].([]any)
	for _, e := range entries {
		if e, ok := e.(map[string]any); ok && e["e"] == nil {
			e["e"] = epoch
		}
	}
}

// The worked example of PROTOCOL.md section 14, replayed from the vector files.
func TestNonVotingMemberExample(t *testing.T) {
	const label = "omnirelay-test"
	cluster := uint32(xxhash.Sum64String(label))
	msgs := readHexLines(t, "testdata/shard/messages.hex")
	typ, body := docMessage(t, msgs[0])
	check(t, typ == 64, "line 1 is type %d, not a ShardAnnounce", typ)
	ann := genericBody(t, body)
	leader, epoch, cs := ann["l"], ann["e"], ann["cs"]
	equal(t, "node-a", leader)

	frames := readHexLines(t, "testdata/shard/frames.hex")
	check(t, len(frames) == 2, "%d frames, want the request and the reply", len(frames))
	var bodies []map[string]any
	for i, f := range frames {
		// Section 5: u32 length, then a packet-shaped body ending in its checksum.
		n := binary.BigEndian.Uint32(f)
		check(t, int(n) == len(f)-4, "frame %d: length %d of %d bytes", i, n, len(f)-4)
		b := f[4:]
		check(t, b[0] == 'O' && b[1] == 'R' && b[2] == 1 && b[3] == 0 && b[4] == 0, "frame %d: header % x", i, b[:5])
		check(t, binary.BigEndian.Uint32(b[5:]) == cluster, "frame %d: cluster hash", i)
		sum := binary.BigEndian.Uint32(b[len(b)-4:])
		check(t, sum == uint32(xxhash.Sum64(b[:len(b)-4])), "frame %d: checksum", i)
		typ, body := docMessage(t, b[9:len(b)-4])
		check(t, typ == []int{65, 66}[i], "frame %d: type %d", i, typ)
		check(t, bytes.Equal(b[9:len(b)-4], msgs[i+1]), "frame %d: message differs from messages.hex line %d", i, i+2)
		bodies = append(bodies, genericBody(t, body))
	}
	equal(t, map[string]any{"n": "node-c", "e": int8(0), "vn": int8(0)}, bodies[0])

	mp := bodies[1]
	check(t, mp["e"] == epoch && mp["cs"] == cs, "the map is not the announced one")
	s, _ := docUint(mp["sc"])
	r, _ := docUint(mp["r"])
	var names []string
	for _, n := range mp["nm"].([]any) {
		names = append(names, n.(string))
	}
	check(t, slices.IsSorted(names) && len(slices.Compact(slices.Clone(names))) == len(names), "nm not sorted and distinct")
	owBytes, ss := mp["ow"].([]byte), mp["ss"].([]byte)
	var ow []uint64
	for len(owBytes) > 0 {
		u, w := binary.Uvarint(owBytes)
		check(t, w > 0 && u <= uint64(len(names)), "bad owner number")
		ow, owBytes = append(ow, u), owBytes[w:]
	}
	check(t, uint64(len(ow)) == s && uint64(len(ss)) == s, "ow and ss must have S entries")
	owners := make([]string, s)
	for i, o := range ow {
		if o > 0 {
			owners[i] = names[o-1]
		}
	}
	equal(t, []string{"node-b", "node-a", "node-b", "node-b", "node-a", "node-b", "node-b", ""}, owners)
	equal(t, []byte{0, 0, 0, 0, 0, 2, 1, 1}, ss)

	// The checksum, recomputed entirely from section 12: placement by the
	// document's scores and ln routine, then both checksums.
	type node struct {
		name string
		w    float64
	}
	var nodes []node
	for _, e := range mp["en"].([]any) {
		e := e.(map[string]any)
		nodes = append(nodes, node{e["n"].(string), e["w"].(float64)})
	}
	slices.SortFunc(nodes, func(a, b node) int { return strings.Compare(a.name, b.name) })
	var names2 []string
	var weights []float64
	for _, n := range nodes {
		names2, weights = append(names2, n.name), append(weights, n.w)
	}
	placement := docPlacementChecksum(names2, weights, int(s), int(r))
	got := docMapChecksum(placement, s, names, ow, ss)
	want, _ := docUint(cs)
	check(t, got == want, "checksum by PROTOCOL.md %016x, map says %016x", got, want)

	// Keys to shards, as the example states.
	for key, shard := range map[string]uint64{"user:1": 3, "user:2": 2, "order/2026/11/27": 3} {
		check(t, xxhash.Sum64String(key)%s == shard, "key %q is not in shard %d", key, shard)
		check(t, owners[shard] == "node-b", "key %q: owner %q", key, owners[shard])
	}
}

// docMapChecksum is the map checksum exactly as PROTOCOL.md section 12 defines it,
// written from the document (shard's tests check the same vector with the code).
func docMapChecksum(placement, shards uint64, names []string, owners []uint64, states []byte) uint64 {
	b := []byte{0x01}
	b = binary.AppendUvarint(b, shards)
	b = binary.BigEndian.AppendUint64(b, placement)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		b = append(binary.AppendUvarint(b, uint64(len(n))), n...)
	}
	for s := range owners {
		b = append(binary.AppendUvarint(b, owners[s]), states[s])
	}
	return xxhash.Sum64(b)
}

// docLn is the ln routine of PROTOCOL.md section 12, written from the document.
func docLn(x float64) float64 {
	b := math.Float64bits(x)
	e := float64(int(b>>52&0x7ff) - 1023)
	m := math.Float64frombits(b&(1<<52-1) | 1023<<52)
	if m > math.Sqrt2 {
		m, e = m/2, e+1
	}
	f := m - 1
	s := f / (2 + f)
	z := float64(s * s)
	p := 2.0 / 21
	for _, c := range []float64{2.0 / 19, 2.0 / 17, 2.0 / 15, 2.0 / 13, 2.0 / 11, 2.0 / 9, 2.0 / 7, 2.0 / 5, 2.0 / 3} {
		p = float64(p*z) + c
	}
	lnm := 2*s + float64(float64(s*z)*p)
	return float64(e*6.93147180369123816490e-01) + (float64(e*1.90821492927058770002e-10) + lnm)
}

// docScore is section 12's score of a node for a shard.
func docScore(name string, weight float64, shard uint32) float64 {
	h := xxhash.Sum64(binary.BigEndian.AppendUint32([]byte(name), shard))
	u := (float64(h>>12) + 0.5) / (1 << 52)
	return -weight / docLn(u)
}

// docPlacementChecksum places shards by section 12's scores and returns the
// placement checksum the document defines; names are sorted.
func docPlacementChecksum(names []string, weights []float64, shards, replicas int) uint64 {
	b := []byte{0x01}
	b = binary.AppendUvarint(b, uint64(shards))
	b = binary.AppendUvarint(b, uint64(replicas))
	b = binary.AppendUvarint(b, uint64(len(names)))
	for i, n := range names {
		b = append(binary.AppendUvarint(b, uint64(len(n))), n...)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(weights[i]))
	}
	for s := range shards {
		idx := make([]int, len(names))
		scores := make([]float64, len(names))
		for i, n := range names {
			idx[i], scores[i] = i, docScore(n, weights[i], uint32(s))
		}
		slices.SortStableFunc(idx, func(a, b int) int { return -cmpFloat(scores[a], scores[b]) }) // equal: smaller name first
		for _, i := range idx[:replicas] {
			b = binary.BigEndian.AppendUint32(b, uint32(i))
		}
	}
	return xxhash.Sum64(b)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// The document's placement routine reproduces every published placement vector
// (rendezvous/testdata/vectors.json), checksums included.
func TestProtocolPlacementMatchesRendezvousVectors(t *testing.T) {
	var vecs []struct {
		Nodes []struct {
			Name   string
			Weight float64
		} `json:"nodes"`
		Shards      int      `json:"shards"`
		Replicas    int      `json:"replicas"`
		Checksum    string   `json:"checksum"`
		Scores      []string `json:"scores"`       // first node, shards 0..3, IEEE-754 bits
		ScoreDigest string   `json:"score_digest"` // xxhash64 of every score's bits, shard then name order
	}
	raw, err := os.ReadFile("../rendezvous/testdata/vectors.json")
	noErr(t, err)
	noErr(t, json.Unmarshal(raw, &vecs))
	check(t, len(vecs) > 0, "no placement vectors")
	for _, v := range vecs {
		first := v.Nodes[0] // the node the vector's scores are of
		slices.SortFunc(v.Nodes, func(a, b struct {
			Name   string
			Weight float64
		}) int {
			return strings.Compare(a.Name, b.Name)
		})
		var names []string
		var weights []float64
		for _, n := range v.Nodes {
			names, weights = append(names, n.Name), append(weights, n.Weight)
		}
		got := strconv.FormatUint(docPlacementChecksum(names, weights, v.Shards, v.Replicas), 16)
		check(t, got == v.Checksum, "%d nodes, %d shards: placement checksum %s, vector %s", len(names), v.Shards, got, v.Checksum)
		// Bit-exact scores: the document's ln must match to the last bit.
		for s, bits := range v.Scores {
			got := strconv.FormatUint(math.Float64bits(docScore(first.Name, first.Weight, uint32(s))), 16)
			check(t, got == bits, "score of %s for shard %d: bits %s, vector %s", first.Name, s, got, bits)
		}
		var d xxhash.Digest
		d.Reset()
		for s := range uint32(v.Shards) {
			for i := range names {
				_, _ = d.Write(binary.BigEndian.AppendUint64(nil, math.Float64bits(docScore(names[i], weights[i], s))))
			}
		}
		check(t, strconv.FormatUint(d.Sum64(), 16) == v.ScoreDigest, "score digest differs: the ln routine is not bit-exact")
	}
}
