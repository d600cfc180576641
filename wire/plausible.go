package wire

// MaxJump bounds how far one message may move a counter it carries (an
// incarnation, a lease epoch, a voter-set or shard-map version) above the value
// the receiver already holds for it (PROTOCOL.md "Implausible numbers"). Honest
// counters grow by one per refutation, election or map change, so 2^32 is never
// reached in practice, while a forged value near 2^64-1 would leave the real owner
// of the counter no number to out-bid it with: a receiver refuses such a jump.
const MaxJump = 1 << 32

// Plausible reports whether got may replace known: it is not more than MaxJump
// above it. The subtraction runs only when got > known, so it cannot wrap.
func Plausible(known, got uint64) bool {
	return got <= known || got-known <= MaxJump
}
