package node

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestJoinErrorsNameTheLikelyCause: a joiner with another packet key or cluster
// label than its seed gets an error naming them (not a bare EOF) and the seed logs
// which; a seed that is an HTTP port is named as one.
func TestJoinErrorsNameTheLikelyCause(t *testing.T) {
	other := []byte("abcdefghijklmnopqrstuvwxyz012345")
	for _, tc := range []struct {
		name      string
		mod       func(*Config)
		seedLog   string
		joinError string
	}{
		{"key", func(c *Config) { c.Keys = [][]byte{other} }, "refusing a stream that does not open", "packet key or cluster label"},
		{"label", func(c *Config) { c.ClusterLabel = "staging" }, "refusing a stream of another cluster label", "packet key or cluster label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			seed, err := Start(t.Context(), Config{Name: "seed", Bind: "127.0.0.1:0", Keys: [][]byte{testKey}, ClusterLabel: "prod",
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer seed.Close()
			cfg := Config{Name: "joiner", Bind: "127.0.0.1:0", Keys: [][]byte{testKey}, ClusterLabel: "prod",
				Join: []string{seed.AdvertiseAddr()}, Logger: slog.New(slog.DiscardHandler)}
			tc.mod(&cfg)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			n, err := Start(ctx, cfg)
			if err == nil {
				n.Close()
				t.Fatal("joined")
			}
			if !strings.Contains(err.Error(), tc.joinError) {
				t.Errorf("join error %q lacks %q", err, tc.joinError)
			}
			if !strings.Contains(logs.String(), tc.seedLog) {
				t.Errorf("seed log lacks %q:\n%s", tc.seedLog, logs.String())
			}
		})
	}
	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		defer srv.Close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		n, err := Start(ctx, Config{Name: "joiner", Bind: "127.0.0.1:0", Keys: [][]byte{testKey},
			Join: []string{srv.Listener.Addr().String()}, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			n.Close()
			t.Fatal("joined an HTTP server")
		}
		if !strings.Contains(err.Error(), "HTTP port") {
			t.Errorf("join error %q does not name the HTTP port", err)
		}
	})
}
