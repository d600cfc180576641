package lease

import "time"

// Message is one lease protocol message. Every message names its sender (Candidate,
// Voter or Holder) so a reply goes back by name; the host maps names to addresses.
type Message interface {
	leaseMessage()
}

// Membership is a voter set as persisted and carried in messages. During a change
// (Joint non-nil) a quorum is a majority of Voters AND a majority of Joint.
// Memberships are ordered by (Epoch, Seq): Epoch is the lease epoch of the leader
// that created it (0 for the bootstrap set from Config.Voters), Seq counts the
// memberships that leader created. A voter refuses requests that carry an older
// membership than its own, and answers with its own, so a quorum is never counted in
// a superseded voter set.
type Membership struct {
	Epoch  uint64
	Seq    uint64
	Voters []string
	Joint  []string // incoming voter set during a change; nil otherwise
}

// Prepare asks a voter to promise Epoch to Candidate: to accept nothing at a lower
// epoch from then on. MemberEpoch and MemberSeq identify the candidate's voter set
// (Membership.Epoch and .Seq).
type Prepare struct {
	Epoch       uint64
	Candidate   string
	MemberEpoch uint64
	MemberSeq   uint64
}

// Promise answers a Prepare: Voter promised Epoch to the candidate, and holds no
// lease of another holder. (A voter holding another holder's unexpired lease
// answers Reject instead, so a Promise never carries an accepted lease to adopt, as
// PaxosLease's does: our holders never take over each other's leases.)
type Promise struct {
	Epoch uint64
	Voter string
}

// Reject answers a Prepare, Propose or Renew that Voter refused. Epoch and Seq echo
// the request (Seq 0 for a Prepare). Highest is the highest epoch Voter has
// promised; Holder, when set, is the holder of the unexpired lease that stands in
// the way; Membership, when newer than the request's, is the voter's own.
type Reject struct {
	Epoch      uint64
	Seq        uint64
	Voter      string
	Highest    uint64
	Holder     string
	Membership *Membership
}

// Propose asks a voter to accept a lease of Duration for Holder at Epoch. Seq
// identifies the round (strictly increasing per holder), so a late Accept for an
// older round is never counted for a newer one: the holder's deadline counts from
// the round it sent. Membership is the voter set the holder counts the quorum in.
type Propose struct {
	Epoch      uint64
	Seq        uint64
	Holder     string
	Duration   time.Duration
	Membership Membership
}

// Renew extends Holder's lease at the same Epoch (and so the same fencing token).
// Voters apply the same rule as to a Propose (accept unless they promised a higher
// epoch, or this epoch to someone else, or another holder's lease stands), so a
// voter that missed the Prepare and Propose of the current holder, e.g. across a
// partition, joins its quorum at the next renewal. It is a separate type because
// it means something else to the holder and to operators: no new election.
type Renew struct {
	Epoch      uint64
	Seq        uint64
	Holder     string
	Duration   time.Duration
	Membership Membership
}

// Accept answers a Propose or Renew: Voter accepted round Seq of Epoch.
type Accept struct {
	Epoch uint64
	Seq   uint64
	Voter string
}

// Release gives a lease up early: voters holding Holder's lease at Epoch drop it.
// The holder stops acting before it sends this.
type Release struct {
	Epoch  uint64
	Holder string
}

func (*Prepare) leaseMessage() {}
func (*Promise) leaseMessage() {}
func (*Reject) leaseMessage()  {}
func (*Propose) leaseMessage() {}
func (*Renew) leaseMessage()   {}
func (*Accept) leaseMessage()  {}
func (*Release) leaseMessage() {}
