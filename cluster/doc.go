// Package cluster holds the descriptors of a federation of clusters (id, region,
// state, priority, failover version) and the rules by which one of them is the
// active cluster: planned handoff (the active cluster drains, the target promotes
// itself with a higher version) and unplanned failover (a passive cluster promotes
// itself after the active one has been silent for Config.PromoteAfter).
//
// The failover version follows Cadence/Temporal global namespaces: with N
// clusters in Config.Clusters, the cluster at index i only ever takes versions
// k*N + i, so two clusters never hold the same version; within a cluster only
// the lease holder writes the cluster's descriptor, and each write carries the
// holder's lease epoch, so a deposed holder's writes lose to its successor's.
// docs/multi-cluster.md gives the safety argument.
//
// Like lease and swim the package is pure: every input carries now, outputs
// are drained with Ready and acknowledged with Advance, there is no clock,
// goroutine or socket. Not safe for concurrent use.
package cluster
