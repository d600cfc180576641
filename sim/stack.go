package sim

import (
	"math/rand/v2"
	"time"

	"github.com/omnirelay/mesh/stack"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

// Stack is the protocol stack of one simulated node: the methods of stack.Stack the
// simulator drives, plus the reads it takes ground truth against. HostStack adapts a
// real stack.Stack; tests of the engine itself plug in small fakes.
type Stack interface {
	HandlePacket(now time.Time, from string, data []byte)
	HandleStream(now time.Time, from string, req []byte) []byte
	StreamReply(now time.Time, id uint64, reply []byte)
	StreamFailed(now time.Time, id uint64)
	Tick(now time.Time)
	Join(now time.Time, seeds []string)
	Leave(now time.Time)
	NextDeadline() time.Time
	// Ready, HasReady, Saved and Advance follow stack.Ready's contract; the
	// simulator calls Ready once per round.
	Ready() stack.Ready
	HasReady() bool
	Saved(now time.Time, version uint64, err error)
	Advance()
	Members() []swim.Member
	Digest() wire.Digest
}

// StackFactory builds the stack of a node instance. rng is that instance's own
// stream; now is its local clock at start.
type StackFactory func(name, addr string, rng *rand.Rand, now time.Time) (Stack, error)

// hostStack runs the production glue, internal/stack.Stack, inside the simulator.
type hostStack struct{ *stack.Stack }

func (h hostStack) Members() []swim.Member { return h.Swim().Members() }
func (h hostStack) Digest() wire.Digest    { return h.Swim().Digest() }

// HandleStream: simulated streams carry no certificates.
func (h hostStack) HandleStream(now time.Time, from string, req []byte) []byte {
	return h.Stack.HandleStream(now, from, "", req)
}

// HostFactory returns a factory of real stack.Stack stacks whose swim configuration
// is built by conf for each node (name, address).
func HostFactory(conf func(name, addr string) stack.Config) StackFactory {
	return func(name, addr string, rng *rand.Rand, now time.Time) (Stack, error) {
		h, err := stack.New(conf(name, addr), rng, now)
		if err != nil {
			return nil, err
		}
		return hostStack{h}, nil
	}
}
