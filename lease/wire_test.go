package lease

import (
	"bytes"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/internal/wiretest"
	"github.com/omnirelay/mesh/wire"
	"pgregory.net/rapid"
)

var rewrite = flag.Bool("rewrite", false, "regenerate wire/testdata/lease from sampleMessages")

func sampleMessages() []Message {
	mb := Membership{Epoch: 7, Seq: 1, Voters: []string{"a", "b", "c"}, Joint: []string{"b", "c", "d"}}
	return []Message{
		&Prepare{Epoch: 8, Candidate: "b", MemberEpoch: 7, MemberSeq: 1},
		&Promise{Epoch: 8, Voter: "c"},
		&Reject{Epoch: 8, Seq: 0, Voter: "a", Highest: 9, Holder: "d"},
		&Reject{Epoch: 8, Seq: 2, Voter: "a", Highest: 9, Membership: &mb},
		&Propose{Epoch: 8, Seq: 1, Holder: "b", Duration: 3 * time.Second, Membership: Membership{Voters: []string{"a", "b", "c"}}},
		&Accept{Epoch: 8, Seq: 1, Voter: "c"},
		&Renew{Epoch: 8, Seq: 2, Holder: "b", Duration: 3 * time.Second, Membership: mb},
		&Release{Epoch: 8, Holder: "b"},
	}
}

// decodeAs decodes body into a new message of type t.
func decodeAs(t wiretest.TB, d *wire.Decoder, typ wire.MsgType, body []byte) Message {
	t.Helper()
	m := NewMessage(typ)
	if m == nil {
		t.Fatalf("type %d unknown", typ)
	}
	if err := d.Decode(body, m); err != nil {
		t.Fatalf("%T: %v", m, err)
	}
	return m
}

func sameMessage(t wiretest.TB, want, got any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("\nwant %#v\ngot  %#v", want, got)
	}
}

// body is m's msgpack body alone.
func body(t wiretest.TB, m Message) []byte {
	_, b := wiretest.Split(t, wire.AppendMessage(nil, m))
	return b
}

// Every lease message survives a packet round trip: Packer, PacketReader,
// Decoder, in the lease range.
func TestMessagesRoundTrip(t *testing.T) {
	p := wire.NewPacker(wire.DefaultMTU, wire.ClusterHash("c"))
	msgs := sampleMessages()
	for _, m := range msgs {
		if !p.Add(m) {
			t.Fatalf("%T does not fit an empty packet", m)
		}
		if !Messages().Owns(m.Type()) {
			t.Fatalf("%T type %d outside the lease range", m, m.Type())
		}
	}
	var r wire.PacketReader
	var d wire.Decoder
	if _, err := r.Reset(p.Bytes()); err != nil {
		t.Fatal(err)
	}
	i := 0
	for r.Next() {
		sameMessage(t, msgs[i], decodeAs(t, &d, r.Type(), r.Body()))
		i++
	}
	if r.Err() != nil || i != len(msgs) {
		t.Fatalf("read %d messages of %d: %v", i, len(msgs), r.Err())
	}
}

func TestMessagesRoundTripProperty(t *testing.T) {
	str := rapid.StringMatching(`[a-z0-9.:-]{0,20}`)
	names := rapid.SliceOfN(rapid.StringMatching(`[a-z0-9-]{1,12}`), 1, 7)
	genMembership := func(t *rapid.T) Membership {
		mb := Membership{Epoch: rapid.Uint64().Draw(t, "me"), Seq: rapid.Uint64().Draw(t, "ms"), Voters: names.Draw(t, "vs")}
		if rapid.Bool().Draw(t, "joint") {
			mb.Joint = names.Draw(t, "jt")
		}
		return mb
	}
	rapid.Check(t, func(t *rapid.T) {
		var m Message
		e, q := rapid.Uint64().Draw(t, "e"), rapid.Uint64().Draw(t, "q")
		dur := time.Duration(rapid.Int64Min(0).Draw(t, "d"))
		switch rapid.IntRange(0, 6).Draw(t, "type") {
		case 0:
			m = &Prepare{Epoch: e, Candidate: str.Draw(t, "cd"), MemberEpoch: rapid.Uint64().Draw(t, "me"), MemberSeq: q}
		case 1:
			m = &Promise{Epoch: e, Voter: str.Draw(t, "v")}
		case 2:
			r := &Reject{Epoch: e, Seq: q, Voter: str.Draw(t, "v"), Highest: rapid.Uint64().Draw(t, "hi"), Holder: str.Draw(t, "ho")}
			if rapid.Bool().Draw(t, "withMembership") {
				mb := genMembership(t)
				r.Membership = &mb
			}
			m = r
		case 3:
			m = &Propose{Epoch: e, Seq: q, Holder: str.Draw(t, "ho"), Duration: dur, Membership: genMembership(t)}
		case 4:
			m = &Accept{Epoch: e, Seq: q, Voter: str.Draw(t, "v")}
		case 5:
			m = &Renew{Epoch: e, Seq: q, Holder: str.Draw(t, "ho"), Duration: dur, Membership: genMembership(t)}
		case 6:
			m = &Release{Epoch: e, Holder: str.Draw(t, "ho")}
		}
		var d wire.Decoder
		sameMessage(t, m, decodeAs(t, &d, m.Type(), body(t, m)))
	})
}

func TestBodyRules(t *testing.T) {
	var d wire.Decoder
	// {"e": 5, "zz": [1], "v": "a", "q": 3}: unknown key skipped; a Promise has no
	// round, so "q" is skipped too.
	b := []byte{0x84, 0xa1, 'e', 5, 0xa2, 'z', 'z', 0x91, 1, 0xa1, 'v', 0xa1, 'a', 0xa1, 'q', 3}
	sameMessage(t, &Promise{Epoch: 5, Voter: "a"}, decodeAs(t, &d, TypePromise, b))

	// Missing keys read as zero; a Reject without "mb" has no voter set.
	sameMessage(t, &Reject{Epoch: 9}, decodeAs(t, &d, TypeReject, []byte{0x81, 0xa1, 'e', 9}))

	// A duration beyond int64 nanoseconds is malformed.
	big := append([]byte{0x81, 0xa1, 'd', 0xcf}, 0xff, 0, 0, 0, 0, 0, 0, 0)
	if err := d.Decode(big, &Propose{}); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("a duration past int64: %v", err)
	}

	// A voter list longer than MaxVoters is refused before allocating.
	mb := Membership{Voters: strings.Split(strings.Repeat("v,", MaxVoters+1)[:2*(MaxVoters+1)-1], ",")}
	if err := d.Decode(body(t, &Renew{Epoch: 1, Seq: 1, Holder: "h", Membership: mb}), &Renew{}); !errors.Is(err, wire.ErrOversized) {
		t.Fatalf("%d voters: %v", MaxVoters+1, err)
	}

	// Negative durations, which no sender means, are written as 0.
	got := decodeAs(t, &d, TypePropose, body(t, &Propose{Epoch: 1, Duration: -time.Second})).(*Propose)
	sameMessage(t, time.Duration(0), got.Duration)
}

// FuzzBody feeds arbitrary bodies to every lease message decoder: no panic, and
// whatever decodes re-encodes to the same message.
func FuzzBody(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(uint8(m.Type()), body(f, m))
	}
	f.Fuzz(func(t *testing.T, typ uint8, b []byte) {
		m := NewMessage(wire.RangeLeaseFirst + wire.MsgType(typ%8))
		if m == nil {
			return
		}
		var d wire.Decoder
		if d.Decode(bytes.Clone(b), m) == nil {
			wiretest.ReencodeStable(t, &d, Messages(), m)
		}
	})
}

// leaseKeys maps Go field names to wire keys: a second, independent statement of
// the key table in messages.go and PROTOCOL.md section 11.
var leaseKeys = map[string]string{
	"Epoch": "e", "Seq": "q", "Candidate": "cd", "Voter": "v", "Holder": "ho",
	"Highest": "hi", "Duration": "d", "Membership": "mb", "MemberEpoch": "me",
	"MemberSeq": "ms", "Voters": "vs", "Joint": "jt",
}

// Lease test vectors: wire/testdata/lease/messages.hex holds each sample message
// encoded (type, length, body) in hex, one per line; messages.json its decoded form,
// keyed by the wire keys of PROTOCOL.md section 11, named as its tables name them
// (LeasePrepare, ...). -rewrite regenerates them.
func TestVectors(t *testing.T) {
	wiretest.Vectors{
		Dir:      "../wire/testdata/lease",
		Messages: sampleMessages(),
		Render:   wiretest.VectorJSON(leaseKeys),
		Name:     func(m Message) string { return "Lease" + reflect.TypeOf(m).Elem().Name() },
		Protocol: Messages(),
		Rewrite:  *rewrite,
	}.Check(t)
}
