package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/omnirelay/mesh/wire"
)

// resolveAddr turns a configured host:port into the IP-literal form the protocol
// carries (PROTOCOL.md, section 3.4). It may wait for a name server, so it runs only
// in the caller's goroutine (Start, Join), never on the loop. An IP literal is
// returned as it is; a name takes its first address, IPv4 first.
func resolveAddr(ctx context.Context, hostport string) (string, error) {
	if wire.CheckAddr(hostport) == nil {
		return hostport, nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("port %q is not a number in 0..65535", port)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%s has no address", host)
	}
	ip := ips[0]
	for _, a := range ips {
		if a.Unmap().Is4() {
			ip = a
			break
		}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)).String(), nil
}
