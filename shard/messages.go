package shard

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/omnirelay/mesh/internal/msgp"
	"github.com/omnirelay/mesh/rendezvous"
	"github.com/omnirelay/mesh/wire"
)

// The shard protocol's messages (PROTOCOL.md "Shard messages", section 12): this
// package owns their types and bodies, wire frames them. Announce, MapRequest,
// Renew, Grant and Release travel in packets; MapState, and any message too large
// for the MTU, in a stream frame. Leader messages (Announce, MapState, Grant,
// Release) carry the leader's epoch, which members check against the highest they
// have seen; member messages (MapRequest, Renew) name their sender.

// Message is any wire message; the machines ignore types that are not theirs.
type Message = wire.Message

// Message types, in the shard range from 64. Numbers only ever grow.
const (
	TypeAnnounce   wire.MsgType = 64
	TypeMapRequest wire.MsgType = 65
	TypeMap        wire.MsgType = 66
	TypeRenew      wire.MsgType = 67
	TypeGrant      wire.MsgType = 68
	TypeRelease    wire.MsgType = 69
)

// Limits on shard fields, checked before anything is allocated.
const (
	// maxShards bounds the shards of a map and every shard number: 2^20, the
	// placement's own limit, so a map the wire accepts is one rendezvous can build.
	maxShards = rendezvous.MaxShards
	// MaxMapNodes bounds the eligible nodes of a received map: rebuilding its
	// table costs one hash per (shard, node) pair, so this caps the work a peer
	// can ask for.
	MaxMapNodes = 1 << 14
)

// Messages is the shard protocol's range for a wire.Registry.
func Messages() wire.Protocol {
	return wire.Protocol{Name: "shard", First: wire.RangeShardFirst, Last: wire.RangeCoreFirst - 1, New: NewMessage}
}

// NewMessage returns a new zero shard message of type t, or nil if this build does
// not know t.
func NewMessage(t wire.MsgType) Message {
	switch t {
	case TypeAnnounce:
		return new(Announce)
	case TypeMapRequest:
		return new(MapRequest)
	case TypeMap:
		return new(MapState)
	case TypeRenew:
		return new(Renew)
	case TypeGrant:
		return new(Grant)
	case TypeRelease:
		return new(Release)
	}
	return nil
}

// Announce tells every member the current map's version and checksum. A member
// whose copy differs asks for the map (MapRequest). Leader names the sender, so a
// member learns where to send renewals.
type Announce struct {
	Epoch    uint64 // the leader's epoch (fencing token)
	Leader   string // the leader's name: renewals go there
	Version  uint64 // map version within the epoch
	Checksum uint64 // checksum of the map's content
}

// MapRequest asks the leader for its full map. Epoch and Version describe the copy
// the member has (0 for none).
type MapRequest struct {
	Node    string
	Epoch   uint64
	Version uint64
}

// NodeWeight is one eligible node of the target placement.
type NodeWeight struct {
	Name   string
	Weight float64
}

// MapState is a full map as carried on the wire (Map.Wire and DecodeMap convert).
// Nodes (sorted by name) are the eligible nodes with their weights, from which
// every member rebuilds the same rendezvous table; Names lists the owners, sorted;
// Owners has one entry per shard, 0 for no owner and i+1 for Names[i]; States one
// byte per shard (0 steady, 1 draining, 2 rebalancing).
type MapState struct {
	Epoch    uint64
	Version  uint64
	Checksum uint64
	Shards   uint32
	Replicas uint32
	Nodes    []NodeWeight
	Names    []string
	Owners   []uint32
	States   []uint8
}

// Renew is an owner's one message per RenewInterval to the leader. Held lists the
// shards it serves at the moment of sending, strictly ascending; Applied is the Seq
// of the last Grant it applied. Boot identifies the owner process (a random id
// drawn at start, so a restart is new whatever its clock says), Seq the renewal (it
// grows within a process). Epoch is the highest epoch the owner has seen.
type Renew struct {
	Epoch   uint64
	Node    string
	Boot    uint64
	Seq     uint64
	Applied uint64
	Held    []uint32
}

// Grant answers a Renew: Node (of process Boot) may serve Shards and, if it still
// serves them, Confirm, for Duration counted from when it sent renewal Seq. Confirm
// is extend-only: a new leader re-confirms what owners report without handing out
// anything new. A held shard in neither list is no longer granted. Version and
// Checksum are the leader's current map, as in Announce. Shard lists are strictly
// ascending.
type Grant struct {
	Epoch    uint64
	Node     string
	Boot     uint64
	Seq      uint64
	Duration time.Duration
	Shards   []uint32
	Confirm  []uint32
	Version  uint64
	Checksum uint64
}

// Release asks Node to stop serving Shards (strictly ascending) now and to renew,
// so the leader learns of the release without waiting for the lease to lapse. With
// no Shards it only asks for a renewal: the leader has granted the node something
// new.
type Release struct {
	Epoch  uint64
	Node   string
	Shards []uint32
}

func (*Announce) Type() wire.MsgType   { return TypeAnnounce }
func (*MapRequest) Type() wire.MsgType { return TypeMapRequest }
func (*MapState) Type() wire.MsgType   { return TypeMap }
func (*Renew) Type() wire.MsgType      { return TypeRenew }
func (*Grant) Type() wire.MsgType      { return TypeGrant }
func (*Release) Type() wire.MsgType    { return TypeRelease }

// Envelope is a message to send to the node named To (possibly this node itself:
// the leader is a member too, and the host delivers such messages locally).
type Envelope struct {
	To  string
	Msg Message
}

// Field keys of shard message bodies. "e", "d", "n" and "q" mean what they mean in
// the membership and lease messages: epoch, duration, node name, sequence number.
const (
	keyEpoch    = "e"
	keyDuration = "d"
	keyNode     = "n"
	keySeq      = "q"
	keyLeader   = "l"
	keyVersion  = "vn"
	keyChecksum = "cs"
	keyBoot     = "b"
	keyApplied  = "ap"
	keyHeld     = "hd"
	keyShards   = "sh"
	keyConfirm  = "cf"
	keyCount    = "sc"
	keyReplicas = "r"
	keyNodes    = "en"
	keyNames    = "nm"
	keyOwners   = "ow"
	keyStates   = "ss"
	keyWeight   = "w"
)

// The bodies write every field in a fixed order (wire.Body).

func (m *Announce) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 4)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendStr(msgp.AppendStr(b, keyLeader), m.Leader)
	b = msgp.AppendUint(msgp.AppendStr(b, keyVersion), m.Version)
	return msgp.AppendUint(msgp.AppendStr(b, keyChecksum), m.Checksum)
}

func (m *MapRequest) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 3)
	b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	return msgp.AppendUint(msgp.AppendStr(b, keyVersion), m.Version)
}

func (m *MapState) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 9)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendUint(msgp.AppendStr(b, keyVersion), m.Version)
	b = msgp.AppendUint(msgp.AppendStr(b, keyChecksum), m.Checksum)
	b = msgp.AppendUint(msgp.AppendStr(b, keyCount), uint64(m.Shards))
	b = msgp.AppendUint(msgp.AppendStr(b, keyReplicas), uint64(m.Replicas))
	b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyNodes), len(m.Nodes))
	for _, n := range m.Nodes {
		b = msgp.AppendMapHeader(b, 2)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), n.Name)
		b = msgp.AppendFloat64(msgp.AppendStr(b, keyWeight), n.Weight)
	}
	b = wire.AppendStrings(msgp.AppendStr(b, keyNames), m.Names)
	b = appendUvarints(msgp.AppendStr(b, keyOwners), m.Owners)
	return msgp.AppendBin(msgp.AppendStr(b, keyStates), m.States)
}

func (m *Renew) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 6)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
	b = msgp.AppendUint(msgp.AppendStr(b, keyBoot), m.Boot)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
	b = msgp.AppendUint(msgp.AppendStr(b, keyApplied), m.Applied)
	return appendShardSet(msgp.AppendStr(b, keyHeld), m.Held)
}

func (m *Grant) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 9)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
	b = msgp.AppendUint(msgp.AppendStr(b, keyBoot), m.Boot)
	b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
	b = msgp.AppendUint(msgp.AppendStr(b, keyDuration), uint64(max(m.Duration, 0)))
	b = appendShardSet(msgp.AppendStr(b, keyShards), m.Shards)
	b = appendShardSet(msgp.AppendStr(b, keyConfirm), m.Confirm)
	b = msgp.AppendUint(msgp.AppendStr(b, keyVersion), m.Version)
	return msgp.AppendUint(msgp.AppendStr(b, keyChecksum), m.Checksum)
}

func (m *Release) AppendBody(b []byte) []byte {
	b = msgp.AppendMapHeader(b, 3)
	b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
	b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
	return appendShardSet(msgp.AppendStr(b, keyShards), m.Shards)
}

func (m *Announce) DecodeBody(r wire.BodyReader, n int) error {
	*m = Announce{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyLeader:
			m.Leader, err = r.ReadString()
		case keyVersion:
			m.Version, err = r.Uint()
		case keyChecksum:
			m.Checksum, err = r.Uint()
		default:
			err = r.Skip()
		}
		return err
	})
}

func (m *MapRequest) DecodeBody(r wire.BodyReader, n int) error {
	*m = MapRequest{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyNode:
			m.Node, err = r.ReadString()
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyVersion:
			m.Version, err = r.Uint()
		default:
			err = r.Skip()
		}
		return err
	})
}

// DecodeBody reuses the capacity of m's shard lists.
func (m *Renew) DecodeBody(r wire.BodyReader, n int) error {
	held := m.Held
	*m = Renew{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyNode:
			m.Node, err = r.ReadString()
		case keyBoot:
			m.Boot, err = r.Uint()
		case keySeq:
			m.Seq, err = r.Uint()
		case keyApplied:
			m.Applied, err = r.Uint()
		case keyHeld:
			m.Held, err = shardSetInto(r, held)
		default:
			err = r.Skip()
		}
		return err
	})
}

// DecodeBody reuses the capacity of m's shard lists.
func (m *Grant) DecodeBody(r wire.BodyReader, n int) error {
	shards, confirm := m.Shards, m.Confirm
	*m = Grant{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyNode:
			m.Node, err = r.ReadString()
		case keyBoot:
			m.Boot, err = r.Uint()
		case keySeq:
			m.Seq, err = r.Uint()
		case keyDuration:
			v, err = r.UintMax(math.MaxInt64)
			m.Duration = time.Duration(v)
		case keyShards:
			m.Shards, err = shardSetInto(r, shards)
		case keyConfirm:
			m.Confirm, err = shardSetInto(r, confirm)
		case keyVersion:
			m.Version, err = r.Uint()
		case keyChecksum:
			m.Checksum, err = r.Uint()
		default:
			err = r.Skip()
		}
		return err
	})
}

// DecodeBody reuses the capacity of m's shard list.
func (m *Release) DecodeBody(r wire.BodyReader, n int) error {
	shards := m.Shards
	*m = Release{}
	return r.EachKey(n, func(k []byte) (err error) {
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyNode:
			m.Node, err = r.ReadString()
		case keyShards:
			m.Shards, err = shardSetInto(r, shards)
		default:
			err = r.Skip()
		}
		return err
	})
}

func (m *MapState) DecodeBody(r wire.BodyReader, n int) error {
	*m = MapState{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyVersion:
			m.Version, err = r.Uint()
		case keyChecksum:
			m.Checksum, err = r.Uint()
		case keyCount:
			v, err = r.UintMax(maxShards)
			m.Shards = uint32(v)
		case keyReplicas:
			v, err = r.UintMax(math.MaxUint32)
			m.Replicas = uint32(v)
		case keyNodes:
			m.Nodes, err = decodeNodeWeights(r)
		case keyNames:
			m.Names, err = r.ReadStrings(MaxMapNodes)
		case keyOwners:
			m.Owners, err = uvarintsInto(r, maxShards)
		case keyStates:
			var b []byte
			if b, err = r.Bytes(); err == nil && len(b) > maxShards {
				err = wire.ErrOversized
			}
			if err == nil && len(b) > 0 {
				m.States = append([]uint8(nil), b...)
			}
		default:
			err = r.Skip()
		}
		return err
	})
}

func decodeNodeWeights(r wire.BodyReader) ([]NodeWeight, error) {
	count, err := r.ArrayLen() // bounded by the remaining bytes
	if err != nil || count == 0 {
		return nil, err
	}
	if count > MaxMapNodes {
		return nil, wire.ErrOversized
	}
	nodes := make([]NodeWeight, count)
	for i := range nodes {
		n, err := r.MapLen()
		if err != nil {
			return nil, err
		}
		err = r.EachKey(n, func(k []byte) (err error) {
			switch string(k) {
			case keyNode:
				nodes[i].Name, err = r.ReadString()
			case keyWeight:
				nodes[i].Weight, err = r.Float64()
			default:
				err = r.Skip()
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return nodes, nil
}

// appendShardSet appends a strictly ascending shard list as bytes: the first
// number, then each difference to the previous, as uvarints.
func appendShardSet(b []byte, l []uint32) []byte {
	var scratch [binary.MaxVarintLen32 * 64]byte
	buf := scratch[:0]
	prev := uint32(0)
	for i, s := range l {
		if i > 0 && s <= prev {
			// Callers build these lists sorted; anything else is their bug.
			panic(fmt.Sprintf("shard: shard list not strictly ascending at %d: %d after %d", i, s, prev))
		}
		buf = binary.AppendUvarint(buf, uint64(s-prev))
		prev = s
	}
	return msgp.AppendBin(b, buf)
}

// shardSetInto reads a shard list written by appendShardSet into buf's capacity,
// checking that it is strictly ascending and below maxShards.
func shardSetInto(r wire.BodyReader, buf []uint32) ([]uint32, error) {
	b, err := r.Bytes()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	out := buf[:0]
	var cur uint64
	for i := 0; len(b) > 0; i++ {
		v, w := binary.Uvarint(b)
		if w <= 0 {
			return nil, wire.ErrMalformed
		}
		b = b[w:]
		if i > 0 && v == 0 {
			return nil, wire.ErrMalformed // not strictly ascending
		}
		if cur += v; cur >= maxShards || v >= maxShards {
			return nil, wire.ErrMalformed
		}
		out = append(out, uint32(cur))
	}
	return out, nil
}

// appendUvarints appends a list of numbers as bytes of consecutive uvarints.
func appendUvarints(b []byte, l []uint32) []byte {
	buf := make([]byte, 0, len(l)*2)
	for _, v := range l {
		buf = binary.AppendUvarint(buf, uint64(v))
	}
	return msgp.AppendBin(b, buf)
}

// uvarintsInto reads at most limit uint32 uvarints written by appendUvarints.
func uvarintsInto(r wire.BodyReader, limit int) ([]uint32, error) {
	b, err := r.Bytes()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	out := make([]uint32, 0, min(len(b), limit))
	for len(b) > 0 {
		v, w := binary.Uvarint(b)
		if w <= 0 || v > math.MaxUint32 {
			return nil, wire.ErrMalformed
		}
		if len(out) == limit {
			return nil, wire.ErrOversized
		}
		out = append(out, uint32(v))
		b = b[w:]
	}
	return out, nil
}
