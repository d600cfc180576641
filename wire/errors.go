package wire

import (
	"errors"
	"fmt"
)

// Errors returned for malformed or unacceptable input. Callers compare with
// errors.Is; every one of them means "count and drop", never "crash".
var (
	// ErrTruncated means the input ended before a length, count or field it
	// announced was complete.
	ErrTruncated = errors.New("wire: truncated input")
	// ErrOversized means a length or count exceeds a protocol limit (MaxString,
	// MaxNodeStates, a frame's maxSize, the packet's MTU) or the bytes that remain.
	ErrOversized = errors.New("wire: length or count exceeds its limit")
	// ErrChecksum means a plain packet's or frame's checksum does not match its
	// contents.
	ErrChecksum = errors.New("wire: bad packet checksum")
	// ErrBadMagic means the input does not start with the packet magic "OR".
	ErrBadMagic = errors.New("wire: bad magic, not an OmniRelay packet")
	// ErrCluster means a packet's or frame's cluster hash is not ours
	// (Header.CheckCluster).
	ErrCluster = errors.New("wire: packet belongs to another cluster")
	// ErrMalformed means a message body is not the msgpack this message expects
	// (wrong type for a key, integer out of range, trailing bytes, nesting too deep),
	// or a packet or frame is inconsistent (compressed flag on a packet, a corrupt
	// compressed payload).
	ErrMalformed = errors.New("wire: malformed message body")
	// ErrUnknownType means a stream frame carries a message type this build does not
	// know. In packets unknown types are skipped instead and never cause this error.
	ErrUnknownType = errors.New("wire: unknown message type")
	// ErrUnsupportedVersion is matched (errors.Is) by every *VersionError.
	ErrUnsupportedVersion = errors.New("wire: unsupported protocol version")

	// ErrSealed means a sealed (encrypted) packet or frame was given to
	// PacketReader.Reset or DecodeFrame, which need Open or OpenFrame first, or to
	// Seal or SealFrame, which would seal it twice.
	ErrSealed = errors.New("wire: packet is already sealed")
	// ErrNotSealed means a plain packet or frame was given to Open or OpenFrame.
	ErrNotSealed = errors.New("wire: packet is not sealed")
	// ErrUnknownKey means no key of the keyring has the sealed packet's key id.
	ErrUnknownKey = errors.New("wire: no key with the packet's key id")
	// ErrAuth means a sealed packet failed authentication with every candidate key:
	// nothing of its payload was parsed.
	ErrAuth = errors.New("wire: packet failed authentication")
	// ErrReplay means an authenticated sealed packet or frame was refused by a
	// ReplayFilter: its sender counter was taken before or is below the sender's
	// window, or it was sealed for the other channel (a frame as a packet).
	ErrReplay = errors.New("wire: replayed sealed packet")
	// ErrKeySize means a key is not 32 bytes (AES-256).
	ErrKeySize = errors.New("wire: key must be 32 bytes")
	// ErrRemovePrimary means Keyring.Remove was asked to remove the primary key.
	ErrRemovePrimary = errors.New("wire: cannot remove the primary key")
	// ErrNoKey means a keyring operation named a key the keyring does not hold.
	ErrNoKey = errors.New("wire: key not in keyring")
)

// VersionError reports a packet of a protocol version this node cannot speak. It
// names both sides so an operator reading the log knows which end to upgrade.
type VersionError struct {
	Got uint8 // version in the received header
	Min uint8 // oldest version this node accepts (its Versions.Min)
	Max uint8 // newest version this node speaks (its Versions.Max)
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("wire: peer speaks protocol version %d, this node speaks %d..%d", e.Got, e.Min, e.Max)
}

// Is makes errors.Is(err, ErrUnsupportedVersion) true for a *VersionError.
func (e *VersionError) Is(target error) bool { return target == ErrUnsupportedVersion }
