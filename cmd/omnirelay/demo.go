package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/omnirelay/mesh/node"
	"github.com/omnirelay/mesh/swim"
	"github.com/omnirelay/mesh/wire"
)

const demoUsage = `usage: omnirelay demo [--nodes N] [--verbose]

Starts N mesh nodes (default 5) in this process, talking over loopback UDP and TCP
with the default LAN timers; the first three are voters that elect a leader, which
places 64 shards on the nodes. Crashes one, restarts it, and narrates what the mesh
saw and when: membership, leadership and shards. Finishes by itself in a few seconds.
`

// The demo's leadership and shards: the first demoVoters nodes vote.
const (
	demoVoters = 3
	demoShards = 64
)

// demo narrates one run: every line is stamped with the time since the start.
type demo struct {
	out     io.Writer
	start   time.Time
	log     *slog.Logger
	nodes   []*node.Node // index i is node-(i+1); nil while crashed
	key     []byte       // the packet key every node seals with
	dataDir string       // the voters' lease state, removed at the end
	events  chan seen
	done    chan struct{}
	lastRow string
}

// seen is an event as observed by one node.
type seen struct {
	by string
	ev node.Event
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%5.2fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	count := fs.Int("nodes", 5, "how many nodes (3..20)")
	verbose := fs.Bool("verbose", false, "also print every node's structured logs to stderr")
	limit := fs.Duration("timeout", 45*time.Second, "give up if a stage takes longer than this in total")
	pos, err := parseArgs(fs, demoUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "omnirelay demo: unexpected argument %q\n", pos[0])
		return 2
	}
	if *count < 3 || *count > 20 {
		fmt.Fprintln(stderr, "omnirelay demo: --nodes must be between 3 and 20")
		return 2
	}
	d := &demo{out: stdout, start: time.Now(), events: make(chan seen, 1024), done: make(chan struct{}),
		log: slog.New(slog.DiscardHandler), key: make([]byte, wire.KeySize)}
	rand.Read(d.key)
	if *verbose {
		d.log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	if d.dataDir, err = os.MkdirTemp("", "omnirelay-demo-*"); err != nil {
		fmt.Fprintf(stderr, "omnirelay demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(d.dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	defer close(d.done)
	defer d.closeAll()
	if err := d.run(ctx, *count); err != nil {
		fmt.Fprintf(stderr, "omnirelay demo: %v\n", err)
		return 1
	}
	return 0
}

func (d *demo) closeAll() {
	for _, n := range d.nodes {
		if n != nil {
			n.Close()
		}
	}
}

func name(i int) string { return fmt.Sprintf("node-%d", i+1) }

// startNode starts node i on bind, joining through seed (if any), and forwards its
// events to d.events.
func (d *demo) startNode(ctx context.Context, i int, bind, seed string) error {
	cfg := node.Config{Name: name(i), Bind: bind, Logger: d.log, Keys: [][]byte{d.key}, Shards: demoShards}
	for v := range demoVoters {
		cfg.Voters = append(cfg.Voters, name(v))
	}
	if i < demoVoters {
		cfg.Voter, cfg.DataDir = true, filepath.Join(d.dataDir, name(i))
	}
	if seed != "" {
		cfg.Join = []string{seed}
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	d.nodes[i] = n
	sub := n.Subscribe()
	go func() {
		for ev := range sub.C {
			select {
			case d.events <- seen{by: n.Name(), ev: ev}:
			case <-d.done:
				return
			}
		}
	}()
	return nil
}

func (d *demo) run(ctx context.Context, count int) error {
	fmt.Fprintf(d.out, `OmniRelay Mesh demo: %d nodes on this machine, talking over loopback.

How the mesh works, in one paragraph: nobody is in charge. Every %v each node
picks a peer and asks "are you there?". A peer that does not answer is asked about
through 3 other nodes; if they cannot reach it either, it becomes "suspect", and
that news spreads from node to node like gossip. The suspect gets a few seconds to
say "I'm fine" (it would raise its incarnation number, which beats the rumour).
If it stays silent, it is declared "dead", and that spreads too. Every packet is
sealed with one key made for this run (AES-256-GCM; "omnirelay keygen -o FILE" makes
one for agents): a node without it can neither listen in nor take part.
The first %d nodes are voters: a majority of them grants one node a lease, the
leader, whose epoch number fences out any older leader. The leader places %d
shards on the live nodes; each serves only the shards it holds a lease for.

`, count, swim.LANProfile("", "").ProbeInterval, demoVoters, demoShards)

	d.nodes = make([]*node.Node, count)
	if err := d.startNode(ctx, 0, "127.0.0.1:0", ""); err != nil {
		return err
	}
	seed := d.nodes[0].AdvertiseAddr()
	d.say("%s started at %s: a cluster of one.", name(0), seed)
	for i := 1; i < count; i++ {
		if err := d.startNode(ctx, i, "127.0.0.1:0", seed); err != nil {
			return err
		}
	}
	d.say("%s joined through %s.", joinedList(count), name(0))
	formed, err := d.until(ctx, func() bool { return d.allSee(d.nodes, "", swim.StatusAlive) })
	if err != nil {
		return fmt.Errorf("the cluster did not form: %w", err)
	}
	d.say("Every node now sees all %d nodes alive (%.2f s after the first started).", count, formed.Sub(d.start).Seconds())
	d.table(0)
	leader, err := d.leadership(ctx, d.nodes, "")
	if err != nil {
		return err
	}
	if _, err := d.shards(ctx, d.nodes, "placed"); err != nil {
		return err
	}

	victim := count / 2
	vname := name(victim)
	bind := d.nodes[victim].Addr()
	survivors := slicesWithout(d.nodes, victim)
	d.drain()
	fmt.Fprintln(d.out)
	d.say("CRASH: %s stops dead — its sockets close with no goodbye, as if its machine lost power.", vname)
	crashed := time.Now()
	d.nodes[victim].Close()
	d.nodes[victim] = nil
	var firstSuspect time.Time
	firstDead := true
	dead, err := d.watch(ctx, vname, survivors, swim.StatusDead, func(s seen) {
		switch s.ev.Kind {
		case swim.EventSuspect:
			if firstSuspect.IsZero() {
				firstSuspect = time.Now()
				d.say("%s suspects %s: it missed a probe, and the nodes asked to check on it heard nothing either.", s.by, vname)
			} else {
				d.say("%s now suspects %s too (the rumour reached it).", s.by, vname)
			}
		case swim.EventDead:
			if firstDead {
				firstDead = false
				d.say("%s marks %s dead: the suspicion ran out with no sign of life.", s.by, vname)
			} else {
				d.say("%s learns %s is dead.", s.by, vname)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("the survivors did not agree %s is dead: %w", vname, err)
	}
	d.say("All %d survivors agree %s is dead, %.2f s after it crashed (first suspicion after %.2f s).",
		len(survivors), vname, dead.Sub(crashed).Seconds(), since(crashed, firstSuspect))
	d.table(0)
	if leader == vname {
		if _, err := d.leadership(ctx, survivors, vname); err != nil {
			return err
		}
	} else {
		d.say("LEADER: %s was not the leader; %s still is, and the remaining voters are a majority.", vname, leader)
	}
	if _, err := d.shards(ctx, survivors, "served again"); err != nil {
		return err
	}

	fmt.Fprintln(d.out)
	d.say("RESTART: %s comes back on the same address (%s) and asks %s to let it in.", vname, bind, name(0))
	d.drain()
	restarted := time.Now()
	if err := d.startNode(ctx, victim, bind, seed); err != nil {
		return fmt.Errorf("restarting %s: %w", vname, err)
	}
	back, err := d.watch(ctx, vname, d.nodes, swim.StatusAlive, func(s seen) {
		if s.ev.Kind == swim.EventJoin || s.ev.Kind == swim.EventAlive {
			d.say("%s sees %s alive again, at incarnation %d.", s.by, vname, s.ev.Member.Incarnation)
		}
	})
	if err != nil {
		return fmt.Errorf("the mesh did not see %s again: %w", vname, err)
	}
	inc := d.nodes[victim].Local().Incarnation
	d.say("All %d nodes agree %s is back, %.2f s after it restarted. It announced itself with incarnation %d,",
		count, vname, back.Sub(restarted).Seconds(), inc)
	fmt.Fprintf(d.out, "         higher than the one it was declared dead at, which is how peers know this news is newer.\n")
	d.table(0)

	fmt.Fprintln(d.out)
	d.say("Shutting down: every node leaves gracefully (peers would list them as \"left\", not \"dead\").")
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, n := range d.nodes {
		n.Leave(lctx)
	}
	fmt.Fprintf(d.out, `
Summary
  crash -> first suspicion:              %.2f s
  crash -> all survivors agree dead:     %.2f s
  restart -> everyone sees it alive:     %.2f s
Try it yourself: build once with "go build -o omnirelay ./cmd/omnirelay", make a key
once with "./omnirelay keygen -o mesh.key", then
  ./omnirelay agent --name a --key-file mesh.key
runs one node on 127.0.0.1:7946; in another terminal "./omnirelay mesh status"
reads it, and Ctrl-C stops it. The README starts three with leadership and shards.
`, since(crashed, firstSuspect), dead.Sub(crashed).Seconds(), back.Sub(restarted).Seconds())
	return nil
}

func since(a, b time.Time) float64 {
	if b.IsZero() {
		return 0
	}
	return b.Sub(a).Seconds()
}

func joinedList(count int) string {
	var names []string
	for i := 1; i < count; i++ {
		names = append(names, name(i))
	}
	return strings.Join(names, ", ")
}

func slicesWithout(nodes []*node.Node, skip int) []*node.Node {
	var out []*node.Node
	for i, n := range nodes {
		if i != skip {
			out = append(out, n)
		}
	}
	return out
}

// allSee reports whether every node in nodes sees member (every member when "") in
// state want.
func (d *demo) allSee(nodes []*node.Node, member string, want swim.Status) bool {
	for _, n := range nodes {
		ms := n.Members()
		if member == "" && len(ms) != len(d.nodes) {
			return false
		}
		found := false
		for _, m := range ms {
			if member == "" || m.Name == member {
				found = true
				if m.Status != want {
					return false
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// until polls cond every 20 ms and returns when it first held.
func (d *demo) until(ctx context.Context, cond func() bool) (time.Time, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
	return time.Now(), nil
}

// drain discards queued events (joins of the cluster's formation).
func (d *demo) drain() {
	for {
		select {
		case <-d.events:
		default:
			return
		}
	}
}

// watch narrates events about member seen by the observers and prints a live row
// of each observer's view of it whenever the row changes, until every observer sees
// it in state want.
func (d *demo) watch(ctx context.Context, member string, observers []*node.Node, want swim.Status, narrate func(seen)) (time.Time, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		for pending := true; pending; {
			select {
			case s := <-d.events:
				if s.ev.Member.Name == member && s.by != member {
					narrate(s)
				}
			default:
				pending = false
			}
		}
		if d.liveRow(member, observers, want) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
}

// liveRow prints how each observer currently sees member, when that changed, and
// reports whether every observer sees it in state want.
func (d *demo) liveRow(member string, observers []*node.Node, want swim.Status) bool {
	var parts []string
	all := true
	for _, n := range observers {
		st, ok := "unknown", false
		for _, m := range n.Members() {
			if m.Name == member {
				st, ok = m.Status.String(), m.Status == want
			}
		}
		all = all && ok
		parts = append(parts, fmt.Sprintf("%s: %-7s", n.Name(), st))
	}
	row := strings.TrimSpace(strings.Join(parts, "  "))
	if row != d.lastRow {
		d.lastRow = row
		d.say("  view of %s -> %s", member, row)
	}
	return all
}

// table prints node i's peer table.
func (d *demo) table(i int) {
	n := d.nodes[i]
	fmt.Fprintf(d.out, "\n  Peer table as %s sees it:\n", n.Name())
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    NAME\tADDRESS\tSTATUS\tINCARNATION")
	for _, m := range n.Members() {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%d\n", m.Name, m.Addr, m.Status.String(), m.Incarnation)
	}
	tw.Flush()
	fmt.Fprintln(d.out)
}

// leadership waits until every node in nodes names one leader other than gone and
// narrates it; it returns the leader's name.
func (d *demo) leadership(ctx context.Context, nodes []*node.Node, gone string) (string, error) {
	start := time.Now()
	var li node.LeaderInfo
	_, err := d.until(ctx, func() bool {
		li = nodes[0].Leader()
		if li.Holder == "" || li.Holder == gone {
			return false
		}
		for _, n := range nodes[1:] {
			if l := n.Leader(); l.Holder != li.Holder || l.Epoch != li.Epoch {
				return false
			}
		}
		return true
	})
	if err != nil {
		return "", fmt.Errorf("no leader agreed on: %w", err)
	}
	if gone == "" {
		d.say("LEADER: %s holds the lease at epoch %d, and every node agrees; epoch %d is the fencing token it attaches to its writes.", li.Holder, li.Epoch, li.Epoch)
	} else {
		d.say("FAILOVER: %s led; its lease ran out and %s won the election at epoch %d, %.2f s later. A write %s made at the old epoch would now be refused.",
			gone, li.Holder, li.Epoch, time.Since(start).Seconds(), gone)
	}
	return li.Holder, nil
}

// shards waits until every shard is served by one of nodes and narrates who serves
// how many.
func (d *demo) shards(ctx context.Context, nodes []*node.Node, what string) (time.Time, error) {
	start := time.Now()
	counts := make([]int, len(nodes))
	at, err := d.until(ctx, func() bool {
		total := 0
		for i, n := range nodes {
			counts[i] = len(n.OwnedShards())
			total += counts[i]
		}
		return total == demoShards
	})
	if err != nil {
		return at, fmt.Errorf("the shards were not all served: %w", err)
	}
	var parts []string
	for i, n := range nodes {
		parts = append(parts, fmt.Sprintf("%s %d", n.Name(), counts[i]))
	}
	d.say("SHARDS: all %d %s (%.2f s), one owner each: %s.", demoShards, what, at.Sub(start).Seconds(), strings.Join(parts, ", "))
	return at, nil
}
