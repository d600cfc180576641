package wire

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync"
)

// Packet and frame encryption (PROTOCOL.md, "Encryption"). A sealed packet, or
// the body of a sealed stream frame, is
//
//	header (FlagSealed set, key id) | nonce (12) | AES-256-GCM(messages | checksum) | tag (16)
//
// with the 9 header bytes as associated data, so a tampered header (cluster hash,
// key id, version, compressed flag) fails authentication like a tampered body.
// The nonce is the anti-replay data: the sender's id (8 bytes) and its counter (4),
// authenticated by GCM like the rest, checked by a ReplayFilter (replay.go).

const (
	KeySize   = 32 // bytes of a keyring key: AES-256
	NonceSize = 12 // bytes of the GCM nonce placed after the header: sender id (8) and counter (4)
	TagSize   = 16 // bytes of the GCM authentication tag at the end

	// senderFrames is the bit of a sender id that says it seals stream frames
	// (set) or packets (clear): the two have separate counters, so a frame held up
	// by TCP does not fall behind a window moved on by packets, and a receiver can
	// tell a packet replayed as a frame (or back) from a genuine one.
	senderFrames = 1 << 63
)

// channel selects the sender of packets or of frames.
type channel uint8

const (
	chanPackets channel = iota
	chanFrames
)

// sender is one sealing identity: a random id and the last counter used with it.
type sender struct {
	id  uint64
	ctr uint32 // last counter used; 0: no id drawn yet
}

// KeyID is the one-byte id a sealed packet names its key by: the first byte of
// SHA-256 of the key. Every node derives it from the key alone, so no coordination
// is needed; ids may collide, and Open then tries every key with the id.
func KeyID(key []byte) uint8 {
	sum := sha256.Sum256(key)
	return sum[0]
}

type keyEntry struct {
	key  []byte
	id   uint8
	aead cipher.AEAD // safe for concurrent use once built
}

// Keyring holds the keys of packet and frame encryption: one primary key that seals, and any
// number of others that only open, so keys rotate without a gap (install the new
// key everywhere, make it primary everywhere, then remove the old one). A Keyring is
// safe for concurrent use.
type Keyring struct {
	mu   sync.RWMutex
	keys []keyEntry // keys[0] is the primary

	smu     sync.Mutex
	senders [2]sender // by channel
}

// NewKeyring returns a keyring that seals with primary and opens with primary and
// others. Every key must be KeySize bytes (ErrKeySize).
func NewKeyring(primary []byte, others ...[]byte) (*Keyring, error) {
	k := &Keyring{}
	e, err := newKeyEntry(primary)
	if err != nil {
		return nil, err
	}
	k.keys = append(k.keys, e)
	for _, o := range others {
		if err := k.Install(o); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func newKeyEntry(key []byte) (keyEntry, error) {
	if len(key) != KeySize {
		return keyEntry{}, fmt.Errorf("%w: got %d bytes", ErrKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return keyEntry{}, err
	}
	aead, err := cipher.NewGCM(block) // 12-byte nonce, 16-byte tag
	if err != nil {
		return keyEntry{}, err
	}
	return keyEntry{key: bytes.Clone(key), id: KeyID(key), aead: aead}, nil
}

// index returns the position of key, or -1. The caller holds mu.
func (k *Keyring) index(key []byte) int {
	for i, e := range k.keys {
		if bytes.Equal(e.key, key) {
			return i
		}
	}
	return -1
}

// Install adds key as a key that opens packets; installing a present key does
// nothing.
func (k *Keyring) Install(key []byte) error {
	e, err := newKeyEntry(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.index(key) < 0 {
		k.keys = append(k.keys, e)
	}
	return nil
}

// UsePrimary makes key the key that seals, installing it first if needed. The old
// primary stays installed and keeps opening packets until removed.
func (k *Keyring) UsePrimary(key []byte) error {
	if err := k.Install(key); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	i := k.index(key)
	if i < 0 {
		return ErrNoKey // removed concurrently between Install and here
	}
	keys := make([]keyEntry, 0, len(k.keys)) // a new slice: Keys callers never see a half-built one
	keys = append(keys, k.keys[i])
	keys = append(keys, k.keys[:i]...)
	keys = append(keys, k.keys[i+1:]...)
	k.keys = keys
	return nil
}

// Remove removes key. Removing the primary is refused (ErrRemovePrimary), and
// removing an absent key is ErrNoKey.
func (k *Keyring) Remove(key []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch i := k.index(key); {
	case i < 0:
		return ErrNoKey
	case i == 0:
		return ErrRemovePrimary
	default:
		keys := make([]keyEntry, 0, len(k.keys)-1)
		keys = append(keys, k.keys[:i]...)
		k.keys = append(keys, k.keys[i+1:]...)
		return nil
	}
}

// Keys returns copies of the keys, primary first.
func (k *Keyring) Keys() [][]byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([][]byte, len(k.keys))
	for i, e := range k.keys {
		out[i] = bytes.Clone(e.key)
	}
	return out
}

func (k *Keyring) primary() keyEntry {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[0]
}

// nonce fills n with the channel's sender id and next counter (from 1). A sender
// id is drawn from rand on first use and again when its 2^32-1 counters are spent, so
// a (key, nonce) pair never repeats within a sender, and a restarted node is a new
// sender that no receiver's window locks out.
func (k *Keyring) nonce(n []byte, c channel, rand io.Reader) error {
	k.smu.Lock()
	defer k.smu.Unlock()
	s := &k.senders[c]
	if s.ctr == 0 || s.ctr == math.MaxUint32 {
		var id [8]byte
		if _, err := io.ReadFull(rand, id[:]); err != nil {
			return fmt.Errorf("wire: reading a sender id: %w", err)
		}
		s.id = binary.BigEndian.Uint64(id[:]) &^ senderFrames
		if c == chanFrames {
			s.id |= senderFrames
		}
		s.ctr = 0
	}
	s.ctr++
	binary.BigEndian.PutUint64(n, s.id)
	binary.BigEndian.PutUint32(n[8:], s.ctr)
	return nil
}

// Seal turns a plain packet built by a Packer into a sealed one, SealOverhead bytes
// longer, encrypted with the primary key. Its nonce is the keyring's packet sender
// id and next counter; rand (crypto/rand.Reader in production) supplies the 8
// bytes of a sender id the first time, and when the counter runs out. The packet
// itself is not modified.
func Seal(k *Keyring, packet []byte, rand io.Reader) ([]byte, error) {
	return appendSeal(make([]byte, 0, len(packet)+SealOverhead), k, packet, rand, chanPackets)
}

// appendSeal appends the sealed form of packet to dst (Seal; SealFrame seals a
// frame's body after its length prefix), with a nonce of channel c's sender.
func appendSeal(dst []byte, k *Keyring, packet []byte, rand io.Reader, c channel) ([]byte, error) {
	if len(packet) < HeaderSize+ChecksumSize {
		return nil, ErrTruncated
	}
	h, err := parseHeader(packet, knownLayouts)
	if err != nil {
		return nil, err
	}
	if h.Flags&FlagSealed != 0 {
		return nil, ErrSealed
	}
	e := k.primary()
	start := len(dst)
	out := append(dst, packet[:HeaderSize]...)
	out[start+3] |= FlagSealed
	out[start+4] = e.id
	out = append(out, make([]byte, NonceSize)...)
	nonce := out[start+HeaderSize:]
	if err := k.nonce(nonce, c, rand); err != nil {
		return nil, err
	}
	// The ciphertext goes after the nonce so it never overlaps the associated data.
	return e.aead.Seal(out, nonce, packet[HeaderSize:], out[start:start+HeaderSize]), nil
}

// Open authenticates and decrypts a sealed packet and returns the plain packet it
// was made from (FlagSealed cleared, key id 0), ready for PacketReader.Reset. If no
// key has the packet's key id it returns ErrUnknownKey; if every such key fails to
// authenticate it, ErrAuth, and nothing of the payload has been interpreted.
func Open(k *Keyring, packet []byte) ([]byte, error) {
	return appendOpen(make([]byte, 0, max(0, len(packet)-SealOverhead)), k, packet)
}

// appendOpen appends the plain form of a sealed packet to dst (Open; OpenFrame
// opens a frame's body after its length prefix).
func appendOpen(dst []byte, k *Keyring, packet []byte) ([]byte, error) {
	h, err := parseHeader(packet, knownLayouts)
	if err != nil {
		return nil, err
	}
	if h.Flags&FlagSealed == 0 {
		return nil, ErrNotSealed
	}
	if len(packet) < HeaderSize+SealOverhead+ChecksumSize {
		return nil, ErrTruncated
	}
	aad := packet[:HeaderSize]
	nonce := packet[HeaderSize : HeaderSize+NonceSize]
	ct := packet[HeaderSize+NonceSize:]
	start := len(dst)
	out := append(dst, aad...)
	out[start+3] &^= FlagSealed
	out[start+4] = 0

	k.mu.RLock()
	defer k.mu.RUnlock()
	tried := false
	for _, e := range k.keys {
		if e.id != h.KeyID {
			continue
		}
		tried = true
		if opened, err := e.aead.Open(out, nonce, ct, aad); err == nil {
			return opened, nil
		}
	}
	if !tried {
		return nil, ErrUnknownKey
	}
	return nil, ErrAuth
}
