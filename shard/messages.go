package shard

import "github.com/omnirelay/mesh/wire"

// The shard protocol's messages are the wire structs of PROTOCOL.md ("Shard
// messages"); these aliases name them as the protocol does. Leader messages
// (Announce, MapState, Grant, Release) carry the leader's epoch, which members
// check against the highest they have seen; member messages (MapRequest, Renew)
// name their sender.
type (
	// Message is any wire message; the machines ignore types that are not theirs.
	Message = wire.Message

	// Announce tells every member the current map's version and checksum. A
	// member whose copy differs asks for the map (MapRequest). Leader names the
	// sender, so a member learns where to send renewals.
	Announce = wire.ShardAnnounce
	// MapRequest asks the leader for its full map. Epoch and Version describe
	// the copy the member has (0 for none).
	MapRequest = wire.ShardMapRequest
	// MapState is a full map as carried on the wire (Map.Wire and DecodeMap
	// convert). Nodes are the eligible nodes with their weights, from which every
	// member rebuilds the same rendezvous table; Names lists the owners, sorted;
	// Owners has one entry per shard, 0 for no owner and i+1 for Names[i]; States
	// one per shard.
	MapState = wire.ShardMap
	// NodeWeight is one eligible node of the target placement.
	NodeWeight = wire.ShardNode
	// Renew is an owner's one message per RenewInterval to the leader. Held lists
	// the shards it serves at the moment of sending, ascending; Applied is the Seq
	// of the last Grant it applied. Boot identifies the owner process (a random
	// id drawn at start, so a restart is new whatever its clock says), Seq the renewal (it grows within a process). Epoch is the
	// highest epoch the owner has seen.
	Renew = wire.ShardRenew
	// Grant answers a Renew: Node (of process Boot) may serve Shards and, if it
	// still serves them, Confirm, for Duration counted from when it sent renewal
	// Seq. Confirm is extend-only: a new leader re-confirms what owners report
	// without handing out anything new. A held shard in neither list is no longer
	// granted. Version and Checksum are the leader's current map, as in Announce.
	Grant = wire.ShardGrant
	// Release asks Node to stop serving Shards now and to renew, so the leader
	// learns of the release without waiting for the lease to lapse. With no
	// Shards it only asks for a renewal: the leader has granted the node
	// something new.
	Release = wire.ShardRelease
)

// Envelope is a message to send to the node named To (possibly this node itself:
// the leader is a member too, and the host delivers such messages locally).
type Envelope struct {
	To  string
	Msg Message
}
