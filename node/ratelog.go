package node

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logEvery is how often a rateLog lets a repeated line through: often enough that an
// operator tailing the log sees the fault is still there, rarely enough that a
// failure in a tight loop (accept on EMFILE once wrote 5.2 GB in 25 s) costs a few
// lines a minute.
const logEvery = 10 * time.Second

// rateLog limits one repeated log line (one call site) to one record per logEvery.
// The first occurrence is logged at once; the ones held back are counted and the
// next record carries their number as "suppressed". Safe for concurrent use; the
// zero value is ready.
type rateLog struct {
	mu         sync.Mutex
	last       time.Time // when a record was last let through; zero: never
	suppressed int
}

// log writes msg at level unless a record of this rateLog left less than logEvery
// before now.
func (r *rateLog) log(l *slog.Logger, now time.Time, level slog.Level, msg string, args ...any) {
	held, ok := r.allow(now)
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	l.Log(context.Background(), level, msg, args...)
}

// allow reports whether a record may go out at now, and how many were held back
// since the last one that did.
func (r *rateLog) allow(now time.Time) (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < logEvery {
		r.suppressed++
		return 0, false
	}
	r.last = now
	held := r.suppressed
	r.suppressed = 0
	return held, true
}
