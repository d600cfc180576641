// Package shard publishes the shard map, grants ownership leases and rebalances
// shards, as two pure, deterministic state machines in the style of etcd-io/raft:
// no goroutines, no sockets, no wall clock, no global randomness. Every input
// carries `now` (the node's local monotonic clock), outputs leave in a Ready batch,
// and NextDeadline says when to Tick.
//
// # The map
//
// A Map is (epoch, version, checksum, target placement, per shard an owner and a
// State). The target placement is a rendezvous table over the eligible members
// (alive, not draining) with their weights; the owner is who serves the shard now.
// A shard moves steady → draining (its owner is no longer granted it) →
// rebalancing (granted to the target) → steady (the target confirmed). Map
// lookups (ShardFor, Owner, OwnerOf) are array reads and allocate nothing.
//
// # Controller (leader side)
//
// The node that holds the leader lease drives a Controller: BecomeLeader(epoch)
// with the lease's fencing token, SetMembers with each membership snapshot, Step
// with owners' Renew and MapRequest messages, Tick. It announces every new map
// version and checksum to all members at once, and to any member that renews
// although membership holds it dead (members that see a mismatch fetch the
// map), answers each owner's renewal with one Grant listing all the shards it
// may serve, asks owners to Release shards it moves away, and emits an Event
// per transition ("shard 12 draining from node-a to node-b"). At most
// Config.MaxMoves shards move away from live owners at once; shards of suspect,
// dead or departed owners are parked and reassigned as soon as their lease has
// lapsed, within 2 lease intervals of the death being known.
//
// # Owner (member side)
//
// Every node runs an Owner. It renews once per RenewInterval (one message per
// node, whatever its shard count), and again after RetryInterval while a renewal
// goes unanswered, so a member cut off while the map changed learns the new
// version from the Grant to its first renewal after the heal; it serves a shard only while Serving(now, shard)
// holds, releases on request, keeps the latest map, and rejects (and counts) any
// leader message whose epoch is below the highest it has seen.
//
// # Safety
//
// A shard is never served by two owners at the same real instant, whatever the
// message delays and losses, as long as clocks drift within Config.MaxDrift. An
// owner's lease counts from when it SENT the renewal that earned it and lasts
// d*(1-ρ)-margin of its own clock; the leader considers it held for d*(1+ρ) of
// its own clock from when it sent the grant, which is later (deadline.go). The
// leader infers a release only from a renewal that no longer holds the shard and
// that was sent after applying every grant that could list it (Renew.Applied), and
// an owner applies grants in renewal order only. A new leader waits FailoverWait
// before handing out any shard that its owner did not re-confirm. The argument in
// full is in docs/shards.md.
package shard
