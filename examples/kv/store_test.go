package main

import (
	"errors"
	"os"
	"slices"
	"testing"
)

// An owner that opened a shard with a higher token fences every earlier owner:
// their writes and reads are refused from the moment it opened, and the log
// holds nothing they tried after that.
func TestStoreFencesEarlierOwners(t *testing.T) {
	dir := t.TempDir()
	old, err := openShard(dir, 3, Token{Epoch: 2, Version: 7}, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.close()
	if _, err := old.write(old.highest, record{Kind: recAppend, ID: "r1", Key: "k", Value: "r1"}); err != nil {
		t.Fatal(err)
	}
	// Same epoch, later grant: the version decides.
	cur, err := openShard(dir, 3, Token{Epoch: 2, Version: 9}, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.close()
	if _, err := old.write(Token{Epoch: 2, Version: 7}, record{Kind: recAppend, ID: "r2", Key: "k", Value: "r2"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("deposed owner's write: %v, want ErrFenced", err)
	}
	if _, err := old.read(Token{Epoch: 2, Version: 7}, "k"); !errors.Is(err, ErrFenced) {
		t.Fatalf("deposed owner's read: %v, want ErrFenced", err)
	}
	// A lower epoch loses whatever its version.
	if _, err := openShard(dir, 3, Token{Epoch: 1, Version: 100}, "c", nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("open with a lower epoch: %v, want ErrFenced", err)
	}
	got, err := cur.read(Token{Epoch: 2, Version: 9}, "k")
	if err != nil || !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("new owner reads %v, %v; want [r1]", got, err)
	}
}

// Request ids live in the log, so a retry that reaches the next owner after the
// first owner applied it is not applied again.
func TestStoreDedupesAcrossOwners(t *testing.T) {
	dir := t.TempDir()
	a, err := openShard(dir, 0, Token{Epoch: 1, Version: 1}, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if dup, err := a.write(Token{Epoch: 1, Version: 1}, record{Kind: recAppend, ID: "x", Key: "k", Value: "x"}); err != nil || dup {
		t.Fatalf("first write: dup %v err %v", dup, err)
	}
	if dup, _ := a.write(Token{Epoch: 1, Version: 1}, record{Kind: recAppend, ID: "x", Key: "k", Value: "x"}); !dup {
		t.Fatal("a retry to the same owner was applied again")
	}
	a.close() // the owner dies
	b, err := openShard(dir, 0, Token{Epoch: 1, Version: 4}, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if dup, err := b.write(Token{Epoch: 1, Version: 4}, record{Kind: recAppend, ID: "x", Key: "k", Value: "x"}); err != nil || !dup {
		t.Fatalf("retry at the next owner: dup %v err %v, want a duplicate", dup, err)
	}
	if _, err := b.write(Token{Epoch: 1, Version: 4}, record{Kind: recPut, ID: "y", Key: "j", Value: "v"}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string][]string{"k": {"x"}, "j": {"v"}} {
		if got, _ := b.read(Token{Epoch: 1, Version: 4}, key); !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
}

// A record torn by a crash mid-append (never acknowledged) is cut off by the
// next owner, and later records follow the last whole one.
func TestStoreCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	a, err := openShard(dir, 1, Token{Epoch: 1, Version: 1}, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.write(Token{Epoch: 1, Version: 1}, record{Kind: recAppend, ID: "x", Key: "k", Value: "x"}); err != nil {
		t.Fatal(err)
	}
	a.close()
	f, err := os.OpenFile(logPath(dir, 1), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"k":"append","t":{"e":1,"v":1},"id":"torn","key":"k","va`)
	f.Close()
	b, err := openShard(dir, 1, Token{Epoch: 1, Version: 2}, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if _, err := b.write(Token{Epoch: 1, Version: 2}, record{Kind: recAppend, ID: "z", Key: "k", Value: "z"}); err != nil {
		t.Fatal(err)
	}
	c, err := openShard(dir, 1, Token{Epoch: 1, Version: 3}, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if got, _ := c.read(Token{Epoch: 1, Version: 3}, "k"); !slices.Equal(got, []string{"x", "z"}) {
		t.Fatalf("k = %v after a torn tail, want [x z]", got)
	}
}

// The end-of-run check counts what a user would call a lost or a doubled write.
func TestTallyCountsLostAndDuplicated(t *testing.T) {
	tried := map[string]string{"a": "k", "b": "k", "c": "j", "d": "j"}
	acked := map[string]string{"a": "k", "b": "k", "c": "j"}
	seen := map[string]int{"a": 1, "b": 2, "d": 1, "old-run": 2}
	var v Verify
	tally(&v, tried, acked, seen)
	if v.Lost != 1 || v.Duplicated != 1 || v.Unacked != 1 {
		t.Fatalf("got %+v, want 1 lost (c), 1 duplicated (b), 1 unacknowledged (d), another run's ids ignored", v)
	}
}

// A handle kept from an earlier ownership, opened again, catches up with what
// the owners since appended: the same state a fresh open rebuilds, and it fences
// them the same way.
func TestStoreKeptHandleCatchesUp(t *testing.T) {
	dir := t.TempDir()
	a, err := openShard(dir, 2, Token{Epoch: 1, Version: 1}, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.write(Token{Epoch: 1, Version: 1}, record{Kind: recAppend, ID: "r1", Key: "k", Value: "r1"}); err != nil {
		t.Fatal(err)
	}
	b, err := openShard(dir, 2, Token{Epoch: 1, Version: 2}, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	for _, id := range []string{"r2", "r3"} {
		if _, err := b.write(Token{Epoch: 1, Version: 2}, record{Kind: recAppend, ID: id, Key: "k", Value: id}); err != nil {
			t.Fatal(err)
		}
	}
	a, err = openShard(dir, 2, Token{Epoch: 1, Version: 3}, "a", a)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	fresh, err := openShard(dir, 2, Token{Epoch: 1, Version: 3}, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.close()
	got, err := a.read(Token{Epoch: 1, Version: 3}, "k")
	want, ferr := fresh.read(Token{Epoch: 1, Version: 3}, "k")
	if err != nil || ferr != nil || !slices.Equal(got, want) || !slices.Equal(got, []string{"r1", "r2", "r3"}) {
		t.Fatalf("kept handle reads %v, %v; a fresh open %v, %v; want [r1 r2 r3]", got, err, want, ferr)
	}
	if dup, err := a.write(Token{Epoch: 1, Version: 3}, record{Kind: recAppend, ID: "r2", Key: "k", Value: "r2"}); err != nil || !dup {
		t.Fatalf("retry of r2 through the kept handle: dup %v, %v; want a duplicate", dup, err)
	}
	if _, err := b.write(Token{Epoch: 1, Version: 2}, record{Kind: recAppend, ID: "r4", Key: "k", Value: "r4"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("owner before the reopen writes: %v, want ErrFenced", err)
	}
}
