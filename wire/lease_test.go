package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func sampleLeaseMessages() []Message {
	mb := LeaseMembership{Epoch: 7, Seq: 1, Voters: []string{"a", "b", "c"}, Joint: []string{"b", "c", "d"}}
	return []Message{
		&LeasePrepare{Epoch: 8, Candidate: "b", MemberEpoch: 7, MemberSeq: 1},
		&LeasePromise{Epoch: 8, Voter: "c"},
		&LeaseReject{Epoch: 8, Seq: 0, Voter: "a", Highest: 9, Holder: "d"},
		&LeaseReject{Epoch: 8, Seq: 2, Voter: "a", Highest: 9, Membership: &mb},
		&LeasePropose{Epoch: 8, Seq: 1, Holder: "b", Duration: 3 * time.Second, Membership: LeaseMembership{Voters: []string{"a", "b", "c"}}},
		&LeaseAccept{Epoch: 8, Seq: 1, Voter: "c"},
		&LeaseRenew{Epoch: 8, Seq: 2, Holder: "b", Duration: 3 * time.Second, Membership: mb},
		&LeaseRelease{Epoch: 8, Holder: "b"},
	}
}

// Every lease message survives a packet round trip: Packer, PacketReader, Decoder.
func TestLeaseMessagesRoundTrip(t *testing.T) {
	p := NewPacker(DefaultMTU, ClusterHash("c"))
	msgs := sampleLeaseMessages()
	for _, m := range msgs {
		check(t, p.Add(m), "%T does not fit an empty packet", m)
		check(t, m.Type() >= RangeLeaseFirst && m.Type() < RangeShardFirst, "%T type %d outside the lease range", m, m.Type())
	}
	var r PacketReader
	var d Decoder
	_, err := r.Reset(p.Bytes())
	noErr(t, err)
	i := 0
	for r.Next() {
		got := NewMessage(r.Type())
		check(t, got != nil, "type %d unknown", r.Type())
		noErr(t, d.Decode(r.Body(), got))
		equal(t, msgs[i], got)
		i++
	}
	noErr(t, r.Err())
	check(t, i == len(msgs), "read %d messages, want %d", i, len(msgs))
}

func TestLeaseMessagesRoundTripProperty(t *testing.T) {
	str := rapid.StringMatching(`[a-z0-9.:-]{0,20}`)
	names := rapid.SliceOfN(rapid.StringMatching(`[a-z0-9-]{1,12}`), 1, 7)
	genMembership := func(t *rapid.T) LeaseMembership {
		mb := LeaseMembership{Epoch: rapid.Uint64().Draw(t, "me"), Seq: rapid.Uint64().Draw(t, "ms"), Voters: names.Draw(t, "vs")}
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
			m = &LeasePrepare{Epoch: e, Candidate: str.Draw(t, "cd"), MemberEpoch: rapid.Uint64().Draw(t, "me"), MemberSeq: q}
		case 1:
			m = &LeasePromise{Epoch: e, Voter: str.Draw(t, "v")}
		case 2:
			r := &LeaseReject{Epoch: e, Seq: q, Voter: str.Draw(t, "v"), Highest: rapid.Uint64().Draw(t, "hi"), Holder: str.Draw(t, "ho")}
			if rapid.Bool().Draw(t, "withMembership") {
				mb := genMembership(t)
				r.Membership = &mb
			}
			m = r
		case 3:
			m = &LeasePropose{Epoch: e, Seq: q, Holder: str.Draw(t, "ho"), Duration: dur, Membership: genMembership(t)}
		case 4:
			m = &LeaseAccept{Epoch: e, Seq: q, Voter: str.Draw(t, "v")}
		case 5:
			m = &LeaseRenew{Epoch: e, Seq: q, Holder: str.Draw(t, "ho"), Duration: dur, Membership: genMembership(t)}
		case 6:
			m = &LeaseRelease{Epoch: e, Holder: str.Draw(t, "ho")}
		}
		var d Decoder
		got := NewMessage(m.Type())
		noErr(t, d.Decode(appendBody(nil, m), got))
		equal(t, m, got)
	})
}

func TestLeaseBodyRules(t *testing.T) {
	var d Decoder
	// {"e": 5, "zz": [1], "v": "a", "q": 3}: unknown key skipped; a Promise has no
	// round, so "q" is skipped too.
	body := []byte{0x84, 0xa1, 'e', 5, 0xa2, 'z', 'z', 0x91, 1, 0xa1, 'v', 0xa1, 'a', 0xa1, 'q', 3}
	var p LeasePromise
	noErr(t, d.Decode(body, &p))
	equal(t, LeasePromise{Epoch: 5, Voter: "a"}, p)

	// Missing keys read as zero; a Reject without "mb" has no voter set.
	var r LeaseReject
	noErr(t, d.Decode([]byte{0x81, 0xa1, 'e', 9}, &r))
	equal(t, LeaseReject{Epoch: 9}, r)

	// A duration beyond int64 nanoseconds is malformed.
	big := append([]byte{0x81, 0xa1, 'd', 0xcf}, 0xff, 0, 0, 0, 0, 0, 0, 0)
	isErr(t, d.Decode(big, &LeasePropose{}), ErrMalformed)

	// A voter list longer than MaxLeaseVoters is refused before allocating.
	mb := LeaseMembership{Voters: strings.Split(strings.Repeat("v,", MaxLeaseVoters+1)[:2*(MaxLeaseVoters+1)-1], ",")}
	isErr(t, d.Decode(appendBody(nil, &LeaseRenew{Epoch: 1, Seq: 1, Holder: "h", Membership: mb}), &LeaseRenew{}), ErrOversized)

	// Negative durations, which no sender means, are written as 0.
	var pr LeasePropose
	noErr(t, d.Decode(appendBody(nil, &LeasePropose{Epoch: 1, Duration: -time.Second}), &pr))
	equal(t, time.Duration(0), pr.Duration)
}

// FuzzLeaseBody feeds arbitrary bodies to every lease message decoder: no panic, and
// whatever decodes re-encodes to the same message.
func FuzzLeaseBody(f *testing.F) {
	for _, m := range sampleLeaseMessages() {
		f.Add(uint8(m.Type()), appendBody(nil, m))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		m := NewMessage(RangeLeaseFirst + MsgType(typ%8))
		if m == nil {
			return
		}
		var d Decoder
		if d.Decode(bytes.Clone(body), m) == nil {
			reencodeStable(t, &d, m)
		}
	})
}

// Lease test vectors: wire/testdata/lease/messages.hex holds each sample message
// encoded (type, length, body) in hex, one per line; messages.json its decoded form,
// keyed by the wire keys of PROTOCOL.md section 11. TestLeaseVectors checks both
// files against the codec; -rewrite regenerates them.
const leaseVectorDir = "testdata/lease"

// leaseKeys maps Go field names to wire keys: a second, independent statement of
// the key table in lease.go and PROTOCOL.md.
var leaseKeys = map[string]string{
	"Epoch": "e", "Seq": "q", "Candidate": "cd", "Voter": "v", "Holder": "ho",
	"Highest": "hi", "Duration": "d", "Membership": "mb", "MemberEpoch": "me",
	"MemberSeq": "ms", "Voters": "vs", "Joint": "jt",
}

// vectorJSON returns a renderer of messages (and the maps nested in them) keyed
// by the wire keys of keys, where a "Type.Field" entry overrides a plain field
// name: numbers as numbers (durations in nanoseconds), lists as arrays (shard
// lists and byte lists as arrays of numbers), a nil pointer as null.
func vectorJSON(keys map[string]string) func(reflect.Value) any {
	var render func(v reflect.Value) any
	value := func(f reflect.Value) any {
		switch f.Kind() {
		case reflect.Uint8, reflect.Uint32, reflect.Uint64:
			return f.Uint()
		case reflect.Int64: // time.Duration
			return f.Int()
		case reflect.Float64:
			return f.Float()
		case reflect.String:
			return f.String()
		case reflect.Struct, reflect.Pointer:
			return render(f)
		}
		panic("unhandled field kind " + f.Kind().String())
	}
	render = func(v reflect.Value) any {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return nil
			}
			v = v.Elem()
		}
		out := map[string]any{}
		for i := range v.NumField() {
			f, name := v.Field(i), v.Type().Field(i).Name
			key, ok := keys[v.Type().Name()+"."+name]
			if !ok {
				key = keys[name]
			}
			if f.Kind() != reflect.Slice {
				out[key] = value(f)
				continue
			}
			elems := []any{}
			for j := range f.Len() {
				elems = append(elems, value(f.Index(j)))
			}
			out[key] = elems
		}
		return out
	}
	return render
}

// messageVector is one entry of a messages.json: {type, name, body}.
type messageVector struct {
	Type MsgType `json:"type"`
	Name string  `json:"name"`
	Body any     `json:"body"`
}

// publishedFile is one published vector file: -rewrite writes want to it, and the
// file must then hold exactly want.
func publishedFile(t *testing.T, path string, want []byte) []byte {
	t.Helper()
	if *rewrite {
		noErr(t, os.MkdirAll(filepath.Dir(path), 0o755))
		noErr(t, os.WriteFile(path, want, 0o644))
	}
	got, err := os.ReadFile(path)
	noErr(t, err)
	equal(t, string(want), string(got))
	return got
}

// checkMessageVectors checks dir/messages.hex (each message encoded, type, length
// and body, in hex, one per line) and dir/messages.json (its decoded form, render
// keying it by wire keys) against msgs in both directions: encoding msgs yields
// the files, and decoding the published bytes yields msgs.
func checkMessageVectors(t *testing.T, dir string, msgs []Message, render func(reflect.Value) any) {
	t.Helper()
	var hexLines []string
	var vecs []messageVector
	for _, m := range msgs {
		hexLines = append(hexLines, hex.EncodeToString(AppendMessage(nil, m)))
		vecs = append(vecs, messageVector{Type: m.Type(), Name: reflect.TypeOf(m).Elem().Name(), Body: render(reflect.ValueOf(m))})
	}
	js, err := json.MarshalIndent(vecs, "", "  ")
	noErr(t, err)
	publishedFile(t, filepath.Join(dir, "messages.json"), append(js, '\n'))
	published := publishedFile(t, filepath.Join(dir, "messages.hex"), []byte(strings.Join(hexLines, "\n")+"\n"))
	var d Decoder
	for i, line := range strings.Fields(string(published)) {
		typ, body, _, err := splitMessage(mustHex(line))
		noErr(t, err)
		got := NewMessage(typ)
		check(t, got != nil, "%s vector %d: type %d unknown", dir, i, typ)
		noErr(t, d.Decode(body, got))
		equal(t, msgs[i], got)
	}
}

func TestLeaseVectors(t *testing.T) {
	checkMessageVectors(t, leaseVectorDir, sampleLeaseMessages(), vectorJSON(leaseKeys))
}
