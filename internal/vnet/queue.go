package vnet

// Queue is a 4-ary min-heap of values keyed by (at, order of pushing), so equal
// times pop first in, first out. A 4-ary heap is shallower than a binary one:
// fewer cache misses per push and pop with thousands of pending events. Values are
// stored inline, so a queue of plain structs allocates only when it grows.
type Queue[T any] struct {
	it  []item[T]
	seq uint64
}

type item[T any] struct {
	at  int64
	seq uint64
	v   T
}

func (a *item[T]) before(b *item[T]) bool {
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

// Grow reserves room for n more values.
func (q *Queue[T]) Grow(n int) {
	if cap(q.it)-len(q.it) < n {
		it := make([]item[T], len(q.it), len(q.it)+n)
		copy(it, q.it)
		q.it = it
	}
}

// Len is the number of values queued.
func (q *Queue[T]) Len() int { return len(q.it) }

// Push queues v at time at.
func (q *Queue[T]) Push(at int64, v T) {
	q.seq++
	q.it = append(q.it, item[T]{at: at, seq: q.seq, v: v})
	i := len(q.it) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !q.it[i].before(&q.it[p]) {
			break
		}
		q.it[i], q.it[p] = q.it[p], q.it[i]
		i = p
	}
}

// NextAt is the time of the first value; the queue must not be empty.
func (q *Queue[T]) NextAt() int64 { return q.it[0].at }

// Pop removes and returns the first value and its time; the queue must not be
// empty.
func (q *Queue[T]) Pop() (int64, T) {
	top := q.it[0]
	last := len(q.it) - 1
	q.it[0] = q.it[last]
	q.it[last] = item[T]{} // drop references for the collector
	q.it = q.it[:last]
	n := last
	i := 0
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		end := min(c+4, n)
		for j := c + 1; j < end; j++ {
			if q.it[j].before(&q.it[m]) {
				m = j
			}
		}
		if !q.it[m].before(&q.it[i]) {
			break
		}
		q.it[i], q.it[m] = q.it[m], q.it[i]
		i = m
	}
	return top.at, top.v
}
