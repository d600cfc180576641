package node

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/omnirelay/mesh/lease"
)

func TestFileLeaseStorageRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := NewFileLeaseStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Load(); err != nil || !reflect.DeepEqual(st, lease.State{}) {
		t.Fatalf("Load with no file = %+v, %v; want the zero state", st, err)
	}
	mb := lease.Membership{Epoch: 5, Seq: 2, Voters: []string{"a", "b", "c"}, Joint: []string{"a", "b", "d"}}
	if err := s.Save(lease.State{Promised: 7, PromisedTo: "b", Membership: mb}); err != nil {
		t.Fatal(err)
	}
	// Both a set with a change under way and one without (Joint nil) survive.
	for _, want := range []lease.State{
		{Promised: 9, PromisedTo: "c", Membership: mb},
		{Promised: 10, PromisedTo: "a", Membership: lease.Membership{Epoch: 9, Seq: 1, Voters: []string{"a", "b"}}},
		{},
	} {
		if err := s.Save(want); err != nil {
			t.Fatal(err)
		}
		// A fresh storage on the same directory (a restarted process) reads the last save.
		s2, err := NewFileLeaseStorage(dir)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s2.Load()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Load after restart = %+v, %v; want %+v", got, err, want)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("data dir holds %d entries (%v): a temporary file was left behind", len(ents), err)
	}
}

// leaseFile writes content as the state file of a fresh directory.
func leaseFile(t *testing.T, content string) *FileLeaseStorage {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, leaseStateFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewFileLeaseStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every file that could make a voter forget or lower a promise is refused, naming
// the file: the empty object, null, a missing or misspelled key (case included), a
// bit flip in a number, data after the state, an unknown format, a torn write.
func TestFileLeaseStorageRefusesUntrustedFiles(t *testing.T) {
	s := leaseFile(t, "")
	good := lease.State{Promised: 1234, PromisedTo: "b", Membership: lease.Membership{Voters: []string{"a", "b", "c"}}}
	if err := s.Save(good); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	saved := string(b)
	const old = `{"Promised":1234,"PromisedTo":"b","Membership":{"Epoch":0,"Seq":0,"Voters":["a","b","c"],"Joint":null}}`
	for name, content := range map[string]string{
		"empty object":            "{}",
		"null":                    "null",
		"empty file":              "",
		"torn":                    saved[:len(saved)/2],
		"bit flip 1234 to 1034":   strings.Replace(saved, "1234", "1034", 1),
		"bit flip in the sum":     strings.Replace(saved, `"crc32c":"`, `"crc32c":"0`, 1)[:len(saved)-2] + "\"}",
		"misspelled key":          strings.Replace(saved, `"promised"`, `"promissed"`, 1),
		"key in another case":     strings.Replace(saved, `"promised"`, `"Promised"`, 1),
		"missing key":             strings.Replace(saved, `"promised_to":"b",`, "", 1),
		"missing membership key":  strings.Replace(saved, `"seq":0,`, "", 1),
		"unknown key":             strings.Replace(saved, `{"format"`, `{"x":1,"format"`, 1),
		"data after":              saved + "{}",
		"future format":           strings.Replace(saved, `"format":2`, `"format":3`, 1),
		"format 1 empty object":   `{"Membership":{}}`,
		"format 1 misspelled key": strings.Replace(old, "PromisedTo", "PromisedT0", 1),
		"format 1 missing key":    strings.Replace(old, `"Promised":1234,`, "", 1),
		"format 1 lower case":     strings.Replace(old, `"Promised"`, `"promised"`, 1),
		"format 1 data after":     old + " 1",
	} {
		s := leaseFile(t, content)
		st, err := s.Load()
		if !errors.Is(err, ErrLeaseState) || !strings.Contains(err.Error(), s.Path()) {
			t.Errorf("%s: Load = %+v, %v; want ErrLeaseState naming %s", name, st, err, s.Path())
		}
		if after, _ := os.ReadFile(s.Path()); string(after) != content {
			t.Errorf("%s: the refused file was changed", name)
		}
	}
}

// A file of the previous version (format 1: lease.State as json.Marshal wrote it,
// no checksum) is read once and rewritten as format 2.
func TestFileLeaseStorageUpgradesFormat1(t *testing.T) {
	s := leaseFile(t, `{"Promised":1234,"PromisedTo":"b","Membership":{"Epoch":3,"Seq":1,"Voters":["a","b","c"],"Joint":null}}`)
	want := lease.State{Promised: 1234, PromisedTo: "b", Membership: lease.Membership{Epoch: 3, Seq: 1, Voters: []string{"a", "b", "c"}}}
	if st, err := s.Load(); err != nil || !reflect.DeepEqual(st, want) {
		t.Fatalf("Load of a format 1 file = %+v, %v; want %+v", st, err, want)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil || !strings.HasPrefix(string(b), `{"format":2,`) || !strings.Contains(string(b), `"crc32c":"`) {
		t.Fatalf("the format 1 file was not rewritten as format 2: %s (%v)", b, err)
	}
	if st, err := s.Load(); err != nil || !reflect.DeepEqual(st, want) {
		t.Fatalf("Load of the rewritten file = %+v, %v", st, err)
	}
}

func TestFileLeaseStorageSaveFailsInMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	s, err := NewFileLeaseStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(lease.State{Promised: 1}); err == nil {
		t.Fatal("Save into a removed directory succeeded")
	}
}

// A voter whose state file is refused does not start, and says which file.
func TestVoterDoesNotStartOnARefusedStateFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, leaseStateFile)
		if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := Start(t.Context(), leaderConfig(t, NewMemNetwork(), 0, dir, nil))
		if err == nil {
			n.Close()
			t.Fatal("a voter started on a state file of {}")
		}
		if !errors.Is(err, ErrLeaseState) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Start: %v; want ErrLeaseState naming %s", err, path)
		}
	})
}
