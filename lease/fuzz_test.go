package lease

import (
	"testing"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// FuzzStep feeds whatever the wire decoder makes of arbitrary bytes to a voter and
// to a leader: no panic, malformed input counted, and a voter's promise never falls.
func FuzzStep(f *testing.F) {
	mb := Membership{Voters: abc}
	for _, m := range []Message{
		&Prepare{Epoch: 5, Candidate: "b"},
		&Propose{Epoch: 5, Seq: 1, Holder: "b", Duration: 3 * sec, Membership: mb},
		&Renew{Epoch: 6, Seq: 2, Holder: "c", Duration: sec, Membership: Membership{Epoch: 4, Seq: 1, Voters: abc, Joint: []string{"c", "d", "e"}}},
		&Release{Epoch: 5, Holder: "b"},
		&Promise{Epoch: 1, Voter: "b"},
		&Accept{Epoch: 1, Seq: 1, Voter: "c"},
		&Reject{Epoch: 1, Voter: "c", Highest: 9, Holder: "b", Membership: &mb},
	} {
		f.Add(uint8(m.Type()), wire.AppendMessage(nil, m))
	}
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		msg := NewMessage(wire.RangeLeaseFirst + wire.MsgType(typ%8))
		if msg == nil {
			return
		}
		var d wire.Decoder
		if d.Decode(data, msg) != nil {
			return
		}
		// A voter past its quiet period, and a leader of {a,b,c}.
		voter, quiet := voterAt(t, &MemoryStorage{})
		c := newCluster(3, 1, nil)
		c.run(5 * sec)
		l := c.leader()
		if l < 0 {
			t.Fatal("no leader")
		}
		before := voter.st.Promised
		voter.Step(quiet.Add(time.Millisecond), msg)
		if voter.st.Promised < before {
			t.Fatalf("promise fell from %d to %d on %+v", before, voter.st.Promised, msg)
		}
		leader := c.nodes[l].m
		leader.Step(c.local(l), msg)
		leader.Ready()
		voter.Ready()
	})
}
