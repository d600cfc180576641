package swim

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/omnirelay/mesh/internal/vnet"
	"github.com/omnirelay/mesh/wire"
)

// tnet is a tiny in-test network of Machines in virtual time, on the shared
// virtual network (internal/vnet): packets arrive after a fixed delay, links are
// cut by its partitions, and push-pull streams complete instantly (through the
// real frame codec). Everything happens in a fixed order, so a run is a function
// of its seed.
type tnet struct {
	t      testing.TB
	now    time.Time // epoch + net.Now()
	net    *vnet.Net[[]byte]
	nodes  []*tnode
	byAddr map[string]*tnode
	trace  hash.Hash64    // when set, every packet and event is written to it
	dialed map[string]int // packets and streams sent, by destination address
	// onStream, when set, sees every push-pull a node starts, before it runs.
	onStream func(from, to string)
}

type tnode struct {
	m      *Machine
	addr   string
	name   string
	down   bool
	events []Event
	user   []Payload
	meta   []Payload
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func addrOf(i int) string { return fmt.Sprintf("10.0.0.%d:7946", i) }

// newNet starts n nodes named n0..n(n-1); mod adjusts each config. Nothing joins yet.
func newNet(t testing.TB, n int, seed uint64, mod func(*Config)) *tnet {
	t.Helper()
	// A fixed delay and no loss: the links' draws never touch the random source.
	net, err := vnet.NewNet[[]byte](vnet.Link{Latency: time.Millisecond}, rand.New(rand.NewPCG(seed, 0)))
	if err != nil {
		t.Fatal(err)
	}
	nt := &tnet{t: t, now: epoch, net: net, byAddr: map[string]*tnode{}, dialed: map[string]int{}}
	net.Deliver = nt.deliver
	for i := range n {
		nt.add(fmt.Sprintf("n%d", i), addrOf(i), seed+uint64(i), mod)
	}
	return nt
}

// add starts a node (a fresh Machine; an existing node with that address is replaced,
// which is what a restart looks like).
func (nt *tnet) add(name, addr string, seed uint64, mod func(*Config)) *tnode {
	nt.t.Helper()
	cfg := LANProfile(name, addr)
	if mod != nil {
		mod(&cfg)
	}
	// Mix the seed: PCG streams from consecutive seeds are correlated, and correlated
	// machines pick the same random peers.
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", seed, name)
	m, err := New(cfg, rand.New(rand.NewPCG(h.Sum64(), seed)), nt.now)
	if err != nil {
		nt.t.Fatal(err)
	}
	nd := &tnode{m: m, addr: addr, name: name}
	if old := nt.byAddr[addr]; old != nil {
		i := slices.Index(nt.nodes, old)
		nt.nodes[i] = nd
	} else {
		nt.nodes = append(nt.nodes, nd)
	}
	nt.byAddr[addr] = nd
	nt.net.Add(addr)
	return nd
}

// ep is the network endpoint of the nodes' addresses, for partitions.
func (nt *tnet) ep(nds ...*tnode) []int {
	var out []int
	for _, nd := range nds {
		i, _ := nt.net.Index(nd.addr)
		out = append(out, i)
	}
	return out
}

func (nt *tnet) node(name string) *tnode {
	for _, nd := range nt.nodes {
		if nd.name == name {
			return nd
		}
	}
	nt.t.Fatalf("no node %s", name)
	return nil
}

// joinAll joins every node but the first through the first.
func (nt *tnet) joinAll() {
	for _, nd := range nt.nodes[1:] {
		nd.m.Join(nt.now, []string{nt.nodes[0].addr})
	}
}

// reachable reports whether a stream from from gets to a running to.
func (nt *tnet) reachable(from, to string) bool {
	dst := nt.byAddr[to]
	if dst == nil || dst.down {
		return false
	}
	a, _ := nt.net.Index(from)
	b, _ := nt.net.Index(to)
	return nt.net.Reachable(a, b)
}

// deliver hands an arrived packet to the node now at its address, unless it is down.
func (nt *tnet) deliver(from, to int, data []byte) {
	if dst := nt.byAddr[nt.net.Name(to)]; !dst.down {
		dst.m.HandlePacket(nt.now, nt.net.Name(from), data)
	}
}

// drain collects every node's outputs until none is left.
func (nt *tnet) drain() {
	for busy := true; busy; {
		busy = false
		for _, nd := range nt.nodes {
			if nd.down {
				continue
			}
			r := nd.m.Ready()
			if len(r.Packets)+len(r.Streams)+len(r.Events) > 0 {
				busy = true
			}
			nd.events = append(nd.events, r.Events...)
			nd.user = append(nd.user, r.User...)
			nd.meta = append(nd.meta, r.Meta...)
			for _, p := range r.Packets {
				nt.record("p", nd.addr, p.To, p.Data)
				nt.dialed[p.To]++
				src, _ := nt.net.Index(nd.addr)
				nt.net.Send(src, p.To, p.Data)
			}
			for _, e := range r.Events {
				nt.record("e", nd.name, e.Member.Name, []byte{byte(e.Kind), byte(e.Member.Status), byte(e.Member.Incarnation)})
			}
			for _, s := range r.Streams {
				nt.dialed[s.To]++
				nt.stream(nd, s)
			}
		}
	}
}

// stream runs one push-pull exchange through the frame codec.
func (nt *tnet) stream(src *tnode, s Stream) {
	if nt.onStream != nil {
		nt.onStream(src.addr, s.To)
	}
	if !nt.reachable(src.addr, s.To) || !nt.reachable(s.To, src.addr) {
		src.m.PushPullFailed(nt.now, s.To)
		return
	}
	dst := nt.byAddr[s.To]
	reply := dst.m.HandlePushPull(nt.now, src.addr, roundTrip(nt.t, s.Msg))
	if reply == nil {
		src.m.PushPullFailed(nt.now, s.To)
		return
	}
	src.m.HandlePushPullReply(nt.now, s.To, roundTrip(nt.t, reply))
}

func roundTrip(t testing.TB, pp *wire.PushPull) *wire.PushPull {
	b, err := wire.EncodeFrame(pp, wire.ClusterHash(""))
	if err != nil {
		t.Fatal(err)
	}
	var d wire.Decoder
	_, msg, err := wire.DecodeFrame(b, wire.DefaultMaxFrame, &d)
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*wire.PushPull)
}

func (nt *tnet) record(kind, a, b string, data []byte) {
	if nt.trace == nil {
		return
	}
	fmt.Fprintf(nt.trace, "%d %s %s %s ", nt.now.UnixNano(), kind, a, b)
	nt.trace.Write(data)
}

// run advances virtual time to now+d, delivering packets and ticking machines.
func (nt *tnet) run(d time.Duration) {
	until := nt.now.Add(d)
	for {
		nt.drain()
		next := until
		if at, ok := nt.net.NextAt(); ok && epoch.Add(at).Before(next) {
			next = epoch.Add(at)
		}
		for _, nd := range nt.nodes {
			if dl := nd.m.NextDeadline(); !nd.down && !dl.IsZero() && dl.Before(next) {
				next = dl
			}
		}
		if next.Before(nt.now) {
			next = nt.now
		}
		if next.After(until) || (next.Equal(until) && nt.now.Equal(until)) {
			nt.now = until
			nt.net.Run(until.Sub(epoch)) // nothing is due: this only moves its clock
			return
		}
		nt.now = next
		nt.net.Run(next.Sub(epoch)) // the packets due, in the order they were sent
		for _, nd := range nt.nodes {
			if dl := nd.m.NextDeadline(); !nd.down && !dl.After(nt.now) {
				nd.m.Tick(nt.now)
			}
		}
	}
}

// statusOf is name's status in nd's view, or -1 when unknown.
func statusOf(nd *tnode, name string) (Member, bool) {
	for _, mem := range nd.m.Members() {
		if mem.Name == name {
			return mem, true
		}
	}
	return Member{}, false
}

// converged reports whether every up node sees every other up node alive.
func (nt *tnet) converged() bool {
	for _, a := range nt.nodes {
		if a.down {
			continue
		}
		for _, b := range nt.nodes {
			if b.down {
				continue
			}
			mem, ok := statusOf(a, b.name)
			if !ok || mem.Status != StatusAlive {
				return false
			}
		}
	}
	return true
}

// runUntil runs in steps of step until cond holds or limit passes; it reports the
// virtual time taken.
func (nt *tnet) runUntil(limit, step time.Duration, cond func() bool) (time.Duration, bool) {
	start := nt.now
	for nt.now.Sub(start) < limit {
		if cond() {
			return nt.now.Sub(start), true
		}
		nt.run(step)
	}
	return nt.now.Sub(start), cond()
}

// formed is a cluster of n nodes, all joined through the first and converged, and
// how long that took.
func formed(t *testing.T, n int, seed uint64) (*tnet, time.Duration) {
	t.Helper()
	nt := newNet(t, n, seed, nil)
	nt.joinAll()
	took, ok := nt.runUntil(30*time.Second, 10*time.Millisecond, nt.converged)
	if !ok {
		t.Fatalf("%d nodes did not converge in 30 s", n)
	}
	return nt, took
}
