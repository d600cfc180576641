// Package chaos runs real omnirelay agents in Linux network namespaces and breaks
// them: nftables drop rules for loss and partitions, signals for crashes and
// pauses. It observes the agents only through their own control APIs and checks
// the invariants the protocols promise (docs/chaos.md).
//
// Everything it creates is named with a per-run prefix, "orc" and the harness's
// pid in hex, so that a later run can tell a live run's namespaces from the
// leftovers of a crashed one and sweep those (Sweep).
package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Subnet is the private /24 the agents live in. It exists only inside the
// namespaces a run creates (a hub namespace holds the bridge), so concurrent runs
// and the host's own networks never see each other's addresses.
const (
	subnet       = "10.77.0."
	observerAddr = subnet + "254" // the harness's address on the bridge, in the hub namespace
	namePrefix   = "orc"
)

// Prereqs reports what this machine lacks to run the chaos suite, as one error
// naming each missing piece and how to get it; nil when everything is there.
func Prereqs() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, fmt.Sprintf("not root (euid %d): network namespaces and nftables need root", os.Geteuid()))
	}
	for _, tool := range []struct{ bin, pkg string }{{"ip", "iproute2"}, {"nft", "nftables"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found in PATH (apt-get install %s)", tool.bin, tool.pkg))
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		missing = append(missing, "no network namespaces (/proc/self/ns/net): the kernel lacks CONFIG_NET_NS")
	}
	if len(missing) == 0 {
		missing = probe()
	}
	if len(missing) == 0 {
		return nil
	}
	return errors.New("chaos: missing prerequisites: " + strings.Join(missing, "; "))
}

// probe creates a namespace and an nft table in it, as a run will: root in a
// container without CAP_SYS_ADMIN, or a kernel without nf_tables, fails here.
func probe() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns := runPrefix(os.Getpid()) + "-probe"
	if err := run(ctx, nil, "ip", "netns", "add", ns); err != nil {
		return []string{"cannot create a network namespace: " + err.Error()}
	}
	defer run(ctx, nil, "ip", "netns", "delete", ns)
	if err := run(ctx, strings.NewReader("add table inet probe\n"), "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		return []string{"nftables does not work in a namespace (kernel nf_tables?): " + err.Error()}
	}
	return nil
}

// Lab is one run's network: a hub namespace with a bridge and, per agent, a
// namespace joined to the bridge by a veth pair, each with an nftables table of
// the run's name for fault rules.
type Lab struct {
	Prefix string
	Dir    string // temporary directory: agent binary, key, data dirs, logs
	nodes  int
}

// runPrefix names everything of the run of process pid.
func runPrefix(pid int) string { return namePrefix + strconv.FormatInt(int64(pid), 16) }

func (l *Lab) hub() string            { return l.Prefix + "-hub" }
func (l *Lab) netns(i int) string     { return fmt.Sprintf("%s-n%d", l.Prefix, i) }
func (l *Lab) table() string          { return l.Prefix }
func addr(i int) string               { return subnet + strconv.Itoa(i) }
func vethRoot(p string, i int) string { return fmt.Sprintf("%sx%d", p, i) } // ≤ 15 bytes: orc, ≤ 6 hex digits, x, ≤ 3 digits
func vethHub(p string, i int) string  { return fmt.Sprintf("%sy%d", p, i) }

// NewLab creates the network for n agents (1..200). On error it removes whatever it
// had made.
func NewLab(ctx context.Context, n int) (l *Lab, err error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("chaos: %d agents: want 1..200", n)
	}
	if err := Prereqs(); err != nil {
		return nil, err
	}
	l = &Lab{Prefix: runPrefix(os.Getpid()), nodes: n}
	l.Dir = filepath.Join(os.TempDir(), "omnirelay-chaos-"+l.Prefix)
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return nil, err
	}
	hub := l.hub()
	steps := [][]string{
		{"ip", "netns", "add", hub},
		{"ip", "-n", hub, "link", "set", "lo", "up"},
		{"ip", "-n", hub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", hub, "addr", "add", observerAddr + "/24", "dev", "br0"},
		{"ip", "-n", hub, "link", "set", "br0", "up"},
	}
	for i := 1; i <= n; i++ {
		ns, a, b := l.netns(i), vethRoot(l.Prefix, i), vethHub(l.Prefix, i)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "link", "add", a, "type", "veth", "peer", "name", b},
			[]string{"ip", "link", "set", a, "netns", ns},
			[]string{"ip", "link", "set", b, "netns", hub},
			[]string{"ip", "-n", hub, "link", "set", b, "master", "br0", "up"},
			[]string{"ip", "-n", ns, "link", "set", a, "name", "eth0"},
			[]string{"ip", "-n", ns, "addr", "add", addr(i) + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, nil, s...); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= n; i++ {
		if err := l.nft(ctx, i, fmt.Sprintf(
			"add table inet %[1]s\n"+
				"add chain inet %[1]s input { type filter hook input priority 0; policy accept; }\n"+
				"add chain inet %[1]s output { type filter hook output priority 0; policy accept; }\n", l.table())); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// nft applies script atomically in agent i's namespace.
func (l *Lab) nft(ctx context.Context, i int, script string) error {
	return run(ctx, strings.NewReader(script), "ip", "netns", "exec", l.netns(i), "nft", "-f", "-")
}

// Rule is one fault: traffic of agent From (its namespace) to or from agent Peer.
type Rule struct {
	From, Peer int
	// Out drops From's packets to Peer, In drops Peer's packets arriving at From.
	Out, In bool
	// Loss is the percentage dropped, 1..100 (100: a partition).
	Loss int
}

// Apply adds rules. A rule never matches the observer's address, so the harness
// keeps seeing every agent whatever the fault.
func (l *Lab) Apply(ctx context.Context, rules ...Rule) error {
	by := map[int]*strings.Builder{}
	for _, r := range rules {
		if r.From < 1 || r.From > l.nodes || r.Peer < 1 || r.Peer > l.nodes || r.Loss < 1 || r.Loss > 100 {
			return fmt.Errorf("chaos: bad rule %+v", r)
		}
		match := "drop"
		if r.Loss < 100 {
			match = fmt.Sprintf("numgen random mod 100 < %d drop", r.Loss)
		}
		b := by[r.From]
		if b == nil {
			b = &strings.Builder{}
			by[r.From] = b
		}
		if r.Out {
			fmt.Fprintf(b, "add rule inet %s output ip daddr %s %s\n", l.table(), addr(r.Peer), match)
		}
		if r.In {
			fmt.Fprintf(b, "add rule inet %s input ip saddr %s %s\n", l.table(), addr(r.Peer), match)
		}
	}
	for i, b := range by {
		if err := l.nft(ctx, i, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// Heal removes every fault rule.
func (l *Lab) Heal(ctx context.Context) error {
	var errs []error
	for i := 1; i <= l.nodes; i++ {
		errs = append(errs, l.nft(ctx, i, fmt.Sprintf("flush chain inet %[1]s input\nflush chain inet %[1]s output\n", l.table())))
	}
	return errors.Join(errs...)
}

// Close deletes the run's nft tables, namespaces (their veth ends go with them),
// any veth left in the root namespace by an interrupted setup, and the temporary
// directory. Agent processes must be stopped first (Cluster.Close). It returns
// what could not be removed.
func (l *Lab) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for i := 1; i <= l.nodes; i++ {
		if nsExists(l.netns(i)) {
			// The table dies with the namespace; deleting it first keeps the order
			// obvious and reports a broken nft.
			_ = l.nft(ctx, i, "delete table inet "+l.table()+"\n")
		}
	}
	errs = append(errs, sweepPrefix(ctx, l.Prefix))
	if l.Dir != "" {
		errs = append(errs, os.RemoveAll(l.Dir))
	}
	return errors.Join(errs...)
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// sweepPrefix kills every process in the namespaces named prefix-*, deletes them
// and the root namespace's veth ends named prefixxN and prefixyN.
func sweepPrefix(ctx context.Context, prefix string) error {
	var errs []error
	out, _ := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		pids, _ := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
		for _, f := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(f); err == nil {
				killAndReap(pid)
			}
		}
		errs = append(errs, run(ctx, nil, "ip", "netns", "delete", name))
	}
	links, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(links), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, prefix+"x") || strings.HasPrefix(name, prefix+"y") { // not orcABCD's for orcABC
			errs = append(errs, run(ctx, nil, "ip", "link", "delete", name))
		}
	}
	return errors.Join(errs...)
}

// killAndReap SIGKILLs a process (continuing it first if stopped) and waits a
// little for it to go.
func killAndReap(pid int) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	_ = p.Signal(sigCont)
	_ = p.Signal(sigKill)
	for range 50 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Sweep removes what runs that are no longer alive left behind: namespaces,
// links and temporary directories of prefixes whose process is gone. It returns
// the prefixes swept.
func Sweep(ctx context.Context) ([]string, error) {
	stale := map[string]bool{}
	out, _ := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if p, ok := stalePrefix(name); ok {
			stale[p] = true
		}
	}
	links, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(links), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if p, ok := stalePrefix(name); ok {
				stale[p] = true
			}
		}
	}
	staleDirs := map[string][]string{}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "omnirelay-chaos-"+namePrefix+"*"))
	for _, d := range dirs {
		if p, ok := stalePrefix(strings.TrimPrefix(filepath.Base(d), "omnirelay-chaos-")); ok {
			stale[p] = true
			staleDirs[p] = append(staleDirs[p], d)
		}
	}
	var swept []string
	var errs []error
	for p := range stale {
		errs = append(errs, sweepPrefix(ctx, p))
		for _, d := range staleDirs[p] {
			errs = append(errs, os.RemoveAll(d))
		}
		swept = append(swept, p)
	}
	return swept, errors.Join(errs...)
}

// stalePrefix parses the run prefix at the start of name ("orc" and hex digits)
// and says whether its process is gone (or is no longer a chaos harness).
func stalePrefix(name string) (string, bool) {
	if !strings.HasPrefix(name, namePrefix) {
		return "", false
	}
	rest := name[len(namePrefix):]
	end := 0
	for end < len(rest) && strings.IndexByte("0123456789abcdef", rest[end]) >= 0 {
		end++
	}
	// What follows the hex digits is never one: "-" in namespaces, "x"/"y" in links.
	hex := rest[:end]
	pid, err := strconv.ParseInt(hex, 16, 32)
	if err != nil || pid <= 0 {
		return "", false
	}
	prefix := namePrefix + hex
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return prefix, true
	}
	c := strings.TrimSpace(string(comm))
	if !strings.HasPrefix(c, "omnirelay-chao") && !strings.HasSuffix(c, ".test") {
		return prefix, true // the pid was reused
	}
	// A killed harness not yet reaped by its parent is a zombie: gone all the same.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	_, after, _ := strings.Cut(string(stat), ") ")
	return prefix, err != nil || strings.HasPrefix(after, "Z")
}

// BinDir makes a temporary directory for the agent binary of this process's runs,
// named so that Sweep removes it if the process dies without removing it.
func BinDir() (string, error) {
	return os.MkdirTemp("", "omnirelay-chaos-"+runPrefix(os.Getpid())+"-bin-")
}

// run runs a command, naming it and its output in the error.
func run(ctx context.Context, stdin *strings.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("chaos: %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
