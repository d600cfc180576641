package control

// Error codes: ErrorBody.Code of every 4xx/5xx answer. They are stable and
// machine-readable; docs/api.md ("Errors") documents each, and a test checks the
// two against each other.
const (
	CodeBadFilter        = "bad_filter"         // 400: a status, meta or state filter that does not parse
	CodeBadLimit         = "bad_limit"          // 400: limit outside 1..MaxLimit
	CodeBadPageToken     = "bad_page_token"     // 400: a page_token this server did not issue
	CodeBadShard         = "bad_shard"          // 400: a shard id that is not a number
	CodeBadKey           = "bad_key"            // 400: lookup without key
	CodeBadRequest       = "bad_request"        // 400: a request body that is not the route's JSON object, or a value over a limit
	CodeBadVoters        = "bad_voters"         // 400: a voter change whose result is not a valid voter set
	CodeUnauthenticated  = "unauthenticated"    // 401: no client certificate and no valid bearer token
	CodeForbidden        = "forbidden"          // 403: the caller's role is below the route's
	CodeUnknownPeer      = "unknown_peer"       // 404: no such peer in this node's view
	CodeUnknownShard     = "unknown_shard"      // 404: a shard id beyond the shard count
	CodeUnknownNode      = "unknown_node"       // 404: drain of a name that is not a live member
	CodeUnknownKey       = "unknown_key"        // 404: delete of a metadata key that has no value, or keyring remove of a key the node does not hold
	CodeLeadershipOff    = "leadership_off"     // 404: the node takes no part in leader election
	CodeShardsOff        = "shards_off"         // 404: the node runs no shard routing
	CodeKeyringOff       = "keyring_off"        // 404: the node has no packet keys
	CodeClustersOff      = "clusters_off"       // 404: the node knows of no multi-cluster federation
	CodeUnknownCluster   = "unknown_cluster"    // 404: a cluster id not in the node's federation
	CodeNotSigner        = "not_signer"         // 404: join tokens asked of a node that holds no CA key
	CodeNotFound         = "not_found"          // 404: no route at this path
	CodeMethodNotAllowed = "method_not_allowed" // 405: the route exists for other methods (Allow lists them)
	CodeNotLeader        = "not_leader"         // 409: a leader-only route asked of another node
	CodeMemberLive       = "member_live"        // 409: force-leave of a member that is alive or suspect
	CodeChangeInProgress = "change_in_progress" // 409: a voter change while another runs
	CodePrimaryKey       = "primary_key"        // 409: keyring remove of the primary key
	CodeBadTransition    = "bad_transition"     // 409: a cluster promotion its state does not allow
	CodeJoinFailed       = "join_failed"        // 502: no seed of a join answered
	CodeNoShardMap       = "no_shard_map"       // 503: no shard map received yet
	CodeTooManyWatchers  = "too_many_watchers"  // 503: MaxWatchers watch streams are open
	CodeUnavailable      = "unavailable"        // 503: the node could not answer (closed, busy)
)
