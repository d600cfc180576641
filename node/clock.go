package node

import "time"

// Clock is the node's only source of time (in the manner of tailscale's tstime): the
// event loop reads Now for every input it hands the state machines and sleeps on a
// Timer until the host's next deadline. Tests run the real clock inside a
// testing/synctest bubble, where it is virtual; another Clock can be injected
// through Config.Clock.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the loop uses.
type Timer interface {
	C() <-chan time.Time
	// Reset makes the timer fire after d; like time.Timer.Reset (Go 1.23+) no stale
	// value is received afterwards.
	Reset(d time.Duration)
	Stop()
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (SystemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time   { return t.t.C }
func (t sysTimer) Reset(d time.Duration) { t.t.Reset(d) }
func (t sysTimer) Stop()                 { t.t.Stop() }
