package lease

import (
	"math"
	"time"

	"github.com/omnirelay/mesh/internal/msgp"
	"github.com/omnirelay/mesh/wire"
)

// The lease messages (PROTOCOL.md "Lease messages", section 11): this package owns
// their types and bodies, wire frames them. Every message names its sender
// (Candidate, Voter or Holder) so a reply goes back by name; the host maps names to
// addresses.

// Message is any wire message; Step counts a non-lease one as malformed.
type Message = wire.Message

// Message types, in the lease range 32..63. Numbers only ever grow, as for every
// range.
const (
	TypePrepare wire.MsgType = 32
	TypePromise wire.MsgType = 33
	TypeReject  wire.MsgType = 34
	TypePropose wire.MsgType = 35
	TypeAccept  wire.MsgType = 36
	TypeRenew   wire.MsgType = 37
	TypeRelease wire.MsgType = 38
)

// MaxVoters bounds each voter list of a Membership on the wire, checked before
// anything is allocated. Clusters have 3 or 5 voters; the room is for changes.
const MaxVoters = 64

// Messages is the lease protocol's range for a wire.Registry.
func Messages() wire.Protocol {
	return wire.Protocol{Name: "lease", First: wire.RangeLeaseFirst, Last: wire.RangeShardFirst - 1, New: NewMessage}
}

// NewMessage returns a new zero lease message of type t, or nil if this build does
// not know t.
func NewMessage(t wire.MsgType) Message {
	switch t {
	case TypePrepare:
		return new(Prepare)
	case TypePromise:
		return new(Promise)
	case TypeReject:
		return new(Reject)
	case TypePropose:
		return new(Propose)
	case TypeAccept:
		return new(Accept)
	case TypeRenew:
		return new(Renew)
	case TypeRelease:
		return new(Release)
	}
	return nil
}

// Membership is a voter set as persisted and carried in messages. During a change
// (Joint non-nil) a quorum is a majority of Voters AND a majority of Joint.
// Memberships are ordered by (Epoch, Seq): Epoch is the lease epoch of the leader
// that created it (0 for the bootstrap set from Config.Voters), Seq counts the sets
// that leader created. A voter refuses requests that carry an older set than its
// own, and answers with its own, so a quorum is never counted in a superseded voter
// set.
type Membership struct {
	Epoch  uint64
	Seq    uint64
	Voters []string
	Joint  []string // nil unless a change is under way; empty decodes as nil
}

// Prepare asks a voter to promise Epoch to Candidate: to accept nothing at a lower
// epoch from then on. MemberEpoch and MemberSeq identify the candidate's voter set.
type Prepare struct {
	Epoch       uint64
	Candidate   string
	MemberEpoch uint64
	MemberSeq   uint64
}

// Promise answers a Prepare: Voter promised Epoch to the candidate and holds no
// lease of another holder. (A voter holding another holder's unexpired lease
// answers Reject instead, so a Promise never carries an accepted lease to adopt, as
// PaxosLease's does: our holders never take over each other's leases.)
type Promise struct {
	Epoch uint64
	Voter string
}

// Reject answers a request Voter refused. Epoch and Seq echo the request (Seq 0 for
// a Prepare). Highest is the voter's promise; Holder, when set, holds the unexpired
// lease in the way; Membership, when set, is the voter's newer set.
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
// the round it sent. Membership is the set the quorum is counted in.
type Propose struct {
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

// Renew extends Holder's lease at the same Epoch (the same fencing token). Voters
// apply the same rule as to a Propose, so a voter that missed the current holder's
// Prepare and Propose, e.g. across a partition, joins its quorum at the next
// renewal. It is a separate type because it means something else to the holder and
// to operators: no new election.
type Renew struct {
	Epoch      uint64
	Seq        uint64
	Holder     string
	Duration   time.Duration
	Membership Membership
}

// Release gives a lease up early: voters holding Holder's lease at Epoch drop it.
// The holder stops acting before it sends this.
type Release struct {
	Epoch  uint64
	Holder string
}

func (*Prepare) Type() wire.MsgType { return TypePrepare }
func (*Promise) Type() wire.MsgType { return TypePromise }
func (*Reject) Type() wire.MsgType  { return TypeReject }
func (*Propose) Type() wire.MsgType { return TypePropose }
func (*Accept) Type() wire.MsgType  { return TypeAccept }
func (*Renew) Type() wire.MsgType   { return TypeRenew }
func (*Release) Type() wire.MsgType { return TypeRelease }

// Field keys of lease message bodies (PROTOCOL.md section 11). "q" keeps the
// meaning it has in membership messages, a sequence number: here the holder's round.
const (
	keyEpoch       = "e"
	keySeq         = "q"
	keyCandidate   = "cd"
	keyVoter       = "v"
	keyHolder      = "ho"
	keyHighest     = "hi"
	keyDuration    = "d"
	keyMembership  = "mb"
	keyMemberEpoch = "me"
	keyMemberSeq   = "ms"
	keyVoters      = "vs"
	keyJoint       = "jt"
)

// The bodies write every field in a fixed order (wire.Body); a nil Membership of a
// Reject is msgpack nil.

func (m *Prepare) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 4)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendStr(msgp.AppendStr(b, keyCandidate), m.Candidate)
	b = msgp.AppendUint(msgp.AppendStr(b, keyMemberEpoch), m.MemberEpoch)
	return msgp.AppendUint(msgp.AppendStr(b, keyMemberSeq), m.MemberSeq)
}

func (m *Promise) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 2)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	return msgp.AppendStr(msgp.AppendStr(b, keyVoter), m.Voter)
}

func (m *Reject) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 6)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
	b = msgp.AppendStr(msgp.AppendStr(b, keyVoter), m.Voter)
	b = msgp.AppendUint(msgp.AppendStr(b, keyHighest), m.Highest)
	b = msgp.AppendStr(msgp.AppendStr(b, keyHolder), m.Holder)
	b = msgp.AppendStr(b, keyMembership)
	if m.Membership == nil {
		return msgp.AppendNil(b)
	}
	return appendMembership(b, m.Membership)
}

func (m *Propose) AppendBody(b []byte) []byte {
	return appendGrant(b, m.Epoch, m.Seq, m.Holder, m.Duration, &m.Membership)
}

func (m *Renew) AppendBody(b []byte) []byte {
	return appendGrant(b, m.Epoch, m.Seq, m.Holder, m.Duration, &m.Membership)
}

func (m *Accept) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 3)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
	return msgp.AppendStr(msgp.AppendStr(b, keyVoter), m.Voter)
}

func (m *Release) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 2)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	return msgp.AppendStr(msgp.AppendStr(b, keyHolder), m.Holder)
}

// appendGrant appends the body shared by Propose and Renew. A negative duration,
// which no sender means, is written as 0.
func appendGrant(b []byte, epoch, seq uint64, holder string, d time.Duration, mb *Membership) []byte {
	b = msgp.AppendMapHeader(b, 5)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), seq)
	b = msgp.AppendStr(msgp.AppendStr(b, keyHolder), holder)
	b = msgp.AppendUint(msgp.AppendStr(b, keyDuration), uint64(max(d, 0)))
	return appendMembership(msgp.AppendStr(b, keyMembership), mb)
}

func appendMembership(b []byte, mb *Membership) []byte {
	b = msgp.AppendMapHeader(b, 4)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), mb.Epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), mb.Seq)
	b = wire.AppendStrings(msgp.AppendStr(b, keyVoters), mb.Voters)
	return wire.AppendStrings(msgp.AppendStr(b, keyJoint), mb.Joint)
}

func (m *Prepare) DecodeBody(r wire.BodyReader, n int) error {
	*m = Prepare{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyCandidate:
			m.Candidate, err = r.ReadString()
		case keyMemberEpoch:
			m.MemberEpoch, err = r.Uint()
		case keyMemberSeq:
			m.MemberSeq, err = r.Uint()
		default:
			err = r.Skip()
		}
		return err
	})
}

func (m *Promise) DecodeBody(r wire.BodyReader, n int) error {
	*m = Promise{}
	return decodeVote(r, n, &m.Epoch, nil, &m.Voter)
}

func (m *Accept) DecodeBody(r wire.BodyReader, n int) error {
	*m = Accept{}
	return decodeVote(r, n, &m.Epoch, &m.Seq, &m.Voter)
}

// decodeVote decodes the shared shape of Promise (seq nil: a "q" key is skipped
// like any unknown key) and Accept.
func decodeVote(r wire.BodyReader, n int, epoch, seq *uint64, voter *string) error {
	return r.EachKey(n, func(k []byte) (err error) {
		switch {
		case string(k) == keyEpoch:
			*epoch, err = r.Uint()
		case string(k) == keySeq && seq != nil:
			*seq, err = r.Uint()
		case string(k) == keyVoter:
			*voter, err = r.ReadString()
		default:
			err = r.Skip()
		}
		return err
	})
}

func (m *Reject) DecodeBody(r wire.BodyReader, n int) error {
	*m = Reject{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keySeq:
			m.Seq, err = r.Uint()
		case keyVoter:
			m.Voter, err = r.ReadString()
		case keyHighest:
			m.Highest, err = r.Uint()
		case keyHolder:
			m.Holder, err = r.ReadString()
		case keyMembership:
			if r.Nil() { // no voter set
				m.Membership = nil
				break
			}
			m.Membership = new(Membership)
			err = decodeMembership(r, m.Membership)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (m *Propose) DecodeBody(r wire.BodyReader, n int) error {
	*m = Propose{}
	return decodeGrant(r, n, &m.Epoch, &m.Seq, &m.Holder, &m.Duration, &m.Membership)
}

func (m *Renew) DecodeBody(r wire.BodyReader, n int) error {
	*m = Renew{}
	return decodeGrant(r, n, &m.Epoch, &m.Seq, &m.Holder, &m.Duration, &m.Membership)
}

func (m *Release) DecodeBody(r wire.BodyReader, n int) error {
	*m = Release{}
	return decodeGrant(r, n, &m.Epoch, nil, &m.Holder, nil, nil)
}

// decodeGrant decodes the shared shape of Propose, Renew and Release (seq, dur and
// mb nil: those keys are skipped like unknown ones).
func decodeGrant(r wire.BodyReader, n int, epoch, seq *uint64, holder *string, dur *time.Duration, mb *Membership) error {
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch {
		case string(k) == keyEpoch:
			*epoch, err = r.Uint()
		case string(k) == keySeq && seq != nil:
			*seq, err = r.Uint()
		case string(k) == keyHolder:
			*holder, err = r.ReadString()
		case string(k) == keyDuration && dur != nil:
			v, err = r.UintMax(math.MaxInt64)
			*dur = time.Duration(v)
		case string(k) == keyMembership && mb != nil:
			err = decodeMembership(r, mb)
		default:
			err = r.Skip()
		}
		return err
	})
}

func decodeMembership(r wire.BodyReader, mb *Membership) error {
	*mb = Membership{}
	n, err := r.MapLen()
	if err != nil {
		return err
	}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			mb.Epoch, err = r.Uint()
		case keySeq:
			mb.Seq, err = r.Uint()
		case keyVoters:
			mb.Voters, err = r.ReadStrings(MaxVoters)
		case keyJoint:
			mb.Joint, err = r.ReadStrings(MaxVoters)
		default:
			err = r.Skip()
		}
		return err
	})
}
