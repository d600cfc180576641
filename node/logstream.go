package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/mesh/control"
)

// logStreamBuffer is how many records a log watcher may fall behind before
// records are dropped for it (counted in its stream).
const logStreamBuffer = 256

// logHub fans this node's log records out to the control API's log watchers
// (GET /control/v1/logs), at each watcher's own level. It never blocks the
// logging goroutine: a watcher whose buffer is full loses the record.
type logHub struct {
	mu   sync.Mutex
	subs map[*logSub]struct{}
	// min is the lowest level any watcher wants (math.MaxInt32 when none), read
	// by Enabled on every log call.
	min atomic.Int64
}

type logSub struct {
	level   slog.Level
	c       chan control.LogRecord
	dropped atomic.Uint64
}

func newLogHub() *logHub {
	h := &logHub{subs: map[*logSub]struct{}{}}
	h.min.Store(int64(slog.LevelError + 1000))
	return h
}

func (h *logHub) subscribe(level slog.Level) *logSub {
	s := &logSub{level: level, c: make(chan control.LogRecord, logStreamBuffer)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.recompute()
	h.mu.Unlock()
	return s
}

func (h *logHub) unsubscribe(s *logSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.recompute()
	h.mu.Unlock()
}

// recompute sets min; caller holds mu.
func (h *logHub) recompute() {
	m := int64(slog.LevelError + 1000)
	for s := range h.subs {
		m = min(m, int64(s.level))
	}
	h.min.Store(m)
}

func (h *logHub) publish(r control.LogRecord, level slog.Level) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if level < s.level {
			continue
		}
		select {
		case s.c <- r:
		default:
			s.dropped.Add(1)
		}
	}
}

// teeHandler passes every record to the node's own handler, as configured, and to
// the log watchers that want its level.
type teeHandler struct {
	inner slog.Handler
	hub   *logHub
	attrs []slog.Attr // from WithAttrs, for the watchers' copy
	group string      // prefix of later attribute keys ("g." per WithGroup)
}

func (t *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.inner.Enabled(ctx, l) || int64(l) >= t.hub.min.Load()
}

func (t *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.inner.Enabled(ctx, r.Level) {
		err = t.inner.Handle(ctx, r)
	}
	if int64(r.Level) < t.hub.min.Load() {
		return err
	}
	rec := control.LogRecord{Time: r.Time, Level: r.Level.String(), Msg: r.Message, Attrs: map[string]string{}}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	for _, a := range t.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[t.group+a.Key] = a.Value.Resolve().String()
		return true
	})
	t.hub.publish(rec, r.Level)
	return err
}

func (t *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.inner = t.inner.WithAttrs(as)
	c.attrs = append(append([]slog.Attr(nil), t.attrs...), prefixed(t.group, as)...)
	return &c
}

func (t *teeHandler) WithGroup(name string) slog.Handler {
	c := *t
	c.inner = t.inner.WithGroup(name)
	c.group = t.group + name + "."
	return &c
}

func prefixed(group string, as []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: group + a.Key, Value: a.Value}
	}
	return out
}

// WatchLogs implements control.LogSource.
func (c controlSource) WatchLogs(level slog.Level) (<-chan control.LogRecord, func() uint64, func()) {
	s := c.n.logs.subscribe(level)
	return s.c, s.dropped.Load, func() { c.n.logs.unsubscribe(s) }
}
