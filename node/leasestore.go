package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/omnirelay/mesh/lease"
)

// leaseStateFile is the name of the lease state file inside Config.DataDir.
const leaseStateFile = "lease-state.json"

// FileLeaseStorage is a lease.Storage kept in one JSON file. Save replaces the
// file atomically and durably: write a temporary file in the same directory, fsync
// it, rename it over the old one, fsync the directory. A crash at any point leaves
// either the old state or the new one, never a torn file, and a returned Save has
// reached the disk: a restarted voter can never lower its promised epoch. Not safe
// for concurrent use (the node's loop is its only user).
type FileLeaseStorage struct {
	path string
}

// NewFileLeaseStorage keeps the lease state in dir/lease-state.json, creating dir
// (mode 0700) if needed.
func NewFileLeaseStorage(dir string) (*FileLeaseStorage, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	return &FileLeaseStorage{path: filepath.Join(dir, leaseStateFile)}, nil
}

// Path is the state file's path.
func (s *FileLeaseStorage) Path() string { return s.path }

// Load returns the saved state, or the zero state when no file exists yet. A file
// that does not parse is an error, not a zero state: starting over would let this
// voter promise an epoch below one it already promised.
func (s *FileLeaseStorage) Load() (lease.State, error) {
	var st lease.State
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("node: reading lease state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("node: lease state %s is corrupt (remove it only if this voter's promises may be forgotten): %w", s.path, err)
	}
	return st, nil
}

// Save replaces the saved state durably.
func (s *FileLeaseStorage) Save(st lease.State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("node: encoding lease state: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, ".lease-state-*")
	if err != nil {
		return fmt.Errorf("node: saving lease state: %w", err)
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("node: saving lease state: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("node: saving lease state: %w", err)
	}
	// The rename is durable only once the directory entry is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("node: saving lease state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("node: saving lease state: syncing %s: %w", dir, err)
	}
	return nil
}
