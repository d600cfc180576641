package lease

import "slices"

// State is what a voter must never forget: its promise and its voter set. It is
// saved (Ready.State) before any message that depends on it is sent, and loaded when
// the machine starts. Accepted leases are deliberately not saved: a restarted voter
// instead grants nothing for QuietPeriod, as in PaxosLease.
type State struct {
	// Promised is the highest epoch this voter promised or accepted; it never
	// decreases, across restarts too. A candidate picks its next epoch above it.
	Promised uint64
	// PromisedTo is the candidate Promised went to: one epoch is promised to at most
	// one candidate, which is what makes epochs unique across holders.
	PromisedTo string
	// Membership is the newest voter set this node has seen; zero until the first
	// change, meaning Config.Voters.
	Membership Membership
}

// Storage keeps a State across restarts. node backs it with an atomically replaced,
// fsynced file; sim and tests with MemoryStorage. Save must be durable when it
// returns: the host sends the messages of a Ready only after Save succeeded.
type Storage interface {
	// Load returns the last saved State, or the zero State if none was saved.
	Load() (State, error)
	// Save replaces the saved State durably.
	Save(State) error
}

// MemoryStorage is a Storage in memory: it survives a simulated restart (a new
// Machine built on the same MemoryStorage) but not the process. Not safe for
// concurrent use.
type MemoryStorage struct {
	st    State
	saves uint64
}

// Load returns the last saved State.
func (s *MemoryStorage) Load() (State, error) { return cloneState(s.st), nil }

// Save keeps a copy of st.
func (s *MemoryStorage) Save(st State) error {
	s.st = cloneState(st)
	s.saves++
	return nil
}

// Saves counts calls to Save (tests check that promises are persisted).
func (s *MemoryStorage) Saves() uint64 { return s.saves }

func cloneState(st State) State {
	st.Membership = cloneMembership(st.Membership)
	return st
}

func cloneMembership(m Membership) Membership {
	m.Voters = slices.Clone(m.Voters)
	m.Joint = slices.Clone(m.Joint)
	return m
}
