package wire

import (
	"fmt"

	"github.com/omnirelay/mesh/internal/msgp"
)

// Protocol is one protocol's share of the message numbers (PROTOCOL.md 3.2): the
// range it owns and how its messages are made. A protocol package exports one
// (lease.Messages, shard.Messages); wire's own is Membership.
type Protocol struct {
	Name        string
	First, Last MsgType                 // the range owned, inclusive
	New         func(t MsgType) Message // a new zero message of type t, nil if this build does not know t
}

// Owns reports whether t is in p's range.
func (p Protocol) Owns(t MsgType) bool { return t >= p.First && t <= p.Last }

// Membership is the range of swim's membership messages, which this package
// defines: they are the bulk of all traffic and of the round-trip benchmarks, and
// swim, stack, node and sim all read them, so they stay next to the codec.
func Membership() Protocol {
	return Protocol{Name: "membership", First: RangeMembershipFirst, Last: RangeLeaseFirst - 1, New: newMembershipMessage}
}

// Registry maps each message type to the protocol that owns its range. A stack
// builds one from the protocols it runs and hands it to its Decoder (Use); nothing
// registers itself. The zero Registry knows no type.
type Registry struct {
	owner [256]*Protocol // by type number; nil: no protocol owns it
	list  []Protocol
}

// NewRegistry returns a registry of ps. Ranges must be well formed and disjoint,
// and every protocol must say how its messages are made.
func NewRegistry(ps ...Protocol) (*Registry, error) {
	r := &Registry{list: append([]Protocol(nil), ps...)}
	for i := range r.list {
		p := &r.list[i]
		if p.First == 0 || p.First > p.Last || p.New == nil {
			return nil, fmt.Errorf("wire: protocol %q: range %d..%d or its constructor is not valid", p.Name, p.First, p.Last)
		}
		for t := int(p.First); t <= int(p.Last); t++ {
			if q := r.owner[t]; q != nil {
				return nil, fmt.Errorf("wire: protocols %q and %q both claim message type %d", q.Name, p.Name, t)
			}
			r.owner[t] = p
		}
	}
	return r, nil
}

// New returns a new zero message of type t from the protocol owning t, or nil if no
// registered protocol knows t (receivers skip it by its length).
func (r *Registry) New(t MsgType) Message {
	if p := r.owner[t]; p != nil {
		return p.New(t)
	}
	return nil
}

// Owner returns the protocol that owns t's range.
func (r *Registry) Owner(t MsgType) (Protocol, bool) {
	if p := r.owner[t]; p != nil {
		return *p, true
	}
	return Protocol{}, false
}

// Body is a message whose protocol package encodes and decodes its body (lease,
// shard): wire frames it, bounds and checks what surrounds it, and maps the codec's
// errors to its own. AppendBody writes every field in a fixed order, so encoding is
// deterministic; DecodeBody reads a map of n entries (its header already read),
// skipping unknown keys and leaving missing ones zero.
type Body interface {
	Message
	AppendBody(b []byte) []byte
	DecodeBody(r BodyReader, n int) error
}

// BodyReader reads one message body for a Body's decoder: the msgpack reader of
// internal/msgp (bounds checked against the input left, nil read as zero), and the
// Decoder's strings, bounded by MaxString and interned.
type BodyReader struct {
	*msgp.Reader
	d *Decoder
}

// ReadString reads a string field of at most MaxString bytes.
func (r BodyReader) ReadString() (string, error) { return r.d.str(r.Reader) }

// ReadStrings reads an array of at most limit strings (each as ReadString); an
// empty array reads as nil. The count is checked before anything is allocated.
func (r BodyReader) ReadStrings(limit int) ([]string, error) {
	count, err := r.ArrayLen()
	if err != nil || count == 0 {
		return nil, err
	}
	if count > limit {
		return nil, ErrOversized
	}
	out := make([]string, count)
	for i := range out {
		if out[i], err = r.ReadString(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AppendStrings appends ss as a msgpack array of strings, as ReadStrings reads it.
func AppendStrings(b []byte, ss []string) []byte {
	b = msgp.AppendArrayHeader(b, len(ss))
	for _, s := range ss {
		b = msgp.AppendStr(b, s)
	}
	return b
}
