package lease

import "slices"

// Quorums and voter sets. During a change a quorum is a majority of the old set AND
// a majority of the new one (joint consensus, Ongaro's thesis ch. 4), so any quorum
// counted in the joint set intersects any quorum of either set alone; the leader
// moves to the new set alone only after a quorum of the joint set has persisted it.

// newer reports whether a is a later membership than b.
func newer(a, b Membership) bool {
	return a.Epoch > b.Epoch || (a.Epoch == b.Epoch && a.Seq > b.Seq)
}

// olderID reports whether the membership (epoch, seq) is earlier than m.
func olderID(epoch, seq uint64, m Membership) bool {
	return newer(m, Membership{Epoch: epoch, Seq: seq})
}

// isMember reports whether name votes in m (old or incoming set).
func isMember(m Membership, name string) bool {
	return slices.Contains(m.Voters, name) || slices.Contains(m.Joint, name)
}

// majority reports whether yes holds more than half of set.
func majority(set []string, yes map[string]bool) bool {
	n := 0
	for _, v := range set {
		if yes[v] {
			n++
		}
	}
	return 2*n > len(set)
}

// hasQuorum reports whether yes is a quorum of m.
func hasQuorum(m Membership, yes map[string]bool) bool {
	return majority(m.Voters, yes) && (m.Joint == nil || majority(m.Joint, yes))
}

// quorumPossible reports whether a quorum of m can still form once no is excluded.
func quorumPossible(m Membership, no map[string]bool) bool {
	possible := func(set []string) bool {
		n := 0
		for _, v := range set {
			if !no[v] {
				n++
			}
		}
		return 2*n > len(set)
	}
	return possible(m.Voters) && (m.Joint == nil || possible(m.Joint))
}

// peers lists the members of m other than self, old set first, without repeats.
func peers(m Membership, self string) []string {
	out := make([]string, 0, len(m.Voters)+len(m.Joint))
	for _, set := range [][]string{m.Voters, m.Joint} {
		for _, v := range set {
			if v != self && !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}
