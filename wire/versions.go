package wire

// Speaks reports whether a member announcing protocol versions pmin..pmax (Alive,
// NodeState) can share a cluster with this node (PROTOCOL.md section 7): its range
// is valid (1 <= pmin <= pmax; 0 is no version, and a missing key reads as 0) and
// overlaps [MinProtocolVersion, ProtocolVersion]. Every receiver checks it before
// adding or updating a member, so a node never holds a member it has no version in
// common with, and the version it sends (ProtocolVersion while that is the only
// one) is one every member it holds speaks.
func Speaks(pmin, pmax uint8) bool {
	return pmin >= 1 && pmin <= pmax && pmin <= ProtocolVersion && pmax >= MinProtocolVersion
}
