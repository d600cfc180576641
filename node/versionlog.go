package node

import (
	"errors"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/omnirelay/mesh/wire"
)

// A packet of a protocol version this node does not speak is dropped, counted in
// omnirelay_version_mismatches_total and logged with both versions, so an operator
// sees which side to upgrade (PROTOCOL.md section 7). A peer sends several packets
// a second, so the line is rate-limited per source host; the memory of sources is
// bounded so spoofed source addresses cannot grow it.
const (
	versionLogEvery   = time.Minute
	versionLogSources = 256
)

// versionLog remembers when a version mismatch from each source host was last
// logged. Packets reach it on the loop, stream frames on their own goroutines.
type versionLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// allow reports whether a mismatch from src may be logged now, and records it.
func (v *versionLog) allow(src string, now time.Time) bool {
	if host, _, err := net.SplitHostPort(src); err == nil {
		src = host // a sender's ports vary; its host is the peer to upgrade
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	t, seen := v.last[src]
	if seen && now.Sub(t) < versionLogEvery {
		return false
	}
	if !seen && len(v.last) >= versionLogSources {
		maps.DeleteFunc(v.last, func(_ string, t time.Time) bool { return now.Sub(t) >= versionLogEvery })
		if len(v.last) >= versionLogSources {
			return false // still counted; the log names the first sources
		}
	}
	if v.last == nil {
		v.last = map[string]time.Time{}
	}
	v.last[src] = now
	return true
}

// dropVersionMismatch counts and (rate-limited) logs a received packet or stream
// frame whose parse error err is a *wire.VersionError, reporting whether it was one.
func (n *Node) dropVersionMismatch(from string, err error, now time.Time) bool {
	var ve *wire.VersionError
	if !errors.As(err, &ve) {
		return false
	}
	n.metrics.versionMismatches.Inc()
	if n.versionLog.allow(from, now) {
		n.log.Warn("dropping packets or stream frames of a protocol version this node does not speak (logged once a minute per source)",
			"from", from, "peer_version", ve.Got, "min_version", ve.Min, "max_version", ve.Max, "err", ve)
	}
	return true
}
