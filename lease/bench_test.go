package lease

import (
	"testing"
	"time"

	"github.com/omnirelay/mesh/internal/wiretest"
)

// BenchmarkRenewRoundTrip encodes and decodes a Renew body, the lease message a
// holder sends every renewal to every voter.
func BenchmarkRenewRoundTrip(b *testing.B) {
	m := &Renew{Epoch: 8, Seq: 2, Holder: "node-b", Duration: 3 * time.Second, Membership: Membership{Epoch: 7, Seq: 1, Voters: []string{"node-a", "node-b", "node-c"}}}
	wiretest.BenchBody(b, m, new(Renew))
}
