package swim

import (
	"math/rand/v2"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// Placeholders until the membership machine lands; that work replaces this file.

// Config configures a Machine.
type Config struct {
	Name string // unique node name
	Addr string // advertised host:port
}

// Machine is one node's membership state machine. Not safe for concurrent use.
type Machine struct{}

func New(cfg Config, rng *rand.Rand, now time.Time) (*Machine, error)   { panic("unimplemented") }
func (m *Machine) HandlePacket(now time.Time, from string, data []byte) { panic("unimplemented") }
func (m *Machine) HandlePushPull(now time.Time, from string, pp *wire.PushPull) *wire.PushPull {
	panic("unimplemented")
}
func (m *Machine) HandlePushPullReply(now time.Time, from string, pp *wire.PushPull) {
	panic("unimplemented")
}
func (m *Machine) PushPullFailed(now time.Time, to string) { panic("unimplemented") }
func (m *Machine) CountMalformed()                         { panic("unimplemented") }
func (m *Machine) Tick(now time.Time)                      { panic("unimplemented") }
func (m *Machine) Join(now time.Time, seeds []string)      { panic("unimplemented") }
func (m *Machine) Leave(now time.Time)                     { panic("unimplemented") }
func (m *Machine) NextDeadline() time.Time                 { panic("unimplemented") }
func (m *Machine) Ready() Ready                            { panic("unimplemented") }
func (m *Machine) Members() []Member                       { panic("unimplemented") }
func (m *Machine) Digest() wire.Digest                     { panic("unimplemented") }
