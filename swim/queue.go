package swim

import "github.com/omnirelay/mesh/wire"

// bcastKind separates broadcasts that compete for packet space, so membership
// gossip at scale cannot starve metadata or user messages (each kind gets an equal
// share of every packet first; space a kind leaves unused goes to the others).
type bcastKind uint8

const (
	kindMembership bcastKind = iota
	kindMeta
	kindUser
	numKinds
)

// broadcast is one encoded message waiting to be piggybacked. It sits in the list of
// its kind's queue for its transmit count.
type broadcast struct {
	kind      bcastKind
	key       string // a newer broadcast with the same non-empty key replaces this one
	msg       []byte // wire.AppendMessage encoding
	transmits int
	picked    bool // already in the packet being built
	queued    bool
	prev      *broadcast
	next      *broadcast
}

// blist is an intrusive doubly linked list of broadcasts.
type blist struct{ head, tail *broadcast }

func (l *blist) pushFront(b *broadcast) {
	b.prev, b.next = nil, l.head
	if l.head != nil {
		l.head.prev = b
	} else {
		l.tail = b
	}
	l.head = b
}

func (l *blist) pushBack(b *broadcast) {
	b.prev, b.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = b
	} else {
		l.head = b
	}
	l.tail = b
}

func (l *blist) remove(b *broadcast) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		l.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		l.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

// kindQueue orders one kind's broadcasts fewest-sent first: buckets[t] holds those
// sent t times. A new broadcast goes to the front of bucket 0 (newest first, since a
// fresh fact matters most); a sent one goes to the back of its next bucket, so
// broadcasts with equal counts take turns.
type kindQueue struct {
	buckets []blist
	byKey   map[string]*broadcast
	n       int
	peak    int // most keys byKey held since it was made
}

// queues holds the three kinds' queues and builds the gossip part of packets.
type queues struct {
	q       [numKinds]kindQueue
	limit   int // per kind
	rr      int // kind served first in the next packet, rotated for fairness
	picked  []*broadcast
	dropped uint64
}

func newQueues(limit int) queues {
	qs := queues{limit: limit}
	for i := range qs.q {
		qs.q[i].byKey = make(map[string]*broadcast)
		qs.q[i].buckets = make([]blist, 1, 8)
	}
	return qs
}

// Len is the number of queued broadcasts of all kinds.
func (qs *queues) Len() int {
	n := 0
	for i := range qs.q {
		n += qs.q[i].n
	}
	return n
}

// push queues b, replacing any queued broadcast with the same key, and drops the
// most-sent broadcast of the kind if the queue is over its limit.
func (qs *queues) push(b *broadcast) {
	q := &qs.q[b.kind]
	if b.key != "" {
		if old, ok := q.byKey[b.key]; ok {
			qs.remove(old)
		}
		q.byKey[b.key] = b
		q.peak = max(q.peak, len(q.byKey))
	}
	q.buckets[0].pushFront(b)
	b.queued = true
	q.n++
	if q.n > qs.limit {
		for t := len(q.buckets) - 1; t >= 0; t-- {
			if victim := q.buckets[t].tail; victim != nil {
				qs.remove(victim)
				qs.dropped++
				break
			}
		}
	}
}

func (qs *queues) remove(b *broadcast) {
	if !b.queued {
		return
	}
	q := &qs.q[b.kind]
	q.buckets[b.transmits].remove(b)
	if b.key != "" && q.byKey[b.key] == b {
		delete(q.byKey, b.key)
	}
	b.queued = false
	q.n--
	if q.n == 0 && q.peak > shrinkKeys {
		// A Go map keeps its peak size: after formation floods the queue, each
		// node would hold room for thousands of keys forever (~20 B per member per
		// view at 2,000 nodes).
		q.byKey, q.peak = make(map[string]*broadcast), 0
	}
}

// shrinkKeys is the byKey peak above which an emptied queue gets a fresh map.
const shrinkKeys = 64

// add puts a specific broadcast (an eager one) into p ahead of the fair fill.
func (qs *queues) add(p *wire.Packer, b *broadcast) bool {
	if !b.queued || b.picked || !p.AddEncoded(b.msg) {
		return false
	}
	b.picked = true
	qs.picked = append(qs.picked, b)
	return true
}

// maxMisses bounds how many broadcasts that do not fit are examined per kind and
// pass, so filling a packet costs O(packet) rather than O(queue).
const maxMisses = 8

// fill packs queued broadcasts into the room left in p: first each non-empty kind
// up to an equal share of the room, then whatever still fits, kinds in rotating
// order. Call commit afterwards.
func (qs *queues) fill(p *wire.Packer) {
	var order [numKinds]bcastKind
	kinds := 0
	for i := range int(numKinds) {
		k := bcastKind((qs.rr + i) % int(numKinds))
		if qs.q[k].n > 0 {
			order[kinds] = k
			kinds++
		}
	}
	qs.rr = (qs.rr + 1) % int(numKinds)
	if kinds == 0 {
		return
	}
	share := p.Room() / kinds
	for _, k := range order[:kinds] {
		qs.fillKind(p, k, share)
	}
	for _, k := range order[:kinds] {
		qs.fillKind(p, k, p.Room())
	}
}

func (qs *queues) fillKind(p *wire.Packer, k bcastKind, budget int) {
	q := &qs.q[k]
	misses := 0
	for t := range q.buckets {
		for b := q.buckets[t].head; b != nil; b = b.next {
			if b.picked {
				continue
			}
			if len(b.msg) > budget || !p.AddEncoded(b.msg) {
				if misses++; misses >= maxMisses {
					return
				}
				continue
			}
			budget -= len(b.msg)
			b.picked = true
			qs.picked = append(qs.picked, b)
		}
	}
}

// commit counts one transmission of every broadcast put in the packet since the last
// commit, retiring those sent limit times, and returns how many there were.
func (qs *queues) commit(limit int) int {
	n := len(qs.picked)
	for _, b := range qs.picked {
		b.picked = false
		if !b.queued {
			continue
		}
		q := &qs.q[b.kind]
		q.buckets[b.transmits].remove(b)
		b.transmits++
		if b.transmits >= limit {
			b.queued = false
			q.n--
			if b.key != "" && q.byKey[b.key] == b {
				delete(q.byKey, b.key)
			}
			continue
		}
		for len(q.buckets) <= b.transmits {
			q.buckets = append(q.buckets, blist{})
		}
		q.buckets[b.transmits].pushBack(b)
	}
	clear(qs.picked)
	qs.picked = qs.picked[:0]
	return n
}
