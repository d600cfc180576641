package host

import (
	"github.com/omnirelay/mesh/lease"
	"github.com/omnirelay/mesh/wire"
)

// Conversions between lease messages and their wire form. lease knows nothing of
// wire and wire nothing of lease; the host is where they meet.

func membershipToWire(m lease.Membership) wire.LeaseMembership {
	return wire.LeaseMembership{Epoch: m.Epoch, Seq: m.Seq, Voters: m.Voters, Joint: m.Joint}
}

func membershipFromWire(m wire.LeaseMembership) lease.Membership {
	return lease.Membership{Epoch: m.Epoch, Seq: m.Seq, Voters: m.Voters, Joint: m.Joint}
}

// leaseToWire encodes one of our machine's messages.
func leaseToWire(msg lease.Message) wire.Message {
	switch m := msg.(type) {
	case *lease.Prepare:
		return &wire.LeasePrepare{Epoch: m.Epoch, Candidate: m.Candidate, MemberEpoch: m.MemberEpoch, MemberSeq: m.MemberSeq}
	case *lease.Promise:
		return &wire.LeasePromise{Epoch: m.Epoch, Voter: m.Voter}
	case *lease.Reject:
		w := &wire.LeaseReject{Epoch: m.Epoch, Seq: m.Seq, Voter: m.Voter, Highest: m.Highest, Holder: m.Holder}
		if m.Membership != nil {
			mb := membershipToWire(*m.Membership)
			w.Membership = &mb
		}
		return w
	case *lease.Propose:
		return &wire.LeasePropose{Epoch: m.Epoch, Seq: m.Seq, Holder: m.Holder, Duration: m.Duration, Membership: membershipToWire(m.Membership)}
	case *lease.Renew:
		return &wire.LeaseRenew{Epoch: m.Epoch, Seq: m.Seq, Holder: m.Holder, Duration: m.Duration, Membership: membershipToWire(m.Membership)}
	case *lease.Accept:
		return &wire.LeaseAccept{Epoch: m.Epoch, Seq: m.Seq, Voter: m.Voter}
	case *lease.Release:
		return &wire.LeaseRelease{Epoch: m.Epoch, Holder: m.Holder}
	}
	panic("host: unknown lease message type") // our own machine's output: a programming error
}

// leaseFromWire converts a decoded wire message; nil for a type lease does not
// take. lease.Machine.Step validates the fields.
func leaseFromWire(msg wire.Message) lease.Message {
	switch m := msg.(type) {
	case *wire.LeasePrepare:
		return &lease.Prepare{Epoch: m.Epoch, Candidate: m.Candidate, MemberEpoch: m.MemberEpoch, MemberSeq: m.MemberSeq}
	case *wire.LeasePromise:
		return &lease.Promise{Epoch: m.Epoch, Voter: m.Voter}
	case *wire.LeaseReject:
		r := &lease.Reject{Epoch: m.Epoch, Seq: m.Seq, Voter: m.Voter, Highest: m.Highest, Holder: m.Holder}
		if m.Membership != nil {
			mb := membershipFromWire(*m.Membership)
			r.Membership = &mb
		}
		return r
	case *wire.LeasePropose:
		return &lease.Propose{Epoch: m.Epoch, Seq: m.Seq, Holder: m.Holder, Duration: m.Duration, Membership: membershipFromWire(m.Membership)}
	case *wire.LeaseRenew:
		return &lease.Renew{Epoch: m.Epoch, Seq: m.Seq, Holder: m.Holder, Duration: m.Duration, Membership: membershipFromWire(m.Membership)}
	case *wire.LeaseAccept:
		return &lease.Accept{Epoch: m.Epoch, Seq: m.Seq, Voter: m.Voter}
	case *wire.LeaseRelease:
		return &lease.Release{Epoch: m.Epoch, Holder: m.Holder}
	}
	return nil
}
