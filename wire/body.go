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
	keyFeatures    = "ft"
	keyLocalHealth = "lh"
	keySig         = "sg"
	keyCertHave    = "ch"
	keyCerts       = "cs"
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
		// and a receiver reads a missing key as empty anyway. So is a zero
		// LocalHealth: only senders with FeatureAckHealth on write it.
		n := 1
		if len(m.Payload) > 0 {
			n++
		}
		if m.LocalHealth > 0 {
			n++
		}
		b = msgp.AppendMapHeader(b, n)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
		if len(m.Payload) > 0 {
			b = msgp.AppendBin(msgp.AppendStr(b, keyPayload), m.Payload)
		}
		if m.LocalHealth > 0 {
			b = msgp.AppendUint(msgp.AppendStr(b, keyLocalHealth), uint64(m.LocalHealth))
		}
	case *Nack:
		b = msgp.AppendMapHeader(b, 1)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), uint64(m.Seq))
	case *Alive:
		b = msgp.AppendMapHeader(b, 5+featuresKey(m.Features)+present(m.Sig))
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendStr(msgp.AppendStr(b, keyAddr), m.Addr)
		b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), m.Incarnation)
		b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMin), uint64(m.ProtoMin))
		b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMax), uint64(m.ProtoMax))
		b = appendSig(appendFeatures(b, m.Features), m.Sig)
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
		b = msgp.AppendMapHeader(b, 2+present(m.Sig))
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), m.Incarnation)
		b = appendSig(b, m.Sig)
	case *PushPull:
		b = msgp.AppendMapHeader(b, 3+present(m.CertHave)+present(m.Certs))
		b = msgp.AppendBool(msgp.AppendStr(b, keyJoin), m.Join)
		b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyNodes), len(m.Nodes))
		for i := range m.Nodes {
			b = appendNodeState(b, &m.Nodes[i])
		}
		b = msgp.AppendBin(msgp.AppendStr(b, keyMeta), m.Meta)
		if len(m.CertHave) > 0 {
			b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyCertHave), len(m.CertHave))
			for _, h := range m.CertHave {
				b = msgp.AppendUint(b, h)
			}
		}
		if len(m.Certs) > 0 {
			b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyCerts), len(m.Certs))
			for _, c := range m.Certs {
				b = msgp.AppendBin(b, c)
			}
		}
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

// present is 1 when an optional field is set, else 0: optional fields (the
// signatures and certificates of PROTOCOL.md 10.10) are left out when empty, so a
// cluster without node certificates sends the bytes it always sent.
func present[T any](v []T) int {
	if len(v) == 0 {
		return 0
	}
	return 1
}

// featuresKey is 1 when a Features key is written: only when not empty, so a
// node advertising none (every release so far) sends what version 1 always sent.
func featuresKey(f Features) int {
	if f == 0 {
		return 0
	}
	return 1
}

func appendSig(b, sig []byte) []byte {
	if len(sig) == 0 {
		return b
	}
	return msgp.AppendBin(msgp.AppendStr(b, keySig), sig)
}

func appendFeatures(b []byte, f Features) []byte {
	if f == 0 {
		return b
	}
	return msgp.AppendUint(msgp.AppendStr(b, keyFeatures), uint64(f))
}

func appendNodeState(b []byte, s *NodeState) []byte {
	b = msgp.AppendMapHeader(b, 6+featuresKey(s.Features)+present(s.Sig))
	b = msgp.AppendStr(msgp.AppendStr(b, keyNode), s.Name)
	b = msgp.AppendStr(msgp.AppendStr(b, keyAddr), s.Addr)
	b = msgp.AppendUint(msgp.AppendStr(b, keyIncarnation), s.Incarnation)
	b = msgp.AppendUint(msgp.AppendStr(b, keyStatus), uint64(s.Status))
	b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMin), uint64(s.ProtoMin))
	b = msgp.AppendUint(msgp.AppendStr(b, keyProtoMax), uint64(s.ProtoMax))
	return appendSig(appendFeatures(b, s.Features), s.Sig)
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
		err = d.decodeNodeFrom(&r, n, &m.Node, &m.Incarnation, &m.From, nil)
	case *Dead:
		*m = Dead{}
		err = d.decodeNodeFrom(&r, n, &m.Node, &m.Incarnation, &m.From, nil)
	case *Leave:
		*m = Leave{Sig: m.Sig[:0]}
		err = d.decodeNodeFrom(&r, n, &m.Node, &m.Incarnation, nil, &m.Sig)
		if len(m.Sig) == 0 {
			m.Sig = nil
		}
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
		case keyLocalHealth:
			v, err = r.UintMax(math.MaxUint8)
			m.LocalHealth = uint8(v)
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
	sig := m.Sig
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
		case keyFeatures:
			v, err = r.Uint()
			m.Features = Features(v)
		case keySig:
			m.Sig, err = sigInto(r, sig)
		default:
			err = r.Skip()
		}
		return err
	})
}

// sigInto reads a signature field of at most MaxSig bytes into buf's capacity.
func sigInto(r *msgp.Reader, buf []byte) ([]byte, error) {
	b, err := r.Bytes()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	if len(b) > MaxSig {
		return nil, ErrOversized
	}
	return append(buf[:0], b...), nil
}

// decodeNodeFrom decodes the shared shape of Suspect, Dead and Leave (from is nil
// for Leave, which has no From, and sig nil for the others, which are not signed:
// such a key is then skipped like any unknown key).
func (d *Decoder) decodeNodeFrom(r *msgp.Reader, n int, node *string, inc *uint64, from *string, sig *[]byte) error {
	return r.EachKey(n, func(k []byte) (err error) {
		switch {
		case string(k) == keyNode:
			*node, err = d.str(r)
		case string(k) == keyIncarnation:
			*inc, err = r.Uint()
		case string(k) == keyFrom && from != nil:
			*from, err = d.str(r)
		case string(k) == keySig && sig != nil:
			*sig, err = sigInto(r, *sig)
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
		case keyCertHave:
			m.CertHave, err = decodeCertHave(r)
		case keyCerts:
			m.Certs, err = decodeCerts(r)
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
		case keyFeatures:
			v, err = r.Uint()
			s.Features = Features(v)
		case keySig:
			s.Sig, err = sigInto(r, nil)
		default:
			err = r.Skip()
		}
		return err
	})
}

func decodeCertHave(r *msgp.Reader) ([]uint64, error) {
	count, err := r.ArrayLen() // bounded by the remaining bytes
	if err != nil {
		return nil, err
	}
	if count > MaxCertHave {
		return nil, ErrOversized
	}
	out := make([]uint64, 0, count)
	for ; count > 0; count-- {
		h, err := r.Uint()
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func decodeCerts(r *msgp.Reader) ([][]byte, error) {
	count, err := r.ArrayLen()
	if err != nil {
		return nil, err
	}
	if count > MaxCerts {
		return nil, ErrOversized
	}
	out := make([][]byte, 0, count)
	total := 0
	for ; count > 0; count-- {
		b, err := r.Bytes()
		if err != nil {
			return nil, err
		}
		if total += len(b); len(b) > MaxCertChain || total > MaxCertBytes {
			return nil, ErrOversized
		}
		out = append(out, append([]byte(nil), b...))
	}
	return out, nil
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
