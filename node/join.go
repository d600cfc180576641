package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"
)

// joinState tracks a join in progress. Owned by the loop.
type joinState struct {
	seeds   []string
	pending map[string]bool  // seeds with a join stream in flight this round
	errs    map[string]error // each seed's last failure
	rounds  int
	retryAt time.Time // zero while a round is in flight
	waiters []chan error
}

// Join contacts seeds (host:port) until one answers a join push-pull, retrying every
// round in which none did after a backoff (Config.JoinBackoff doubling up to
// JoinBackoffMax, ±25% jitter). It returns nil on the first answer; if ctx ends
// first it stops retrying and returns an error wrapping ErrNoSeedAnswered that names
// every seed's last failure. Seed host names are resolved here, in the caller's
// goroutine, so the loop only ever sees IP literals; a seed that does not resolve is
// skipped (logged), and if none does Join fails at once, naming each. Seeds equal to
// this node's own address are skipped; if none remain, Join returns nil at once
// (this node is the first).
func (n *Node) Join(ctx context.Context, seeds ...string) error {
	seeds, err := n.resolveSeeds(ctx, seeds)
	if err != nil {
		return err
	}
	seeds = slices.DeleteFunc(seeds, func(s string) bool { return s == n.addr })
	if len(seeds) == 0 {
		n.mu.Lock()
		n.joined = true
		n.mu.Unlock()
		return nil
	}
	done := make(chan error, 1)
	if !n.do(func() {
		if n.join == nil {
			n.join = &joinState{errs: map[string]error{}}
		}
		for _, s := range seeds {
			if !slices.Contains(n.join.seeds, s) {
				n.join.seeds = append(n.join.seeds, s)
			}
		}
		n.join.waiters = append(n.join.waiters, done)
		if n.join.pending == nil {
			n.retryJoin(n.clock.Now())
		}
	}) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-n.loopEnd:
		return ErrClosed
	case <-ctx.Done():
	}
	var summary string
	var silent []string
	if !n.do(func() {
		if n.join == nil { // answered while we gave up
			return
		}
		summary = n.join.summary()
		for _, s := range n.join.seeds {
			err := n.join.errs[s] // nil: still waiting for an answer
			var ne net.Error
			if err == nil || errors.Is(err, errNoAnswer) || (errors.As(err, &ne) && ne.Timeout()) {
				silent = append(silent, s)
			}
		}
		n.join.waiters = slices.DeleteFunc(n.join.waiters, func(c chan error) bool { return c == done })
		if len(n.join.waiters) == 0 {
			n.join = nil // nobody waits: stop retrying (swim still reconnects to seeds)
		}
	}) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	default:
	}
	for _, s := range silent {
		if n.speaksHTTP(s) {
			summary += fmt.Sprintf("; %s %v", s, errHTTPPeer)
		}
	}
	n.log.Error("join failed", "seeds", strings.Join(seeds, ","), "why", summary)
	return fmt.Errorf("%w (%v): %s", ErrNoSeedAnswered, ctx.Err(), summary)
}

// resolveSeeds resolves seed names (resolveAddr), dropping empty seeds. It fails,
// wrapping ErrNoSeedAnswered, only when seeds were given and none resolved.
func (n *Node) resolveSeeds(ctx context.Context, seeds []string) ([]string, error) {
	var out, failed []string
	for _, s := range seeds {
		if s == "" {
			continue
		}
		a, err := resolveAddr(ctx, s)
		if err != nil {
			n.log.Warn("seed does not resolve", "seed", s, "err", err)
			failed = append(failed, fmt.Sprintf("%s: %v", s, err))
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 && len(failed) > 0 {
		return nil, fmt.Errorf("%w: no seed resolves: %s", ErrNoSeedAnswered, strings.Join(failed, "; "))
	}
	return out, nil
}

// summary lists each seed's last failure, for the error a failed Join returns.
func (j *joinState) summary() string {
	var parts []string
	for _, s := range j.seeds {
		if err := j.errs[s]; err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", s, err))
		} else {
			parts = append(parts, s+": no answer yet")
		}
	}
	return fmt.Sprintf("%d round(s); %s", j.rounds, strings.Join(parts, "; "))
}

// retryJoin starts a join round: a join push-pull to every seed. Runs on the loop.
func (n *Node) retryJoin(now time.Time) {
	j := n.join
	j.rounds++
	j.retryAt = time.Time{}
	j.pending = map[string]bool{}
	for _, s := range j.seeds {
		j.pending[s] = true
	}
	if j.rounds > 1 {
		n.log.Info("retrying join", "round", j.rounds, "seeds", strings.Join(j.seeds, ","))
	}
	n.stack.Join(now, j.seeds)
}

// joinResult notes the outcome of a stream that may belong to the join in progress.
func (n *Node) joinResult(now time.Time, r streamResult) {
	j := n.join
	if j == nil || !j.pending[r.to] {
		return
	}
	delete(j.pending, r.to)
	if r.err == nil && n.stack.Swim().NameConflict() != "" {
		// The seed's view holds a live member of our name elsewhere: refuse to
		// take its place (memberlist refuses such a join too).
		err := n.nameInUse(n.stack.Swim().NameConflict())
		n.log.Error("join refused: "+err.Error(), "seed", r.to)
		for _, w := range j.waiters {
			w <- err
		}
		n.join = nil
		return
	}
	if r.err == nil {
		n.log.Info("joined the cluster", "seed", r.to, "rounds", j.rounds)
		for _, w := range j.waiters {
			w <- nil
		}
		n.join = nil
		n.mu.Lock()
		n.joined = true
		n.mu.Unlock()
		return
	}
	j.errs[r.to] = r.err
	if len(j.pending) == 0 {
		wait := JoinBackoff(n.cfg.JoinBackoff, n.cfg.JoinBackoffMax, j.rounds, n.rng.Float64())
		j.retryAt = now.Add(wait)
		n.log.Warn("no seed answered", "round", j.rounds, "retry_in", wait, "why", j.summary())
	}
}

// JoinBackoff is the wait after the given number of failed join rounds (1 = the
// first): base doubled per round, capped at maxWait, scaled by a jitter factor in
// [0.75, 1.25) taken from u in [0, 1).
func JoinBackoff(base, maxWait time.Duration, rounds int, u float64) time.Duration {
	d := base
	for i := 1; i < rounds && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	return time.Duration(float64(d) * (0.75 + u/2))
}

// nameInUse is the join error for a live member of our name at addr.
func (n *Node) nameInUse(addr string) error {
	return fmt.Errorf("%w: %q is a live member at %s, and this node is at %s: give this node another name, "+
		"or if %s was this node's previous run, wait until the cluster declares it dead (a few probe rounds) and start again",
		ErrNameInUse, n.cfg.Name, addr, n.addr, addr)
}

// speaksHTTP reports whether an HTTP server answers at addr: a seed that never
// answered a join may be an HTTP port given by mistake (the control API's), whose
// server can wait for the end of a request line that a binary frame never sends.
// Asked only after a join failed, within a second.
func (n *Node) speaksHTTP(addr string) bool {
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	defer cancel()
	conn, err := n.tr.Dial(ctx, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "HEAD / HTTP/1.0\r\n\r\n"); err != nil {
		return false
	}
	var b [5]byte
	_, err = io.ReadFull(conn, b[:])
	return err == nil && string(b[:]) == "HTTP/"
}
