package sim

// evKind says what an event does when it fires.
type evKind uint8

const (
	evTick        evKind = iota + 1 // a node's timer deadline
	evPacket                        // a datagram arrives at an address
	evStreamReq                     // a stream request arrives at an address
	evStreamReply                   // a stream reply arrives back at the requester
	evStreamFail                    // a stream the requester opened failed
	evAction                        // a scheduled scenario action (fault, join, probe)
	evWake                          // a node may take the next input of its inbox
)

// event is one entry of the queue (a vnet.Queue, which orders equal times FIFO).
// It is a plain value (no closure) so the queue is one preallocated slice and
// firing an event allocates nothing.
type event struct {
	at   int64  // virtual nanoseconds since the epoch
	data []byte // packet or stream frame
	node int32  // evTick, evWake, evStream*: the node index (of the requester for streams); evAction: action index
	to   int32  // evPacket, evStreamReq: destination address slot
	from int32  // address slot of the sender (evStreamFail: of the peer that failed)
	gen  uint32 // generation of node when scheduled; a restarted node ignores older events
	sid  uint64 // evStream*: the requester's stream id (Stream.ID)
	kind evKind
}
