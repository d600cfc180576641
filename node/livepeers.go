package node

import (
	"net/netip"
	"sync"

	"github.com/omnirelay/mesh/swim"
)

// livePeers is the set of other live (alive or suspect) members, kept by the loop
// from swim's events and read by goroutines that must not wait for the loop: the
// accept goroutine (isMemberIP), stream dialers (the name a TLS peer must present)
// and enrollment (nameTaken). Each event costs O(1): rebuilding the set from the
// whole view at every flush with events made a formation of N nodes O(N²) per node.
type livePeers struct {
	mu     sync.RWMutex
	self   string
	addrOf map[string]string     // name -> address
	byAddr map[string]atAddr     // address -> who is there
	ips    map[netip.Addr]uint32 // IP -> live members at it
}

// atAddr is the live members at one address: how many, and the name of the one
// that came last (two at once is a node restarted under a new name, the old one not
// yet declared dead).
type atAddr struct {
	name string
	n    uint32
}

func newLivePeers(self string) *livePeers {
	return &livePeers{self: self, addrOf: map[string]string{}, byAddr: map[string]atAddr{}, ips: map[netip.Addr]uint32{}}
}

// apply follows evs, in order: each carries its member as the view held it then,
// and every change of a member's status or address comes with one.
func (p *livePeers) apply(evs []swim.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range evs {
		m := e.Member
		if m.Name == p.self || e.Kind == EventMeta {
			continue
		}
		if old, ok := p.addrOf[m.Name]; ok {
			p.remove(m.Name, old)
		}
		if m.Status == swim.StatusAlive || m.Status == swim.StatusSuspect {
			p.addrOf[m.Name] = m.Addr
			p.byAddr[m.Addr] = atAddr{name: m.Name, n: p.byAddr[m.Addr].n + 1}
			if ip, ok := memberIP(m.Addr); ok {
				p.ips[ip]++
			}
		}
	}
}

func (p *livePeers) remove(name, addr string) {
	delete(p.addrOf, name)
	switch at := p.byAddr[addr]; {
	case at.n <= 1:
		delete(p.byAddr, addr)
	case at.name != name:
		p.byAddr[addr] = atAddr{name: at.name, n: at.n - 1}
	default: // find the other one: only when two live members share the address
		for other, a := range p.addrOf {
			if a == addr {
				p.byAddr[addr] = atAddr{name: other, n: at.n - 1}
				break
			}
		}
	}
	if ip, ok := memberIP(addr); ok {
		if p.ips[ip] <= 1 {
			delete(p.ips, ip)
		} else {
			p.ips[ip]--
		}
	}
}

func memberIP(addr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// hasIP reports whether ip is the IP of another live member.
func (p *livePeers) hasIP(ip netip.Addr) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.ips[ip]
	return ok
}

// nameAt is the name of the live member at addr, "" if none.
func (p *livePeers) nameAt(addr string) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.byAddr[addr].name
}

// has reports whether name is another live member.
func (p *livePeers) has(name string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.addrOf[name]
	return ok
}
