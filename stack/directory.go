package stack

import "github.com/omnirelay/mesh/swim"

// directory is the stack's one name → address table, which lease and shard
// messages (addressed by node name) are routed by. Policy: a member keeps the
// address swim last saw it at, dead or not, until it leaves gracefully. After a
// partition heals, renewals, grants and lease messages then flow at once instead
// of waiting for swim to re-admit the other side, so maps and leases agree sooner;
// a message to a dead node is one datagram the network drops, and those are
// bounded (lease talks to 3 or 5 voters, shard owners to one leader). Forgetting
// the dead instead would only save those datagrams. The table is bounded by the
// members swim reported, as swim's own table is.
type directory map[string]dirEntry

type dirEntry struct {
	addr string
	live bool // alive or suspect in swim's view
}

// track applies swim's membership events.
func (d directory) track(evs []swim.Event) {
	for _, e := range evs {
		switch e.Kind {
		case swim.EventLeft:
			delete(d, e.Member.Name)
		case swim.EventDead:
			d[e.Member.Name] = dirEntry{addr: e.Member.Addr}
		default:
			d[e.Member.Name] = dirEntry{addr: e.Member.Addr, live: true}
		}
	}
}

// lookup is the address to send name's messages to.
func (d directory) lookup(name string) (string, bool) {
	e, ok := d[name]
	return e.addr, ok
}

// live reports whether swim holds name alive or suspect.
func (d directory) live(name string) bool { return d[name].live }
