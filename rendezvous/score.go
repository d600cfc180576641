package rendezvous

import (
	"encoding/binary"
	"math"

	"github.com/cespare/xxhash/v2"
)

// Node is a placement candidate: a unique name and a positive relative weight. A
// node of weight 2 owns, on average, twice the shards of a node of weight 1.
type Node struct {
	Name   string  // unique, non-empty; the hash input, so renaming a node moves its shards
	Weight float64 // relative capacity, in [MinWeight, MaxWeight]; only ratios matter
}

// Weight bounds. Only ratios between weights matter, so scale them into this range.
// The bounds keep every score a normal, finite float64 (no overflow to +Inf, no
// subnormals), which keeps score comparisons exact and ties rare.
const (
	MinWeight = 1e-12
	MaxWeight = 1e12
)

// Score returns the rendezvous score of node for shard: -Weight / ln(u), where u in
// (0,1) is derived from xxhash64(Name || uint32_be(shard)) as the package doc says.
// Higher scores win. The weight is not validated here; BuildTable and Owners do.
func Score(shard uint32, node Node) float64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(node.Name)
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], shard)
	_, _ = d.Write(s[:])
	return scoreOf(d.Sum64(), node.Weight)
}

// scoreOf maps a pair hash and a weight to the score.
func scoreOf(h uint64, weight float64) float64 {
	return -weight / lnUnit(unitOf(h))
}

// unitOf maps a hash to u = (h>>12 + 0.5) / 2^52 in (0,1). u = (2k+1)/2^53 with
// 2k+1 < 2^53, so u, and 1-u too, are exact float64 values: no two hashes that
// differ in those 52 bits round to the same u, and u is never 0 or 1.
func unitOf(h uint64) float64 {
	// Through int64: the value fits, and the signed conversion is one instruction
	// where the unsigned one needs a branch.
	return (float64(int64(h>>12)) + 0.5) * (1.0 / (1 << 52))
}

// Coefficients of ln(m) = 2·atanh(s) = 2s + s·z·(2/3 + z·(2/5 + ...)), z = s², for
// s = (m-1)/(m+1). With m in [√2/2, √2], |s| ≤ 0.1716 and z ≤ 0.0295, so the term
// after 2/21·z^10 is below 2^-53 relative to 2s and the series is cut there.
const (
	lnC1  = 2.0 / 3
	lnC2  = 2.0 / 5
	lnC3  = 2.0 / 7
	lnC4  = 2.0 / 9
	lnC5  = 2.0 / 11
	lnC6  = 2.0 / 13
	lnC7  = 2.0 / 15
	lnC8  = 2.0 / 17
	lnC9  = 2.0 / 19
	lnC10 = 2.0 / 21

	// ln 2 split so that e·ln2Hi is exact for any exponent of a float64: ln2Hi has
	// its low 32 mantissa bits zero. ln2Hi + ln2Lo = ln 2 to about 2^-85.
	ln2Hi = 6.93147180369123816490e-01
	ln2Lo = 1.90821492927058770002e-10
)

// lnUnit returns ln(x) for a normal x in (0,1), accurate to a few ulp. Every
// product is wrapped in float64() so the compiler cannot fuse it into an FMA: the
// result is the same bit pattern on every architecture (see the package doc).
func lnUnit(x float64) float64 {
	b := math.Float64bits(x)
	e := int(b>>52&0x7ff) - 1023
	m := math.Float64frombits(b&(1<<52-1) | 1023<<52) // x = m·2^e, m in [1,2)
	if m > math.Sqrt2 {
		m *= 0.5 // exact
		e++
	}
	f := m - 1 // exact (Sterbenz): m is within a factor 2 of 1
	s := f / (2 + f)
	z := float64(s * s)
	p := lnC10
	p = float64(p*z) + lnC9
	p = float64(p*z) + lnC8
	p = float64(p*z) + lnC7
	p = float64(p*z) + lnC6
	p = float64(p*z) + lnC5
	p = float64(p*z) + lnC4
	p = float64(p*z) + lnC3
	p = float64(p*z) + lnC2
	p = float64(p*z) + lnC1
	lnm := 2*s + float64(float64(s*z)*p)
	fe := float64(e)
	return float64(fe*ln2Hi) + (float64(fe*ln2Lo) + lnm)
}

// Owners returns the owner list of one shard among nodes: the r highest-scoring
// node names, primary first. It validates like BuildTable and is meant for a single
// shard; to place many shards, build a Table once.
func Owners(shard uint32, nodes []Node, r int) ([]string, error) {
	sorted, err := canonicalNodes(nodes)
	if err != nil {
		return nil, err
	}
	if err := checkReplicas(r, len(sorted)); err != nil {
		return nil, err
	}
	b := newBuilder(sorted, r)
	out := make([]string, r)
	for i, idx := range b.top(shard) {
		out[i] = sorted[idx].Name
	}
	return out, nil
}
