package wire

import (
	"errors"
	"fmt"
	"math"

	"github.com/omnirelay/mesh/internal/msgp"
)

// Limits on decoded fields, checked before anything is allocated.
const (
	MaxString     = 512     // bytes of a node name, address or other string field
	MaxNodeStates = 1 << 16 // node states in one PushPull
)

// internLimit bounds the Decoder's intern table; when full it is emptied and
// refilled, so a peer sending endless distinct names costs bounded memory.
const internLimit = 4096

// Field keys of message bodies (PROTOCOL.md, "Messages"). Keys are part of the
// protocol: never reuse one for a different meaning.
const (
	keySeq         = "q"
	keyTarget      = "t"
	keyTargetAddr  = "ta"
	keySource      = "s"
	keySourceAddr  = "sa"
	keyWantNack    = "wn"
	keyPayload     = "p"
	keyNode        = "n"
	keyAddr        = "a"
	keyIncarnation = "i"
	keyProtoMin    = "pn"
	keyProtoMax    = "px"
	keyFrom        = "f"
	keyJoin        = "j"
	keyNodes       = "ns"
	keyMeta        = "m"
	keyStatus      = "st"
	keyHash        = "h"
	keyMembers     = "c"
)

// appendBody appends m's msgpack body. Every field is always written, in a fixed
// order, so encoding is deterministic (test vectors depend on it).
func appendBody(b []byte, m Message) []byte {
	switch m := m.(type) {
	case *Ping:
		b = msgp.AppendMapHeader(b, 4)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
		b = msgp.AppendStr(msgp.AppendStr(b, keyTarget), m.Target)
		b = msgp.AppendStr(msgp.AppendStr(b, keySource), m.Source)
		b = msgp.AppendStr(msgp.AppendStr(b, keySourceAddr), m.SourceAddr)
	case *IndirectPing:
		b = msgp.AppendMapHeader(b, 6)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
		b = msgp.AppendStr(msgp.AppendStr(b, keyTarget), m.Target)
		b = msgp.AppendStr(msgp.AppendStr(b, keyTargetAddr), m.TargetAddr)
		b = msgp.AppendStr(msgp.AppendStr(b, keySource), m.Source)
		b = msgp.AppendStr(msgp.AppendStr(b, keySourceAddr), m.SourceAddr)
		b = msgp.AppendBool(msgp.AppendStr(b, keyWantNack), m.WantNack)
	case *Ack:
		// An empty payload (the usual case) is left out: 4 bytes of every ack,
		// and a receiver reads a missing key as empty anyway.
		if len(m.Payload) == 0 {
			b = msgp.AppendMapHeader(b, 1)
			b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
			break
		}
		b = msgp.AppendMapHeader(b, 2)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
		b = msgp.AppendBin(msgp.AppendStr(b, keyPayload), m.Payload)
	case *Nack:
		b = msgp.AppendMapHeader(b, 1)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
	case *Alive:
		b = msgp.AppendMapHeader(b, 5)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendStr(msgp.AppendStr(b, keyAddr), m.Addr)
		b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), m.Incarnation)
		b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMin), uint64(m.ProtoMin))
		b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMax), uint64(m.ProtoMax))
	case *Suspect:
		b = msgp.AppendMapHeader(b, 3)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), m.Incarnation)
		b = msgp.AppendStr(msgp.AppendStr(b, keyFrom), m.From)
	case *Dead:
		b = msgp.AppendMapHeader(b, 3)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), m.Incarnation)
		b = msgp.AppendStr(msgp.AppendStr(b, keyFrom), m.From)
	case *Leave:
		b = msgp.AppendMapHeader(b, 2)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), m.Incarnation)
	case *PushPull:
		b = msgp.AppendMapHeader(b, 3)
		b = msgp.AppendBool(msgp.AppendStr(b, keyJoin), m.Join)
		b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyNodes), len(m.Nodes))
		for i := range m.Nodes {
			b = appendNodeState(b, &m.Nodes[i])
		}
		b = msgp.AppendBin(msgp.AppendStr(b, keyMeta), m.Meta)
	case *User:
		b = msgp.AppendMapHeader(b, 1)
		b = msgp.AppendBin(msgp.AppendStr(b, keyPayload), m.Payload)
	case *MetaDelta:
		b = msgp.AppendMapHeader(b, 1)
		b = msgp.AppendBin(msgp.AppendStr(b, keyPayload), m.Payload)
	case *Digest:
		b = msgp.AppendMapHeader(b, 2)
		b = msgp.AppendUint(msgp.AppendStr(b, keyHash), m.Hash)
		b = msgp.AppendUint(msgp.AppendStr(b, keyMembers), uint64(m.Members))
	case Body: // another protocol's message (lease, shard)
		b = m.AppendBody(b)
	default:
		// A message neither of this package nor a Body is a programming error of
		// the caller, not peer input.
		panic(fmt.Sprintf("wire: cannot encode message %T", m))
	}
	return b
}

func appendNodeState(b []byte, s *NodeState) []byte {
	b = msgp.AppendMapHeader(b, 6)
	b = msgp.AppendStr(msgp.AppendStr(b, keyNode), s.Name)
	b = msgp.AppendStr(msgp.AppendStr(b, keyAddr), s.Addr)
	b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), s.Incarnation)
	b = msgp.AppendUint(msgp.AppendStr(b, keyStatus), uint64(s.Status))
	b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMin), uint64(s.ProtoMin))
	b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMax), uint64(s.ProtoMax))
	return b
}

// newMembershipMessage returns a new zero membership message of type t, or nil if
// this build does not know t.
func newMembershipMessage(t MsgType) Message {
	switch t {
	case TypePing:
		return new(Ping)
	case TypeIndirectPing:
		return new(IndirectPing)
	case TypeAck:
		return new(Ack)
	case TypeNack:
		return new(Nack)
	case TypeAlive:
		return new(Alive)
	case TypeSuspect:
		return new(Suspect)
	case TypeDead:
		return new(Dead)
	case TypeLeave:
		return new(Leave)
	case TypePushPull:
		return new(PushPull)
	case TypeUser:
		return new(User)
	case TypeMetaDelta:
		return new(MetaDelta)
	case TypeDigest:
		return new(Digest)
	}
	return nil
}

// str reads a string field of at most MaxString bytes and interns it.
func (d *Decoder) str(r *msgp.Reader) (string, error) {
	b, err := r.Bytes()
	if err != nil {
		return "", err
	}
	if len(b) > MaxString {
		return "", ErrOversized
	}
	return d.intern(b), nil
}

func (d *Decoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if in := d.shared; in != nil {
		return in.intern(b)
	}
	if s, ok := d.strs[string(b)]; ok { // no allocation: the compiler special-cases this lookup
		return s
	}
	if d.strs == nil || len(d.strs) >= internLimit {
		if d.strs == nil {
			d.strs = make(map[string]string, 64)
		} else {
			clear(d.strs)
		}
	}
	s := string(b)
	d.strs[s] = s
	return s
}

func (in *Interner) intern(b []byte) string {
	if s, ok := in.strs[string(b)]; ok {
		return s
	}
	if len(in.strs) >= in.limit {
		clear(in.strs)
	}
	s := string(b)
	in.strs[s] = s
	return s
}

// bytesInto reads a byte field into buf's capacity; an empty field reads as nil.
func bytesInto(r *msgp.Reader, buf []byte) ([]byte, error) {
	b, err := r.Bytes()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return append(buf[:0], b...), nil
}

func (d *Decoder) decode(body []byte, m Message) error {
	r := msgp.NewReader(body, msgp.NilIsZero)
	n, err := r.MapLen()
	if err != nil {
		return codecErr(err)
	}
	switch m := m.(type) {
	case *Ping:
		err = d.decodePing(&r, n, m)
	case *IndirectPing:
		err = d.decodeIndirectPing(&r, n, m)
	case *Ack:
		err = decodeAck(&r, n, m)
	case *Nack:
		err = decodeNack(&r, n, m)
	case *Alive:
		err = d.decodeAlive(&r, n, m)
	case *Suspect:
		*m = Suspect{}
		err = d.decodeNodeFrom(&r, n, &m.Node, &m.Incarnation, &m.From)
	case *Dead:
		*m = Dead{}
		err = d.decodeNodeFrom(&r, n, &m.Node, &m.Incarnation, &m.From)
	case *Leave:
		*m = Leave{}
		err = d.decodeNodeFrom(&r, n, &m.Node, &m.Incarnation, nil)
	case *PushPull:
		err = d.decodePushPull(&r, n, m)
	case *User:
		m.Payload, err = decodePayload(&r, n, m.Payload)
	case *MetaDelta:
		m.Payload, err = decodePayload(&r, n, m.Payload)
	case *Digest:
		err = decodeDigest(&r, n, m)
	default:
		if b, ok := m.(Body); ok { // another protocol's message (lease, shard)
			return d.decodeBody(body, b)
		}
		return ErrUnknownType
	}
	if err == nil && r.Remaining() != 0 {
		err = ErrMalformed // trailing bytes after the body's map
	}
	return codecErr(err)
}

// decodeBody decodes the body of another protocol's message. It reads with the
// Decoder's own reader, not decode's: a reader passed to a method through an
// interface escapes, and decode's would then cost an allocation on every Ping.
func (d *Decoder) decodeBody(body []byte, m Body) error {
	d.body = msgp.NewReader(body, msgp.NilIsZero)
	r := &d.body
	n, err := r.MapLen()
	if err == nil {
		err = m.DecodeBody(BodyReader{Reader: r, d: d}, n)
	}
	if err == nil && r.Remaining() != 0 {
		err = ErrMalformed // trailing bytes after the body's map
	}
	return codecErr(err)
}

// codecErr turns the codec's errors into this package's, which callers count by.
// It wraps nothing: refusing hostile input must allocate nothing.
func codecErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, msgp.ErrTruncated):
		return ErrTruncated
	case errors.Is(err, msgp.ErrMalformed):
		return ErrMalformed
	}
	return err
}

func (d *Decoder) decodePing(r *msgp.Reader, n int, m *Ping) error {
	*m = Ping{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.UintMax(math.MaxUint32)
			m.Seq = uint32(v)
		case keyTarget:
			m.Target, err = d.str(r)
		case keySource:
			m.Source, err = d.str(r)
		case keySourceAddr:
			m.SourceAddr, err = d.str(r)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (d *Decoder) decodeIndirectPing(r *msgp.Reader, n int, m *IndirectPing) error {
	*m = IndirectPing{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.UintMax(math.MaxUint32)
			m.Seq = uint32(v)
		case keyTarget:
			m.Target, err = d.str(r)
		case keyTargetAddr:
			m.TargetAddr, err = d.str(r)
		case keySource:
			m.Source, err = d.str(r)
		case keySourceAddr:
			m.SourceAddr, err = d.str(r)
		case keyWantNack:
			m.WantNack, err = r.Bool()
		default:
			err = r.Skip()
		}
		return err
	})
}

func decodeAck(r *msgp.Reader, n int, m *Ack) error {
	buf := m.Payload
	*m = Ack{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.UintMax(math.MaxUint32)
			m.Seq = uint32(v)
		case keyPayload:
			m.Payload, err = bytesInto(r, buf)
		default:
			err = r.Skip()
		}
		return err
	})
}

func decodeNack(r *msgp.Reader, n int, m *Nack) error {
	*m = Nack{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.UintMax(math.MaxUint32)
			m.Seq = uint32(v)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (d *Decoder) decodeAlive(r *msgp.Reader, n int, m *Alive) error {
	*m = Alive{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyNode:
			m.Node, err = d.str(r)
		case keyAddr:
			m.Addr, err = d.str(r)
		case keyIncarnation:
			m.Incarnation, err = r.Uint()
		case keyProtoMin:
			v, err = r.UintMax(math.MaxUint8)
			m.ProtoMin = uint8(v)
		case keyProtoMax:
			v, err = r.UintMax(math.MaxUint8)
			m.ProtoMax = uint8(v)
		default:
			err = r.Skip()
		}
		return err
	})
}

// decodeNodeFrom decodes the shared shape of Suspect, Dead and Leave (from is nil
// for Leave, which has no From: a "f" key is then skipped like any unknown key).
func (d *Decoder) decodeNodeFrom(r *msgp.Reader, n int, node *string, inc *uint64, from *string) error {
	return r.EachKey(n, func(k []byte) (err error) {
		switch {
		case string(k) == keyNode:
			*node, err = d.str(r)
		case string(k) == keyIncarnation:
			*inc, err = r.Uint()
		case string(k) == keyFrom && from != nil:
			*from, err = d.str(r)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (d *Decoder) decodePushPull(r *msgp.Reader, n int, m *PushPull) error {
	nodes, meta := m.Nodes[:0], m.Meta
	*m = PushPull{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyJoin:
			m.Join, err = r.Bool()
		case keyNodes:
			m.Nodes, err = d.decodeNodeStates(r, nodes)
		case keyMeta:
			m.Meta, err = bytesInto(r, meta)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (d *Decoder) decodeNodeStates(r *msgp.Reader, buf []NodeState) ([]NodeState, error) {
	count, err := r.ArrayLen() // bounded by the remaining bytes
	if err != nil {
		return nil, err
	}
	if count > MaxNodeStates {
		return nil, ErrOversized
	}
	if count == 0 {
		return nil, nil
	}
	nodes := buf[:0]
	if cap(nodes) < count {
		nodes = make([]NodeState, 0, count)
	}
	for ; count > 0; count-- {
		var s NodeState
		if err := d.decodeNodeState(r, &s); err != nil {
			return nil, err
		}
		nodes = append(nodes, s)
	}
	return nodes, nil
}

func (d *Decoder) decodeNodeState(r *msgp.Reader, s *NodeState) error {
	n, err := r.MapLen()
	if err != nil {
		return err
	}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyNode:
			s.Name, err = d.str(r)
		case keyAddr:
			s.Addr, err = d.str(r)
		case keyIncarnation:
			s.Incarnation, err = r.Uint()
		case keyStatus:
			v, err = r.UintMax(math.MaxUint8)
			s.Status = NodeStatus(v)
		case keyProtoMin:
			v, err = r.UintMax(math.MaxUint8)
			s.ProtoMin = uint8(v)
		case keyProtoMax:
			v, err = r.UintMax(math.MaxUint8)
			s.ProtoMax = uint8(v)
		default:
			err = r.Skip()
		}
		return err
	})
}

// decodePayload decodes the body shared by User and MetaDelta.
func decodePayload(r *msgp.Reader, n int, buf []byte) ([]byte, error) {
	var out []byte
	for ; n > 0; n-- {
		k, err := r.Key()
		if err != nil {
			return nil, err
		}
		if string(k) == keyPayload {
			out, err = bytesInto(r, buf)
		} else {
			err = r.Skip()
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeDigest(r *msgp.Reader, n int, m *Digest) error {
	*m = Digest{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyHash:
			m.Hash, err = r.Uint()
		case keyMembers:
			v, err = r.UintMax(math.MaxUint32)
			m.Members = uint32(v)
		default:
			err = r.Skip()
		}
		return err
	})
}
