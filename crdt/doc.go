// Package crdt holds the replicated peer metadata of OmniRelay Mesh, ordered by
// per-writer versions alone (no clock is compared across nodes). It is a pure leaf:
// no goroutines, no clock reads, no I/O, and no import of any other package of the
// module.
//
// # Maps and writers
//
// A Store replicates one last-writer-wins map per node, plus one cluster-wide map.
// Every map has exactly one writer per epoch: a node map is written only by its
// node, under Version{Epoch: incarnation}; the cluster map is written only by the
// leader of a lease epoch, under Version{Epoch: lease epoch}. Counters number the
// writes of one epoch from 1, so a version names one write and never two.
//
// A new epoch supersedes everything written before it: the writer re-issues its
// live entries under the new epoch (SetIncarnation, or the first SetCluster of a
// newer lease epoch), and every replica drops the entries of older epochs as soon
// as it sees the newer one. For the cluster map this is fencing: a deposed leader
// cannot write into an epoch it no longer holds, and what it wrote late is dead.
//
// # Merge
//
// The state of one map is a function from keys to cells (version, tombstone flag,
// value) together with a floor: a key absent from the map reads as a tombstone at
// the floor. Merging two states is the key-wise maximum under a total order on
// cells (version, then tombstone over value, then value bytes), the floors merge by
// maximum, and an epoch E turns every cell below Version{E, 0} into a tombstone at
// it. That is a join of a semilattice on every state, valid or not, so merges are
// commutative, associative and idempotent; the tests check it with rapid.
//
// # Tombstones and the resurrection rule
//
// Delete writes a tombstone, versioned like any write, and merges compare it by
// that version like any cell. GC forgets
// tombstones older than a horizon and raises the floor to the newest one it forgot;
// since an absent key reads as a tombstone at the floor, a put with a version at or
// below the floor (a late gossip message, a stale peer's snapshot) loses to it and
// cannot bring the key back. GC only raises the floor through versions the replica
// is complete for (Have), so it never hides a write it has not seen. See
// docs/metadata.md for the argument and the limits.
//
// A Store is not safe for concurrent use; its host serialises calls.
package crdt
