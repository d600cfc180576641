package wire

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
)

// Stream frame layout (PROTOCOL.md, "Stream frames"):
//
//	length (u32 big-endian, bytes that follow) | body
//
// where the body has exactly the form of a packet: the 9-byte header (magic,
// version, flags, key id, cluster hash), one message as payload, and the checksum;
// or, sealed by SealFrame, the form of a sealed packet. So frames carry a version
// and a cluster hash, and encryption reuses Seal and Open. With FlagCompressed the
// payload is an S2 block of the message; compression happens before sealing, the
// only order in which it can pay. The payload is never longer than maxSize,
// compressed or not, and never decompresses beyond maxSize.
const (
	frameLen = 4 // the length prefix

	// frameMinBody is the smallest plain body: header and checksum around an empty
	// payload (which then fails as truncated).
	frameMinBody = HeaderSize + ChecksumSize
	// frameEnvelope is the most a body adds to its payload: a sealed body's header,
	// nonce, tag and inner checksum.
	frameEnvelope = HeaderSize + SealOverhead + ChecksumSize
)

func encodeFrame(m Message, version uint8, clusterHash uint32) ([]byte, error) {
	const start = frameLen + HeaderSize
	buf := make([]byte, frameLen, start+sizeHint(m)+ChecksumSize)
	buf = appendHeader(buf, Header{Version: version, ClusterHash: clusterHash})
	buf = AppendMessage(buf, m)
	msg := buf[start:]
	if len(msg) > DefaultMaxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrOversized, len(msg), DefaultMaxFrame)
	}
	if len(msg) > DefaultCompressAbove {
		// Compression pays only if it shrinks the frame; otherwise send it raw.
		out := make([]byte, start, start+s2.MaxEncodedLen(len(msg))+ChecksumSize)
		copy(out, buf[:start])
		// Better mode: 10% smaller push-pulls than the default for 2x the (µs) time.
		c := s2.EncodeBetter(out[start:cap(out)], msg) // writes into out when it is large enough
		if len(c) < len(msg) {
			buf = out[:start+len(c)] // c already sits there
			buf[frameLen+3] |= FlagCompressed
		}
	}
	buf = binary.BigEndian.AppendUint32(buf, checksum(buf[frameLen:]))
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-frameLen))
	return buf, nil
}

// sizeHint is a generous estimate of m's encoded size, so that encoding a large
// push-pull does not regrow (and copy) its buffer a dozen times.
func sizeHint(m Message) int {
	const fixed = 64 // type, length, map headers, keys and integers of one message
	switch m := m.(type) {
	case *PushPull:
		n := fixed + len(m.Meta)
		for i := range m.Nodes {
			n += 48 + len(m.Nodes[i].Name) + len(m.Nodes[i].Addr)
		}
		return n
	case *User:
		return fixed + len(m.Payload)
	case *MetaDelta:
		return fixed + len(m.Payload)
	case *Ack:
		return fixed + len(m.Payload)
	}
	return 256
}

// frameBody checks a frame's length prefix and returns its body.
func frameBody(frame []byte) ([]byte, error) {
	if len(frame) < frameLen {
		return nil, ErrTruncated
	}
	n := binary.BigEndian.Uint32(frame)
	if uint64(n) != uint64(len(frame)-frameLen) {
		return nil, fmt.Errorf("%w: frame length %d, have %d bytes", ErrTruncated, n, len(frame)-frameLen)
	}
	return frame[frameLen:], nil
}

func decodeFrame(frame []byte, maxSize int, d *Decoder) (Header, Message, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrame
	}
	body, err := frameBody(frame)
	if err != nil {
		return Header{}, nil, err
	}
	if len(body) < frameMinBody {
		return Header{}, nil, ErrTruncated
	}
	// As for packets: the version first, then nothing of a sealed body is read.
	var accept Versions
	if d != nil {
		accept = d.versions
	}
	h, err := parseHeader(body, accept.OrDefault())
	if err != nil {
		return h, nil, err
	}
	if h.Flags&FlagSealed != 0 {
		return h, nil, ErrSealed
	}
	end := len(body) - ChecksumSize
	if binary.BigEndian.Uint32(body[end:]) != checksum(body[:end]) {
		return h, nil, ErrChecksum
	}
	payload := body[HeaderSize:end]
	if len(payload) > maxSize {
		return h, nil, ErrOversized
	}
	msg := payload
	if h.Flags&FlagCompressed != 0 {
		// The S2 block states its decoded length up front: check it before
		// allocating, so a small frame cannot claim a huge output.
		size, err := s2.DecodedLen(payload)
		if err != nil {
			return h, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if size > maxSize {
			return h, nil, fmt.Errorf("%w: frame decompresses to %d bytes, limit %d", ErrOversized, size, maxSize)
		}
		if msg, err = s2.Decode(nil, payload); err != nil {
			return h, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	typ, mbody, used, err := splitMessage(msg)
	if err != nil {
		return h, nil, err
	}
	if used != len(msg) {
		return h, nil, fmt.Errorf("%w: %d bytes after the frame's message", ErrMalformed, len(msg)-used)
	}
	m := d.newMessage(typ)
	if m == nil {
		return h, nil, fmt.Errorf("%w: %d", ErrUnknownType, typ)
	}
	if err := d.Decode(mbody, m); err != nil {
		return h, nil, err
	}
	return h, m, nil
}

// sealFrame seals a frame's body as Seal seals a packet and rewrites the prefix.
func sealFrame(k *Keyring, frame []byte, rand io.Reader) ([]byte, error) {
	body, err := frameBody(frame)
	if err != nil {
		return nil, err
	}
	out, err := appendSeal(make([]byte, frameLen, frameLen+len(body)+SealOverhead), k, body, rand, chanFrames)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-frameLen))
	return out, nil
}

// openFrame opens a sealed frame's body as Open opens a packet and rewrites the
// prefix.
func openFrame(k *Keyring, frame []byte) ([]byte, error) {
	body, err := frameBody(frame)
	if err != nil {
		return nil, err
	}
	out, err := appendOpen(make([]byte, frameLen, frameLen+len(body)), k, body)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-frameLen))
	return out, nil
}

// readChunk bounds each allocation step of readFrame: memory grows only as fast as
// the peer actually sends bytes, whatever length it claims.
const readChunk = 64 << 10

// readFrame reads one frame; reserve, when not nil, is asked for the frame's total
// size once the prefix has passed the size check and before anything is allocated
// for the body, so a caller can bound the bytes of all the frames it reads at once.
func readFrame(r io.Reader, maxSize int, reserve func(size int) error) ([]byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrame
	}
	var prefix [frameLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n < frameMinBody {
		return nil, ErrTruncated
	}
	// The prefix alone cannot tell a sealed body from a plain one: allow the larger
	// envelope here; decodeFrame bounds the payload exactly.
	if uint64(n) > uint64(maxSize)+frameEnvelope {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrOversized, n, maxSize+frameEnvelope)
	}
	total := frameLen + int(n)
	if reserve != nil {
		if err := reserve(total); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, frameLen, min(total, readChunk))
	copy(buf, prefix[:])
	for len(buf) < total {
		step := min(total-len(buf), max(readChunk, len(buf))) // grow geometrically once data keeps coming
		buf = append(buf, make([]byte, step)...)
		if _, err := io.ReadFull(r, buf[len(buf)-step:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}
