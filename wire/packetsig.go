package wire

import "github.com/omnirelay/mesh/internal/msgp"

// Sender signatures of lease and shard packets (PROTOCOL.md 10.11). With node
// certificates the packet key says only that a packet comes from some member;
// a PacketSig after a packet's messages says which one, and to whom it was
// sent, so a key holder can neither vote nor renew as another member, nor
// replay a vote to another candidate.

// TypePacketSig is PacketSig's type, the first of the core range: no protocol
// owns it, so a receiver that does not check it (an older release, a cluster
// without node certificates, membership) skips it by its length.
const TypePacketSig MsgType = RangeCoreFirst

// packetClaimContext separates a packet signature from every other thing a
// node certificate's key signs (claims of 10.10, TLS handshakes).
const packetClaimContext = "omnirelay-mesh v1 packet\x00"

const keySender = "s"

// PacketSig ends a signed packet: Sender's signature (Sig: an 8-byte key id,
// then the signature, as in 10.10) of PacketClaim over the messages before it.
type PacketSig struct {
	Sender string
	Sig    []byte
}

func (*PacketSig) Type() MsgType { return TypePacketSig }

// AppendBody implements Body.
func (m *PacketSig) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 2)
	b = msgp.AppendStr(msgp.AppendStr(b, keySender), m.Sender)
	return msgp.AppendBin(msgp.AppendStr(b, keySig), m.Sig)
}

// DecodeBody implements Body. Sig is read into Sig's capacity, so a reused
// PacketSig decodes without allocating.
func (m *PacketSig) DecodeBody(r BodyReader, n int) error {
	*m = PacketSig{Sig: m.Sig[:0]}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keySender:
			m.Sender, err = r.ReadString()
		case keySig:
			m.Sig, err = sigInto(r.Reader, m.Sig)
		default:
			err = r.Skip()
		}
		return err
	})
}

// PacketClaim is the byte string sender signs for a packet to dest whose
// messages (type, length and body of each, back to back, as sent) are msgs:
// the context string, then label, sender and dest each as a 2-byte big-endian
// length and its bytes, then msgs to the end.
func PacketClaim(label, sender, dest string, msgs []byte) []byte {
	b := make([]byte, 0, len(packetClaimContext)+6+len(label)+len(sender)+len(dest)+len(msgs))
	b = append(b, packetClaimContext...)
	b = appendClaimStr(appendClaimStr(appendClaimStr(b, label), sender), dest)
	return append(b, msgs...)
}

// Messages returns the messages added since Reset, as a PacketSig signs them.
// The slice aliases the Packer until its next Add or Reset.
func (p *Packer) Messages() []byte { return p.buf[HeaderSize:] }

// Pos is the offset in the packet of the message the next call to Next reads
// (HeaderSize after Reset): the messages before a PacketSig are
// data[HeaderSize:Pos()] taken just before the Next that returns it.
func (r *PacketReader) Pos() int { return r.pos }
