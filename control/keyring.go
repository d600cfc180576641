package control

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Errors a KeyringSource returns; the keyring routes map them to codes.
var (
	// ErrKeyringOff: the node runs without packet keys (404 keyring_off).
	ErrKeyringOff = errors.New("control: this node has no packet keys")
	// ErrUnknownKey: remove of a key the keyring does not hold (404 unknown_key).
	ErrUnknownKey = errors.New("control: no such key in the keyring")
	// ErrPrimaryKey: remove of the primary key (409 primary_key): make another
	// key primary first.
	ErrPrimaryKey = errors.New("control: the primary key cannot be removed")
)

// KeySize is the size of a packet key (AES-256).
const KeySize = 32

// KeyringSource is implemented by a Source whose node has packet keys. Each call
// changes this node only: a rotation runs install, use, remove on every node in
// turn (omnirelay mesh keyring does).
type KeyringSource interface {
	// Keyring lists the keys, primary first, as fingerprints.
	Keyring() ([]KeyInfo, error)
	// InstallKey, UseKey and RemoveKey change the keyring on behalf of by.
	InstallKey(key []byte, by Caller) error
	UseKey(key []byte, by Caller) error
	RemoveKey(key []byte, by Caller) error
}

// KeyInfo is one key as the API shows it: never the key itself.
type KeyInfo struct {
	Fingerprint string `json:"fingerprint"` // KeyFingerprint
	Primary     bool   `json:"primary"`
}

// KeyringReply is the JSON body of every keyring route: the keyring after the call.
type KeyringReply struct {
	Node string    `json:"node"`
	Keys []KeyInfo `json:"keys"`
}

// KeyRequest is the body of the keyring POST routes.
type KeyRequest struct {
	Key string `json:"key"` // base64 of the 32-byte key
}

// KeyFingerprint names a key in lists, logs and audit records: 16 hex digits of
// its SHA-256, which reveal nothing of the key.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// Caller is who made a request, for the audit records the source writes.
type Caller struct {
	ID       string // correlation id of the request (its control_request record)
	Identity string // SPIFFE ID or token:NAME; "" when the API has no authentication
	Remote   string
}

type callerKey struct{}

// CallerOf returns the caller of r, as authorization recorded it.
func CallerOf(r *http.Request) Caller {
	c, _ := r.Context().Value(callerKey{}).(Caller)
	if c.ID == "" {
		c.ID = NewEventID()
	}
	c.Remote = r.RemoteAddr
	return c
}

func withCaller(r *http.Request, c Caller) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
}

func (h *handler) keyringSource(w http.ResponseWriter) (KeyringSource, bool) {
	ks, ok := h.src.(KeyringSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeKeyringOff, "this node has no packet keys")
	}
	return ks, ok
}

// keyring serves GET /control/v1/keyring.
func (h *handler) keyring(w http.ResponseWriter, _ *http.Request) {
	if ks, ok := h.keyringSource(w); ok {
		h.keyringReply(w, ks, nil)
	}
}

// keyOp serves the POST routes: install, use or remove, then the keyring.
func (h *handler) keyOp(op func(KeyringSource, []byte, Caller) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ks, ok := h.keyringSource(w)
		if !ok {
			return
		}
		key, err := decodeKey(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
			return
		}
		h.keyringReply(w, ks, op(ks, key, CallerOf(r)))
	}
}

func (h *handler) keyringReply(w http.ResponseWriter, ks KeyringSource, err error) {
	var keys []KeyInfo
	if err == nil {
		keys, err = ks.Keyring()
	}
	switch {
	case errors.Is(err, ErrKeyringOff):
		writeError(w, http.StatusNotFound, CodeKeyringOff, err.Error())
	case errors.Is(err, ErrUnknownKey):
		writeError(w, http.StatusNotFound, CodeUnknownKey, err.Error())
	case errors.Is(err, ErrPrimaryKey):
		writeError(w, http.StatusConflict, CodePrimaryKey, err.Error()+": make another key primary first (keyring use)")
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, KeyringReply{Node: h.nodeName(), Keys: keys})
	}
}

// nodeName is the serving node's name, from its own entry in the view.
func (h *handler) nodeName() string {
	for _, p := range h.src.Snapshot().Peers {
		if p.Local {
			return p.Name
		}
	}
	return ""
}

// decodeKey reads {"key": BASE64} of exactly KeySize bytes.
func decodeKey(body io.Reader) ([]byte, error) {
	const want = `want {"key": "<base64 of 32 bytes>"}`
	var req KeyRequest
	if err := decodeOne(body, 1<<12, &req); err != nil {
		return nil, fmt.Errorf("%s: %v", want, err)
	}
	key, err := base64.StdEncoding.DecodeString(req.Key)
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf(`%s: "key" is not base64 of %d bytes (omnirelay keygen makes one)`, want, KeySize)
	}
	return key, nil
}

// ---- client ----

// Keyring lists the agent's keys.
func (c *Client) Keyring(ctx context.Context) (KeyringReply, error) {
	var r KeyringReply
	err := c.get(ctx, "/control/v1/keyring", &r)
	return r, err
}

// KeyOp runs op (install, use or remove) with key on the agent and returns its
// keyring after it.
func (c *Client) KeyOp(ctx context.Context, op string, key []byte) (KeyringReply, error) {
	var r KeyringReply
	err := c.postReply(ctx, "/control/v1/keyring/"+op, KeyRequest{Key: base64.StdEncoding.EncodeToString(key)}, &r)
	return r, err
}
