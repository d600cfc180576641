package node

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// TestRateLogHoldsBackRepeats: the first line goes out, repeats within logEvery are
// counted, and the next line after it says how many were held back.
func TestRateLogHoldsBackRepeats(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	var r rateLog
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		r.log(l, t0.Add(time.Duration(i)*time.Millisecond), slog.LevelWarn, "accepting a stream", "err", "too many open files")
	}
	r.log(l, t0.Add(logEvery), slog.LevelWarn, "accepting a stream", "err", "too many open files")
	want := "level=WARN msg=\"accepting a stream\" err=\"too many open files\"\n" +
		"level=WARN msg=\"accepting a stream\" err=\"too many open files\" suppressed=999\n"
	if buf.String() != want {
		t.Fatalf("logged\n%s\nwant\n%s", buf.String(), want)
	}
}

// failingAccept is a transport whose Accept fails as a process out of descriptors
// does, limit times, then blocks until Close.
type failingAccept struct {
	Transport
	calls atomic.Int64
	limit int64
}

func (f *failingAccept) Accept() (net.Conn, error) {
	if f.calls.Add(1) <= f.limit {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return f.Transport.Accept()
}

// lineCounter is a slog handler that counts records with a given message.
type lineCounter struct {
	msg string
	n   *atomic.Int64
}

func (h lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h lineCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h lineCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h lineCounter) WithGroup(string) slog.Handler      { return h }

// TestAcceptErrorsBackOff: an accept that keeps failing (EMFILE) is retried after 5
// ms doubling to 1 s, not at once, and logged about once per logEvery, not per
// failure (the loop once spun at 80% CPU writing 5.2 GB of log in 25 s).
func TestAcceptErrorsBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := NewMemNetwork()
		cfg := memConfig(t, mn, "a", "10.0.0.1:7946")
		fa := &failingAccept{Transport: cfg.Transport, limit: 1000}
		var lines atomic.Int64
		cfg.Transport, cfg.Logger = fa, slog.New(lineCounter{msg: "accepting a stream", n: &lines})
		n := startMem(t, cfg)
		defer n.Close()
		time.Sleep(20 * time.Second)
		synctest.Wait()
		// 5+10+...+640 ms (8 waits, 1.275 s), then one per second: 8+1+18 = 27 calls
		// in 20 s.
		if got := fa.calls.Load(); got > 30 {
			t.Errorf("accept called %d times in 20 s of failures, want at most 30", got)
		}
		if got := lines.Load(); got > 2 {
			t.Errorf("%d warnings in 20 s of failures, want at most 2 (one per %v)", got, logEvery)
		}
	})
}
