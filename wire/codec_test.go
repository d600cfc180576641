package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// sampleMessages has one message of every type, with every field set.
func sampleMessages() []Message {
	return []Message{
		&Ping{Seq: 7, Target: "node-b", Source: "node-a", SourceAddr: "10.0.0.1:7946"},
		&IndirectPing{Seq: 1 << 31, Target: "node-c", TargetAddr: "10.0.0.3:7946", Source: "node-a", SourceAddr: "10.0.0.1:7946", WantNack: true},
		&Ack{Seq: 9, Payload: []byte{1, 2, 3}},
		&Nack{Seq: 300},
		&Alive{Node: "node-a", Addr: "10.0.0.1:7946", Incarnation: 1 << 40, ProtoMin: 1, ProtoMax: 2},
		&Suspect{Node: "node-b", Incarnation: 3, From: "node-a"},
		&Dead{Node: "node-b", Incarnation: 4, From: "node-c"},
		&Leave{Node: "node-d", Incarnation: 5},
		&PushPull{Join: true, Nodes: []NodeState{
			{Name: "node-a", Addr: "10.0.0.1:7946", Incarnation: 2, Status: StatusAlive, ProtoMin: 1, ProtoMax: 1},
			{Name: "node-b", Addr: "10.0.0.2:7946", Incarnation: 70000, Status: StatusSuspect, ProtoMin: 1, ProtoMax: 1},
		}, Meta: []byte("meta")},
		&User{Payload: bytes.Repeat([]byte("u"), 300)},
		&MetaDelta{Payload: []byte{0xff}},
		&Digest{Hash: 0xdeadbeefcafef00d, Members: 12},
	}
}

func TestPacketRoundTripEveryMessage(t *testing.T) {
	p := NewPacker(DefaultMTU, ClusterHash("prod"))
	msgs := sampleMessages()
	for _, m := range msgs {
		check(t, p.Add(m), "%T does not fit", m)
	}
	equal(t, len(msgs), p.Count())
	pkt := p.Bytes()
	check(t, len(pkt) <= DefaultMTU, "%d > %d", len(pkt), DefaultMTU)

	var r PacketReader
	var d Decoder
	h, err := r.Reset(pkt)
	noErr(t, err)
	equal(t, Header{Version: ProtocolVersion, ClusterHash: ClusterHash("prod")}, h)
	noErr(t, h.CheckCluster(ClusterHash("prod")))
	isErr(t, h.CheckCluster(ClusterHash("staging")), ErrCluster)
	i := 0
	for r.Next() {
		check(t, i < len(msgs), "%d >= %d", i, len(msgs))
		equal(t, msgs[i].Type(), r.Type())
		got := newMembershipMessage(r.Type())
		noErr(t, d.Decode(r.Body(), got))
		equal(t, msgs[i], got)
		i++
	}
	noErr(t, r.Err())
	equal(t, len(msgs), i)
}

func TestFrameRoundTripEveryMessage(t *testing.T) {
	var d Decoder
	for _, m := range sampleMessages() {
		f, err := EncodeFrame(m, ClusterHash("prod"))
		noErr(t, err)
		h, got, err := DecodeFrame(f, DefaultMaxFrame, &d)
		noErr(t, err)
		equal(t, m, got)
		h.Flags &^= FlagCompressed // whether compression paid depends on the message
		equal(t, Header{Version: ProtocolVersion, ClusterHash: ClusterHash("prod")}, h)
		read, err := ReadFrame(bytes.NewReader(f), DefaultMaxFrame)
		noErr(t, err)
		equal(t, f, read)
	}
}

func TestFrameCompressesLargePushPull(t *testing.T) {
	pp := &PushPull{}
	for i := range 500 {
		pp.Nodes = append(pp.Nodes, NodeState{Name: "node-" + itoa(i), Addr: "10.0.1." + itoa(i%250) + ":7946", Incarnation: uint64(i), ProtoMin: 1, ProtoMax: 1})
	}
	raw := AppendMessage(nil, pp)
	f, err := EncodeFrame(pp, 7)
	noErr(t, err)
	check(t, f[4+3]&FlagCompressed != 0, "flags %#x: not compressed", f[4+3])
	check(t, len(f) < len(raw)/2, "%d >= %d", len(f), len(raw)/2)
	var d Decoder
	h, got, err := DecodeFrame(f, DefaultMaxFrame, &d)
	noErr(t, err)
	equal(t, pp, got)
	equal(t, FlagCompressed, h.Flags)
	// The same frame with a limit below its decompressed size is refused.
	_, _, err = DecodeFrame(f, len(raw)-1, &d)
	isErr(t, err, ErrOversized)

	// Sealing keeps the compression (compress, then seal) and opens back exactly.
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	sealed, err := SealFrame(k, f, bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	equal(t, len(f)+SealOverhead, len(sealed))
	equal(t, FlagSealed|FlagCompressed, sealed[4+3])
	opened, err := OpenFrame(k, sealed)
	noErr(t, err)
	equal(t, f, opened)
}

func TestReadFrameRefusesOversizedBeforeReading(t *testing.T) {
	// A prefix claiming 1 GiB followed by nothing: refused from the prefix alone.
	_, err := ReadFrame(bytes.NewReader([]byte{0x40, 0, 0, 0, 0}), DefaultMaxFrame)
	isErr(t, err, ErrOversized)
	// A prefix claiming 1 MiB followed by 10 bytes: truncated, not a 1 MiB buffer.
	_, err = ReadFrame(bytes.NewReader(append([]byte{0, 0x10, 0, 0}, make([]byte, 10)...)), DefaultMaxFrame)
	isErr(t, err, ioErrUnexpectedEOF())
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r    *bytes.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func TestReadFrameReserveAsksBeforeReadingTheBody(t *testing.T) {
	f, err := EncodeFrame(&User{Payload: bytes.Repeat([]byte{'x'}, 1000)}, 0)
	noErr(t, err)
	var asked []int
	got, err := ReadFrameReserve(bytes.NewReader(f), DefaultMaxFrame, func(n int) error { asked = append(asked, n); return nil })
	noErr(t, err)
	equal(t, f, got)
	equal(t, []int{len(f)}, asked)

	// A refusal ends the read after the prefix, with the reserve's own error.
	refused := errors.New("over budget")
	cr := &countingReader{r: bytes.NewReader(f)}
	_, err = ReadFrameReserve(cr, DefaultMaxFrame, func(int) error { return refused })
	isErr(t, err, refused)
	equal(t, 4, cr.read)

	// An oversized claim is refused by the size check: nothing is asked.
	asked = nil
	_, err = ReadFrameReserve(bytes.NewReader([]byte{0x40, 0, 0, 0, 0}), DefaultMaxFrame, func(n int) error { asked = append(asked, n); return nil })
	isErr(t, err, ErrOversized)
	equal(t, 0, len(asked))
}

func TestAppendMessageLengthPrefix(t *testing.T) {
	for _, n := range []int{0, 100, 120, 125, 126, 127, 128, 200, 20000} {
		m := &User{Payload: bytes.Repeat([]byte{'x'}, n)}
		b := AppendMessage([]byte("prefix"), m)
		equal(t, "prefix", string(b[:6]))
		typ, body, used, err := splitMessage(b[6:])
		noErr(t, err)
		equal(t, len(b)-6, used)
		equal(t, TypeUser, typ)
		var got User
		var d Decoder
		noErr(t, d.Decode(body, &got))
		equal(t, n, len(got.Payload))
	}
}

func TestPackerStopsAtMTU(t *testing.T) {
	p := NewPacker(200, 1)
	added := 0
	for p.Add(&Alive{Node: strings.Repeat("n", 20), Addr: "10.0.0.1:7946", Incarnation: 1}) {
		added++
	}
	check(t, added > 1, "%d <= %d", added, 1)
	before := p.Bytes()
	check(t, len(before) <= 200, "%d > %d", len(before), 200)
	equal(t, added, p.Count())
	enc := AppendMessage(nil, &Nack{Seq: 1})
	if len(enc) <= p.Room() {
		check(t, p.AddEncoded(enc), "want true")
	} else {
		check(t, !(p.AddEncoded(enc)), "want false")
	}
	check(t, len(p.Bytes()) <= 200, "%d > %d", len(p.Bytes()), 200)
	p.Reset()
	equal(t, 0, p.Count())
	equal(t, 200-HeaderSize-ChecksumSize, p.Room())
}

func TestPacketReaderErrors(t *testing.T) {
	p := NewPacker(DefaultMTU, 5)
	p.Add(&Ping{Seq: 1, Target: "b", Source: "a", SourceAddr: "a:1"})
	good := bytes.Clone(p.Bytes())
	var r PacketReader

	_, err := r.Reset(good[:HeaderSize+ChecksumSize-1])
	isErr(t, err, ErrTruncated)

	bad := bytes.Clone(good)
	bad[0] = 'X'
	_, err = r.Reset(bad)
	isErr(t, err, ErrBadMagic)

	bad = bytes.Clone(good)
	bad[len(bad)-6] ^= 1
	_, err = r.Reset(bad)
	isErr(t, err, ErrChecksum)

	bad = bytes.Clone(good)
	bad[2] = ProtocolVersion + 1
	_, err = r.Reset(bad)
	ve, ok := err.(*VersionError)
	check(t, ok, "error %v is not a *VersionError", err)
	equal(t, VersionError{Got: ProtocolVersion + 1, Min: MinProtocolVersion, Max: ProtocolVersion}, *ve)
	isErr(t, err, ErrUnsupportedVersion)
	check(t, strings.Contains(err.Error(), "version 2"), "%q lacks %q", err.Error(), "version 2")
	check(t, strings.Contains(err.Error(), "1..1"), "%q lacks %q", err.Error(), "1..1")

	bad = bytes.Clone(good)
	bad[3] |= FlagSealed
	_, err = r.Reset(bad)
	isErr(t, err, ErrSealed)

	// A message claiming more bytes than the packet holds, with a valid checksum.
	p.Reset()
	trunc := append(p.Bytes()[:HeaderSize], byte(TypePing), 0x80, 0x80, 0x80, 0x80, 0x04) // 1 GiB
	trunc = append(trunc, 0, 0, 0, 0)
	putChecksum(trunc)
	_, err = r.Reset(trunc)
	noErr(t, err)
	check(t, !(r.Next()), "want false")
	isErr(t, r.Err(), ErrTruncated)
}

// putChecksum rewrites the checksum of a hand-made packet.
func putChecksum(pkt []byte) {
	end := len(pkt) - ChecksumSize
	c := checksum(pkt[:end])
	pkt[end], pkt[end+1], pkt[end+2], pkt[end+3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
}

func TestUnknownTypeIsSkipped(t *testing.T) {
	p := NewPacker(DefaultMTU, 0)
	// A type from the extension range with an arbitrary body, between two known ones.
	unknown := append([]byte{200, 3}, 0xc3, 0xc3, 0xc3)
	check(t, p.Add(&Nack{Seq: 1}), "want true")
	check(t, p.AddEncoded(unknown), "want true")
	check(t, p.Add(&Nack{Seq: 2}), "want true")
	var r PacketReader
	_, err := r.Reset(p.Bytes())
	noErr(t, err)
	var seqs []uint32
	var d Decoder
	for r.Next() {
		m := newMembershipMessage(r.Type())
		if m == nil {
			continue
		}
		noErr(t, d.Decode(r.Body(), m))
		seqs = append(seqs, m.(*Nack).Seq)
	}
	noErr(t, r.Err())
	equal(t, []uint32{1, 2}, seqs)
}

func TestDecodeSkipsUnknownKeysAndZeroesMissing(t *testing.T) {
	// {"q": 5, "zz": [1, {"x": nil}], "s": "a"} : unknown key skipped, t and sa missing.
	body := []byte{0x83, 0xa1, 'q', 0x05, 0xa2, 'z', 'z', 0x92, 0x01, 0x81, 0xa1, 'x', 0xc0, 0xa1, 's', 0xa1, 'a'}
	m := &Ping{Target: "stale", SourceAddr: "stale"}
	var d Decoder
	noErr(t, d.Decode(body, m))
	equal(t, &Ping{Seq: 5, Source: "a"}, m)
}

func TestDecodeErrors(t *testing.T) {
	var d Decoder
	cases := []struct {
		name string
		body []byte
		m    Message
		want error
	}{
		{"empty", nil, &Ping{}, ErrTruncated},
		{"not a map", []byte{0x01}, &Ping{}, ErrMalformed},
		{"seq too large", []byte{0x81, 0xa1, 'q', 0xcf, 1, 0, 0, 0, 0, 0, 0, 0}, &Nack{}, ErrMalformed},
		{"negative seq", []byte{0x81, 0xa1, 'q', 0xd0, 0xff}, &Nack{}, ErrMalformed},
		{"trailing bytes", []byte{0x80, 0x00}, &Nack{}, ErrMalformed},
		{"string too long", append([]byte{0x81, 0xa1, 't', 0xda, 0x02, 0x01}, make([]byte, 513)...), &Ping{}, ErrOversized},
		{"string claims 1 GiB", []byte{0x81, 0xa1, 't', 0xdb, 0x40, 0, 0, 0}, &Ping{}, ErrTruncated},
		{"map claims 4G entries", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'q'}, &Ping{}, ErrTruncated},
		{"nodes claim 4G entries", []byte{0x81, 0xa2, 'n', 's', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x80}, &PushPull{}, ErrTruncated},
		{"non-string key", []byte{0x81, 0x01, 0x01}, &Nack{}, ErrMalformed},
		{"deep nesting in unknown key", append([]byte{0x81, 0xa1, 'z'}, bytes.Repeat([]byte{0x91}, 40)...), &Nack{}, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := d.Decode(c.body, c.m)
			check(t, err != nil, "no error")
			isErr(t, err, c.want)
		})
	}
}

func TestDecodePingAndAckAllocateNothing(t *testing.T) {
	var d Decoder
	ping := AppendMessage(nil, &Ping{Seq: 1, Target: "node-b", Source: "node-a", SourceAddr: "10.0.0.1:7946"})[2:]
	ack := AppendMessage(nil, &Ack{Seq: 1, Payload: []byte("hello")})[2:]
	var p Ping
	var a Ack
	noErr(t, d.Decode(ping, &p)) // warm-up: interns the strings
	noErr(t, d.Decode(ack, &a))
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.Decode(ping, &p); err != nil {
			t.Fatal(err)
		}
		if err := d.Decode(ack, &a); err != nil {
			t.Fatal(err)
		}
	})
	check(t, allocs == 0, "%v allocations", allocs)
}

func TestInternTableIsBounded(t *testing.T) {
	var d Decoder
	for i := range 3 * internLimit {
		d.intern([]byte("n" + itoa(i)))
		check(t, len(d.strs) <= internLimit, "%d > %d", len(d.strs), internLimit)
	}
}

func TestHostileLengthsCostNothing(t *testing.T) {
	// 30-byte packets whose messages claim huge fields: rejected without allocating.
	hostile := [][]byte{
		// Ping whose target string claims 1 GiB (str32).
		{0x84, 0xa1, 't', 0xdb, 0x40, 0, 0, 0},
		// PushPull whose node list claims 4G entries (array32).
		{0x81, 0xa2, 'n', 's', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x80, 0x80},
		// Ack whose payload claims 4 GiB (bin32).
		{0x82, 0xa1, 'p', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00},
		// Unknown key whose value is a map claiming 4G entries.
		{0x81, 0xa1, 'z', 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'q'},
	}
	types := []MsgType{TypePing, TypePushPull, TypeAck, TypeNack}
	var d Decoder
	var r PacketReader
	for i, body := range hostile {
		p := NewPacker(DefaultMTU, 0)
		check(t, p.AddEncoded(AppendRawMessage(nil, types[i], body)), "fits")
		pkt := bytes.Clone(p.Bytes())
		check(t, len(pkt) <= 30, "packet %d is %d bytes", i, len(pkt))
		m := newMembershipMessage(types[i])
		var decodeErr error
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := r.Reset(pkt); err != nil {
				t.Fatal(err)
			}
			for r.Next() {
				decodeErr = d.Decode(r.Body(), m)
			}
		})
		isErr(t, decodeErr, ErrTruncated)
		check(t, allocs == 0, "hostile packet %d: %v allocations", i, allocs)
	}
}

// reframe rewrites a frame's length prefix and checksum after a test edited it.
func reframe(f []byte) []byte {
	binary.BigEndian.PutUint32(f, uint32(len(f)-4))
	putChecksum(f[4:])
	return f
}

func TestFrameErrors(t *testing.T) {
	var d Decoder
	good, err := EncodeFrame(&Nack{Seq: 1}, ClusterHash("prod"))
	noErr(t, err)
	const typeAt = 4 + HeaderSize // the message type byte

	_, _, err = DecodeFrame(good[:4], DefaultMaxFrame, &d)
	isErr(t, err, ErrTruncated)
	_, _, err = DecodeFrame(good[:len(good)-1], DefaultMaxFrame, &d)
	isErr(t, err, ErrTruncated)
	_, _, err = DecodeFrame(reframe(bytes.Clone(good[:4+HeaderSize+ChecksumSize])), DefaultMaxFrame, &d)
	isErr(t, err, ErrTruncated) // no message at all
	_, _, err = DecodeFrame(good, 2, &d)
	isErr(t, err, ErrOversized)

	// The cluster is the caller's check: a frame of another cluster decodes, and
	// its header says whose it is.
	h, _, err := DecodeFrame(good, DefaultMaxFrame, &d)
	noErr(t, err)
	isErr(t, h.CheckCluster(ClusterHash("staging")), ErrCluster)
	noErr(t, h.CheckCluster(ClusterHash("prod")))

	// A newer version is refused before anything else is read, checksum included.
	bad := bytes.Clone(good)
	bad[4+2] = ProtocolVersion + 1
	h, _, err = DecodeFrame(bad, DefaultMaxFrame, &d)
	var ve *VersionError
	check(t, errors.As(err, &ve) && ve.Got == ProtocolVersion+1, "error %v, want a VersionError", err)
	equal(t, ProtocolVersion+1, h.Version)
	// FrameVersion tells that drop apart without decoding, and nothing else.
	check(t, errors.As(FrameVersion(bad, DefaultVersions), &ve) && ve.Got == ProtocolVersion+1, "FrameVersion: %v, want a VersionError", FrameVersion(bad, DefaultVersions))
	noErr(t, FrameVersion(good, DefaultVersions))
	noErr(t, FrameVersion(good[:4], DefaultVersions))
	// A node configured for 1..2 accepts the same frame, and a v2 packet.
	var d2 Decoder
	d2.Accept(Versions{1, 2})
	noErr(t, FrameVersion(bad, Versions{1, 2}))
	_, _, err = DecodeFrame(bad, DefaultMaxFrame, &d2)
	check(t, !errors.Is(err, ErrUnsupportedVersion), "1..2 refused a version-2 frame: %v", err)

	bad = bytes.Clone(good)
	bad[0+4] = 'X'
	_, _, err = DecodeFrame(bad, DefaultMaxFrame, &d)
	isErr(t, err, ErrBadMagic)

	bad = bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	_, _, err = DecodeFrame(bad, DefaultMaxFrame, &d)
	isErr(t, err, ErrChecksum)
	bad = bytes.Clone(good)
	bad[typeAt+2] ^= 1 // a body byte: the checksum catches it
	_, _, err = DecodeFrame(bad, DefaultMaxFrame, &d)
	isErr(t, err, ErrChecksum)

	// A sealed frame needs OpenFrame first; a plain one cannot be opened.
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	sealed, err := SealFrame(k, good, bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	_, _, err = DecodeFrame(sealed, DefaultMaxFrame, &d)
	isErr(t, err, ErrSealed)
	_, err = OpenFrame(k, good)
	isErr(t, err, ErrNotSealed)
	_, err = SealFrame(k, sealed, bytes.NewReader(make([]byte, NonceSize)))
	isErr(t, err, ErrSealed)
	_, err = OpenFrame(k, sealed[:len(sealed)-1])
	isErr(t, err, ErrTruncated) // the prefix no longer matches
	other, err := NewKeyring(testKey(2))
	noErr(t, err)
	_, err = OpenFrame(other, sealed)
	isErr(t, err, ErrUnknownKey)

	// Reserved flag bits are ignored.
	bad = bytes.Clone(good)
	bad[4+3] |= 0x80
	_, got, err := DecodeFrame(reframe(bad), DefaultMaxFrame, &d)
	noErr(t, err)
	equal(t, &Nack{Seq: 1}, got)

	bad = bytes.Clone(good)
	bad[typeAt] = 250 // extension type: unknown to this build
	_, _, err = DecodeFrame(reframe(bad), DefaultMaxFrame, &d)
	isErr(t, err, ErrUnknownType)

	// A message followed by stray bytes inside the frame.
	bad = slices.Insert(bytes.Clone(good), len(good)-ChecksumSize, 0x00)
	_, _, err = DecodeFrame(reframe(bad), DefaultMaxFrame, &d)
	isErr(t, err, ErrMalformed)

	// A compressed flag over a payload that is not an S2 block.
	bad = bytes.Clone(good)
	bad[4+3] |= FlagCompressed
	_, _, err = DecodeFrame(reframe(bad), DefaultMaxFrame, &d)
	isErr(t, err, ErrMalformed)

	_, err = EncodeFrame(&User{Payload: make([]byte, DefaultMaxFrame)}, 0)
	isErr(t, err, ErrOversized)

	_, err = ReadFrame(bytes.NewReader([]byte{0, 0, 0, 0}), DefaultMaxFrame)
	isErr(t, err, ErrTruncated)
	_, err = ReadFrame(bytes.NewReader([]byte{0, 0, 0, HeaderSize + ChecksumSize - 1}), DefaultMaxFrame)
	isErr(t, err, ErrTruncated)
}

func TestPacketWithCompressedFlagIsMalformed(t *testing.T) {
	pkt := bytes.Clone(plainPacket(t))
	pkt[3] |= FlagCompressed
	putChecksum(pkt)
	var r PacketReader
	_, err := r.Reset(pkt)
	isErr(t, err, ErrMalformed)
}

func TestOpenChecksVersionFirst(t *testing.T) {
	k, err := NewKeyring(testKey(1))
	noErr(t, err)
	sealed, err := Seal(k, plainPacket(t), bytes.NewReader(make([]byte, NonceSize)))
	noErr(t, err)
	sealed[2] = 9
	_, err = Open(k, sealed)
	isErr(t, err, ErrUnsupportedVersion)
	sealed[0] = 'X'
	_, err = Open(k, sealed)
	isErr(t, err, ErrBadMagic)
}

// Decoders sharing an Interner return the same copy of a string, and the shared
// table stays within its limit.
func TestSharedInterner(t *testing.T) {
	in := NewInterner(8)
	var a, b, own Decoder
	a.Share(in)
	b.Share(in)
	sa, sb, so := a.intern([]byte("node-1")), b.intern([]byte("node-1")), own.intern([]byte("node-1"))
	check(t, sa == "node-1" && unsafe.StringData(sa) == unsafe.StringData(sb), "shared decoders returned two copies")
	check(t, unsafe.StringData(so) != unsafe.StringData(sa), "a decoder without Share used the shared table")
	check(t, len(a.strs) == 0 && in.Len() == 1, "own table %d, shared %d", len(a.strs), in.Len())
	for i := range 30 {
		b.intern([]byte("n" + itoa(i)))
		check(t, in.Len() <= 8, "%d > 8", in.Len())
	}
}
