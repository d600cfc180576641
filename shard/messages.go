package shard

import "time"

// Message is one shard-protocol message. Leader messages (Announce, MapState,
// Grant, Release) carry the leader's epoch, which members check against the
// highest they have seen; member messages (MapRequest, Renew) name their sender.
type Message interface {
	shardMessage()
}

// Envelope is a message to send to the node named To (possibly this node itself:
// the leader is a member too, and the host delivers such messages locally).
type Envelope struct {
	To  string
	Msg Message
}

// Announce tells every member the current map's version and checksum. A member
// whose copy differs asks for the map (MapRequest). Leader names the sender, so a
// member learns where to send renewals.
type Announce struct {
	Epoch    uint64
	Leader   string
	Version  uint64
	Checksum uint64
}

// MapRequest asks the leader for its full map. Epoch and Version describe the
// copy the member has (0 for none).
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

// MapState is a full map as carried on the wire (Map.State and DecodeMap convert).
// Nodes are the eligible nodes with their weights, from which every member
// rebuilds the same rendezvous table; Names lists the owners, sorted; Owners has
// one entry per shard, 0 for no owner and i+1 for Names[i]; States one per shard.
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
// shards it serves at the moment of sending, ascending; Applied is the Seq of the
// last Grant it applied. Boot identifies the owner process (it grows across
// restarts), Seq the renewal (it grows within a process). Epoch is the highest
// epoch the owner has seen.
type Renew struct {
	Epoch   uint64
	Node    string
	Boot    uint64
	Seq     uint64
	Applied uint64
	Held    []uint32
}

// Grant answers a Renew: Node (of process Boot) may serve Shards and, if it
// still serves them, Confirm, for Duration counted from when it sent renewal Seq.
// Confirm is extend-only: a new leader re-confirms what owners report without
// handing out anything new. A held shard in neither list is no longer granted.
// Version and Checksum are the leader's current map, as in Announce.
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

// Release asks Node to stop serving Shards now and to renew, so the leader learns
// of the release without waiting for the lease to lapse. With no Shards it only
// asks for a renewal: the leader has granted the node something new.
type Release struct {
	Epoch  uint64
	Node   string
	Shards []uint32
}

func (*Announce) shardMessage()   {}
func (*MapRequest) shardMessage() {}
func (*MapState) shardMessage()   {}
func (*Renew) shardMessage()      {}
func (*Grant) shardMessage()      {}
func (*Release) shardMessage()    {}
