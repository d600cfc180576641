package sim

import "github.com/omnirelay/mesh/internal/vnet"

// Link describes one direction of a link between two nodes: the shared virtual
// network's link (internal/vnet), so sim and the protocols' tests model the same
// network.
type Link = vnet.Link

// DefaultLink is the link every pair of nodes gets unless overridden: a LAN with
// 0.5–2 ms one-way delay, no loss.
func DefaultLink() Link { return vnet.DefaultLink() }
