package control

import (
	"net/http"

	"github.com/omnirelay/mesh/identity"
)

// Roles are identity's (identity.Role: reader, operator, admin; a node reads),
// in increasing power: a reader reads, an operator changes this node or routine
// cluster state (metadata, joins, drains, leadership hand-over, keys), an admin
// changes who is in the cluster (forced removals, the voter set). Each role includes
// the ones before it (rank); Public routes need no credentials.

// Route is one route of the control API: its method, mux path pattern and the role
// it needs. Routes lists them all; it is the one table the handler registers and
// docs/api.md ("Routes and roles") is tested against.
type Route struct {
	Method string
	Path   string
	Role   identity.Role
}

// Pattern is the route's http.ServeMux pattern ("GET /control/v1/peers").
func (r Route) Pattern() string { return r.Method + " " + r.Path }

type route struct {
	Route
	serve http.HandlerFunc
}

// routes is the table of every route with its handler. /metrics is served only
// when Options.Metrics is set.
func (h *handler) routes() []route {
	r := func(method, path string, role identity.Role, serve http.HandlerFunc) route {
		return route{Route{method, path, role}, serve}
	}
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	const RoleReader, RoleOperator, RoleAdmin = identity.RoleReader, identity.RoleOperator, identity.RoleAdmin
	return []route{
		r(get, "/control/v1/peers", RoleReader, h.peers),
		r(get, "/control/v1/peers/{name}", RoleReader, h.peer),
		r(post, "/control/v1/peers/{name}/force-leave", RoleAdmin, h.forceLeave),
		r(get, "/control/v1/status", RoleReader, h.status),
		r(get, "/control/v1/logs", RoleOperator, h.logs),
		r(put, "/control/v1/meta/{key}", RoleOperator, h.setMeta),
		r(del, "/control/v1/meta/{key}", RoleOperator, h.deleteMeta),
		r(post, "/control/v1/join", RoleOperator, h.join),
		r(post, "/control/v1/leave", RoleOperator, h.leave),
		r(get, "/control/v1/keyring", RoleOperator, h.keyring), // fingerprints only, but keys are operators' business
		r(post, "/control/v1/keyring/install", RoleOperator, h.keyOp(KeyringSource.InstallKey)),
		r(post, "/control/v1/keyring/use", RoleOperator, h.keyOp(KeyringSource.UseKey)),
		r(post, "/control/v1/keyring/remove", RoleOperator, h.keyOp(KeyringSource.RemoveKey)),
		r(get, "/control/v1/leaders", RoleReader, h.leaders),
		r(post, "/control/v1/leaders/step-down", RoleOperator, h.stepDown),
		r(post, "/control/v1/voters", RoleAdmin, h.changeVoters),
		r(post, "/control/v1/tokens", RoleAdmin, h.createToken),
		r(get, "/control/v1/shards", RoleReader, h.shards),
		r(get, "/control/v1/shards/lookup", RoleReader, h.lookupShard),
		r(get, "/control/v1/shards/{id}", RoleReader, h.shard),
		r(post, "/control/v1/shards/drain", RoleOperator, h.drainShards),
		r(post, "/control/v1/shards/rebalance", RoleOperator, h.rebalanceShards),
		r(get, "/control/v1/clusters", RoleReader, h.clusters),
		r(get, "/control/v1/clusters/{id}", RoleReader, h.cluster),
		r(post, "/control/v1/clusters/{id}/promote", RoleOperator, h.promoteCluster),
		r(get, "/healthz", Public, h.healthz),
		r(get, "/readyz", Public, h.readyz),
		r(get, "/metrics", RoleReader, h.metrics),
	}
}

// Routes lists every route of the control API with the role it needs.
func Routes() []Route {
	var out []Route
	for _, r := range (&handler{}).routes() {
		out = append(out, r.Route)
	}
	return out
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) { h.opts.Metrics.ServeHTTP(w, r) }
