package wire

import (
	"strings"
	"testing"

	"github.com/omnirelay/mesh/internal/msgp"
)

// testBody is another protocol's message, as lease and shard write theirs: a Body
// of the extension range, with a string and a list of strings.
type testBody struct {
	Name  string
	Names []string
}

const typeTestBody MsgType = 200

func (*testBody) Type() MsgType { return typeTestBody }

func (m *testBody) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 2)
	b = msgp.AppendStr(msgp.AppendStr(b, "n"), m.Name)
	return AppendStrings(msgp.AppendStr(b, "ns"), m.Names)
}

func (m *testBody) DecodeBody(r BodyReader, n int) error {
	*m = testBody{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case "n":
			m.Name, err = r.ReadString()
		case "ns":
			m.Names, err = r.ReadStrings(3)
		default:
			err = r.Skip()
		}
		return err
	})
}

func testProtocol() Protocol {
	return Protocol{Name: "test", First: RangeExtensionFirst, Last: 255, New: func(t MsgType) Message {
		if t == typeTestBody {
			return new(testBody)
		}
		return nil
	}}
}

func TestRegistryRefusesBadRanges(t *testing.T) {
	_, err := NewRegistry(Membership(), Protocol{Name: "late", First: 31, Last: 40, New: newMembershipMessage})
	check(t, err != nil && strings.Contains(err.Error(), "31"), "an overlap at 31 was accepted: %v", err)
	for _, p := range []Protocol{
		{Name: "zero", First: 0, Last: 3, New: newMembershipMessage},
		{Name: "backwards", First: 40, Last: 39, New: newMembershipMessage},
		{Name: "no constructor", First: 40, Last: 41},
	} {
		_, err := NewRegistry(p)
		check(t, err != nil && strings.Contains(err.Error(), p.Name), "%s accepted: %v", p.Name, err)
	}
}

// Frames decode by the range of their type: through the registry a Decoder uses,
// and without one only membership messages.
func TestFramesDecodeByRange(t *testing.T) {
	reg, err := NewRegistry(Membership(), testProtocol())
	noErr(t, err)
	want := &testBody{Name: "node-a", Names: []string{"x", "y"}}
	f, err := EncodeFrame(want, 7)
	noErr(t, err)

	var d Decoder
	_, _, err = DecodeFrame(f, 0, &d)
	isErr(t, err, ErrUnknownType)
	d.Use(reg)
	_, got, err := DecodeFrame(f, 0, &d)
	noErr(t, err)
	equal(t, want, got)
	p, ok := reg.Owner(typeTestBody)
	check(t, ok && p.Name == "test", "type %d owned by %q", typeTestBody, p.Name)
	_, ok = reg.Owner(RangeShardFirst)
	check(t, !ok, "an unregistered range has an owner")
	check(t, reg.New(RangeShardFirst) == nil, "an unregistered type was made")

	// Membership still decodes through the registry.
	f, err = EncodeFrame(&Nack{Seq: 3}, 7)
	noErr(t, err)
	_, got, err = DecodeFrame(f, 0, &d)
	noErr(t, err)
	equal(t, &Nack{Seq: 3}, got)
}

// A Body's decoder reads through wire's bounds, and wire refuses what surrounds
// the body as for its own messages.
func TestBodyReaderBounds(t *testing.T) {
	var d Decoder
	body := (&testBody{Name: strings.Repeat("n", MaxString+1)}).AppendBody(nil)
	isErr(t, d.Decode(body, new(testBody)), ErrOversized)
	body = (&testBody{Names: []string{"a", "b", "c", "d"}}).AppendBody(nil)
	isErr(t, d.Decode(body, new(testBody)), ErrOversized)
	body = append((&testBody{Name: "a"}).AppendBody(nil), 0xc0)
	isErr(t, d.Decode(body, new(testBody)), ErrMalformed) // trailing bytes
	isErr(t, d.Decode([]byte{0x82, 0xa1, 'n'}, new(testBody)), ErrTruncated)
	var m testBody
	noErr(t, d.Decode((&testBody{Name: "a", Names: []string{}}).AppendBody(nil), &m))
	equal(t, testBody{Name: "a"}, m) // an empty list reads as nil
}
