package wire

import "io"

// This file pins the codec API that swim, internal/host, node and sim code against.
// Signatures here may gain siblings but do not change without updating every caller.

// Protocol versions this implementation speaks.
const (
	ProtocolVersion    uint8 = 1 // the version written in headers we send
	MinProtocolVersion uint8 = 1 // the oldest version we still accept
)

// Sizes and limits.
const (
	DefaultMTU           = 1400    // bytes of a UDP payload, header to checksum
	DefaultMaxFrame      = 8 << 20 // bytes of a stream frame after decompression
	DefaultCompressAbove = 1024    // stream frames larger than this are compressed
	SealOverhead         = 12 + 16 // AES-GCM nonce + tag added by Seal
)

// Header is a packet's plain-text header.
type Header struct {
	Version     uint8  // protocol version of the packet
	Flags       uint8  // see Flag*
	KeyID       uint8  // keyring id of the key that sealed the packet (0 when plain)
	ClusterHash uint32 // ClusterHash(label): packets of another cluster are dropped
}

// Packer builds one packet: a header, then messages, then a checksum.
// Typical use: Reset, Add the mandatory message, AddEncoded queued broadcasts while
// they fit, then Bytes.
type Packer struct {
	impl packerImpl
}

// NewPacker returns a Packer for packets of at most mtu bytes.
func NewPacker(mtu int, clusterHash uint32) *Packer { return newPacker(mtu, clusterHash) }

// Reset empties the packet so the Packer can build the next one.
func (p *Packer) Reset() { p.reset() }

// Add appends m if it fits; it reports false and leaves the packet unchanged if not.
func (p *Packer) Add(m Message) bool { return p.add(m) }

// AddEncoded appends a message already encoded by AppendMessage if it fits.
func (p *Packer) AddEncoded(msg []byte) bool { return p.addEncoded(msg) }

// Room is how many bytes of encoded message still fit.
func (p *Packer) Room() int { return p.room() }

// Count is the number of messages added since Reset.
func (p *Packer) Count() int { return p.count() }

// Bytes finishes the packet (checksum) and returns it. The slice is valid until the
// next Reset; callers that keep it copy it.
func (p *Packer) Bytes() []byte { return p.bytes() }

// AppendMessage appends m encoded as `type | uvarint length | msgpack body` to dst.
func AppendMessage(dst []byte, m Message) []byte { return appendMessage(dst, m) }

// PacketReader walks the messages of a received plain (unsealed) packet without
// allocating per message.
type PacketReader struct {
	impl readerImpl
}

// Reset validates data (magic, version, checksum, bounds) and positions the reader
// before the first message. The reader aliases data.
func (r *PacketReader) Reset(data []byte) (Header, error) { return r.reset(data) }

// Next advances to the next message; it returns false at the end or on error (Err).
// Messages of unknown type are returned too: callers skip what they do not handle.
func (r *PacketReader) Next() bool { return r.next() }

// Type is the current message's type.
func (r *PacketReader) Type() MsgType { return r.typ() }

// Body is the current message's msgpack body; it aliases the packet.
func (r *PacketReader) Body() []byte { return r.body() }

// Err is the error that stopped Next, if any.
func (r *PacketReader) Err() error { return r.err() }

// Decoder decodes message bodies. It interns the strings it decodes (node names and
// addresses repeat), so that after warm-up decoding a Ping or an Ack allocates nothing.
// A Decoder is not safe for concurrent use.
type Decoder struct {
	impl decoderImpl
}

// Decode decodes body, a message of type m.Type(), into m. On error m is unspecified
// and the error says what was wrong.
func (d *Decoder) Decode(body []byte, m Message) error { return d.decode(body, m) }

// ClusterHash hashes a cluster label for the packet header.
func ClusterHash(label string) uint32 { return clusterHash(label) }

// EncodeFrame encodes m as one complete stream frame (length prefix, flags, body
// compressed when larger than DefaultCompressAbove).
func EncodeFrame(m Message) ([]byte, error) { return encodeFrame(m) }

// DecodeFrame decodes one complete stream frame, refusing anything that would
// decompress beyond maxSize bytes.
func DecodeFrame(frame []byte, maxSize int, d *Decoder) (Message, error) {
	return decodeFrame(frame, maxSize, d)
}

// ReadFrame reads one complete stream frame from r, refusing frames larger than
// maxSize before allocating.
func ReadFrame(r io.Reader, maxSize int) ([]byte, error) { return readFrame(r, maxSize) }
