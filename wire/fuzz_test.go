package wire

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fuzz targets for everything that parses peer input. Seeds: the test vectors and
// one packet/frame of every message type. Each target also checks a property on
// what it accepts, so a fuzzer finds wrong answers, not only panics.

func vectorSeeds(f *testing.F, kind string) [][]byte {
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.hex"))
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, file := range files {
		isFrame := strings.HasPrefix(filepath.Base(file), "frame-")
		if isFrame != (kind == "frame") {
			continue
		}
		hx, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, mustHex(strings.TrimSpace(string(hx))))
	}
	return out
}

// fuzzRegistry knows the membership messages and testProtocol's Body, so that the
// frame target reaches the decoding of another protocol's body too.
func fuzzRegistry(t tb) *Registry {
	reg, err := NewRegistry(Membership(), testProtocol())
	noErr(t, err)
	return reg
}

// reencodeStable checks that a message decoded from untrusted bytes encodes to a
// body that decodes to the same message.
func reencodeStable(t *testing.T, d *Decoder, m Message) {
	_, body, _, err := splitMessage(AppendMessage(nil, m))
	if err != nil {
		t.Fatal(err)
	}
	again := fuzzRegistry(t).New(m.Type())
	if err := d.Decode(body, again); err != nil {
		t.Fatalf("re-encoded %T does not decode: %v", m, err)
	}
	equal(t, m, again)
}

func FuzzPacketDecode(f *testing.F) {
	for _, s := range vectorSeeds(f, "packet") {
		f.Add(s)
	}
	p := NewPacker(DefaultMTU, 7)
	for _, m := range sampleMessages() {
		p.Reset()
		p.Add(m)
		f.Add(bytes.Clone(p.Bytes()))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r PacketReader
		var d Decoder
		if _, err := r.Reset(data); err == nil {
			readAll(t, &r, &d)
		}
		// The same bytes with a correct checksum, so that mutations reach the
		// message parser instead of dying at the checksum.
		if len(data) >= HeaderSize+ChecksumSize {
			fixed := bytes.Clone(data)
			putChecksum(fixed)
			if _, err := r.Reset(fixed); err == nil {
				readAll(t, &r, &d)
			}
		}
	})
}

func readAll(t *testing.T, r *PacketReader, d *Decoder) {
	for r.Next() {
		m := newMembershipMessage(r.Type())
		if m == nil {
			continue
		}
		if err := d.Decode(r.Body(), m); err != nil {
			continue
		}
		reencodeStable(t, d, m)
	}
}

// frameSeeds are plain frames of every message type, and a compressed one.
func frameSeeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, m := range append(sampleMessages(), benchPushPull(100)) {
		fr, err := EncodeFrame(m, 7)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, fr)
	}
	return out
}

func FuzzFrameDecode(f *testing.F) {
	for _, s := range vectorSeeds(f, "frame") {
		f.Add(s)
	}
	for _, s := range frameSeeds(f) {
		f.Add(s)
	}
	body, err := EncodeFrame(&testBody{Name: "a", Names: []string{"b", "c"}}, 7)
	noErr(f, err)
	f.Add(body)
	reg := fuzzRegistry(f)
	const max = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		var d Decoder
		d.Use(reg)
		// ReadFrame on a stream starting with data returns a prefix of it.
		if fr, err := ReadFrame(bytes.NewReader(data), max); err == nil && !bytes.HasPrefix(data, fr) {
			t.Fatalf("ReadFrame returned bytes that are not a prefix of the stream")
		}
		try := func(data []byte) {
			h, m, err := DecodeFrame(data, max, &d)
			if err != nil {
				return
			}
			if h.Flags&FlagSealed != 0 {
				t.Fatalf("sealed frame decoded")
			}
			reencodeStable(t, &d, m)
		}
		try(data)
		// The same bytes with a correct prefix and checksum, so that mutations reach
		// the decompressor and message parser instead of dying at the checksum.
		if len(data) >= 4+HeaderSize+ChecksumSize {
			try(reframe(bytes.Clone(data)))
		}
	})
}

func FuzzOpenFrame(f *testing.F) {
	k, err := NewKeyring(vectorKey, testKey(7))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range vectorSeeds(f, "frame") {
		f.Add(s)
	}
	for _, s := range frameSeeds(f) {
		sealed, err := SealFrame(k, s, bytes.NewReader(make([]byte, NonceSize)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, err := OpenFrame(k, data)
		if err != nil {
			var ve *VersionError
			known := []error{ErrTruncated, ErrBadMagic, ErrNotSealed, ErrUnknownKey, ErrAuth}
			for _, e := range known {
				if errors.Is(err, e) {
					return
				}
			}
			if errors.As(err, &ve) {
				return
			}
			t.Fatalf("unexpected error kind: %v", err)
		}
		// Only a genuine sealed frame opens, into a frame SealOverhead shorter whose
		// checksum holds (the seal covers it).
		if len(plain) != len(data)-SealOverhead {
			t.Fatalf("opened %d bytes from %d", len(plain), len(data))
		}
		var d Decoder
		if _, _, err := DecodeFrame(plain, 0, &d); errors.Is(err, ErrChecksum) || errors.Is(err, ErrSealed) {
			t.Fatalf("opened frame rejected: %v", err)
		}
		// A genuine frame is taken once, then refused as a replay.
		rf := NewReplayFilter(0)
		if err := rf.AdmitFrame(data); err != nil {
			t.Fatalf("first sight of a genuine frame refused: %v", err)
		}
		if err := rf.AdmitFrame(data); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed frame not refused: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	k, err := NewKeyring(vectorKey, testKey(7))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range vectorSeeds(f, "packet") {
		f.Add(s)
	}
	for _, m := range sampleMessages() {
		p := NewPacker(DefaultMTU-SealOverhead, 7)
		p.Add(m)
		sealed, err := Seal(k, p.Bytes(), bytes.NewReader(make([]byte, NonceSize)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, err := Open(k, data)
		if err != nil {
			var ve *VersionError
			known := []error{ErrTruncated, ErrBadMagic, ErrNotSealed, ErrUnknownKey, ErrAuth}
			for _, e := range known {
				if errors.Is(err, e) {
					return
				}
			}
			if errors.As(err, &ve) {
				return
			}
			t.Fatalf("unexpected error kind: %v", err)
		}
		// Only a genuine sealed packet opens; it must be exactly SealOverhead longer
		// than its plain form, whose reader must then accept its header.
		if len(plain) != len(data)-SealOverhead {
			t.Fatalf("opened %d bytes from %d", len(plain), len(data))
		}
		var r PacketReader
		if _, err := r.Reset(plain); err != nil && !errors.Is(err, ErrChecksum) {
			t.Fatalf("opened packet rejected: %v", err)
		}
		// A genuine packet is taken once, then refused as a replay.
		rf := NewReplayFilter(0)
		if err := rf.AdmitPacket(data); err != nil {
			t.Fatalf("first sight of a genuine packet refused: %v", err)
		}
		if err := rf.AdmitPacket(data); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed packet not refused: %v", err)
		}
	})
}
