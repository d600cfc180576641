package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/omnirelay/mesh/internal/msgp"
)

// This file pins the codec API that swim, stack, node and sim code against.
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
	DefaultCompressAbove = 256     // stream frame messages larger than this are compressed (when that shrinks them)
	SealOverhead         = 12 + 16 // AES-GCM nonce + tag added by Seal
)

// Packet layout (PROTOCOL.md, "Packets").
const (
	HeaderSize   = 9 // magic(2) version(1) flags(1) key id(1) cluster hash(4)
	ChecksumSize = 4 // lower 32 bits of xxhash64, big-endian, at the end of a plain packet

	// FlagSealed marks a packet or frame body sealed by Seal: after the header
	// come the nonce and the AES-GCM ciphertext of the messages and checksum.
	FlagSealed uint8 = 1 << 0
	// FlagCompressed marks a stream frame whose payload is an S2 block of its
	// message. Only frames set it: a packet carrying it is ErrMalformed.
	FlagCompressed uint8 = 1 << 1

	magic0, magic1 = 'O', 'R'
)

// Header is a packet's plain-text header.
type Header struct {
	Version     uint8  // protocol version of the packet
	Flags       uint8  // see Flag*
	KeyID       uint8  // keyring id of the key that sealed the packet (0 when plain)
	ClusterHash uint32 // ClusterHash(label): packets of another cluster are dropped
}

// CheckCluster returns ErrCluster unless the header carries want.
func (h Header) CheckCluster(want uint32) error {
	if h.ClusterHash != want {
		return ErrCluster
	}
	return nil
}

func appendHeader(b []byte, h Header) []byte {
	b = append(b, magic0, magic1, h.Version, h.Flags, h.KeyID)
	return binary.BigEndian.AppendUint32(b, h.ClusterHash)
}

// knownLayouts are the versions whose header and body layout this build knows:
// Seal and Open need no more than that, the node's own range is checked by
// PacketReader, Decoder (frames) and PacketVersion/FrameVersion.
var knownLayouts = Versions{MinProtocolVersion, PreviewVersion}

// parseHeader checks magic and version (against v) of a packet at least
// HeaderSize long. The version is checked before anything else is interpreted: a
// newer version may lay out the rest differently.
func parseHeader(data []byte, v Versions) (Header, error) {
	if len(data) < HeaderSize {
		return Header{}, ErrTruncated
	}
	if data[0] != magic0 || data[1] != magic1 {
		return Header{}, ErrBadMagic
	}
	h := Header{
		Version:     data[2],
		Flags:       data[3],
		KeyID:       data[4],
		ClusterHash: binary.BigEndian.Uint32(data[5:9]),
	}
	return h, v.Check(h.Version)
}

func checksum(b []byte) uint32 { return uint32(xxhash.Sum64(b)) }

// Packer builds one packet: a header, then messages, then a checksum.
// Typical use: Reset, Add the mandatory message, AddEncoded queued broadcasts while
// they fit, then Bytes. A Packer that will be sealed should be built with
// mtu - SealOverhead.
type Packer struct {
	buf   []byte // header and messages so far; the checksum goes past len
	limit int    // len(buf) may not exceed this (mtu - ChecksumSize)
	n     int    // messages added since Reset
	hdr   Header
}

// NewPacker returns a Packer for packets of at most mtu bytes (DefaultMTU if mtu
// is 0 or less).
func NewPacker(mtu int, clusterHash uint32) *Packer {
	if mtu <= 0 {
		mtu = DefaultMTU
	}
	p := &Packer{
		buf:   make([]byte, 0, mtu),
		limit: mtu - ChecksumSize,
		hdr:   Header{Version: ProtocolVersion, ClusterHash: clusterHash},
	}
	p.Reset()
	return p
}

// SetVersion makes the packets built from the next Reset carry protocol version
// v: the highest version every member the sender holds speaks (PROTOCOL.md
// section 7). NewPacker starts at ProtocolVersion.
func (p *Packer) SetVersion(v uint8) { p.hdr.Version = v }

// Reset empties the packet so the Packer can build the next one.
func (p *Packer) Reset() {
	p.buf = appendHeader(p.buf[:0], p.hdr)
	p.n = 0
}

// Add appends m if it fits; it reports false and leaves the packet unchanged if not.
func (p *Packer) Add(m Message) bool {
	start := len(p.buf)
	b := AppendMessage(p.buf, m)
	if len(b) > p.limit {
		p.buf = b[:start]
		return false
	}
	p.buf = b
	p.n++
	return true
}

// AddEncoded appends a message already encoded by AppendMessage if it fits.
func (p *Packer) AddEncoded(msg []byte) bool {
	if len(msg) > p.Room() {
		return false
	}
	p.buf = append(p.buf, msg...)
	p.n++
	return true
}

// Room is how many bytes of encoded message still fit.
func (p *Packer) Room() int { return max(0, p.limit-len(p.buf)) }

// Count is the number of messages added since Reset.
func (p *Packer) Count() int { return p.n }

// Bytes finishes the packet (checksum) and returns it. The slice is valid until the
// next Reset; callers that keep it copy it.
func (p *Packer) Bytes() []byte {
	// The checksum is written past len(p.buf), so a later Add simply overwrites it.
	return binary.BigEndian.AppendUint32(p.buf, checksum(p.buf))
}

// AppendMessage appends m encoded as `type | uvarint length | msgpack body` to dst.
func AppendMessage(dst []byte, m Message) []byte {
	dst = append(dst, byte(m.Type()), 0) // one length byte reserved: most bodies are < 128 bytes
	start := len(dst)
	dst = appendBody(dst, m)
	n := len(dst) - start
	if n < 0x80 {
		dst[start-1] = byte(n)
		return dst
	}
	// Longer body: widen the length in place by shifting the body right.
	var lb [binary.MaxVarintLen64]byte
	w := binary.PutUvarint(lb[:], uint64(n))
	dst = append(dst, lb[1:w]...)
	copy(dst[start-1+w:], dst[start:start+n])
	copy(dst[start-1:], lb[:w])
	return dst
}

// AppendRawMessage appends a message of type t whose msgpack body is already
// encoded, as `type | uvarint length | body`: for message types this package does
// not define (extensions), and for tests of how receivers skip them.
func AppendRawMessage(dst []byte, t MsgType, body []byte) []byte {
	dst = binary.AppendUvarint(append(dst, byte(t)), uint64(len(body)))
	return append(dst, body...)
}

// PacketReader walks the messages of a received plain (unsealed) packet without
// allocating per message.
type PacketReader struct {
	versions Versions // accepted versions (Accept); zero: DefaultVersions
	data     []byte   // the packet without its checksum
	pos      int      // start of the next message
	typ      MsgType
	body     []byte
	err      error
}

// Accept makes Reset accept packets of the versions in v (the node's own range)
// instead of DefaultVersions; a packet of another version is a *VersionError.
func (r *PacketReader) Accept(v Versions) { r.versions = v }

// Reset validates data (magic, version, checksum, bounds) and positions the reader
// before the first message. The reader aliases data.
func (r *PacketReader) Reset(data []byte) (Header, error) {
	*r = PacketReader{versions: r.versions}
	if len(data) < HeaderSize+ChecksumSize {
		r.err = ErrTruncated
		return Header{}, r.err
	}
	h, err := parseHeader(data, r.versions.OrDefault())
	if err == nil && h.Flags&FlagSealed != 0 {
		err = ErrSealed
	}
	if err == nil && h.Flags&FlagCompressed != 0 {
		err = fmt.Errorf("%w: compressed flag on a packet", ErrMalformed)
	}
	if err == nil {
		end := len(data) - ChecksumSize
		if binary.BigEndian.Uint32(data[end:]) != checksum(data[:end]) {
			err = ErrChecksum
		} else {
			r.data, r.pos = data[:end], HeaderSize
		}
	}
	r.err = err
	return h, err
}

// Next advances to the next message; it returns false at the end or on error (Err).
// Messages of unknown type are returned too: callers skip what they do not handle.
func (r *PacketReader) Next() bool {
	r.typ, r.body = 0, nil
	if r.err != nil || r.pos >= len(r.data) {
		return false
	}
	typ, body, n, err := splitMessage(r.data[r.pos:])
	if err != nil {
		r.err = err
		return false
	}
	r.typ, r.body = typ, body
	r.pos += n
	return true
}

// Type is the current message's type.
func (r *PacketReader) Type() MsgType { return r.typ }

// Body is the current message's msgpack body; it aliases the packet.
func (r *PacketReader) Body() []byte { return r.body }

// Err is the error that stopped Next, if any.
func (r *PacketReader) Err() error { return r.err }

// splitMessage splits the first `type | uvarint length | body` off b and returns
// the bytes it took.
func splitMessage(b []byte) (MsgType, []byte, int, error) {
	if len(b) < 2 {
		return 0, nil, 0, ErrTruncated
	}
	n, w := binary.Uvarint(b[1:])
	if w == 0 {
		return 0, nil, 0, ErrTruncated
	}
	if w < 0 {
		return 0, nil, 0, ErrOversized // uvarint overflows 64 bits
	}
	start := 1 + w
	if n > uint64(len(b)-start) {
		return 0, nil, 0, ErrTruncated
	}
	end := start + int(n)
	return MsgType(b[0]), b[start:end], end, nil
}

// Decoder decodes message bodies. It interns the strings it decodes (node names and
// addresses repeat), so that after warm-up decoding a Ping or an Ack allocates nothing.
// A Decoder is not safe for concurrent use. The zero value is ready to use.
//
// Byte-slice fields (Ack.Payload, PushPull.Meta, ...) and PushPull.Nodes reuse the
// capacity of the slices already in the message passed to Decode: a caller that
// keeps a decoded slice and decodes again into the same message must copy it first.
type Decoder struct {
	strs     map[string]string // intern table, emptied when it reaches internLimit
	shared   *Interner         // used instead of strs when set (Share)
	versions Versions          // accepted by DecodeFrame (Accept); zero: DefaultVersions
	reg      *Registry         // the message types DecodeFrame knows (Use); nil: Membership's
	body     msgp.Reader       // the reader of a Body's decoder: held here, it costs no allocation
}

// Use makes DecodeFrame with d make the messages of reg's protocols; nil (the
// zero Decoder) knows only this package's Membership messages, and frames of any
// other type are ErrUnknownType.
func (d *Decoder) Use(reg *Registry) { d.reg = reg }

// newMessage returns a new zero message of type t as d's registry knows it.
func (d *Decoder) newMessage(t MsgType) Message {
	if d.reg != nil {
		return d.reg.New(t)
	}
	return newMembershipMessage(t)
}

// Accept makes DecodeFrame with d accept frames of the versions in v (the node's
// own range) instead of DefaultVersions.
func (d *Decoder) Accept(v Versions) { d.versions = v }

// Share makes d intern strings in the table in, shared with other Decoders, instead
// of a table of its own; nil goes back to an own table. Many nodes in one process
// (the simulator) then hold one copy of each member name and address instead of one
// per node. d then inherits in's lack of safety for concurrent use.
func (d *Decoder) Share(in *Interner) { d.shared = in }

// Interner is a string intern table that several Decoders can share (Share). It
// holds at most its limit of strings; when full it is emptied and refilled, so a
// peer sending endless distinct names costs bounded memory. Not safe for concurrent
// use: share one only among Decoders used by one goroutine.
type Interner struct {
	strs  map[string]string
	limit int
}

// NewInterner returns an empty table holding at most limit strings (internLimit,
// 4096, if limit < 1). Size it to the distinct names and addresses of the cluster
// times two or more, or it is emptied over and over and sharing saves nothing.
func NewInterner(limit int) *Interner {
	if limit < 1 {
		limit = internLimit
	}
	return &Interner{strs: make(map[string]string, min(limit, 1024)), limit: limit}
}

// Len is the number of strings held.
func (in *Interner) Len() int { return len(in.strs) }

// Decode decodes body, a message of type m.Type(), into m. On error m is unspecified
// and the error says what was wrong.
func (d *Decoder) Decode(body []byte, m Message) error { return d.decode(body, m) }

// ClusterHash hashes a cluster label for the packet header: the lower 32 bits of
// xxhash64 (seed 0) of the label's UTF-8 bytes.
func ClusterHash(label string) uint32 { return uint32(xxhash.Sum64String(label)) }

// EncodeFrame encodes m as one complete plain stream frame of ProtocolVersion:
// length prefix, then a packet-form body (header with clusterHash, m compressed
// when that pays, checksum).
func EncodeFrame(m Message, clusterHash uint32) ([]byte, error) {
	return encodeFrame(m, ProtocolVersion, clusterHash)
}

// EncodeFrameVersion is EncodeFrame at protocol version v: what a node sends when
// some member it holds speaks only older versions than its own newest.
func EncodeFrameVersion(m Message, v uint8, clusterHash uint32) ([]byte, error) {
	return encodeFrame(m, v, clusterHash)
}

// DecodeFrame decodes one complete plain stream frame, its message made by the
// protocol d's registry names for its type (Use), refusing anything that would
// decompress beyond maxSize bytes (DefaultMaxFrame if maxSize is 0 or less). A
// sealed frame is ErrSealed (OpenFrame it first). The header is returned whenever it
// parsed, for the caller's Header.CheckCluster.
func DecodeFrame(frame []byte, maxSize int, d *Decoder) (Header, Message, error) {
	return decodeFrame(frame, maxSize, d)
}

// FrameVersion returns the *VersionError of a frame (plain or sealed, length prefix
// included) of a protocol version outside v, the node's own range, and nil
// otherwise, whatever else may be wrong with it: a receiver tells that drop, which
// names both versions, from the others before opening or decoding the frame.
func FrameVersion(frame []byte, v Versions) error {
	body, err := frameBody(frame)
	if err != nil {
		return nil
	}
	return PacketVersion(body, v)
}

// PacketVersion is FrameVersion for a packet, plain or sealed: checked before Open,
// so a sealed packet of a version the node does not speak is named as such.
func PacketVersion(packet []byte, v Versions) error {
	if _, err := parseHeader(packet, v); errors.Is(err, ErrUnsupportedVersion) {
		return err
	}
	return nil
}

// FrameCluster returns ErrCluster when a frame's header (plain or sealed, length
// prefix included) parses and carries a cluster hash other than want; nil
// otherwise. A receiver names a cluster-label mismatch with it before decoding.
func FrameCluster(frame []byte, want uint32) error {
	body, err := frameBody(frame)
	if err != nil {
		return nil
	}
	if h, err := parseHeader(body, knownLayouts); err == nil {
		return h.CheckCluster(want)
	}
	return nil
}

// SealFrame seals a plain frame's body as Seal seals a packet (primary key, nonce
// read from rand) and returns the sealed frame, SealOverhead bytes longer.
func SealFrame(k *Keyring, frame []byte, rand io.Reader) ([]byte, error) {
	return sealFrame(k, frame, rand)
}

// OpenFrame opens a frame sealed by SealFrame and returns the plain frame, ready for
// DecodeFrame; errors as Open (ErrNotSealed for a plain frame).
func OpenFrame(k *Keyring, frame []byte) ([]byte, error) { return openFrame(k, frame) }

// ReadFrame reads one complete stream frame, plain or sealed, from r, refusing
// frames whose payload could exceed maxSize (DefaultMaxFrame if 0 or less) before
// allocating, and growing its buffer only as bytes arrive. It returns the whole frame, length prefix included.
func ReadFrame(r io.Reader, maxSize int) ([]byte, error) { return readFrame(r, maxSize, nil) }

// ReadFrameReserve is ReadFrame that, once the length prefix has arrived and passed
// the maxSize check and before any buffer for the frame is allocated, calls reserve
// with the frame's total size (prefix included). An error from reserve ends the read
// and is returned as is: a reader of many streams at once uses it to hold the bytes
// of all their frames within one budget.
func ReadFrameReserve(r io.Reader, maxSize int, reserve func(size int) error) ([]byte, error) {
	return readFrame(r, maxSize, reserve)
}
