package crdt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"
)

// simAuthority stands in for the certificates: a member's "signature" is a keyed
// hash of its name and the claim, which this test's forger can only make under
// its own name. holders names the lease holder of each epoch; known, the
// members whose keys a node holds.
type simAuthority struct {
	self    string
	known   map[string]bool
	holders map[uint64]string
	checked int // signatures verified
}

func simSig(name string, claim []byte) []byte {
	h := sha256.Sum256(append([]byte(name+"\x00"), claim...))
	return append([]byte(name+":"), h[:8]...)
}

func (a *simAuthority) Sign(claim []byte) []byte { return simSig(a.self, claim) }

func (a *simAuthority) Verify(name string, epoch uint64, claim, sig []byte) Verdict {
	if name == Cluster {
		if name = a.holders[epoch]; name == "" {
			return VerdictUnknown
		}
	}
	signer, _, _ := bytes.Cut(sig, []byte(":"))
	if !a.known[string(signer)] {
		return VerdictUnknown
	}
	a.checked++
	if !bytes.Equal(sig, simSig(name, claim)) {
		return VerdictBad
	}
	return VerdictOK
}

// signedStores returns one store per name, each holding every name's key, with
// holder "l" for lease epoch 3.
func signedStores(t *testing.T, names ...string) map[string]*Store {
	t.Helper()
	out := map[string]*Store{}
	for _, n := range names {
		s := newTestStore(t, n)
		a := &simAuthority{self: n, known: map[string]bool{}, holders: map[uint64]string{3: "l"}}
		for _, o := range names {
			a.known[o] = true
		}
		s.SetAuthority("prod", a)
		out[n] = s
	}
	return out
}

func authOf(s *Store) *simAuthority { return s.auth.(*simAuthority) }

// forge is d as the member forger would sign it: every cell, and the head if d
// has one.
func forge(forger string, d Delta) Delta {
	d.Entries = slices.Clone(d.Entries)
	for i := range d.Entries {
		e := &d.Entries[i]
		e.Sig = simSig(forger, CellClaim("prod", d.Node, e.Key, e.Version, e.Deleted, e.Value))
	}
	if d.Full() {
		d.Head = simSig(forger, HeadClaim("prod", d.Node, d.Have, LiveHash(d.Entries)))
	}
	return d
}

func reasons(a Applied) []Reason {
	var out []Reason
	for _, r := range a.Refused {
		out = append(out, r.Reason)
	}
	return out
}

// A key holder cannot write another member's map: a cell signed by anyone but
// the map's node, or unsigned, or signed by a key the receiver lacks, is refused
// whole, counted by reason, and changes nothing; the writer's own cell is taken.
func TestSignedCellsOnlyFromTheirWriter(t *testing.T) {
	st := signedStores(t, "n4", "n5", "r")
	n4, r := st["n4"], st["r"]
	d := must[Delta](t)(n4.Set("grpc", []byte("10.0.0.4:9000")))
	if a := apply(t, r, d); len(a.Refused) != 0 || len(a.Changes) != 1 {
		t.Fatalf("the writer's own cell: %+v", a)
	}
	before := dump(r)
	next := Version{Epoch: d.Have.Epoch, Counter: d.Have.Counter + 1}
	evil := Delta{Node: "n4", Since: d.Have, Have: next, Floor: epochStart(next.Epoch),
		Entries: []Entry{{Key: "grpc", Value: []byte("10.6.6.6:9000"), Version: next}}}
	unsigned := evil
	unknown := forge("stranger", evil)
	for _, c := range []struct {
		name string
		d    Delta
		want Reason
	}{
		{"signed by n5", forge("n5", evil), ReasonForged},
		{"unsigned", unsigned, ReasonUnsigned},
		{"unknown key", unknown, ReasonUnknownSigner},
	} {
		a := apply(t, r, c.d)
		if got := reasons(a); !slices.Equal(got, []Reason{c.want}) || len(a.Changes) != 0 {
			t.Errorf("%s: refusals %v, changes %v; want [%v] and none", c.name, got, a.Changes, c.want)
		}
		if dump(r) != before {
			t.Errorf("%s changed the replica:\n%s", c.name, dump(r))
		}
	}
	if v, _ := r.Get("n4", "grpc"); string(v) != "10.0.0.4:9000" {
		t.Fatalf("n4's grpc reads %q", v)
	}
	// A cell or head the receiver holds already is not verified again.
	merge(t, r, n4) // the head: r's Have moves to n4's
	checked := authOf(r).checked
	apply(t, r, d)
	merge(t, r, n4)
	if authOf(r).checked != checked {
		t.Errorf("%d signatures verified for state held already", authOf(r).checked-checked)
	}
}

// A floor deletes the keys a full delta leaves out, and Have makes GC trust the
// replica is complete: both are the writer's word only with its head signature.
// Without one the entries are kept and the rest dropped; with a forged one the
// delta is refused.
func TestSignedFloorNeedsTheWritersHead(t *testing.T) {
	st := signedStores(t, "n4", "n5", "r")
	n4, r := st["n4"], st["r"]
	must[Delta](t)(n4.Set("grpc", []byte("g")))
	merge(t, r, n4)
	top := n4.nodes["n4"].have
	high := Version{Epoch: top.Epoch, Counter: top.Counter + 10}
	wipe := Delta{Node: "n4", Have: high, Floor: high} // full, no entries: "every key is dead"
	a := apply(t, r, wipe)
	if _, ok := r.Get("n4", "grpc"); !ok || len(a.Refused) != 0 {
		t.Fatalf("an unsigned floor deleted n4's grpc (or was refused: %v)", reasons(a))
	}
	if h, _ := r.Have("n4"); h != top {
		t.Errorf("an unsigned Have moved the replica's to %v, want %v", h, top)
	}
	a = apply(t, r, forge("n5", wipe))
	if got := reasons(a); !slices.Equal(got, []Reason{ReasonForged}) {
		t.Errorf("a head signed by n5: refusals %v", got)
	}
	if _, ok := r.Get("n4", "grpc"); !ok {
		t.Fatal("a floor under n5's head deleted n4's grpc")
	}
}

// The floor a replica's GC raised travels on with the writer's head: a stale
// replica that still holds a value the writer deleted (its tombstone collected
// everywhere) loses it through the relayed snapshot, each cell and head
// verified as the writer's.
func TestSignedHeadRelaysAGCFloor(t *testing.T) {
	st := signedStores(t, "n4", "r", "stale")
	n4, r, stale := st["n4"], st["r"], st["stale"]
	must[Delta](t)(n4.Set("old", []byte("x")))
	must[Delta](t)(n4.Set("keep", []byte("k")))
	merge(t, stale, n4)
	must[Delta](t)(n4.Delete("old"))
	merge(t, r, n4) // the writer's snapshot carries its head
	for _, s := range []*Store{n4, r} {
		s.GC(0, time.Minute)
		s.GC(int64(time.Hour), time.Minute)
	}
	if _, ok := r.Lookup("n4", "old"); ok {
		t.Fatal("the replica kept the tombstone: GC did not raise its floor")
	}
	snap := r.Snapshot()
	i := slices.IndexFunc(snap.Maps, func(d Delta) bool { return d.Node == "n4" })
	if len(snap.Maps[i].Head) == 0 {
		t.Fatal("the replica relays n4's map without n4's head")
	}
	a := merge(t, stale, r)
	if len(a.Refused) != 0 {
		t.Fatalf("relayed snapshot refused: %+v", a.Refused)
	}
	if _, ok := stale.Get("n4", "old"); ok {
		t.Error("the relayed floor did not delete the collected key")
	}
	if v, _ := stale.Get("n4", "keep"); string(v) != "k" {
		t.Errorf("keep reads %q", v)
	}
	// A replica that moved past the head (a newer cell by gossip) relays no head.
	d := must[Delta](t)(n4.Set("new", []byte("n")))
	apply(t, r, d)
	snap = r.Snapshot()
	i = slices.IndexFunc(snap.Maps, func(d Delta) bool { return d.Node == "n4" })
	if len(snap.Maps[i].Head) != 0 {
		t.Error("the replica relays a head that no longer describes its map")
	}
}

// The cluster map takes cells only from the holder of their lease epoch as the
// receiver knows it: another member's are forged, an epoch whose holder the
// receiver does not know is an unknown signer.
func TestSignedClusterMapOnlyFromTheEpochsHolder(t *testing.T) {
	st := signedStores(t, "l", "n5", "r")
	l, n5, r := st["l"], st["n5"], st["r"]
	d := must[Delta](t)(l.SetCluster(3, "lease.leader", []byte("l")))
	if a := apply(t, r, d); len(a.Refused) != 0 {
		t.Fatalf("the holder's write refused: %v", reasons(a))
	}
	fake := must[Delta](t)(n5.SetCluster(3, "drain.n4", []byte("1")))
	if a := apply(t, r, fake); !slices.Equal(reasons(a), []Reason{ReasonForged}) {
		t.Errorf("n5 writing epoch 3: refusals %v", reasons(a))
	}
	newer := must[Delta](t)(n5.SetCluster(9, "drain.n4", []byte("1")))
	if a := apply(t, r, newer); !slices.Equal(reasons(a), []Reason{ReasonUnknownSigner}) {
		t.Errorf("n5 opening epoch 9: refusals %v", reasons(a))
	}
	if _, ok := r.Get(Cluster, "drain.n4"); ok || r.ClusterEpoch() != 3 {
		t.Fatalf("n5's cluster write was taken (epoch %d)", r.ClusterEpoch())
	}
}

// A forged delta of the receiver's own map is refused, not refuted: a holder of
// another member's key cannot make a member re-issue its map at will.
func TestSignedForgeryOfOwnMapIsNotRefuted(t *testing.T) {
	st := signedStores(t, "n4", "n5")
	n4 := st["n4"]
	must[Delta](t)(n4.Set("grpc", []byte("g")))
	inc := n4.Incarnation()
	evil := forge("n5", Delta{Node: "n4", Have: Version{Epoch: inc + 1, Counter: 1}, Floor: epochStart(inc + 1),
		Entries: []Entry{{Key: "grpc", Value: []byte("evil"), Version: Version{Epoch: inc + 1, Counter: 1}}}})
	a := apply(t, n4, evil)
	if a.Reissue != nil || n4.Incarnation() != inc || !slices.Equal(reasons(a), []Reason{ReasonForged}) {
		t.Fatalf("reissue %v, incarnation %d (was %d), refusals %v", a.Reissue != nil, n4.Incarnation(), inc, reasons(a))
	}
	// A previous life signed with n4's own key is refuted as before.
	life := evil
	life.Entries = slices.Clone(evil.Entries)
	life.Entries[0].Sig = simSig("n4", CellClaim("prod", "n4", "grpc", life.Entries[0].Version, false, life.Entries[0].Value))
	life.Head = nil
	life.Since = life.Floor
	if a := apply(t, n4, life); a.Reissue == nil {
		t.Fatal("a previous life of n4 signed by n4 was not refuted")
	}
	// So is one signed by a key n4 does not hold (its certificate before a
	// restart): re-issuing costs a gossip, staying below it would lose n4's writes.
	inc = n4.Incarnation()
	old := forge("stranger", Delta{Node: "n4", Since: epochStart(inc + 1), Have: Version{Epoch: inc + 1, Counter: 1},
		Floor: epochStart(inc + 1), Entries: []Entry{{Key: "grpc", Value: []byte("old"), Version: Version{Epoch: inc + 1, Counter: 1}}}})
	if a := apply(t, n4, old); a.Reissue == nil || len(a.Refused) != 0 {
		t.Fatalf("a previous life under an unknown key: reissue %v, refusals %v", a.Reissue != nil, reasons(a))
	}
}

// Once a snapshot carried one forgery, the rest of it is refused unverified: an
// honest member relays only what it verified.
func TestSignedSnapshotStopsAtItsFirstForgery(t *testing.T) {
	st := signedStores(t, "a", "b", "n5", "r")
	must[Delta](t)(st["a"].Set("k", []byte("1")))
	must[Delta](t)(st["b"].Set("k", []byte("2")))
	da, _ := st["a"].DeltaSince("a", Version{})
	db, _ := st["b"].DeltaSince("b", Version{})
	snap := Snapshot{Maps: []Delta{forge("n5", da), db}}
	r := st["r"]
	checked := authOf(r).checked
	a := must[Applied](t)(r.Merge(snap))
	if got := reasons(a); !slices.Equal(got, []Reason{ReasonForged, ReasonForged}) {
		t.Errorf("refusals %v, want both forged", got)
	}
	if n := authOf(r).checked - checked; n != 1 {
		t.Errorf("%d signatures verified, want 1 (the first forgery)", n)
	}
	if len(r.Names()) != 1 {
		t.Errorf("maps created: %v", r.Names())
	}
}

// The claim bytes are PROTOCOL.md section 13's, byte for byte.
func TestMetaClaimBytesFollowTheSpec(t *testing.T) {
	got := hex.EncodeToString(CellClaim("prod", "n4", "grpc", Version{Epoch: 3, Counter: 7}, false, []byte("10.0.0.4:9000")))
	want := strings.Join(strings.Fields(`
		6f6d6e6972656c61792d6d657368207631206d6574612063656c6c 00 0004 70726f64 0002 6e34
		0004 67727063 0000000000000003 0000000000000007 00
		2413bae18643a51544e9f464c36cba5ffdb2a0117962dc1ec73ef708e60140dc`), "")
	if got != want {
		t.Fatalf("cell claim\n got %s\nwant %s", got, want)
	}
	// The live set is hashed as the spec lays it out.
	e := Entry{Key: "grpc", Value: []byte("10.0.0.4:9000"), Version: Version{Epoch: 3, Counter: 7}}
	raw, _ := hex.DecodeString("000467727063" + "0000000000000003" + "0000000000000007" + "0000000d")
	if LiveHash([]Entry{e, {Key: "gone", Version: Version{Epoch: 3, Counter: 8}, Deleted: true}}) != sha256.Sum256(append(raw, e.Value...)) {
		t.Fatal("live set hash differs from the spec's layout (or counts a tombstone)")
	}
	// The vectors' signatures verify over these claims with the vector key.
	signed := metaVectors(t)[6].delta
	x := signed.Entries[0]
	if !ed25519.Verify(vectorKey.Public().(ed25519.PublicKey), CellClaim("prod", "n4", x.Key, x.Version, x.Deleted, x.Value), x.Sig[8:]) {
		t.Fatal("the signed vector's g does not verify over its cell claim")
	}
}
