package sim

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/cespare/xxhash/v2"
)

// Stream returns the random stream called name under the master seed. Each concern
// (the network, the fault schedule, every node instance) draws from its own stream,
// so adding a fault or a node does not shift the numbers any other concern sees.
// The derivation is stable: xxhash64 of (seed, name) and of (name, seed) seed a PCG.
func Stream(seed uint64, name string) *rand.Rand {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h := xxhash.New()
	_, _ = h.Write(b[:])
	_, _ = h.WriteString(name)
	hi := h.Sum64()
	h.Reset()
	_, _ = h.WriteString(name)
	_, _ = h.Write(b[:])
	lo := h.Sum64()
	return rand.New(rand.NewPCG(hi, lo))
}
