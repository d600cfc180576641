package wire

import (
	"fmt"
	"net/netip"
)

// CheckAddr reports whether addr is a host:port whose host is an IP literal
// ("10.0.0.5:7946", "[fd00::5]:7946"), the only address form the protocol carries
// (PROTOCOL.md, section 3.4). A host name is refused: a receiver that had to resolve
// it would block on the network for an address a peer chose. The error names addr.
func CheckAddr(addr string) error {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return fmt.Errorf("%w: address %q is not an IP-literal host:port", ErrMalformed, addr)
	}
	return nil
}
