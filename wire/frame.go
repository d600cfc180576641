package wire

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
)

// Stream frame layout (PROTOCOL.md, "Stream frames"):
//
//	length (u32 big-endian, bytes that follow) | flags (u8) | payload
//
// The payload is one message, `type | uvarint length | body`, compressed with the
// codec named by the low two flag bits. The payload is never longer than maxSize,
// compressed or not, and never decompresses beyond maxSize.
const (
	framePrefix = 4 + 1 // length + flags

	frameCodecMask uint8 = 0x03
	codecNone      uint8 = 0 // payload is the message itself
	codecS2        uint8 = 1 // payload is an S2 block (klauspost/compress/s2)
)

func encodeFrame(m Message) ([]byte, error) {
	buf := AppendMessage(make([]byte, framePrefix, framePrefix+sizeHint(m)), m)
	msg := buf[framePrefix:]
	if len(msg) > DefaultMaxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrOversized, len(msg), DefaultMaxFrame)
	}
	flags := codecNone
	if len(msg) > DefaultCompressAbove {
		// Compression pays only if it shrinks the frame; otherwise send it raw.
		out := make([]byte, framePrefix+s2.MaxEncodedLen(len(msg)))
		c := s2.Encode(out[framePrefix:], msg) // writes into out when it is large enough
		if len(c) < len(msg) {
			buf, flags = out[:framePrefix+len(c)], codecS2
		}
	}
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	buf[4] = flags
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

func decodeFrame(frame []byte, maxSize int, d *Decoder) (Message, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrame
	}
	if len(frame) < framePrefix {
		return nil, ErrTruncated
	}
	n := binary.BigEndian.Uint32(frame)
	if uint64(n) != uint64(len(frame)-4) {
		return nil, fmt.Errorf("%w: frame length %d, have %d bytes", ErrTruncated, n, len(frame)-4)
	}
	payload := frame[framePrefix:]
	if len(payload) > maxSize {
		return nil, ErrOversized
	}
	msg := payload
	switch frame[4] & frameCodecMask {
	case codecNone:
	case codecS2:
		// The S2 block states its decoded length up front: check it before
		// allocating, so a small frame cannot claim a huge output.
		size, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if size > maxSize {
			return nil, fmt.Errorf("%w: frame decompresses to %d bytes, limit %d", ErrOversized, size, maxSize)
		}
		if msg, err = s2.Decode(nil, payload); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown frame codec %d", ErrMalformed, frame[4]&frameCodecMask)
	}
	typ, body, used, err := splitMessage(msg)
	if err != nil {
		return nil, err
	}
	if used != len(msg) {
		return nil, fmt.Errorf("%w: %d bytes after the frame's message", ErrMalformed, len(msg)-used)
	}
	m := NewMessage(typ)
	if m == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, typ)
	}
	if err := d.Decode(body, m); err != nil {
		return nil, err
	}
	return m, nil
}

// readChunk bounds each allocation step of readFrame: memory grows only as fast as
// the peer actually sends bytes, whatever length it claims.
const readChunk = 64 << 10

func readFrame(r io.Reader, maxSize int) ([]byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrame
	}
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n < 1 {
		return nil, ErrTruncated
	}
	if uint64(n)-1 > uint64(maxSize) {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrOversized, n-1, maxSize)
	}
	total := 4 + int(n)
	buf := make([]byte, 4, min(total, readChunk))
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
