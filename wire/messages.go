// Package wire defines OmniRelay Mesh's packets, stream frames, the framing of
// every message, swim's membership messages, the codec, compression, checksums and
// encryption, and the registry of message type ranges by which the other protocols
// (lease, shard) plug in their own messages (registry.go). It is a leaf: it imports
// no package of this module but the msgpack codec, internal/msgp. PROTOCOL.md at the
// repository root is the contract; a change here is a change there, in the same
// commit.
package wire

// MsgType identifies a message inside a packet or frame.
//
// Numbers ONLY EVER GROW: a number, once shipped, keeps its meaning forever, and a
// retired type leaves a hole. A receiver skips a type it does not know by its length,
// which is what lets protocol versions N-1 and N share a cluster.
type MsgType uint8

// Type-number ranges (PROTOCOL.md, "Message types").
const (
	RangeMembershipFirst MsgType = 1   // 1..31: membership (swim)
	RangeLeaseFirst      MsgType = 32  // 32..63: leadership (lease)
	RangeShardFirst      MsgType = 64  // 64..95: shard ownership (shard)
	RangeCoreFirst       MsgType = 96  // 96..127: reserved for future core protocols
	RangeExtensionFirst  MsgType = 128 // 128..255: extensions; never assigned by the core
)

// Membership messages.
const (
	TypePing         MsgType = 1
	TypeIndirectPing MsgType = 2
	TypeAck          MsgType = 3
	TypeNack         MsgType = 4
	TypeAlive        MsgType = 5
	TypeSuspect      MsgType = 6
	TypeDead         MsgType = 7
	TypeLeave        MsgType = 8
	TypePushPull     MsgType = 9
	TypeUser         MsgType = 10
	TypeMetaDelta    MsgType = 11
	TypeDigest       MsgType = 12
)

// NodeStatus is a member's state as carried on the wire.
type NodeStatus uint8

const (
	StatusAlive   NodeStatus = 0
	StatusSuspect NodeStatus = 1
	StatusDead    NodeStatus = 2
	StatusLeft    NodeStatus = 3
)

// Message is implemented by every message: this package's membership messages,
// and the Body messages of other protocols.
type Message interface {
	Type() MsgType
}

// Ping is a direct probe. A node whose name is not Target answers nothing: the
// address was reused by another node (PROTOCOL.md, "Probing").
type Ping struct {
	Seq        uint32 // probe sequence number, echoed by Ack and Nack
	Target     string // name of the probed node
	Source     string // name of the prober
	SourceAddr string // host:port the Ack goes to
}

// IndirectPing asks the receiver to probe Target on Source's behalf and to relay the
// Ack (with Seq) back to SourceAddr; with WantNack it sends a Nack when its own probe
// times out (Lifeguard).
type IndirectPing struct {
	Seq        uint32
	Target     string
	TargetAddr string
	Source     string
	SourceAddr string
	WantNack   bool
}

// Ack answers a Ping, or relays a successful indirect probe. Payload is optional and
// opaque to membership.
type Ack struct {
	Seq     uint32
	Payload []byte
	// LocalHealth is the responder's Local Health Multiplier (1 healthy, up to
	// its AwarenessMaxMultiplier; 0 not sent). Only a node whose cluster has
	// FeatureAckHealth on sends it, on acks of direct pings.
	LocalHealth uint8
}

// Nack tells the prober that an indirect probe of its target failed (Lifeguard): the
// intermediary is reachable, so the prober is not the slow one.
type Nack struct {
	Seq uint32
}

// Alive announces that Node at Addr is alive at Incarnation, and the range of
// protocol versions it speaks.
type Alive struct {
	Node        string
	Addr        string
	Incarnation uint64
	ProtoMin    uint8    // lowest protocol version the node speaks
	ProtoMax    uint8    // highest protocol version the node speaks
	Features    Features // features the node advertises; written only when not empty
	// Sig is Node's signature of AliveClaim (PROTOCOL.md 10.10); empty in a
	// cluster without node certificates, and then left out.
	Sig []byte
}

// Suspect says From suspects Node at Incarnation.
type Suspect struct {
	Node        string
	Incarnation uint64
	From        string
}

// Dead says From declared Node dead at Incarnation.
type Dead struct {
	Node        string
	Incarnation uint64
	From        string
}

// Leave says Node left the cluster gracefully at Incarnation.
type Leave struct {
	Node        string
	Incarnation uint64
	Sig         []byte // Node's signature of LeaveClaim; empty (left out) when unsigned
}

// NodeState is one member as carried in a push-pull exchange.
type NodeState struct {
	Name        string
	Addr        string
	Incarnation uint64
	Status      NodeStatus
	ProtoMin    uint8
	ProtoMax    uint8
	Features    Features // written only when not empty
	// Sig is the member's own signature of the record: of its AliveClaim for an
	// alive or suspect state, of its LeaveClaim for a left one (PROTOCOL.md
	// 10.10). Empty, and left out, when the sender holds none for this record.
	Sig []byte
}

// PushPull is the full-state exchange of anti-entropy and joins, carried on streams.
type PushPull struct {
	Join  bool        // the sender is joining: the receiver answers with its state
	Nodes []NodeState // the sender's whole membership view, itself included
	Meta  []byte      // opaque metadata snapshot (crdt)
	// CertHave are the hashes (CertHash) of the certificate chains the sender
	// holds; the answer carries, in Certs, those of its members it lacks. Both
	// are empty, and left out, in a cluster without node certificates.
	CertHave []uint64
	Certs    [][]byte // certificate chains, each concatenated DER, leaf first
}

// User carries an application payload broadcast through gossip.
type User struct {
	Payload []byte
}

// MetaDelta carries opaque metadata deltas (crdt) through gossip.
type MetaDelta struct {
	Payload []byte
}

// Digest summarises the sender's membership view so peers can detect divergence
// cheaply and start a push-pull on mismatch.
type Digest struct {
	Hash    uint64 // order-independent hash of (name, incarnation, status) of every member
	Members uint32 // members counted in Hash
}

func (*Ping) Type() MsgType         { return TypePing }
func (*IndirectPing) Type() MsgType { return TypeIndirectPing }
func (*Ack) Type() MsgType          { return TypeAck }
func (*Nack) Type() MsgType         { return TypeNack }
func (*Alive) Type() MsgType        { return TypeAlive }
func (*Suspect) Type() MsgType      { return TypeSuspect }
func (*Dead) Type() MsgType         { return TypeDead }
func (*Leave) Type() MsgType        { return TypeLeave }
func (*PushPull) Type() MsgType     { return TypePushPull }
func (*User) Type() MsgType         { return TypeUser }
func (*MetaDelta) Type() MsgType    { return TypeMetaDelta }
func (*Digest) Type() MsgType       { return TypeDigest }
