package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/control"
)

// TestLogStream: GET /control/v1/logs streams the node's records at the asked
// level, below the node's own configured level too, without them reaching the
// node's own handler.
func TestLogStream(t *testing.T) {
	own := &syncBuffer{}
	n, err := Start(t.Context(), Config{Name: "a", Bind: "127.0.0.1:0", Control: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(own, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan control.LogRecord, 16)
	done := make(chan error, 1)
	go func() {
		done <- (&control.Client{Base: "http://" + n.ControlAddr()}).WatchLogs(ctx, "debug", func(ev control.Event) error {
			var r control.LogRecord
			if ev.Kind == "log" && json.Unmarshal(ev.Data, &r) == nil {
				got <- r
			}
			return nil
		})
	}()
	deadline := time.After(5 * time.Second)
	for {
		n.SetMeta("zone", time.Now().String()) // logs "member meta" at DEBUG
		select {
		case r := <-got:
			if r.Msg != "member meta" || r.Level != "DEBUG" || r.Attrs["node"] != "a" || r.Attrs["key"] != "zone" {
				continue
			}
			if strings.Contains(own.String(), "member meta") {
				t.Errorf("a DEBUG record reached the node's INFO handler:\n%s", own.String())
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			return
		case <-deadline:
			t.Fatal("no DEBUG record streamed in 5 s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}
