package sim

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/lease"
)

// While a voter's disk fails, its promises never leave (the stack holds the lease
// packets until a save works), so with the leader crashed the last healthy voter
// is no majority and nobody leads: safety holds, no two leaders per epoch. Once
// the disk recovers, the voter saves the state it was offered again, its packets
// leave, and a leader is elected at a higher epoch.
func TestLeaseSafeWhileVoterDiskFails(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		s := newLeaseSim(t, seed, 5, 3, false, lease.DefaultConfig("", nil))
		s.RunFor(10 * time.Second)
		ls, err := s.Leaders()
		if err != nil || len(ls) != 1 {
			t.Fatalf("seed %d: leaders %v (%v), want one", seed, ls, err)
		}
		old := s.byName[ls[0]]
		voters := VoterNames(3)
		if !slices.Contains(voters, ls[0]) {
			t.Fatalf("seed %d: leader %s is no voter", seed, ls[0])
		}
		var sick string
		for _, v := range voters {
			if v != ls[0] {
				sick = v
				break
			}
		}
		epoch := s.Holdings()[len(s.Holdings())-1].Epoch
		promised, _ := s.leases.storages[sick].Load()
		s.FailDisk(int(s.byName[sick]), 20*time.Second)
		s.Crash(int(old))
		s.RunFor(18 * time.Second)
		if ls, _ := s.Leaders(); len(ls) != 0 {
			t.Fatalf("seed %d: leaders %v while a voter's disk fails and the leader is down", seed, ls)
		}
		if st, _ := s.leases.storages[sick].Load(); !reflect.DeepEqual(st, promised) {
			t.Fatalf("seed %d: the failing disk changed: %+v, was %+v", seed, st, promised)
		}
		s.RunFor(15 * time.Second)
		ls, _ = s.Leaders()
		if len(ls) != 1 {
			t.Fatalf("seed %d: after the disk recovered leaders %v, want one", seed, ls)
		}
		if h := s.Holdings(); h[len(h)-1].Epoch <= epoch {
			t.Fatalf("seed %d: new lease at epoch %d, not above %d", seed, h[len(h)-1].Epoch, epoch)
		}
		if st, _ := s.leases.storages[sick].Load(); st.Promised <= promised.Promised {
			t.Fatalf("seed %d: recovered voter's disk holds promise %d, was %d", seed, st.Promised, promised.Promised)
		}
		if v, first := s.LeaseViolations(); v != 0 {
			t.Fatalf("seed %d: %d safety violations; first %s", seed, v, first)
		}
	}
}
