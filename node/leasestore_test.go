package node

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

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
	want := lease.State{Promised: 9, PromisedTo: "c", Membership: mb}
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
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("data dir holds %d entries (%v): a temporary file was left behind", len(ents), err)
	}
}

func TestFileLeaseStorageCorruptFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, leaseStateFile), []byte("{trunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewFileLeaseStorage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load of a torn file: %v; want a corrupt-state error", err)
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
