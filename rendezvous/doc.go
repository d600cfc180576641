// Package rendezvous places shards on nodes with weighted rendezvous (highest random
// weight) hashing and precomputes the placement into a Table that answers "who owns
// this key" with two array reads and no allocation.
//
// # Scoring
//
// Every (shard, node) pair gets a score; a shard's owner list is the nodes sorted by
// score, highest first, cut to the replica count. The first entry is the primary.
// The score is the logarithmic method of Schindelhauer and Schomaker ("Weighted
// distributed hash tables", SPAA 2005), also described by J. Resch for weighted
// rendezvous hashing:
//
//	h     = xxhash64(name || uint32_be(shard))   (seed 0)
//	u     = (float64(h >> 12) + 0.5) / 2^52      (exactly representable, in (0,1))
//	score = -weight / ln(u)
//
// With u uniform, -ln(u)/weight is exponential with rate weight, and the smallest of
// independent exponentials belongs to node i with probability weight_i / Σ weight.
// So each node is the primary of a share of shards proportional to its weight, and
// removing or adding a node changes only the shards it wins or loses: the expected
// moved fraction of a join or leave is that node's weight share (1/n for a leave
// among n equal-weight nodes).
//
// Ties (equal scores) are broken by node name, byte-wise ascending, so the order is
// total and independent of the order nodes are given in.
//
// # Determinism
//
// A Table is a pure function of (node names, weights, shard count, replicas). The
// hash has a fixed seed (never a per-process one), and ln is computed by this
// package's own routine using explicitly rounded IEEE-754 operations, not math.Log:
// math.Log is assembly on some architectures, and the Go compiler may fuse a
// multiply and add on others, either of which could change the last bit of a score
// and so, rarely, an owner. With the portable routine every GOARCH computes
// bit-identical scores and therefore identical tables and checksums. A leader can
// therefore publish only the inputs and Table.Checksum: every node rebuilds the same
// table and detects a divergence by comparing checksums.
//
// # Keys to shards
//
// A key maps to shard xxhash64(key) mod S (seed 0). We chose the plain modulus over
// jump consistent hashing: the shard count is fixed for a cluster's lifetime (pick it
// large, thousands, once), so jump's minimal remapping on a change of S buys nothing,
// while its loop of about ln(S) iterations would cost more than the rest of a lookup.
// Changing S remaps almost every key; resharding to a new S is a migration, not a
// rebalance. The bias of the modulus is below S / 2^64, negligible.
//
// # Building
//
// BuildTable scores every (shard, node) pair once and keeps the top R per shard by
// insertion into a small sorted array (a partial selection, O(S·N) rather than
// O(S·N·log N) for a full sort). Per node it precomputes the XXH64 state after the
// name, so hashing a pair only mixes in the last few bytes. Since ln(u) ≤ u-1, a
// node whose 1-u is large against the current R-th score is rejected with one
// multiply, without ln or division; the test has a margin far above rounding error,
// so the selection is exactly that of scoring every node (checked against the brute
// force). Nodes are numbered by their position in name order, and the table stores
// owner numbers, so Lookup is an array index.
package rendezvous
