package control

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// LogRecord is one log line of the serving node, as GET /control/v1/logs streams it.
type LogRecord struct {
	Time  time.Time         `json:"time"`
	Level string            `json:"level"` // DEBUG, INFO, WARN, ERROR
	Msg   string            `json:"msg"`
	Attrs map[string]string `json:"attrs"`
}

// LogSource is implemented by a Source that streams its node's logs. It is
// optional: without it the route answers 503 unavailable.
type LogSource interface {
	// WatchLogs delivers records at level and above on the channel until cancel
	// is called; dropped counts those lost because the reader fell behind.
	WatchLogs(level slog.Level) (records <-chan LogRecord, dropped func() uint64, cancel func())
}

// logs serves GET /control/v1/logs: an SSE stream of "log" events, whatever the
// node's own log level, and a "dropped" event when records were lost.
func (h *handler) logs(w http.ResponseWriter, r *http.Request) {
	ls, ok := h.src.(LogSource)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "this node does not stream its logs")
		return
	}
	level := slog.LevelInfo
	if s := r.URL.Query().Get("level"); s != "" {
		if err := level.UnmarshalText([]byte(s)); err != nil {
			writeError(w, http.StatusBadRequest, CodeBadFilter, fmt.Sprintf("level %q: want debug, info, warn or error", s))
			return
		}
	}
	release, ok := h.admitWatch(w)
	if !ok {
		return
	}
	defer release()
	records, dropped, cancel := ls.WatchLogs(level)
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if !h.heartbeat(w) {
		return
	}
	heartbeat := time.NewTicker(h.opts.Heartbeat)
	defer heartbeat.Stop()
	var n, lost uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case rec := <-records:
			n++
			if d := dropped(); d > lost {
				if !h.event(w, fmt.Sprint(n), "dropped", struct {
					Records uint64 `json:"records"`
				}{d - lost}) {
					return
				}
				lost = d
			}
			if !h.event(w, fmt.Sprint(n), "log", rec) {
				return
			}
		case <-heartbeat.C:
			if !h.heartbeat(w) {
				return
			}
		}
	}
}

// WatchLogs streams the agent's log records at level (debug, info, warn, error)
// to f until ctx ends.
func (c *Client) WatchLogs(ctx context.Context, level string, f func(Event) error) error {
	return c.Watch(ctx, "/control/v1/logs?level="+url.QueryEscape(level), f)
}
