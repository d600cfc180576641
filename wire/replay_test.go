package wire

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// sealedWith seals the test packet with k, whose sender id comes from idByte.
func sealedWith(t *testing.T, k *Keyring, idByte byte) []byte {
	t.Helper()
	sealed, err := Seal(k, plainPacket(t), bytes.NewReader(bytes.Repeat([]byte{idByte}, 8)))
	noErr(t, err)
	return sealed
}

func TestReplayFilterTakesEachPacketOnce(t *testing.T) {
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	f := NewReplayFilter(0)
	var sealed [][]byte
	for range 5 {
		sealed = append(sealed, sealedWith(t, k, 3))
	}
	noErr(t, f.AdmitPacket(sealed[0]))
	noErr(t, f.AdmitPacket(sealed[2]))
	isErr(t, f.AdmitPacket(sealed[2]), ErrReplay)
	noErr(t, f.AdmitPacket(sealed[1])) // reordered, inside the window: taken once
	isErr(t, f.AdmitPacket(sealed[1]), ErrReplay)
	isErr(t, f.AdmitPacket(sealed[0]), ErrReplay)
	noErr(t, f.AdmitPacket(sealed[4]))
	noErr(t, f.AdmitPacket(sealed[3]))
	equal(t, 1, f.Senders())

	// A packet more than ReplayWindow seals old is refused even if never seen.
	old := sealedWith(t, k, 3)
	for range ReplayWindow {
		sealedWith(t, k, 3)
	}
	noErr(t, f.AdmitPacket(sealedWith(t, k, 3)))
	isErr(t, f.AdmitPacket(old), ErrReplay)

	// A restarted sender (a new keyring: a new id) is not locked out.
	k2, err := NewKeyring(testKey(1))
	noErr(t, err)
	noErr(t, f.AdmitPacket(sealedWith(t, k2, 4)))
	equal(t, 2, f.Senders())
}

// A sealed frame body replayed as a packet, or a packet as a frame, is refused:
// packets and frames have senders of their own.
func TestReplayFilterSeparatesPacketsAndFrames(t *testing.T) {
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	f := NewReplayFilter(0)
	frame, err := EncodeFrame(&Ping{Seq: 1, Target: "b", Source: "a"}, 7)
	noErr(t, err)
	sealedFrame, err := SealFrame(k, frame, bytes.NewReader(bytes.Repeat([]byte{5}, 8)))
	noErr(t, err)
	check(t, sealedFrame[4+HeaderSize]&0x80 != 0, "a frame sender id has its top bit set")
	_, err = Open(k, sealedFrame[4:]) // the body opens as a packet...
	noErr(t, err)
	isErr(t, f.AdmitPacket(sealedFrame[4:]), ErrReplay) // ...but is not taken as one
	noErr(t, f.AdmitFrame(sealedFrame))
	isErr(t, f.AdmitFrame(sealedFrame), ErrReplay)

	packet := sealedWith(t, k, 5)
	check(t, packet[HeaderSize]&0x80 == 0, "a packet sender id has its top bit clear")
	asFrame := append([]byte{0, 0, 0, 0}, packet...)
	isErr(t, f.AdmitFrame(asFrame), ErrReplay)
	noErr(t, f.AdmitPacket(packet))
}

// The filter remembers at most its cap of senders and forgets the least recently
// heard one first; a forgotten sender starts afresh, which is what lets one of its
// recorded packets be replayed (the documented cost of an eviction).
func TestReplayFilterEvictsLeastRecentlyHeard(t *testing.T) {
	f := NewReplayFilter(2)
	var keys []*Keyring
	var first [][]byte
	for i := range 3 {
		k, err := NewKeyring(testKey(1))
		noErr(t, err)
		keys = append(keys, k)
		first = append(first, sealedWith(t, k, byte(10+i)))
	}
	noErr(t, f.AdmitPacket(first[0]))
	noErr(t, f.AdmitPacket(first[1]))
	noErr(t, f.AdmitPacket(sealedWith(t, keys[0], 0))) // sender 0 heard again: sender 1 is now the oldest
	noErr(t, f.AdmitPacket(first[2]))                  // evicts sender 1
	equal(t, 2, f.Senders())
	equal(t, uint64(1), f.Evicted())
	isErr(t, f.AdmitPacket(first[0]), ErrReplay) // sender 0 kept its window
	noErr(t, f.AdmitPacket(first[1]))            // sender 1 forgotten: its replay is taken
}

func TestSenderIDRenewsWhenCounterRunsOut(t *testing.T) {
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	a := sealedWith(t, k, 1)
	k.senders[chanPackets].ctr = math.MaxUint32 - 1
	b := sealedWith(t, k, 2) // the last counter of id 0x0101...
	equal(t, a[HeaderSize:HeaderSize+8], b[HeaderSize:HeaderSize+8])
	equal(t, []byte{0xff, 0xff, 0xff, 0xff}, b[HeaderSize+8:HeaderSize+NonceSize])
	c := sealedWith(t, k, 2) // a new id, counter 1
	equal(t, []byte{2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 1}, c[HeaderSize:HeaderSize+NonceSize])
}

// The window against a brute-force reference: a counter is taken iff it was never
// taken and is above the highest taken minus ReplayWindow.
func TestReplayWindowMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 50 {
		var e replayEntry
		seen := map[uint32]bool{}
		var top uint32
		for i := range 2000 {
			var ctr uint32
			switch rng.IntN(4) {
			case 0:
				ctr = top + 1 + uint32(rng.IntN(3*ReplayWindow))
			default:
				ctr = max(1, top-uint32(min(int(top), rng.IntN(ReplayWindow+64))))
			}
			want := !seen[ctr] && (i == 0 || ctr > top || top-ctr < ReplayWindow)
			got := e.take(i == 0, ctr)
			if got != want {
				t.Fatalf("run %d step %d: counter %d (highest %d): took %v, want %v", run, i, ctr, top, got, want)
			}
			if want {
				seen[ctr] = true
				top = max(top, ctr)
			}
		}
	}
}

// take is admit's window step alone, for the reference test.
func (e *replayEntry) take(first bool, ctr uint32) bool {
	if first {
		e.top, e.seen[0] = ctr, 1
		return true
	}
	return !errors.Is(e.step(ctr), ErrReplay)
}
