package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/omnirelay/mesh/lease"
)

// leaseStateFile is the name of the lease state file inside Config.DataDir.
const leaseStateFile = "lease-state.json"

// leaseStateFormat is the version of the file's layout (docs/lease.md, "The state
// file"). Version 1 was the unversioned, unchecksummed encoding of lease.State.
const leaseStateFormat = 2

// ErrLeaseState is wrapped by FileLeaseStorage.Load for a state file it refuses:
// corrupt, of an unknown format, or missing a field.
var ErrLeaseState = errors.New("node: lease state file refused")

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
// (mode 0700) if needed; a dir it cannot write to is an ErrInvalidConfig.
func NewFileLeaseStorage(dir string) (*FileLeaseStorage, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	// Found now rather than at the first promise, which would fail every election.
	probe, err := os.CreateTemp(dir, ".write-check-*")
	if err == nil {
		os.Remove(probe.Name())
		err = probe.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: data dir %s is not writable (a voter saves its lease promises there): %w", ErrInvalidConfig, dir, err)
	}
	return &FileLeaseStorage{path: filepath.Join(dir, leaseStateFile)}, nil
}

// Path is the state file's path.
func (s *FileLeaseStorage) Path() string { return s.path }

// leaseStateBody is format 2 without its checksum: what the checksum covers,
// encoded by json.Marshal in this field order.
type leaseStateBody struct {
	Format     int             `json:"format"`
	Promised   uint64          `json:"promised"`
	PromisedTo string          `json:"promised_to"`
	Membership leaseMembership `json:"membership"`
}

type leaseMembership struct {
	Epoch  uint64   `json:"epoch"`
	Seq    uint64   `json:"seq"`
	Voters []string `json:"voters"`
	Joint  []string `json:"joint"`
}

// leaseStateFile2 is a format 2 file as read.
type leaseStateFile2 struct {
	leaseStateBody
	CRC32C string `json:"crc32c"`
}

// leaseStateFile1 is format 1, json.Marshal of lease.State as written before
// format 2 existed; read once, strictly, and rewritten as format 2.
type leaseStateFile1 struct {
	Promised   uint64
	PromisedTo string
	Membership struct {
		Epoch, Seq    uint64
		Voters, Joint []string
	}
}

// The exact keys of each format, top level and membership: a missing key must not
// read as zero (a file that forgot its promise is not one that never promised),
// and encoding/json matches keys case-insensitively, so a misspelling in case only
// would otherwise pass.
var (
	leaseKeys2 = [2][]string{{"format", "promised", "promised_to", "membership", "crc32c"}, {"epoch", "seq", "voters", "joint"}}
	leaseKeys1 = [2][]string{{"Promised", "PromisedTo", "Membership"}, {"Epoch", "Seq", "Voters", "Joint"}}
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeLeaseState is the canonical body of st and its checksum. Empty voter lists
// are written as [] (never null) and read back as nil, so a state and its decoded
// copy have one encoding.
func encodeLeaseState(st lease.State) (body []byte, sum string, err error) {
	mb := leaseMembership{Epoch: st.Membership.Epoch, Seq: st.Membership.Seq,
		Voters: append([]string{}, st.Membership.Voters...), Joint: append([]string{}, st.Membership.Joint...)}
	body, err = json.Marshal(leaseStateBody{Format: leaseStateFormat, Promised: st.Promised, PromisedTo: st.PromisedTo, Membership: mb})
	return body, fmt.Sprintf("%08x", crc32.Checksum(body, castagnoli)), err
}

// decodeStrict decodes b, one JSON object with exactly the keys of keys (and a
// membership object with exactly keys[1]), into v, refusing anything after it.
func decodeStrict(b []byte, keys [2][]string, mbKey string, v any) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return err
	}
	if err := exactKeys(top, keys[0]); err != nil {
		return err
	}
	var mb map[string]json.RawMessage
	if err := json.Unmarshal(top[mbKey], &mb); err != nil {
		return fmt.Errorf("%s: %w", mbKey, err)
	}
	if err := exactKeys(mb, keys[1]); err != nil {
		return fmt.Errorf("%s: %w", mbKey, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the state")
	}
	return nil
}

func exactKeys(m map[string]json.RawMessage, want []string) error {
	if m == nil {
		return errors.New("not a JSON object")
	}
	for _, k := range want {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("no %q key", k)
		}
	}
	for k := range m {
		if !slices.Contains(want, k) {
			return fmt.Errorf("unknown key %q", k)
		}
	}
	return nil
}

// Load returns the saved state, or the zero state when no file exists yet. A file
// it cannot trust is an error naming the file, never a zero state: starting over
// would let this voter promise an epoch below one it already promised. A format 1
// file (no checksum) is read strictly and rewritten as format 2 at once.
func (s *FileLeaseStorage) Load() (lease.State, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return lease.State{}, nil
	}
	if err != nil {
		return lease.State{}, fmt.Errorf("node: reading lease state: %w", err)
	}
	st, legacy, err := parseLeaseState(b)
	if err != nil {
		return lease.State{}, fmt.Errorf("%w: %s: %v (restore it from a backup; remove it only if this voter's promises may be forgotten: docs/lease.md)", ErrLeaseState, s.path, err)
	}
	if legacy {
		if err := s.Save(st); err != nil {
			return lease.State{}, fmt.Errorf("node: rewriting format 1 lease state %s as format %d: %w", s.path, leaseStateFormat, err)
		}
	}
	return st, nil
}

// parseLeaseState decodes a state file; legacy reports a format 1 file.
func parseLeaseState(b []byte) (st lease.State, legacy bool, err error) {
	var f2 leaseStateFile2
	err2 := decodeStrict(b, leaseKeys2, "membership", &f2)
	if err2 != nil {
		var f1 leaseStateFile1
		if err1 := decodeStrict(b, leaseKeys1, "Membership", &f1); err1 != nil {
			return st, false, fmt.Errorf("neither format 2 (%v) nor format 1 (%v)", err2, err1)
		}
		mb := f1.Membership
		return leaseState(f1.Promised, f1.PromisedTo, mb.Epoch, mb.Seq, mb.Voters, mb.Joint), true, nil
	}
	if f2.Format != leaseStateFormat {
		return st, false, fmt.Errorf("format %d, this build reads %d (and 1)", f2.Format, leaseStateFormat)
	}
	mb := f2.Membership
	st = leaseState(f2.Promised, f2.PromisedTo, mb.Epoch, mb.Seq, mb.Voters, mb.Joint)
	if _, sum, err := encodeLeaseState(st); err != nil || sum != f2.CRC32C {
		return lease.State{}, false, fmt.Errorf("checksum mismatch: crc32c %q in the file, %s of its content", f2.CRC32C, sum)
	}
	return st, false, nil
}

func leaseState(promised uint64, to string, epoch, seq uint64, voters, joint []string) lease.State {
	if len(voters) == 0 {
		voters = nil
	}
	if len(joint) == 0 {
		joint = nil
	}
	return lease.State{Promised: promised, PromisedTo: to, Membership: lease.Membership{Epoch: epoch, Seq: seq, Voters: voters, Joint: joint}}
}

// Save replaces the saved state durably.
func (s *FileLeaseStorage) Save(st lease.State) error {
	body, sum, err := encodeLeaseState(st)
	if err != nil {
		return fmt.Errorf("node: encoding lease state: %w", err)
	}
	// The checksum goes last, after the body it covers: {body..., "crc32c": sum}.
	b := append(body[:len(body)-1:len(body)-1], fmt.Sprintf(`,"crc32c":%q}`, sum)...)
	b = append(b, '\n')
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
