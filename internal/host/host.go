// Package host assembles one process's protocol stack (swim today; lease and shard
// plug in the same way) as pure glue, so node and sim drive the same code. Like the
// machines it wraps it is not safe for concurrent use, reads no clock and starts no
// goroutine.
package host

import (
	"math/rand/v2"
	"time"

	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Config configures a Host.
type Config struct {
	Swim swim.Config
	// MaxFrame bounds stream frames after decompression (bytes).
	MaxFrame int
}

// Stream asks the host driver to send Data (one wire stream frame) to To, and to hand
// the reply frame to HandleStreamReply, or call StreamFailed.
type Stream struct {
	To   string
	Data []byte
}

// Ready is the host's batch of outputs, in the same order rules as swim.Ready.
type Ready struct {
	Packets []swim.Packet
	Streams []Stream
	Events  []swim.Event
	Meta    []swim.Payload // metadata deltas and push-pull snapshots (swim.Ready.Meta)
	User    []swim.Payload // application messages received by gossip
}

// Host is one process's protocol stack.
type Host struct {
	cfg  Config
	swim *swim.Machine
	dec  wire.Decoder
}

// New builds a Host. rng is the only randomness the stack uses.
func New(cfg Config, rng *rand.Rand, now time.Time) (*Host, error) {
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	m, err := swim.New(cfg.Swim, rng, now)
	if err != nil {
		return nil, err
	}
	return &Host{cfg: cfg, swim: m}, nil
}

// Swim exposes the membership machine for reads (Members, Digest, ...).
func (h *Host) Swim() *swim.Machine { return h.swim }

// HandlePacket feeds a received datagram to every machine.
func (h *Host) HandlePacket(now time.Time, from string, data []byte) {
	h.swim.HandlePacket(now, from, data)
}

// HandleStream answers a stream request frame; a nil reply means close without one.
// Malformed frames are dropped (and counted by swim's stats).
func (h *Host) HandleStream(now time.Time, from string, req []byte) []byte {
	msg, err := wire.DecodeFrame(req, h.cfg.MaxFrame, &h.dec)
	if err != nil {
		h.swim.CountMalformed()
		return nil
	}
	pp, ok := msg.(*wire.PushPull)
	if !ok {
		return nil
	}
	reply := h.swim.HandlePushPull(now, from, pp)
	if reply == nil {
		return nil
	}
	b, err := wire.EncodeFrame(reply)
	if err != nil {
		panic("host: encoding our own push-pull: " + err.Error())
	}
	return b
}

// HandleStreamReply feeds the reply to a stream this host asked for.
func (h *Host) HandleStreamReply(now time.Time, from string, reply []byte) {
	msg, err := wire.DecodeFrame(reply, h.cfg.MaxFrame, &h.dec)
	if err != nil {
		h.swim.CountMalformed()
		h.swim.PushPullFailed(now, from)
		return
	}
	if pp, ok := msg.(*wire.PushPull); ok {
		h.swim.HandlePushPullReply(now, from, pp)
	}
}

// StreamFailed reports that a stream this host asked for could not complete.
func (h *Host) StreamFailed(now time.Time, to string) { h.swim.PushPullFailed(now, to) }

// Tick advances timers to now.
func (h *Host) Tick(now time.Time) { h.swim.Tick(now) }

// Join starts joining through seed addresses.
func (h *Host) Join(now time.Time, seeds []string) { h.swim.Join(now, seeds) }

// Leave starts a graceful leave.
func (h *Host) Leave(now time.Time) { h.swim.Leave(now) }

// NextDeadline is when Tick must next be called.
func (h *Host) NextDeadline() time.Time { return h.swim.NextDeadline() }

// Ready drains the outputs of every machine.
func (h *Host) Ready() Ready {
	r := h.swim.Ready()
	out := Ready{Packets: r.Packets, Events: r.Events, Meta: r.Meta, User: r.User}
	for _, s := range r.Streams {
		b, err := wire.EncodeFrame(s.Msg)
		if err != nil {
			panic("host: encoding our own push-pull: " + err.Error())
		}
		out.Streams = append(out.Streams, Stream{To: s.To, Data: b})
	}
	return out
}
