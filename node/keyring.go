package node

import (
	"errors"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/wire"
)

// The control API's keyring routes (control.KeyringSource). Each change is
// audited on this node: key_install, key_use or key_remove, with the key's
// fingerprint and the caller; the caller's control_request record has the same id.

func (s controlSource) Keyring() ([]control.KeyInfo, error) {
	kr := s.n.kr
	if kr == nil {
		return nil, control.ErrKeyringOff
	}
	keys := kr.Keys()
	out := make([]control.KeyInfo, len(keys))
	for i, k := range keys {
		out[i] = control.KeyInfo{Fingerprint: control.KeyFingerprint(k), Primary: i == 0}
	}
	return out, nil
}

func (s controlSource) InstallKey(key []byte, by control.Caller) error {
	return s.keyOp("key_install", key, by, func(kr *wire.Keyring) error { return kr.Install(key) })
}

func (s controlSource) UseKey(key []byte, by control.Caller) error {
	return s.keyOp("key_use", key, by, func(kr *wire.Keyring) error { return kr.UsePrimary(key) })
}

func (s controlSource) RemoveKey(key []byte, by control.Caller) error {
	return s.keyOp("key_remove", key, by, func(kr *wire.Keyring) error {
		switch err := kr.Remove(key); {
		case errors.Is(err, wire.ErrNoKey):
			return control.ErrUnknownKey
		case errors.Is(err, wire.ErrRemovePrimary):
			return control.ErrPrimaryKey
		default:
			return err
		}
	})
}

func (s controlSource) keyOp(event string, key []byte, by control.Caller, op func(*wire.Keyring) error) error {
	n := s.n
	if n.kr == nil {
		return control.ErrKeyringOff
	}
	fp := control.KeyFingerprint(key)
	err := op(n.kr)
	r := auditRecord{Time: time.Now(), Event: event, ID: by.ID, Identity: by.Identity, Remote: by.Remote, Key: fp}
	if err != nil {
		r.Event, r.Reason = event+"_refused", err.Error()
	}
	n.audit(r)
	n.log.Info("keyring changed through the control API", "event", r.Event, "key", fp, "identity", by.Identity, "event_id", by.ID, "err", err)
	return err
}
