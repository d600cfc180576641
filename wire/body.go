package wire

import (
	"fmt"
	"math"
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
	keyVerified    = "v"
)

// appendBody appends m's msgpack body. Every field is always written, in a fixed
// order, so encoding is deterministic (test vectors depend on it).
func appendBody(b []byte, m Message) []byte {
	switch m := m.(type) {
	case *Ping:
		b = appendMapHeader(b, 4)
		b = appendUint(appendStr(b, keySeq), uint64(m.Seq))
		b = appendStr(appendStr(b, keyTarget), m.Target)
		b = appendStr(appendStr(b, keySource), m.Source)
		b = appendStr(appendStr(b, keySourceAddr), m.SourceAddr)
	case *IndirectPing:
		b = appendMapHeader(b, 6)
		b = appendUint(appendStr(b, keySeq), uint64(m.Seq))
		b = appendStr(appendStr(b, keyTarget), m.Target)
		b = appendStr(appendStr(b, keyTargetAddr), m.TargetAddr)
		b = appendStr(appendStr(b, keySource), m.Source)
		b = appendStr(appendStr(b, keySourceAddr), m.SourceAddr)
		b = appendBool(appendStr(b, keyWantNack), m.WantNack)
	case *Ack:
		// An empty payload (the usual case) is left out: 4 bytes of every ack,
		// and a receiver reads a missing key as empty anyway.
		if len(m.Payload) == 0 {
			b = appendMapHeader(b, 1)
			b = appendUint(appendStr(b, keySeq), uint64(m.Seq))
			break
		}
		b = appendMapHeader(b, 2)
		b = appendUint(appendStr(b, keySeq), uint64(m.Seq))
		b = appendBin(appendStr(b, keyPayload), m.Payload)
	case *Nack:
		b = appendMapHeader(b, 1)
		b = appendUint(appendStr(b, keySeq), uint64(m.Seq))
	case *Alive:
		b = appendMapHeader(b, 5)
		b = appendStr(appendStr(b, keyNode), m.Node)
		b = appendStr(appendStr(b, keyAddr), m.Addr)
		b = appendUint(appendStr(b, keyIncarnation), m.Incarnation)
		b = appendUint(appendStr(b, keyProtoMin), uint64(m.ProtoMin))
		b = appendUint(appendStr(b, keyProtoMax), uint64(m.ProtoMax))
	case *Suspect:
		b = appendMapHeader(b, 3)
		b = appendStr(appendStr(b, keyNode), m.Node)
		b = appendUint(appendStr(b, keyIncarnation), m.Incarnation)
		b = appendStr(appendStr(b, keyFrom), m.From)
	case *Dead:
		b = appendMapHeader(b, 3)
		b = appendStr(appendStr(b, keyNode), m.Node)
		b = appendUint(appendStr(b, keyIncarnation), m.Incarnation)
		b = appendStr(appendStr(b, keyFrom), m.From)
	case *Leave:
		b = appendMapHeader(b, 2)
		b = appendStr(appendStr(b, keyNode), m.Node)
		b = appendUint(appendStr(b, keyIncarnation), m.Incarnation)
	case *PushPull:
		b = appendMapHeader(b, 3)
		b = appendBool(appendStr(b, keyJoin), m.Join)
		b = appendArrayHeader(appendStr(b, keyNodes), len(m.Nodes))
		for i := range m.Nodes {
			b = appendNodeState(b, &m.Nodes[i])
		}
		b = appendBin(appendStr(b, keyMeta), m.Meta)
	case *User:
		b = appendMapHeader(b, 1)
		b = appendBin(appendStr(b, keyPayload), m.Payload)
	case *MetaDelta:
		b = appendMapHeader(b, 1)
		b = appendBin(appendStr(b, keyPayload), m.Payload)
	case *Digest:
		b = appendMapHeader(b, 2)
		b = appendUint(appendStr(b, keyHash), m.Hash)
		b = appendUint(appendStr(b, keyMembers), uint64(m.Members))
	default:
		if lb, ok := appendLeaseBody(b, m); ok { // lease.go
			return lb
		}
		if sb, ok := appendShardBody(b, m); ok { // shard.go
			return sb
		}
		// Only this package's message types implement Message usefully; anything
		// else is a programming error of the caller, not peer input.
		panic(fmt.Sprintf("wire: cannot encode message %T", m))
	}
	return b
}

func appendNodeState(b []byte, s *NodeState) []byte {
	// Verified is left out when false (the usual case in a request): a receiver
	// reads a missing key as false, and an old one skips an unknown key.
	if s.Verified {
		b = appendMapHeader(b, 7)
	} else {
		b = appendMapHeader(b, 6)
	}
	b = appendStr(appendStr(b, keyNode), s.Name)
	b = appendStr(appendStr(b, keyAddr), s.Addr)
	b = appendUint(appendStr(b, keyIncarnation), s.Incarnation)
	b = appendUint(appendStr(b, keyStatus), uint64(s.Status))
	b = appendUint(appendStr(b, keyProtoMin), uint64(s.ProtoMin))
	b = appendUint(appendStr(b, keyProtoMax), uint64(s.ProtoMax))
	if s.Verified {
		b = appendBool(appendStr(b, keyVerified), true)
	}
	return b
}

// NewMessage returns a new zero message of type t, or nil if this build does not
// know t.
func NewMessage(t MsgType) Message {
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
	if m := newLeaseMessage(t); m != nil { // lease.go
		return m
	}
	return newShardMessage(t) // shard.go; nil if t is unknown
}

// str reads a string field of at most MaxString bytes and interns it.
func (d *Decoder) str(r *mpReader) (string, error) {
	b, err := r.bytesVal()
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
func bytesInto(r *mpReader, buf []byte) ([]byte, error) {
	b, err := r.bytesVal()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return append(buf[:0], b...), nil
}

// key reads a map key, which must be a string.
func (r *mpReader) key() ([]byte, error) {
	c, err := r.byte1()
	if err != nil {
		return nil, err
	}
	r.i-- // let bytesVal read the header again
	if c&0xe0 != 0xa0 && (c < 0xd9 || c > 0xdb) {
		return nil, ErrMalformed
	}
	return r.bytesVal()
}

func (d *Decoder) decode(body []byte, m Message) error {
	r := mpReader{b: body}
	n, err := r.mapLen()
	if err != nil {
		return err
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
		var ok bool
		if ok, err = d.decodeLease(&r, n, m); !ok { // lease.go
			if ok, err = d.decodeShard(&r, n, m); !ok { // shard.go
				return ErrUnknownType
			}
		}
	}
	if err == nil && r.remaining() != 0 {
		err = ErrMalformed // trailing bytes after the body's map
	}
	return err
}

func (d *Decoder) decodePing(r *mpReader, n int, m *Ping) error {
	*m = Ping{}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.uintMax(math.MaxUint32)
			m.Seq = uint32(v)
		case keyTarget:
			m.Target, err = d.str(r)
		case keySource:
			m.Source, err = d.str(r)
		case keySourceAddr:
			m.SourceAddr, err = d.str(r)
		default:
			err = r.skip()
		}
		return err
	})
}

func (d *Decoder) decodeIndirectPing(r *mpReader, n int, m *IndirectPing) error {
	*m = IndirectPing{}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.uintMax(math.MaxUint32)
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
			m.WantNack, err = r.boolVal()
		default:
			err = r.skip()
		}
		return err
	})
}

func decodeAck(r *mpReader, n int, m *Ack) error {
	buf := m.Payload
	*m = Ack{}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.uintMax(math.MaxUint32)
			m.Seq = uint32(v)
		case keyPayload:
			m.Payload, err = bytesInto(r, buf)
		default:
			err = r.skip()
		}
		return err
	})
}

func decodeNack(r *mpReader, n int, m *Nack) error {
	*m = Nack{}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keySeq:
			v, err = r.uintMax(math.MaxUint32)
			m.Seq = uint32(v)
		default:
			err = r.skip()
		}
		return err
	})
}

func (d *Decoder) decodeAlive(r *mpReader, n int, m *Alive) error {
	*m = Alive{}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyNode:
			m.Node, err = d.str(r)
		case keyAddr:
			m.Addr, err = d.str(r)
		case keyIncarnation:
			m.Incarnation, err = r.uintVal()
		case keyProtoMin:
			v, err = r.uintMax(math.MaxUint8)
			m.ProtoMin = uint8(v)
		case keyProtoMax:
			v, err = r.uintMax(math.MaxUint8)
			m.ProtoMax = uint8(v)
		default:
			err = r.skip()
		}
		return err
	})
}

// decodeNodeFrom decodes the shared shape of Suspect, Dead and Leave (from is nil
// for Leave, which has no From: a "f" key is then skipped like any unknown key).
func (d *Decoder) decodeNodeFrom(r *mpReader, n int, node *string, inc *uint64, from *string) error {
	return eachKey(r, n, func(k []byte) (err error) {
		switch {
		case string(k) == keyNode:
			*node, err = d.str(r)
		case string(k) == keyIncarnation:
			*inc, err = r.uintVal()
		case string(k) == keyFrom && from != nil:
			*from, err = d.str(r)
		default:
			err = r.skip()
		}
		return err
	})
}

func (d *Decoder) decodePushPull(r *mpReader, n int, m *PushPull) error {
	nodes, meta := m.Nodes[:0], m.Meta
	*m = PushPull{}
	return eachKey(r, n, func(k []byte) (err error) {
		switch string(k) {
		case keyJoin:
			m.Join, err = r.boolVal()
		case keyNodes:
			m.Nodes, err = d.decodeNodeStates(r, nodes)
		case keyMeta:
			m.Meta, err = bytesInto(r, meta)
		default:
			err = r.skip()
		}
		return err
	})
}

func (d *Decoder) decodeNodeStates(r *mpReader, buf []NodeState) ([]NodeState, error) {
	count, err := r.arrayLen() // bounded by the remaining bytes
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

func (d *Decoder) decodeNodeState(r *mpReader, s *NodeState) error {
	n, err := r.mapLen()
	if err != nil {
		return err
	}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyNode:
			s.Name, err = d.str(r)
		case keyAddr:
			s.Addr, err = d.str(r)
		case keyIncarnation:
			s.Incarnation, err = r.uintVal()
		case keyStatus:
			v, err = r.uintMax(math.MaxUint8)
			s.Status = NodeStatus(v)
		case keyProtoMin:
			v, err = r.uintMax(math.MaxUint8)
			s.ProtoMin = uint8(v)
		case keyProtoMax:
			v, err = r.uintMax(math.MaxUint8)
			s.ProtoMax = uint8(v)
		case keyVerified:
			s.Verified, err = r.boolVal()
		default:
			err = r.skip()
		}
		return err
	})
}

// decodePayload decodes the body shared by User and MetaDelta.
func decodePayload(r *mpReader, n int, buf []byte) ([]byte, error) {
	var out []byte
	for ; n > 0; n-- {
		k, err := r.key()
		if err != nil {
			return nil, err
		}
		if string(k) == keyPayload {
			out, err = bytesInto(r, buf)
		} else {
			err = r.skip()
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeDigest(r *mpReader, n int, m *Digest) error {
	*m = Digest{}
	return eachKey(r, n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyHash:
			m.Hash, err = r.uintVal()
		case keyMembers:
			v, err = r.uintMax(math.MaxUint32)
			m.Members = uint32(v)
		default:
			err = r.skip()
		}
		return err
	})
}
