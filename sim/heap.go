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

// event is one entry of the queue. It is a plain value (no closure) so the heap is
// one preallocated slice and firing an event allocates nothing.
type event struct {
	at   int64  // virtual nanoseconds since the epoch
	seq  uint64 // tie-break: order of scheduling, so equal times fire FIFO
	data []byte // packet or stream frame
	node int32  // evTick, evWake, evStream*: the node index (of the requester for streams); evAction: action index
	to   int32  // evPacket, evStreamReq: destination address slot
	from int32  // address slot of the sender (evStreamFail: of the peer that failed)
	gen  uint32 // generation of node when scheduled; a restarted node ignores older events
	sid  uint64 // evStream*: the requester's stream id (Stream.ID)
	kind evKind
}

func (e *event) before(o *event) bool {
	return e.at < o.at || (e.at == o.at && e.seq < o.seq)
}

// eventHeap is a 4-ary min-heap on (at, seq): shallower than a binary heap, so fewer
// cache misses per push and pop with thousands of pending events.
type eventHeap struct {
	ev []event
}

func (h *eventHeap) len() int { return len(h.ev) }

func (h *eventHeap) push(e event) {
	h.ev = append(h.ev, e)
	i := len(h.ev) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !h.ev[i].before(&h.ev[p]) {
			break
		}
		h.ev[i], h.ev[p] = h.ev[p], h.ev[i]
		i = p
	}
}

func (h *eventHeap) peek() *event { return &h.ev[0] }

func (h *eventHeap) pop() event {
	top := h.ev[0]
	last := len(h.ev) - 1
	h.ev[0] = h.ev[last]
	h.ev[last] = event{} // drop the data reference for the collector
	h.ev = h.ev[:last]
	n := last
	i := 0
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		end := c + 4
		if end > n {
			end = n
		}
		for j := c + 1; j < end; j++ {
			if h.ev[j].before(&h.ev[m]) {
				m = j
			}
		}
		if !h.ev[m].before(&h.ev[i]) {
			break
		}
		h.ev[i], h.ev[m] = h.ev[m], h.ev[i]
		i = m
	}
	return top
}
