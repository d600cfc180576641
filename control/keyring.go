package control

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
)

// ErrNoKeyring is what a KeyringSource returns when the node runs without packet
// keys; the keyring routes answer 404 no_keyring.
var ErrNoKeyring = errors.New("control: this node has no packet keys (it runs insecure)")

// KeyringSource is implemented by a Source whose node seals packets: the keyring
// routes. It is optional: without it they answer 404 no_keyring.
type KeyringSource interface {
	// Keyring lists the keys by fingerprint, primary first.
	Keyring() ([]KeyInfo, error)
	// InstallKey adds a key that opens packets (a present key: no change).
	InstallKey(key []byte) error
	// UseKey makes the installed key of this fingerprint the primary, which seals.
	UseKey(fingerprint string) error
	// RemoveKey removes the installed key of this fingerprint; not the primary.
	RemoveKey(fingerprint string) error
}

// KeyInfo is one key of a keyring as the API shows it: never the key itself.
type KeyInfo struct {
	// Fingerprint is the first 8 bytes of SHA-256 of the key, in hex; its first
	// two digits are the one-byte key id sealed packets carry (PROTOCOL.md 6).
	Fingerprint string `json:"fingerprint"`
	KeyID       uint8  `json:"key_id"`
	Primary     bool   `json:"primary"`
}

// KeyringReply is the body of GET /control/v1/keyring and of each change.
type KeyringReply struct {
	Keys []KeyInfo `json:"keys"`
}

// KeyRequest is the body of POST /control/v1/keyring/install: the key, base64 of
// 32 bytes, as omnirelay keygen prints it.
type KeyRequest struct {
	Key string `json:"key"`
}

// FingerprintRequest is the body of POST /control/v1/keyring/use and /remove.
type FingerprintRequest struct {
	Fingerprint string `json:"fingerprint"`
}

func (h *handler) keyringSource(w http.ResponseWriter) (KeyringSource, bool) {
	ks, ok := h.src.(KeyringSource)
	if !ok {
		writeError(w, http.StatusNotFound, CodeNoKeyring, ErrNoKeyring.Error())
	}
	return ks, ok
}

// keyringReply answers the keyring after a change (or for a list).
func keyringReply(w http.ResponseWriter, ks KeyringSource) {
	keys, err := ks.Keyring()
	if err != nil {
		keyringError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KeyringReply{Keys: keys})
}

func keyringError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrNoKeyring) {
		writeError(w, http.StatusNotFound, CodeNoKeyring, err.Error())
		return
	}
	sourceError(w, err)
}

func (h *handler) keyring(w http.ResponseWriter, _ *http.Request) {
	if ks, ok := h.keyringSource(w); ok {
		keyringReply(w, ks)
	}
}

// keyInstall serves POST /control/v1/keyring/install. A key is a secret: it is
// taken over TLS, or in the clear only from this host (loopback).
func (h *handler) keyInstall(w http.ResponseWriter, r *http.Request) {
	ks, ok := h.keyringSource(w)
	if !ok {
		return
	}
	if r.TLS == nil && !fromLoopback(r) {
		writeError(w, http.StatusForbidden, CodeInsecureTransport,
			"a packet key is accepted over TLS, or in plain HTTP only from this host (loopback): run the command on the node's host, or serve the control API with TLS")
		return
	}
	var req KeyRequest
	if err := readBody(r.Body, &req, false, `{"key": BASE64}`); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(req.Key))
	if err != nil || len(key) != 32 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, `"key": want base64 of 32 bytes (omnirelay keygen)`)
		return
	}
	if err := ks.InstallKey(key); err != nil {
		keyringError(w, err)
		return
	}
	keyringReply(w, ks)
}

func (h *handler) keyUse(w http.ResponseWriter, r *http.Request) {
	h.keyChange(w, r, KeyringSource.UseKey)
}

func (h *handler) keyRemove(w http.ResponseWriter, r *http.Request) {
	h.keyChange(w, r, KeyringSource.RemoveKey)
}

func (h *handler) keyChange(w http.ResponseWriter, r *http.Request, change func(KeyringSource, string) error) {
	ks, ok := h.keyringSource(w)
	if !ok {
		return
	}
	var req FingerprintRequest
	if err := readBody(r.Body, &req, false, `{"fingerprint": HEX}`); err != nil || req.Fingerprint == "" {
		if err == nil {
			err = errors.New(`"fingerprint" is required (mesh keyring list shows them)`)
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if err := change(ks, strings.ToLower(req.Fingerprint)); err != nil {
		keyringError(w, err)
		return
	}
	keyringReply(w, ks)
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ---- client ----

// Keyring lists the agent's keys.
func (c *Client) Keyring(ctx context.Context) ([]KeyInfo, error) {
	var r KeyringReply
	err := c.get(ctx, "/control/v1/keyring", &r)
	return r.Keys, err
}

// InstallKey installs key on the agent and returns its keyring.
func (c *Client) InstallKey(ctx context.Context, key []byte) ([]KeyInfo, error) {
	var r KeyringReply
	err := c.send(ctx, http.MethodPost, "/control/v1/keyring/install", KeyRequest{Key: base64.StdEncoding.EncodeToString(key)}, &r)
	return r.Keys, err
}

// UseKey makes the key of fingerprint the agent's primary.
func (c *Client) UseKey(ctx context.Context, fingerprint string) ([]KeyInfo, error) {
	var r KeyringReply
	err := c.send(ctx, http.MethodPost, "/control/v1/keyring/use", FingerprintRequest{Fingerprint: fingerprint}, &r)
	return r.Keys, err
}

// RemoveKey removes the key of fingerprint from the agent.
func (c *Client) RemoveKey(ctx context.Context, fingerprint string) ([]KeyInfo, error) {
	var r KeyringReply
	err := c.send(ctx, http.MethodPost, "/control/v1/keyring/remove", FingerprintRequest{Fingerprint: fingerprint}, &r)
	return r.Keys, err
}
