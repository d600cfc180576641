package wire

import (
	"math"
	"time"

	"github.com/omnirelay/mesh/internal/msgp"
)

// Lease messages (PROTOCOL.md, "Lease messages"): the leadership protocol of package
// lease, in the range 32..63. Numbers only ever grow, as for every range.
const (
	TypeLeasePrepare MsgType = 32
	TypeLeasePromise MsgType = 33
	TypeLeaseReject  MsgType = 34
	TypeLeasePropose MsgType = 35
	TypeLeaseAccept  MsgType = 36
	TypeLeaseRenew   MsgType = 37
	TypeLeaseRelease MsgType = 38
)

// MaxLeaseVoters bounds each voter list of a LeaseMembership, checked before
// anything is allocated. Clusters have 3 or 5 voters; the room is for changes.
const MaxLeaseVoters = 64

// Field keys of lease message bodies. "q" (keySeq) keeps its meaning of a sequence
// number: here the holder's round.
const (
	keyEpoch       = "e"
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

// LeaseMembership is a voter set. During a change Joint holds the incoming set and a
// quorum needs a majority of Voters and of Joint. Sets are ordered by (Epoch, Seq):
// the epoch of the leader that created the set, and its counter.
type LeaseMembership struct {
	Epoch  uint64
	Seq    uint64
	Voters []string
	Joint  []string // nil unless a change is under way; empty decodes as nil
}

// LeasePrepare asks a voter to promise Epoch to Candidate. MemberEpoch and
// MemberSeq identify the candidate's voter set.
type LeasePrepare struct {
	Epoch       uint64
	Candidate   string
	MemberEpoch uint64
	MemberSeq   uint64
}

// LeasePromise: Voter promised Epoch to the candidate.
type LeasePromise struct {
	Epoch uint64
	Voter string
}

// LeaseReject: Voter refused the request of Epoch and round Seq (0 for a Prepare).
// Highest is its promise; Holder, if set, holds the lease that stands in the way;
// Membership, if set, is the voter's newer voter set.
type LeaseReject struct {
	Epoch      uint64
	Seq        uint64
	Voter      string
	Highest    uint64
	Holder     string
	Membership *LeaseMembership
}

// LeasePropose asks a voter to accept a lease of Duration for Holder at Epoch, in
// round Seq, counted in Membership.
type LeasePropose struct {
	Epoch      uint64
	Seq        uint64
	Holder     string
	Duration   time.Duration
	Membership LeaseMembership
}

// LeaseAccept: Voter accepted round Seq of Epoch.
type LeaseAccept struct {
	Epoch uint64
	Seq   uint64
	Voter string
}

// LeaseRenew extends Holder's lease at the same Epoch; fields as LeasePropose.
type LeaseRenew struct {
	Epoch      uint64
	Seq        uint64
	Holder     string
	Duration   time.Duration
	Membership LeaseMembership
}

// LeaseRelease gives Holder's lease at Epoch up early.
type LeaseRelease struct {
	Epoch  uint64
	Holder string
}

func (*LeasePrepare) Type() MsgType { return TypeLeasePrepare }
func (*LeasePromise) Type() MsgType { return TypeLeasePromise }
func (*LeaseReject) Type() MsgType  { return TypeLeaseReject }
func (*LeasePropose) Type() MsgType { return TypeLeasePropose }
func (*LeaseAccept) Type() MsgType  { return TypeLeaseAccept }
func (*LeaseRenew) Type() MsgType   { return TypeLeaseRenew }
func (*LeaseRelease) Type() MsgType { return TypeLeaseRelease }

// newLeaseMessage returns a new zero lease message of type t, or nil.
func newLeaseMessage(t MsgType) Message {
	switch t {
	case TypeLeasePrepare:
		return new(LeasePrepare)
	case TypeLeasePromise:
		return new(LeasePromise)
	case TypeLeaseReject:
		return new(LeaseReject)
	case TypeLeasePropose:
		return new(LeasePropose)
	case TypeLeaseAccept:
		return new(LeaseAccept)
	case TypeLeaseRenew:
		return new(LeaseRenew)
	case TypeLeaseRelease:
		return new(LeaseRelease)
	}
	return nil
}

// appendLeaseBody appends m's body if m is a lease message. Like appendBody it
// writes every field in a fixed order; a nil Membership of a Reject is msgpack nil.
func appendLeaseBody(b []byte, m Message) ([]byte, bool) {
	switch m := m.(type) {
	case *LeasePrepare:
		b = msgp.AppendMapHeader(b, 4)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyCandidate), m.Candidate)
		b = msgp.AppendUint(msgp.AppendStr(b, keyMemberEpoch), m.MemberEpoch)
		b = msgp.AppendUint(msgp.AppendStr(b, keyMemberSeq), m.MemberSeq)
	case *LeasePromise:
		b = msgp.AppendMapHeader(b, 2)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyVoter), m.Voter)
	case *LeaseReject:
		b = msgp.AppendMapHeader(b, 6)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
		b = msgp.AppendStr(msgp.AppendStr(b, keyVoter), m.Voter)
		b = msgp.AppendUint(msgp.AppendStr(b, keyHighest), m.Highest)
		b = msgp.AppendStr(msgp.AppendStr(b, keyHolder), m.Holder)
		b = msgp.AppendStr(b, keyMembership)
		if m.Membership == nil {
			b = msgp.AppendNil(b)
		} else {
			b = appendLeaseMembership(b, m.Membership)
		}
	case *LeasePropose:
		b = appendLeaseGrant(b, m.Epoch, m.Seq, m.Holder, m.Duration, &m.Membership)
	case *LeaseRenew:
		b = appendLeaseGrant(b, m.Epoch, m.Seq, m.Holder, m.Duration, &m.Membership)
	case *LeaseAccept:
		b = msgp.AppendMapHeader(b, 3)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
		b = msgp.AppendStr(msgp.AppendStr(b, keyVoter), m.Voter)
	case *LeaseRelease:
		b = msgp.AppendMapHeader(b, 2)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyHolder), m.Holder)
	default:
		return b, false
	}
	return b, true
}

// appendLeaseGrant appends the body shared by LeasePropose and LeaseRenew. A
// negative duration, which no sender means, is written as 0.
func appendLeaseGrant(b []byte, epoch, seq uint64, holder string, d time.Duration, mb *LeaseMembership) []byte {
	b = msgp.AppendMapHeader(b, 5)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), seq)
	b = msgp.AppendStr(msgp.AppendStr(b, keyHolder), holder)
	b = msgp.AppendUint(msgp.AppendStr(b, keyDuration), uint64(max(d, 0)))
	return appendLeaseMembership(msgp.AppendStr(b, keyMembership), mb)
}

func appendLeaseMembership(b []byte, mb *LeaseMembership) []byte {
	b = msgp.AppendMapHeader(b, 4)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), mb.Epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), mb.Seq)
	b = appendStrings(msgp.AppendStr(b, keyVoters), mb.Voters)
	return appendStrings(msgp.AppendStr(b, keyJoint), mb.Joint)
}

func appendStrings(b []byte, ss []string) []byte {
	b = msgp.AppendArrayHeader(b, len(ss))
	for _, s := range ss {
		b = msgp.AppendStr(b, s)
	}
	return b
}

// decodeLease decodes a lease message body whose map header (n entries) was read;
// ok is false if m is not a lease message.
func (d *Decoder) decodeLease(r *msgp.Reader, n int, m Message) (ok bool, err error) {
	switch m := m.(type) {
	case *LeasePrepare:
		err = d.decodeLeasePrepare(r, n, m)
	case *LeasePromise:
		*m = LeasePromise{}
		err = d.decodeLeaseVote(r, n, &m.Epoch, nil, &m.Voter)
	case *LeaseReject:
		err = d.decodeLeaseReject(r, n, m)
	case *LeasePropose:
		*m = LeasePropose{}
		err = d.decodeLeaseGrant(r, n, &m.Epoch, &m.Seq, &m.Holder, &m.Duration, &m.Membership)
	case *LeaseRenew:
		*m = LeaseRenew{}
		err = d.decodeLeaseGrant(r, n, &m.Epoch, &m.Seq, &m.Holder, &m.Duration, &m.Membership)
	case *LeaseAccept:
		*m = LeaseAccept{}
		err = d.decodeLeaseVote(r, n, &m.Epoch, &m.Seq, &m.Voter)
	case *LeaseRelease:
		*m = LeaseRelease{}
		err = d.decodeLeaseGrant(r, n, &m.Epoch, nil, &m.Holder, nil, nil)
	default:
		return false, nil
	}
	return true, err
}

func (d *Decoder) decodeLeasePrepare(r *msgp.Reader, n int, m *LeasePrepare) error {
	*m = LeasePrepare{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyCandidate:
			m.Candidate, err = d.str(r)
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

// decodeLeaseVote decodes the shared shape of LeasePromise (seq nil: a "q" key is
// skipped like any unknown key) and LeaseAccept.
func (d *Decoder) decodeLeaseVote(r *msgp.Reader, n int, epoch, seq *uint64, voter *string) error {
	return r.EachKey(n, func(k []byte) (err error) {
		switch {
		case string(k) == keyEpoch:
			*epoch, err = r.Uint()
		case string(k) == keySeq && seq != nil:
			*seq, err = r.Uint()
		case string(k) == keyVoter:
			*voter, err = d.str(r)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (d *Decoder) decodeLeaseReject(r *msgp.Reader, n int, m *LeaseReject) error {
	*m = LeaseReject{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keySeq:
			m.Seq, err = r.Uint()
		case keyVoter:
			m.Voter, err = d.str(r)
		case keyHighest:
			m.Highest, err = r.Uint()
		case keyHolder:
			m.Holder, err = d.str(r)
		case keyMembership:
			if r.Nil() { // no voter set
				m.Membership = nil
				break
			}
			m.Membership = new(LeaseMembership)
			err = d.decodeLeaseMembership(r, m.Membership)
		default:
			err = r.Skip()
		}
		return err
	})
}

// decodeLeaseGrant decodes the shared shape of LeasePropose, LeaseRenew and
// LeaseRelease (seq, dur and mb nil: those keys are skipped like unknown ones).
func (d *Decoder) decodeLeaseGrant(r *msgp.Reader, n int, epoch, seq *uint64, holder *string, dur *time.Duration, mb *LeaseMembership) error {
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch {
		case string(k) == keyEpoch:
			*epoch, err = r.Uint()
		case string(k) == keySeq && seq != nil:
			*seq, err = r.Uint()
		case string(k) == keyHolder:
			*holder, err = d.str(r)
		case string(k) == keyDuration && dur != nil:
			v, err = r.UintMax(math.MaxInt64)
			*dur = time.Duration(v)
		case string(k) == keyMembership && mb != nil:
			err = d.decodeLeaseMembership(r, mb)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (d *Decoder) decodeLeaseMembership(r *msgp.Reader, mb *LeaseMembership) error {
	*mb = LeaseMembership{}
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
			mb.Voters, err = d.decodeStrings(r)
		case keyJoint:
			mb.Joint, err = d.decodeStrings(r)
		default:
			err = r.Skip()
		}
		return err
	})
}

// decodeStrings reads an array of at most MaxLeaseVoters strings; empty reads as nil.
func (d *Decoder) decodeStrings(r *msgp.Reader) ([]string, error) {
	count, err := r.ArrayLen()
	if err != nil || count == 0 {
		return nil, err
	}
	if count > MaxLeaseVoters {
		return nil, ErrOversized
	}
	out := make([]string, 0, count)
	for ; count > 0; count-- {
		s, err := d.str(r)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
