// Package swim is SWIM membership with the Lifeguard extensions as a pure,
// deterministic state machine: no goroutines, no sockets, no wall clock, no global
// randomness. Every input carries `now`; outputs pile up until the host drains them
// with Ready. The host (stack, driven by node or sim) sleeps until
// NextDeadline and then calls Tick.
package swim

import (
	"strconv"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// Status is a member's state in the local view.
type Status uint8

const (
	StatusAlive Status = iota
	StatusSuspect
	StatusDead
	StatusLeft
)

var statusNames = [...]string{StatusAlive: "alive", StatusSuspect: "suspect", StatusDead: "dead", StatusLeft: "left"}

// String is the lower-case name of s, as logged, served and exported in metrics.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status" + strconv.Itoa(int(s))
}

// Member is one node as the local machine sees it.
type Member struct {
	Name        string
	Addr        string
	Incarnation uint64
	Status      Status
	Since       time.Time // when Status last changed locally
	// ProtoMin..ProtoMax are the protocol versions it announced, Features the
	// features it advertises (PROTOCOL.md section 7): what an upgrade watches.
	ProtoMin, ProtoMax uint8
	Features           wire.Features
	// Health is the Local Health Multiplier it reported in its last direct ack
	// (1 healthy; FeatureAckHealth), 0 when unknown.
	Health uint8
}

// EventKind says what changed.
type EventKind uint8

const (
	EventJoin    EventKind = iota + 1 // a member was seen for the first time (or again after dead/left)
	EventUpdate                       // address or metadata of an alive member changed
	EventSuspect                      // a member became suspect
	EventAlive                        // a suspect member was refuted: alive again
	EventDead                         // a member was declared dead
	EventLeft                         // a member left gracefully
)

var eventKindNames = [...]string{EventJoin: "join", EventUpdate: "update", EventSuspect: "suspect",
	EventAlive: "alive", EventDead: "dead", EventLeft: "left"}

// String is the lower-case name of k, as logged and served.
func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return "kind" + strconv.Itoa(int(k))
}

// Event is a membership change, in the order the machine observed them.
type Event struct {
	Kind   EventKind
	Member Member
	At     time.Time
}

// Packet is a datagram to send. Data is owned by the receiver of Ready.
type Packet struct {
	To   string // host:port
	Data []byte
}

// Stream asks the host to run a push-pull exchange with To: deliver Msg over a
// stream, then hand the reply to HandlePushPullReply, or call PushPullFailed.
type Stream struct {
	To  string
	Msg *wire.PushPull
}

// Ready is everything the machine wants done since the last call. Order rules: the
// host may send Packets and start Streams in any order; Events are in the order the
// machine observed them; Meta and User are in the order received. Nothing in it
// aliases the machine's buffers.
type Ready struct {
	Packets []Packet
	Streams []Stream
	Events  []Event
	// Meta holds metadata deltas received by gossip and metadata snapshots received
	// in push-pulls (Payload.Snapshot), for the metadata layer to merge.
	Meta []Payload
	// User holds application messages received by gossip.
	User []Payload
	// RTTs are round-trip times of direct probes acked by the target's own
	// address, in the order the acks arrived.
	RTTs []RTT
	// Refused are member claims refused for their protocol range (at most
	// MaxRefusedPerReady per batch; Stats.VersionsRefused counts them all), for
	// the host to log with both ranges.
	Refused []Refusal
	// Forged are self-claims refused for a signature that is not their
	// member's (at most MaxRefusedPerReady per batch; Stats.ClaimsForged counts
	// them all), for the host to audit.
	Forged []Forgery
}

// Refusal is a claim that Member, at Addr, speaks protocol versions
// ProtoMin..ProtoMax, refused because that range is invalid or does not overlap
// the receiver's own (Config.Versions).
type Refusal struct {
	Member, Addr       string
	ProtoMin, ProtoMax uint8
}

// MaxRefusedPerReady bounds Ready.Refused (and the host's batch of them): a peer re-announcing a refused member
// in every packet must not grow the batch; the host only logs a few lines anyway.
const MaxRefusedPerReady = 8

// RTT is one round-trip sample: a ping to Member and its direct ack.
type RTT struct {
	Member string
	Sample time.Duration
}
