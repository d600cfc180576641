package rendezvous

import (
	"fmt"
	"slices"
)

// Move is one shard whose owner list differs between two tables.
type Move struct {
	Shard uint32   // the shard number, below the tables' shard count
	Old   []string // owners in the old table, primary first
	New   []string // owners in the new table, primary first
}

// PrimaryMoved reports whether the shard's primary changed.
func (m Move) PrimaryMoved() bool { return m.Old[0] != m.New[0] }

// Diff is the movement between two tables over the same shard count.
type Diff struct {
	// Moved lists every shard whose owner list changed in any way (primary, a
	// replica, or their order), by ascending shard.
	Moved []Move
	// PrimaryMoves counts shards whose primary changed; MovedFraction is it divided
	// by the shard count. On a join or leave of one of n equal-weight nodes its
	// expectation is 1/n.
	PrimaryMoves  int
	MovedFraction float64
	// OwnersAdded counts (shard, node) ownerships present in the new table but not
	// in the old one: each is a copy of a shard's data to a node that lacked it.
	// OwnerMovedFraction is it divided by shards × new replicas; with equal weights
	// and unchanged replicas its expectation on a join or leave is also 1/n.
	OwnersAdded        int
	OwnerMovedFraction float64
}

// DiffTables compares old and new shard by shard. They may differ in nodes, weights
// and replicas, but not in shard count (ErrShardCountMismatch): a different count
// maps keys to different shards, so there is nothing to compare per shard.
func DiffTables(old, new *Table) (Diff, error) {
	if old.shards != new.shards {
		return Diff{}, fmt.Errorf("%w: %d and %d", ErrShardCountMismatch, old.shards, new.shards)
	}
	var d Diff
	for s := range old.shards {
		or := old.owners[s*old.replicas : (s+1)*old.replicas]
		nr := new.owners[s*new.replicas : (s+1)*new.replicas]
		same := len(or) == len(nr)
		for i := 0; same && i < len(or); i++ {
			same = old.nodes[or[i]].Name == new.nodes[nr[i]].Name
		}
		if same {
			continue
		}
		m := Move{Shard: uint32(s), Old: old.Owners(uint32(s)), New: new.Owners(uint32(s))}
		if m.PrimaryMoved() {
			d.PrimaryMoves++
		}
		for _, n := range m.New {
			if !slices.Contains(m.Old, n) {
				d.OwnersAdded++
			}
		}
		d.Moved = append(d.Moved, m)
	}
	d.MovedFraction = float64(d.PrimaryMoves) / float64(old.shards)
	d.OwnerMovedFraction = float64(d.OwnersAdded) / float64(old.shards*new.replicas)
	return d, nil
}
