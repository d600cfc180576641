package wire

import (
	"bytes"
	"sync"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func plainPacket(t *testing.T) []byte {
	t.Helper()
	p := NewPacker(DefaultMTU-SealOverhead, ClusterHash("prod"))
	check(t, p.Add(&Ping{Seq: 3, Target: "b", Source: "a", SourceAddr: "10.0.0.1:7946"}), "ping fits")
	check(t, p.Add(&Alive{Node: "c", Addr: "10.0.0.3:7946", Incarnation: 2, ProtoMin: 1, ProtoMax: 1}), "alive fits")
	return bytes.Clone(p.Bytes())
}

func TestSealOpenRoundTrip(t *testing.T) {
	k, err := NewKeyring(testKey(1), testKey(2))
	noErr(t, err)
	plain := plainPacket(t)
	sealed, err := Seal(k, plain, bytes.NewReader(bytes.Repeat([]byte{9}, NonceSize)))
	noErr(t, err)
	equal(t, len(plain)+SealOverhead, len(sealed))
	check(t, sealed[3]&FlagSealed != 0, "sealed flag not set")
	equal(t, KeyID(testKey(1)), sealed[4])
	// The nonce is the sender id drawn from rand (top bit clear: a packet sender)
	// and counter 1; the next seal counts on under the same id.
	equal(t, []byte{9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 1}, sealed[HeaderSize:HeaderSize+NonceSize])
	again, err := Seal(k, plain, bytes.NewReader(nil))
	noErr(t, err)
	equal(t, []byte{9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 2}, again[HeaderSize:HeaderSize+NonceSize])

	var r PacketReader
	_, err = r.Reset(sealed)
	isErr(t, err, ErrSealed)

	opened, err := Open(k, sealed)
	noErr(t, err)
	equal(t, plain, opened)
	_, err = r.Reset(opened)
	noErr(t, err)

	_, err = Open(k, plain)
	isErr(t, err, ErrNotSealed)
	_, err = Seal(k, sealed, bytes.NewReader(make([]byte, NonceSize)))
	isErr(t, err, ErrSealed)
}

func TestOpenRejectsTampering(t *testing.T) {
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	sealed, err := Seal(k, plainPacket(t), bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	// Every byte after the magic and version (which are checked in the clear
	// first), and the key id (which selects the key), is authenticated.
	for i := 3; i < len(sealed); i++ {
		if i == 4 {
			continue
		}
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x40
		_, err := Open(k, bad)
		if i == 3 && bad[3]&FlagSealed == 0 {
			isErr(t, err, ErrNotSealed)
			continue
		}
		isErr(t, err, ErrAuth)
	}
	_, err = Open(k, sealed[:len(sealed)-1])
	isErr(t, err, ErrAuth)
	_, err = Open(k, sealed[:HeaderSize+SealOverhead])
	isErr(t, err, ErrTruncated)
}

func TestOpenUnknownKey(t *testing.T) {
	sender, err := NewKeyring(testKey(1))
	noErr(t, err)
	receiver, err := NewKeyring(testKey(2))
	noErr(t, err)
	check(t, KeyID(testKey(1)) != KeyID(testKey(2)), "test keys collide")
	sealed, err := Seal(sender, plainPacket(t), bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	_, err = Open(receiver, sealed)
	isErr(t, err, ErrUnknownKey)
}

func TestOpenTriesEveryKeyWithTheID(t *testing.T) {
	// Find two keys whose ids collide: among 257 keys two must.
	seen := map[uint8][]byte{}
	var a, b []byte
	for i := 0; a == nil; i++ {
		key := make([]byte, KeySize)
		key[0], key[1] = byte(i), byte(i>>8)
		id := KeyID(key)
		if prev, ok := seen[id]; ok {
			a, b = prev, key
		}
		seen[id] = key
	}
	sender, err := NewKeyring(b)
	noErr(t, err)
	receiver, err := NewKeyring(a, b) // a, tried first, fails; b succeeds
	noErr(t, err)
	plain := plainPacket(t)
	sealed, err := Seal(sender, plain, bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	opened, err := Open(receiver, sealed)
	noErr(t, err)
	equal(t, plain, opened)
}

func TestKeyringRotation(t *testing.T) {
	_, err := NewKeyring(make([]byte, 16))
	isErr(t, err, ErrKeySize)
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	isErr(t, k.Install(make([]byte, 31)), ErrKeySize)
	noErr(t, k.Install(testKey(2)))
	noErr(t, k.Install(testKey(2))) // idempotent
	equal(t, [][]byte{testKey(1), testKey(2)}, k.Keys())

	old, err := Seal(k, plainPacket(t), bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	noErr(t, k.UsePrimary(testKey(2)))
	equal(t, [][]byte{testKey(2), testKey(1)}, k.Keys())
	isErr(t, k.Remove(testKey(2)), ErrRemovePrimary)
	_, err = Open(k, old) // still opens with the former primary
	noErr(t, err)
	noErr(t, k.Remove(testKey(1)))
	isErr(t, k.Remove(testKey(1)), ErrNoKey)
	_, err = Open(k, old)
	isErr(t, err, ErrUnknownKey)

	noErr(t, k.UsePrimary(testKey(3))) // installs a new key on the way
	equal(t, [][]byte{testKey(3), testKey(2)}, k.Keys())

	// Keys returns copies: changing them changes nothing in the keyring.
	k.Keys()[0][0] = 0xff
	equal(t, testKey(3), k.Keys()[0])
}

func TestKeyringConcurrentRotation(t *testing.T) {
	k, err := NewKeyring(testKey(1), testKey(2))
	noErr(t, err)
	plain := plainPacket(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			if err := k.UsePrimary(testKey(byte(1 + i%2))); err != nil {
				t.Error(err) // not Fatal: this is not the test's goroutine
				return
			}
		}
	}()
	for range 200 {
		sealed, err := Seal(k, plain, bytes.NewReader(make([]byte, NonceSize)))
		noErr(t, err)
		opened, err := Open(k, sealed)
		noErr(t, err)
		equal(t, plain, opened)
	}
	wg.Wait()
}

// The three drops of sealed input PROTOCOL.md 2.4 names: a plain packet where
// keys are required (ErrNotSealed), a sealed one where there are none
// (ErrSealed: PacketReader refuses it unopened), and a sealed one shorter than
// its envelope, header + nonce + tag + checksum (ErrTruncated, before any key is tried).
func TestDropsOfSealedInputAreNamed(t *testing.T) {
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	plain := plainPacket(t)
	sealed, err := Seal(k, plain, bytes.NewReader(bytes.Repeat([]byte{9}, NonceSize)))
	noErr(t, err)
	_, err = Open(k, plain)
	isErr(t, err, ErrNotSealed)
	var r PacketReader
	_, err = r.Reset(sealed)
	isErr(t, err, ErrSealed)
	_, err = Open(k, sealed[:HeaderSize+SealOverhead+ChecksumSize-1])
	isErr(t, err, ErrTruncated)
}
