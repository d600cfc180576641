package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
)

// The operator commands: they change the cluster through an agent's control API,
// so the API's roles (docs/api.md, "Routes and roles") govern them.

// leaf builds a mesh command of fixed positional arguments (min..max; max < 0: any
// number) whose work is do.
func leaf(name string, min, max int, flags func(*flag.FlagSet), do func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int) command {
	return command{name: name, run: func(args []string, stdout, stderr io.Writer) int {
		fs := flag.NewFlagSet("mesh "+name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		var a apiFlags
		a.register(fs)
		if flags != nil {
			flags(fs)
		}
		pos, err := parseArgs(fs, meshUsage, args)
		if err != nil {
			return parseExit(err, stdout)
		}
		if len(pos) < min || (max >= 0 && len(pos) > max) {
			err = fmt.Errorf("want %d..%d argument(s), got %d", min, max, len(pos))
			if max < 0 {
				err = fmt.Errorf("want at least %d argument(s), got %d", min, len(pos))
			}
		} else {
			err = a.check()
		}
		if err != nil {
			fmt.Fprintf(stderr, "omnirelay %s: %v\n", fs.Name(), err)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		return do(ctx, &a, pos, stdout, stderr)
	}}
}

// atLeader runs op against the agent at base and, if it answers that another node
// leads, once more against the leader's published control URL. It returns the
// base that answered last.
func atLeader(ctx context.Context, a *apiFlags, stderr io.Writer, op func(*control.Client) error) (string, error) {
	base, client := a.addr, a.client()
	err := op(client)
	var nl *control.NotLeaderError
	if errors.As(err, &nl) && nl.Control != "" && nl.Control != base {
		fmt.Fprintf(stderr, "omnirelay mesh: %s is not the leader; asking %s at %s\n", base, nl.Leader, nl.Control)
		base = nl.Control
		err = op(&control.Client{Base: base, HTTP: client.HTTP})
	}
	return base, err
}

// leaderError prints a failed leader-only command.
func leaderError(stderr io.Writer, base string, err error) int {
	var nl *control.NotLeaderError
	if errors.As(err, &nl) {
		fmt.Fprintf(stderr, "omnirelay mesh: not_leader: %v\n", nl)
		return 1
	}
	return meshError(stderr, base, err)
}

func membersCommand() command {
	var prune bool
	return command{name: "members", usage: meshUsage, subs: []command{
		leaf("force-leave", 1, 1, func(fs *flag.FlagSet) {
			fs.BoolVar(&prune, "prune", false, "also drop the member's tombstone from this agent's list now")
		}, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			if err := a.client().ForceLeave(ctx, pos[0], prune); err != nil {
				return meshError(stderr, a.addr, err)
			}
			fmt.Fprintf(stdout, "%s forced out (left)%s\n", pos[0], map[bool]string{true: ", pruned from this agent's list"}[prune])
			return 0
		}),
	}}
}

func metaCommand() command {
	return command{name: "meta", usage: meshUsage, subs: []command{
		leaf("set", 1, 1, nil, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			k, v, ok := strings.Cut(pos[0], "=")
			if !ok || k == "" {
				fmt.Fprintf(stderr, "omnirelay mesh meta set: %q: want KEY=VALUE\n", pos[0])
				return 2
			}
			if err := a.client().SetMeta(ctx, k, v); err != nil {
				return meshError(stderr, a.addr, err)
			}
			fmt.Fprintf(stdout, "%s=%s set\n", k, v)
			return 0
		}),
		leaf("delete", 1, 1, nil, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			if err := a.client().DeleteMeta(ctx, pos[0]); err != nil {
				return meshError(stderr, a.addr, err)
			}
			fmt.Fprintf(stdout, "%s deleted\n", pos[0])
			return 0
		}),
	}}
}

func joinCommand() command {
	return leaf("join", 1, -1, nil, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
		var seeds listFlag
		for _, p := range pos {
			seeds.Set(p)
		}
		if err := a.client().Join(ctx, seeds); err != nil {
			return meshError(stderr, a.addr, err)
		}
		fmt.Fprintf(stdout, "joined through %s\n", strings.Join(seeds, ", "))
		return 0
	})
}

func leaveCommand() command {
	return leaf("leave", 0, 0, nil, func(ctx context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
		if err := a.client().Leave(ctx); err != nil {
			return meshError(stderr, a.addr, err)
		}
		fmt.Fprintln(stdout, "left the cluster; the agent is shutting down")
		return 0
	})
}

func stepDownCommand() command {
	return leaf("step-down", 0, 0, nil, func(ctx context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
		base, err := atLeader(ctx, a, stderr, func(c *control.Client) error { return c.StepDown(ctx) })
		if err != nil {
			return leaderError(stderr, base, err)
		}
		fmt.Fprintln(stdout, "the leader released its lease; another voter takes over (watch: omnirelay mesh leaders status)")
		return 0
	})
}

func votersCommand() command {
	change := func(add bool) func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
		return func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			var voters []string
			base, err := atLeader(ctx, a, stderr, func(c *control.Client) error {
				var err error
				if add {
					voters, err = c.ChangeVoters(ctx, pos, nil)
				} else {
					voters, err = c.ChangeVoters(ctx, nil, pos)
				}
				return err
			})
			if err != nil {
				return leaderError(stderr, base, err)
			}
			fmt.Fprintf(stdout, "moving to voters %s through a joint change (done when leaders status shows them)\n", strings.Join(voters, ","))
			return 0
		}
	}
	return command{name: "voters", usage: meshUsage, subs: []command{
		leaf("add", 1, -1, nil, change(true)),
		leaf("remove", 1, -1, nil, change(false)),
	}}
}

// ---- status ----

func statusCommand() command {
	var cluster bool
	return leaf("status", 0, 0, func(fs *flag.FlagSet) {
		fs.BoolVar(&cluster, "cluster", false, "one row per member, each asked at its published control URL")
	}, func(ctx context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
		if !cluster {
			st, err := a.client().Status(ctx)
			if err != nil {
				return meshError(stderr, a.addr, err)
			}
			if a.out == "json" {
				return writeJSONOut(stdout, st)
			}
			printStatus(stdout, st)
			return 0
		}
		rows, err := clusterStatus(ctx, a)
		if err != nil {
			return meshError(stderr, a.addr, err)
		}
		if a.out == "json" {
			return writeJSONOut(stdout, rows)
		}
		printClusterStatus(stdout, rows)
		return 0
	})
}

func printStatus(w io.Writer, st control.NodeStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\t%s (%s)\n", st.Name, st.Address)
	fmt.Fprintf(tw, "STATUS\t%s, incarnation %d, health %d, joined %v\n", st.Status, st.Incarnation, st.Health, st.Joined)
	fmt.Fprintf(tw, "BUILD\t%s, protocol %s (sending %d, features %s)\n", st.Version, st.Protocol, st.Sending, st.Features)
	fmt.Fprintf(tw, "MEMBERS\t%d alive, %d suspect, %d dead, %d left (others)\n", st.Members.Alive, st.Members.Suspect, st.Members.Dead, st.Members.Left)
	role := "non-voter"
	if st.IsVoter {
		role = "voter"
	}
	if st.IsLeader {
		role += ", leader"
	}
	fmt.Fprintf(tw, "LEADER\t%s (epoch %d; this node: %s)\n", orNone(st.Leader), st.Epoch, role)
	if st.Shards > 0 {
		fmt.Fprintf(tw, "SHARDS\t%d of %d owned here\n", st.Owned, st.Shards)
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(tw, "WARNING\t%s\n", warn)
	}
	tw.Flush()
}

// ClusterRow is one member in `mesh status --cluster`: what the member says of
// itself (Status, from its control API) or, when it cannot be asked, what the
// queried agent's view says (Peer only, with Error).
type ClusterRow struct {
	Peer   control.Peer        `json:"peer"`
	Status *control.NodeStatus `json:"status"`
	Error  string              `json:"error,omitempty"`
}

// clusterStatus asks every live member of the agent's view for its status, at
// once, each within the command's timeout.
func clusterStatus(ctx context.Context, a *apiFlags) ([]ClusterRow, error) {
	peers, _, err := a.client().ListPeers(ctx, control.ListOptions{})
	if err != nil {
		return nil, err
	}
	rows := make([]ClusterRow, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		rows[i].Peer = p
		url := p.Meta["control"]
		switch {
		case p.Local:
			url = a.addr
		case p.Status != "alive" && p.Status != "suspect":
			rows[i].Error = p.Status
			continue
		case url == "":
			rows[i].Error = "no control URL published"
			continue
		}
		wg.Go(func() {
			st, err := (&control.Client{Base: url, HTTP: a.client().HTTP}).Status(ctx)
			if err != nil {
				rows[i].Error = err.Error()
				return
			}
			rows[i].Status = &st
		})
	}
	wg.Wait()
	return rows, nil
}

func printClusterStatus(w io.Writer, rows []ClusterRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tVERSION\tPROTOCOL\tINCARNATION\tHEALTH\tLEADER\tEPOCH\tSHARDS\tNOTE")
	for _, r := range rows {
		p, st := r.Peer, r.Status
		if st == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t-\t-\t-\t-\t%s\n", p.Name, p.Status, orDash(p.Meta["version"]), orDash(p.Meta["protocol"]), p.Incarnation, r.Error)
			continue
		}
		note := strings.Join(st.Warnings, "; ")
		shards := "-"
		if st.Shards > 0 {
			shards = fmt.Sprintf("%d/%d", st.Owned, st.Shards)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\t%s\n", st.Name, st.Status, st.Version, st.Protocol,
			st.Incarnation, st.Health, orNone(st.Leader), st.Epoch, shards, orDash(note))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ---- shards summary ----

// ShardSummary is `mesh shards summary`: per node, the shards it owns, those
// moving to it and away from it; and the shards moving or parked.
type ShardSummary struct {
	Epoch   uint64                  `json:"epoch"`
	Version uint64                  `json:"version"`
	Count   int                     `json:"count"`
	Leader  string                  `json:"leader"`
	Nodes   map[string]*NodeSummary `json:"nodes"`
	Moving  int                     `json:"moving"` // shards whose owner is not their target
	Parked  int                     `json:"parked"` // shards with no owner
}

// NodeSummary is one node's part of a ShardSummary. A node with shards leaving
// and none arriving is typically drained.
type NodeSummary struct {
	Owned    int `json:"owned"`
	Incoming int `json:"incoming"` // shards whose target it is, owned elsewhere
	Outgoing int `json:"outgoing"` // shards it owns whose target is elsewhere
	Target   int `json:"target"`   // shards the placement gives it
}

func summarize(m control.ShardMap) ShardSummary {
	s := ShardSummary{Epoch: m.Epoch, Version: m.Version, Count: m.Count, Leader: m.Leader, Nodes: map[string]*NodeSummary{}}
	node := func(name string) *NodeSummary {
		if s.Nodes[name] == nil {
			s.Nodes[name] = &NodeSummary{}
		}
		return s.Nodes[name]
	}
	for _, sh := range m.Shards {
		if sh.Owner == "" {
			s.Parked++
		} else {
			node(sh.Owner).Owned++
		}
		if sh.Target != "" {
			node(sh.Target).Target++
		}
		if sh.Owner != sh.Target && sh.Owner != "" && sh.Target != "" {
			s.Moving++
			node(sh.Owner).Outgoing++
			node(sh.Target).Incoming++
		}
	}
	return s
}

func printSummary(w io.Writer, s ShardSummary) {
	fmt.Fprintf(w, "MAP epoch %d version %d, %d shards, leader %s: %d moving, %d parked\n", s.Epoch, s.Version, s.Count, orNone(s.Leader), s.Moving, s.Parked)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tOWNED\tTARGET\tINCOMING\tOUTGOING\tNOTE")
	for _, name := range slices.Sorted(maps.Keys(s.Nodes)) {
		n := s.Nodes[name]
		note := "-"
		if n.Target == 0 && n.Owned > 0 {
			note = "draining"
		} else if n.Target == 0 {
			note = "drained"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", name, n.Owned, n.Target, n.Incoming, n.Outgoing, note)
	}
	tw.Flush()
}

// ---- watch and monitor ----

// untilSignal returns a context that ends at SIGINT or SIGTERM: a watch runs until
// the operator stops it, not for --timeout.
func untilSignal() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt)
}

// watchPeers prints each membership change of the agent's watch stream as a line.
func watchPeers(ctx context.Context, c *control.Client, query string, w io.Writer, prefix string) error {
	return c.Watch(ctx, "/control/v1/peers?watch=true"+query, func(ev control.Event) error {
		switch ev.Kind {
		case "snapshot":
			var s control.WatchSnapshot
			if err := json.Unmarshal(ev.Data, &s); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s%s snapshot: %d peers (version %s)\n", prefix, time.Now().Format(time.TimeOnly), len(s.Peers), s.Version)
		case "reset":
			fmt.Fprintf(w, "%s%s reset: fell behind the agent's history; restart the watch\n", prefix, time.Now().Format(time.TimeOnly))
			return io.EOF
		default:
			var ch control.Change
			if err := json.Unmarshal(ev.Data, &ch); err != nil {
				return err
			}
			extra := ""
			if ch.Meta != nil {
				extra = " " + ch.Meta.Key + "=" + ch.Meta.Value
				if ch.Meta.Deleted {
					extra = " " + ch.Meta.Key + " deleted"
				}
			}
			fmt.Fprintf(w, "%s%s %s %s %s incarnation %d%s (id %s)\n", prefix, ch.At.Local().Format(time.TimeOnly), ch.Kind,
				ch.Peer.Name, ch.Peer.Address, ch.Peer.Incarnation, extra, ch.ID)
		}
		return nil
	})
}

// watchShards prints a summary line per shard-map change.
func watchShardMaps(ctx context.Context, c *control.Client, query string, w io.Writer, prefix string, full bool) error {
	return c.Watch(ctx, "/control/v1/shards?watch=true"+query, func(ev control.Event) error {
		var m control.ShardMap
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			return err
		}
		if full {
			printShards(w, m)
			return nil
		}
		s := summarize(m)
		fmt.Fprintf(w, "%s%s shard map epoch %d version %d: leader %s, %d moving, %d parked\n", prefix, time.Now().Format(time.TimeOnly),
			s.Epoch, s.Version, orNone(s.Leader), s.Moving, s.Parked)
		return nil
	})
}

// watchLeaders polls the leaders route and prints each change of holder or epoch.
func watchLeaders(ctx context.Context, c *control.Client, w io.Writer, prefix string) error {
	last := ""
	for {
		l, err := c.GetLeaders(ctx)
		var ae *control.APIError
		if errors.As(err, &ae) && ae.Body.Code == control.CodeLeadershipOff {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		now := "none"
		if err == nil && l.Leader != nil {
			now = fmt.Sprintf("%s at epoch %d", l.Leader.Holder, l.Leader.Epoch)
		} else if err != nil {
			now = "unknown (" + err.Error() + ")"
		}
		if now != last {
			fmt.Fprintf(w, "%s%s leader %s\n", prefix, time.Now().Format(time.TimeOnly), now)
			last = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func monitorCommand() command {
	var level string
	return leaf("monitor", 0, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&level, "log-level", "info", "agent log lines at this level and above: debug, info, warn, error, or off")
	}, func(_ context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
		ctx, stop := untilSignal()
		defer stop()
		out := &lockedWriter{w: stdout}
		c := a.client()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		if level != "off" {
			wg.Go(func() { errs <- watchLogs(ctx, c, level, out, "[log]     ") })
		}
		wg.Go(func() { errs <- watchPeers(ctx, c, "", out, "[members] ") })
		wg.Go(func() {
			err := watchShardMaps(ctx, c, "", out, "[shards]  ", false)
			var ae *control.APIError
			if errors.As(err, &ae) && ae.Body.Code == control.CodeShardsOff {
				err = nil
			}
			errs <- err
		})
		wg.Go(func() { errs <- watchLeaders(ctx, c, out, "[leader]  ") })
		go func() { wg.Wait(); close(errs) }()
		for err := range errs {
			if err != nil && ctx.Err() == nil {
				stop()
				return meshError(stderr, a.addr, err)
			}
		}
		return 0
	})
}

// lockedWriter serializes the lines of concurrent watchers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// watchLogs prints the agent's log records, one line each.
func watchLogs(ctx context.Context, c *control.Client, level string, w io.Writer, prefix string) error {
	return c.WatchLogs(ctx, level, func(ev control.Event) error {
		if ev.Kind == "dropped" {
			fmt.Fprintf(w, "%s(some log lines were dropped: this monitor fell behind)\n", prefix)
			return nil
		}
		var r control.LogRecord
		if err := json.Unmarshal(ev.Data, &r); err != nil {
			return err
		}
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(r.Attrs)) {
			if k != "node" {
				kv = append(kv, k+"="+r.Attrs[k])
			}
		}
		fmt.Fprintf(w, "%s%s %-5s %s %s\n", prefix, r.Time.Local().Format(time.TimeOnly), r.Level, r.Msg, strings.Join(kv, " "))
		return nil
	})
}

// tokenCommand is `mesh token create`: a join token from a signing member.
func tokenCommand() command {
	var ttl time.Duration
	var role string
	return command{name: "token", usage: meshUsage, subs: []command{
		leaf("create", 0, 0, func(fs *flag.FlagSet) {
			fs.DurationVar(&ttl, "ttl", 0, "how long the token may be redeemed (required; at most 168h)")
			fs.StringVar(&role, "role", string(identity.RoleNode), "role of the certificate the token buys: node, reader, operator or admin")
		}, func(ctx context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
			r, err := identity.ParseRole(role)
			if err == nil && ttl <= 0 {
				err = errors.New("--ttl is required: how long the token may be redeemed, e.g. --ttl 15m")
			}
			if err != nil {
				fmt.Fprintf(stderr, "omnirelay mesh token create: %v\n", err)
				return 2
			}
			rep, err := a.client().CreateToken(ctx, ttl, r)
			if err != nil {
				return meshError(stderr, a.addr, err)
			}
			if a.out == "json" {
				return writeJSONOut(stdout, rep)
			}
			fmt.Fprintln(stdout, rep.Token)
			fmt.Fprintf(stderr, "token %s for a %s certificate in cluster %s, expires %s; held by %s, redeemed through any member: omnirelay agent --join-token TOKEN --join <a member's gossip address> --tls-ca BUNDLE\n",
				rep.ID, rep.Role, rep.Cluster, rep.Expires.UTC().Format(time.RFC3339), rep.Node)
			return 0
		}),
	}}
}
