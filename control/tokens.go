package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/omnirelay/mesh/identity"
)

// ErrNotSigner: the node holds no CA key, so it cannot make join tokens
// (404 not_signer); the message names the signing members it knows. The request
// is not forwarded: the member would have to vouch for its caller's role.
var ErrNotSigner = errors.New("control: this node holds no CA key: join tokens are made at a signing member (agent --tls-ca-key)")

// MaxTokenTTL bounds a join token's lifetime: a token is a credential in transit,
// meant to be spent within hours.
const MaxTokenTTL = 7 * 24 * time.Hour

// TokenSource is implemented by a Source whose node is a signing member.
type TokenSource interface {
	// CreateToken stores a new join token for role, valid for ttl, on behalf of
	// by, and returns the token (shown only this once) and its record.
	CreateToken(role identity.Role, ttl time.Duration, by Caller) (string, identity.Token, error)
}

// TokenRequest is the body of POST /control/v1/tokens.
type TokenRequest struct {
	TTL  string `json:"ttl"`            // Go duration, e.g. "15m"; 1s..MaxTokenTTL
	Role string `json:"role,omitempty"` // role of the certificate it buys; default node
}

// TokenReply is the answer: the token itself only here.
type TokenReply struct {
	Node    string    `json:"node"` // the signing member that holds it; any member redeems it
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// createToken serves POST /control/v1/tokens.
func (h *handler) createToken(w http.ResponseWriter, r *http.Request) {
	ts, ok := h.src.(TokenSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeNotSigner, ErrNotSigner.Error())
		return
	}
	var req TokenRequest
	if err := decodeOne(r.Body, 1<<12, &req); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, `want {"ttl": "15m", "role": "node"}: `+err.Error())
		return
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil || ttl < time.Second || ttl > MaxTokenTTL {
		writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("ttl %q: want a duration from 1s to %v", req.TTL, MaxTokenTTL))
		return
	}
	if req.Role == "" {
		req.Role = string(identity.RoleNode)
	}
	role, err := identity.ParseRole(req.Role)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	tok, rec, err := ts.CreateToken(role, ttl, CallerOf(r))
	switch {
	case errors.Is(err, ErrNotSigner):
		writeError(w, http.StatusNotFound, CodeNotSigner, err.Error())
	case errors.Is(err, identity.ErrTokenStoreFull):
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, TokenReply{Node: h.nodeName(), Token: tok, ID: rec.ID, Cluster: rec.Cluster,
			Role: string(rec.Role), Expires: rec.Expires})
	}
}

// ---- client ----

// CreateToken asks a signing member for a join token.
func (c *Client) CreateToken(ctx context.Context, ttl time.Duration, role identity.Role) (TokenReply, error) {
	var r TokenReply
	err := c.postReply(ctx, "/control/v1/tokens", TokenRequest{TTL: ttl.String(), Role: string(role)}, &r)
	return r, err
}
