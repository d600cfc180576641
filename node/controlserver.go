package node

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits of the control API server, defaults of the Config fields.
const (
	DefaultControlMaxConns     = 256
	DefaultControlIdleTimeout  = 30 * time.Second
	DefaultControlReadTimeout  = 10 * time.Second
	DefaultControlWriteTimeout = 30 * time.Second
	// controlMaxHeader bounds a request's header block: 256 connections at
	// net/http's default 1 MiB could hold 256 MiB.
	controlMaxHeader = 64 << 10
)

// serveControl serves the control API on ln with every timeout set and at most
// ControlMaxConns connections; watch streams replace the read and write timeouts
// with per-write deadlines of their own (control.Options.WatchWriteTimeout).
func (n *Node) serveControl(ln net.Listener) {
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: "omnirelay_control_connections",
		Help: "Connections open to the control API server."})
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "omnirelay_control_connections_refused_total",
		Help: "Control API connections closed at accept because ControlMaxConns were open."})
	n.metrics.reg.MustRegister(open, refused)
	n.httpSrv = &http.Server{
		Handler:           n.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       n.cfg.ControlReadTimeout,
		WriteTimeout:      n.cfg.ControlWriteTimeout,
		IdleTimeout:       n.cfg.ControlIdleTimeout,
		MaxHeaderBytes:    controlMaxHeader,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	ln = &limitListener{Listener: ln, slots: make(chan struct{}, n.cfg.ControlMaxConns), open: open, refused: refused}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("control API stopped", "err", err)
		}
	}()
}

// limitListener accepts at most cap(slots) connections at once. One beyond the cap
// is accepted and closed at once, and counted: holding it unaccepted would keep
// the client waiting in the kernel's backlog for as long as the cap is full, and
// answering it would mean speaking HTTP (or TLS) for it. Accept errors go back to
// http.Server unchanged, which backs off on temporary ones (EMFILE included).
type limitListener struct {
	net.Listener
	slots   chan struct{}
	open    prometheus.Gauge
	refused prometheus.Counter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.open.Inc()
			return &limitConn{Conn: c, release: sync.OnceFunc(func() {
				l.open.Dec()
				<-l.slots
			})}, nil
		default:
			l.refused.Inc()
			c.Close()
		}
	}
}

// limitConn frees its slot when closed (http.Server closes every connection it
// accepted, hijacked ones excepted, which the control API does not use).
type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
