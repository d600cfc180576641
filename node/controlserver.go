package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
	"github.com/prometheus/client_golang/prometheus"
)

// TLSReloadInterval is how often a node re-reads Config.TLS's files: a rotated
// certificate is in use at most this long after it is written.
const TLSReloadInterval = 5 * time.Second

// Limits of the control API server, defaults of the Config fields.
const (
	DefaultControlMaxConns     = 256
	DefaultControlIdleTimeout  = 30 * time.Second
	DefaultControlReadTimeout  = 10 * time.Second
	DefaultControlWriteTimeout = 30 * time.Second
	// controlMaxHeader bounds a request's header block: 256 connections at
	// net/http's default 1 MiB could hold 256 MiB.
	controlMaxHeader = 64 << 10
	// controlMaxStreams bounds the concurrent requests of one HTTP/2 connection,
	// so that ControlMaxConns bounds requests as it does on HTTP/1.1 (times this).
	controlMaxStreams = 16
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
		Handler:           n.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       n.cfg.ControlReadTimeout,
		WriteTimeout:      n.cfg.ControlWriteTimeout,
		IdleTimeout:       n.cfg.ControlIdleTimeout,
		MaxHeaderBytes:    controlMaxHeader,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	// HTTP/1.1 and HTTP/2: gRPC needs HTTP/2, over TLS when the API has it and
	// cleartext (h2c, prior knowledge) when not. A watch stream's per-write
	// deadlines are per stream on HTTP/2 (http.ResponseController), so one stream
	// that stops reading cannot hold the others of its connection.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	n.httpSrv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: controlMaxStreams}
	ln = &limitListener{Listener: ln, slots: make(chan struct{}, n.cfg.ControlMaxConns), open: open, refused: refused}
	if n.cfg.TLS != nil {
		protocols.SetHTTP2(true)
		ln = tls.NewListener(ln, n.controlTLS())
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	n.httpSrv.Protocols = protocols
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

// controlAuth is the control API's authentication, or nil when the API has none
// (no TLS and no tokens: Validate allowed that only on loopback or insecure).
func (n *Node) controlAuth() *control.Auth {
	if n.cfg.TLS == nil && len(n.cfg.ControlTokens) == 0 {
		return nil
	}
	a := &control.Auth{Tokens: n.cfg.ControlTokens, Audit: n.auditControl}
	if src := n.cfg.TLS; src != nil {
		// Verified again per request, not trusted from the handshake: an embedder
		// may serve Handler() behind a TLS configuration of its own.
		a.Verify = func(chain []*x509.Certificate) (identity.ID, error) {
			return src.VerifyPeer(chain, identity.ControlPolicy, x509.ExtKeyUsageClientAuth)
		}
	}
	return a
}

// controlTLS is the control API's server configuration: identity's, except that a
// client certificate is optional (a bearer token may stand in, and a caller with
// neither gets a JSON 401 rather than a handshake failure), and that a refused
// certificate is counted and audited with the client's address.
func (n *Node) controlTLS() *tls.Config {
	src := n.cfg.TLS
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			c := src.ServerConfig(identity.ControlPolicy)
			c.ClientAuth = tls.RequestClientCert
			c.NextProtos = []string{"h2", "http/1.1"}
			remote := hi.Conn.RemoteAddr().String()
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return nil // the handler wants a token or answers 401
				}
				_, err := src.VerifyPeer(cs.PeerCertificates, identity.ControlPolicy, x509.ExtKeyUsageClientAuth)
				if err != nil {
					claimed := ""
					if id, idErr := identity.FromCertificate(cs.PeerCertificates[0]); idErr == nil {
						claimed = id.String()
					}
					n.auditControl(control.AuditEvent{Event: "tls_refused", Identity: claimed, Remote: remote, Route: "control API", Reason: err.Error()})
				}
				return err
			}
			return c, nil
		},
	}
}

// watchTLS re-reads the certificate files until the node closes; a failed reload
// keeps the old material, and is logged and audited like a successful one.
func (n *Node) watchTLS() {
	defer n.wg.Done()
	n.cfg.TLS.Watch(n.ctx, TLSReloadInterval, func(changed bool, err error) {
		id := n.cfg.TLS.Identity().String()
		if err != nil {
			n.log.Error("reloading the TLS certificate failed; the previous one stays in use", "err", err)
			n.audit(auditRecord{Time: time.Now(), Event: "cert_reload_failed", ID: control.NewEventID(), Identity: id, Reason: err.Error()})
			return
		}
		serial := n.cfg.TLS.Certificate().Leaf.SerialNumber.Text(16)
		n.log.Info("TLS certificate reloaded", "identity", id, "serial", serial)
		n.audit(auditRecord{Time: time.Now(), Event: "cert_reloaded", ID: control.NewEventID(), Identity: id, Reason: "serial " + serial})
	})
}
