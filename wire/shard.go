package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/omnirelay/mesh/internal/msgp"
)

// Shard messages (PROTOCOL.md, "Shard messages"): the shard map and ownership
// leases of package shard. Announce, MapRequest, Renew, Grant and Release travel
// in packets; Map, and any message too large for the MTU, in a stream frame.
const (
	TypeShardAnnounce   MsgType = 64
	TypeShardMapRequest MsgType = 65
	TypeShardMap        MsgType = 66
	TypeShardRenew      MsgType = 67
	TypeShardGrant      MsgType = 68
	TypeShardRelease    MsgType = 69
)

// Limits on shard fields, checked before anything is allocated.
const (
	MaxShardCount    = 1 << 20 // shards in a map, and the bound on every shard number
	MaxShardMapNodes = 1 << 14 // eligible nodes in one ShardMap
)

// ShardAnnounce tells every member the leader's current map version and checksum.
type ShardAnnounce struct {
	Epoch    uint64 // the leader's epoch (fencing token)
	Leader   string // the leader's name: renewals go there
	Version  uint64 // map version within the epoch
	Checksum uint64 // checksum of the map's content
}

// ShardMapRequest asks the leader for its full map; Epoch and Version describe the
// requester's copy (0 for none).
type ShardMapRequest struct {
	Node    string
	Epoch   uint64
	Version uint64
}

// ShardNode is one eligible node of a ShardMap's target placement.
type ShardNode struct {
	Name   string
	Weight float64
}

// ShardMap is a full shard map. Nodes (sorted by name) are the eligible nodes from
// which every member rebuilds the rendezvous table; Names are the owners, sorted;
// Owners has one entry per shard, 0 for none and i+1 for Names[i]; States has one
// byte per shard (0 steady, 1 draining, 2 rebalancing).
type ShardMap struct {
	Epoch    uint64
	Version  uint64
	Checksum uint64
	Shards   uint32
	Replicas uint32
	Nodes    []ShardNode
	Names    []string
	Owners   []uint32
	States   []uint8
}

// ShardRenew is an owner's renewal: Held are the shards it serves (strictly
// ascending), Applied the Seq of the last grant it applied, Boot its process.
type ShardRenew struct {
	Epoch   uint64
	Node    string
	Boot    uint64
	Seq     uint64
	Applied uint64
	Held    []uint32
}

// ShardGrant answers renewal Seq of Node's process Boot: serve Shards, and keep
// serving Confirm if still served, for Duration from when renewal Seq was sent.
// Shard lists are strictly ascending.
type ShardGrant struct {
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

// ShardRelease asks Node to stop serving Shards (strictly ascending) now.
type ShardRelease struct {
	Epoch  uint64
	Node   string
	Shards []uint32
}

func (*ShardAnnounce) Type() MsgType   { return TypeShardAnnounce }
func (*ShardMapRequest) Type() MsgType { return TypeShardMapRequest }
func (*ShardMap) Type() MsgType        { return TypeShardMap }
func (*ShardRenew) Type() MsgType      { return TypeShardRenew }
func (*ShardGrant) Type() MsgType      { return TypeShardGrant }
func (*ShardRelease) Type() MsgType    { return TypeShardRelease }

// Field keys of shard message bodies. keyEpoch ("e"), keyDuration ("d"), keyNode
// ("n") and keySeq ("q") are shared with other messages and mean the same there.
const (
	keyShardLeader   = "l"
	keyShardVersion  = "vn"
	keyShardChecksum = "cs"
	keyShardBoot     = "b"
	keyShardApplied  = "ap"
	keyShardHeld     = "hd"
	keyShardShards   = "sh"
	keyShardConfirm  = "cf"
	keyShardCount    = "sc"
	keyShardReplicas = "r"
	keyShardNodes    = "en"
	keyShardNames    = "nm"
	keyShardOwners   = "ow"
	keyShardStates   = "ss"
	keyShardWeight   = "w"
)

// appendShardBody appends the body of a shard message; ok is false for any other
// message.
func appendShardBody(b []byte, m Message) (_ []byte, ok bool) {
	switch m := m.(type) {
	case *ShardAnnounce:
		b = msgp.AppendMapHeader(b, 4)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyShardLeader), m.Leader)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardVersion), m.Version)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardChecksum), m.Checksum)
	case *ShardMapRequest:
		b = msgp.AppendMapHeader(b, 3)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardVersion), m.Version)
	case *ShardMap:
		b = msgp.AppendMapHeader(b, 9)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardVersion), m.Version)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardChecksum), m.Checksum)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardCount), uint64(m.Shards))
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardReplicas), uint64(m.Replicas))
		b = msgp.AppendArrayHeader(msgp.AppendStr(b, keyShardNodes), len(m.Nodes))
		for _, n := range m.Nodes {
			b = msgp.AppendMapHeader(b, 2)
			b = msgp.AppendStr(msgp.AppendStr(b, keyNode), n.Name)
			b = msgp.AppendFloat64(msgp.AppendStr(b, keyShardWeight), n.Weight)
		}
		b = appendStrings(msgp.AppendStr(b, keyShardNames), m.Names) // lease.go
		b = appendUvarints(msgp.AppendStr(b, keyShardOwners), m.Owners)
		b = msgp.AppendBin(msgp.AppendStr(b, keyShardStates), m.States)
	case *ShardRenew:
		b = msgp.AppendMapHeader(b, 6)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardBoot), m.Boot)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardApplied), m.Applied)
		b = appendShardSet(msgp.AppendStr(b, keyShardHeld), m.Held)
	case *ShardGrant:
		b = msgp.AppendMapHeader(b, 9)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardBoot), m.Boot)
		b = msgp.AppendUint(msgp.AppendStr(b, keySeq), m.Seq)
		b = msgp.AppendUint(msgp.AppendStr(b, keyDuration), uint64(max(m.Duration, 0)))
		b = appendShardSet(msgp.AppendStr(b, keyShardShards), m.Shards)
		b = appendShardSet(msgp.AppendStr(b, keyShardConfirm), m.Confirm)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardVersion), m.Version)
		b = msgp.AppendUint(msgp.AppendStr(b, keyShardChecksum), m.Checksum)
	case *ShardRelease:
		b = msgp.AppendMapHeader(b, 3)
		b = msgp.AppendUint(msgp.AppendStr(b, keyEpoch), m.Epoch)
		b = msgp.AppendStr(msgp.AppendStr(b, keyNode), m.Node)
		b = appendShardSet(msgp.AppendStr(b, keyShardShards), m.Shards)
	default:
		return b, false
	}
	return b, true
}

// newShardMessage returns a new zero shard message of type t, or nil.
func newShardMessage(t MsgType) Message {
	switch t {
	case TypeShardAnnounce:
		return new(ShardAnnounce)
	case TypeShardMapRequest:
		return new(ShardMapRequest)
	case TypeShardMap:
		return new(ShardMap)
	case TypeShardRenew:
		return new(ShardRenew)
	case TypeShardGrant:
		return new(ShardGrant)
	case TypeShardRelease:
		return new(ShardRelease)
	}
	return nil
}

// decodeShard decodes the body of a shard message (whose map header, n entries,
// is read); ok is false for any other message.
func (d *Decoder) decodeShard(r *msgp.Reader, n int, m Message) (ok bool, err error) {
	switch m := m.(type) {
	case *ShardAnnounce:
		*m = ShardAnnounce{}
		err = r.EachKey(n, func(k []byte) (err error) {
			switch string(k) {
			case keyEpoch:
				m.Epoch, err = r.Uint()
			case keyShardLeader:
				m.Leader, err = d.str(r)
			case keyShardVersion:
				m.Version, err = r.Uint()
			case keyShardChecksum:
				m.Checksum, err = r.Uint()
			default:
				err = r.Skip()
			}
			return err
		})
	case *ShardMapRequest:
		*m = ShardMapRequest{}
		err = r.EachKey(n, func(k []byte) (err error) {
			switch string(k) {
			case keyNode:
				m.Node, err = d.str(r)
			case keyEpoch:
				m.Epoch, err = r.Uint()
			case keyShardVersion:
				m.Version, err = r.Uint()
			default:
				err = r.Skip()
			}
			return err
		})
	case *ShardMap:
		err = d.decodeShardMap(r, n, m)
	case *ShardRenew:
		held := m.Held
		*m = ShardRenew{}
		err = r.EachKey(n, func(k []byte) (err error) {
			switch string(k) {
			case keyEpoch:
				m.Epoch, err = r.Uint()
			case keyNode:
				m.Node, err = d.str(r)
			case keyShardBoot:
				m.Boot, err = r.Uint()
			case keySeq:
				m.Seq, err = r.Uint()
			case keyShardApplied:
				m.Applied, err = r.Uint()
			case keyShardHeld:
				m.Held, err = shardSetInto(r, held)
			default:
				err = r.Skip()
			}
			return err
		})
	case *ShardGrant:
		shards, confirm := m.Shards, m.Confirm
		*m = ShardGrant{}
		err = r.EachKey(n, func(k []byte) (err error) {
			var v uint64
			switch string(k) {
			case keyEpoch:
				m.Epoch, err = r.Uint()
			case keyNode:
				m.Node, err = d.str(r)
			case keyShardBoot:
				m.Boot, err = r.Uint()
			case keySeq:
				m.Seq, err = r.Uint()
			case keyDuration:
				v, err = r.UintMax(math.MaxInt64)
				m.Duration = time.Duration(v)
			case keyShardShards:
				m.Shards, err = shardSetInto(r, shards)
			case keyShardConfirm:
				m.Confirm, err = shardSetInto(r, confirm)
			case keyShardVersion:
				m.Version, err = r.Uint()
			case keyShardChecksum:
				m.Checksum, err = r.Uint()
			default:
				err = r.Skip()
			}
			return err
		})
	case *ShardRelease:
		shards := m.Shards
		*m = ShardRelease{}
		err = r.EachKey(n, func(k []byte) (err error) {
			switch string(k) {
			case keyEpoch:
				m.Epoch, err = r.Uint()
			case keyNode:
				m.Node, err = d.str(r)
			case keyShardShards:
				m.Shards, err = shardSetInto(r, shards)
			default:
				err = r.Skip()
			}
			return err
		})
	default:
		return false, nil
	}
	return true, err
}

func (d *Decoder) decodeShardMap(r *msgp.Reader, n int, m *ShardMap) error {
	*m = ShardMap{}
	return r.EachKey(n, func(k []byte) (err error) {
		var v uint64
		switch string(k) {
		case keyEpoch:
			m.Epoch, err = r.Uint()
		case keyShardVersion:
			m.Version, err = r.Uint()
		case keyShardChecksum:
			m.Checksum, err = r.Uint()
		case keyShardCount:
			v, err = r.UintMax(MaxShardCount)
			m.Shards = uint32(v)
		case keyShardReplicas:
			v, err = r.UintMax(math.MaxUint32)
			m.Replicas = uint32(v)
		case keyShardNodes:
			m.Nodes, err = d.decodeShardNodes(r)
		case keyShardNames:
			m.Names, err = d.decodeShardNames(r)
		case keyShardOwners:
			m.Owners, err = uvarintsInto(r, MaxShardCount)
		case keyShardStates:
			var b []byte
			if b, err = r.Bytes(); err == nil && len(b) > MaxShardCount {
				err = ErrOversized
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

func (d *Decoder) decodeShardNodes(r *msgp.Reader) ([]ShardNode, error) {
	count, err := r.ArrayLen() // bounded by the remaining bytes
	if err != nil || count == 0 {
		return nil, err
	}
	if count > MaxShardMapNodes {
		return nil, ErrOversized
	}
	nodes := make([]ShardNode, count)
	for i := range nodes {
		n, err := r.MapLen()
		if err != nil {
			return nil, err
		}
		err = r.EachKey(n, func(k []byte) (err error) {
			switch string(k) {
			case keyNode:
				nodes[i].Name, err = d.str(r)
			case keyShardWeight:
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

// decodeShardNames reads an array of at most MaxShardMapNodes strings; empty reads
// as nil.
func (d *Decoder) decodeShardNames(r *msgp.Reader) ([]string, error) {
	count, err := r.ArrayLen()
	if err != nil || count == 0 {
		return nil, err
	}
	if count > MaxShardMapNodes {
		return nil, ErrOversized
	}
	out := make([]string, count)
	for i := range out {
		if out[i], err = d.str(r); err != nil {
			return nil, err
		}
	}
	return out, nil
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
			panic(fmt.Sprintf("wire: shard list not strictly ascending at %d: %d after %d", i, s, prev))
		}
		buf = binary.AppendUvarint(buf, uint64(s-prev))
		prev = s
	}
	return msgp.AppendBin(b, buf)
}

// shardSetInto reads a shard list written by appendShardSet into buf's capacity,
// checking that it is strictly ascending and below MaxShardCount.
func shardSetInto(r *msgp.Reader, buf []uint32) ([]uint32, error) {
	b, err := r.Bytes()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	out := buf[:0]
	var cur uint64
	for i := 0; len(b) > 0; i++ {
		v, w := binary.Uvarint(b)
		if w <= 0 {
			return nil, ErrMalformed
		}
		b = b[w:]
		if i > 0 && v == 0 {
			return nil, ErrMalformed // not strictly ascending
		}
		if cur += v; cur >= MaxShardCount || v >= MaxShardCount {
			return nil, ErrMalformed
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
func uvarintsInto(r *msgp.Reader, limit int) ([]uint32, error) {
	b, err := r.Bytes()
	if err != nil || len(b) == 0 {
		return nil, err
	}
	out := make([]uint32, 0, min(len(b), limit))
	for len(b) > 0 {
		v, w := binary.Uvarint(b)
		if w <= 0 || v > math.MaxUint32 {
			return nil, ErrMalformed
		}
		if len(out) == limit {
			return nil, ErrOversized
		}
		out = append(out, uint32(v))
		b = b[w:]
	}
	return out, nil
}
