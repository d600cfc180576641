// Package vnet is the deterministic virtual network that the simulator (sim) and
// the protocol packages' test harnesses share: links with latency, jitter, loss,
// duplication and delay spikes, one-way and symmetric partitions, and an event
// queue in virtual time. It is pure like the protocols it carries: no goroutines,
// no clock, and every random draw comes from the *rand.Rand it is given, so a run
// is a function of its seed.
//
// Three layers, so each host takes only what it needs:
//
//   - Link and Model: the link model. Model draws delays and losses and answers
//     reachability between endpoints numbered 0, 1, ... in the order they were
//     added.
//   - Queue: a 4-ary min-heap of values keyed by (time, order of scheduling), so
//     equal times fire first in, first out.
//   - Net: Model and Queue together as a datagram network between named
//     endpoints, with callbacks for timers and faults; what the swim, lease and
//     shard test harnesses run on. sim drives Model and Queue itself, because its
//     own events (node inboxes, pauses, streams) share the queue with datagrams.
//
// A datagram's fate is decided when it is sent: a partition or loss drops it then,
// and one already on the wire when a partition starts still arrives, as on a real
// network whose routes change under packets in flight.
package vnet
