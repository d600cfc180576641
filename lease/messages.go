package lease

import "github.com/omnirelay/mesh/wire"

// The lease messages are wire types (wire/lease.go, PROTOCOL.md "Lease messages"),
// so the host packs a Ready's Messages straight into packets. Every message names
// its sender (Candidate, Voter or Holder) so a reply goes back by name; the host maps
// names to addresses.
type (
	// Message is any wire message; Step counts a non-lease one as malformed.
	Message = wire.Message
	// Membership is a voter set as persisted and carried in messages. During a
	// change (Joint non-nil) a quorum is a majority of Voters AND a majority of
	// Joint. Memberships are ordered by (Epoch, Seq): Epoch is the lease epoch of the
	// leader that created it (0 for the bootstrap set from Config.Voters), Seq counts
	// the sets that leader created. A voter refuses requests that carry an older
	// set than its own, and answers with its own, so a quorum is never counted in a
	// superseded voter set.
	Membership = wire.LeaseMembership
	// Prepare asks a voter to promise Epoch to Candidate: to accept nothing at a
	// lower epoch from then on. MemberEpoch and MemberSeq identify the candidate's
	// voter set.
	Prepare = wire.LeasePrepare
	// Promise answers a Prepare: Voter promised Epoch to the candidate and holds no
	// lease of another holder. (A voter holding another holder's unexpired lease
	// answers Reject instead, so a Promise never carries an accepted lease to adopt,
	// as PaxosLease's does: our holders never take over each other's leases.)
	Promise = wire.LeasePromise
	// Reject answers a request Voter refused. Epoch and Seq echo the request (Seq 0
	// for a Prepare). Highest is the voter's promise; Holder, when set, holds the
	// unexpired lease in the way; Membership, when set, is the voter's newer set.
	Reject = wire.LeaseReject
	// Propose asks a voter to accept a lease of Duration for Holder at Epoch. Seq
	// identifies the round (strictly increasing per holder), so a late Accept for an
	// older round is never counted for a newer one: the holder's deadline counts
	// from the round it sent. Membership is the set the quorum is counted in.
	Propose = wire.LeasePropose
	// Renew extends Holder's lease at the same Epoch (the same fencing token).
	// Voters apply the same rule as to a Propose, so a voter that missed the current
	// holder's Prepare and Propose, e.g. across a partition, joins its quorum at the
	// next renewal. It is a separate type because it means something else to the
	// holder and to operators: no new election.
	Renew = wire.LeaseRenew
	// Accept answers a Propose or Renew: Voter accepted round Seq of Epoch.
	Accept = wire.LeaseAccept
	// Release gives a lease up early: voters holding Holder's lease at Epoch drop
	// it. The holder stops acting before it sends this.
	Release = wire.LeaseRelease
)
