package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/wire"
)

// Mutual TLS on mesh streams (join, push-pull, lease and shard streams), when
// Config.TLS is set. Both sides present node certificates of the trust bundle and
// cluster (identity.MeshPolicy). The dialer pins the name of the member it means
// to reach when the address is a member's; the acceptor checks that a push-pull's
// own state carries the name of its certificate. Frames inside are still sealed
// with the packet keys when there are keys.

// In the WAN pool (Config.wan) a gateway's member name is NAME@CLUSTER, from
// its node certificate spiffe://<td>/mesh/<cluster>/node/<name>, and its streams
// accept node certificates of every cluster of the trust domain
// (identity.WANPolicy): the name binds what a gateway says there to its
// certificate's cluster (docs/security.md, "WAN pool").

// memberName is the member name a verified certificate gives.
func (c Config) memberName(id identity.ID) string {
	if c.wan {
		return wanName(id.Name, id.Cluster)
	}
	return id.Name
}

// wanName is the WAN pool's name of gateway name of cluster.
func wanName(name, cluster string) string { return name + "@" + cluster }

// wanCluster is the cluster a WAN member name gives, "" if it has none.
func wanCluster(member string) string {
	if i := strings.LastIndexByte(member, '@'); i >= 0 {
		return member[i+1:]
	}
	return ""
}

// meshPolicy is whom this node's mesh streams accept; member, if set, is the
// only member accepted (a dialled member's name).
func (c Config) meshPolicy(member string) identity.Policy {
	if !c.wan {
		p := identity.MeshPolicy
		p.Name = member
		return p
	}
	p := identity.WANPolicy
	if cl := wanCluster(member); cl != "" {
		p.Name, p.Cluster = strings.TrimSuffix(member, "@"+cl), cl
	}
	return p
}

// ErrStreamIdentity means a mesh stream's peer is not who its request says.
var ErrStreamIdentity = errors.New("node: stream peer's certificate does not match its gossip name")

// dialTLS wraps an outbound stream in TLS and completes the handshake within ctx.
func (n *Node) dialTLS(ctx context.Context, conn net.Conn, to string) (net.Conn, error) {
	member := n.live.nameAt(to) // "" for a seed or a stranger: any node of the cluster (of the pool)
	tc := tls.Client(conn, n.cfg.TLS.ClientConfig(n.cfg.meshPolicy(member)))
	if err := tc.HandshakeContext(ctx); err != nil {
		n.metrics.netErrors.WithLabelValues("stream_tls").Inc()
		return nil, fmt.Errorf("TLS with %s: %w", to, err)
	}
	if n.certs != nil {
		n.certs.addPeer(tc.ConnectionState().PeerCertificates) // it signs that member's gossip
	}
	return tc, nil
}

// acceptTLS completes the server side of an inbound stream's handshake, under the
// stream's current deadline, and returns the peer's verified identity (nil for an
// enrollment stream without a client certificate) and whether the stream is an
// enrollment (EnrollALPN). A refusal is counted and audited with the peer's
// address and the identity its certificate claims, if any.
func (n *Node) acceptTLS(conn net.Conn) (*tls.Conn, *identity.ID, bool, error) {
	var claimed string
	claim := func(verify func(tls.ConnectionState) error) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				if id, err := identity.FromCertificate(cs.PeerCertificates[0]); err == nil {
					claimed = id.String()
				}
			}
			return verify(cs)
		}
	}
	mesh := n.cfg.TLS.ServerConfig(n.cfg.meshPolicy(""))
	enroll := n.enrollConfig(mesh)
	mesh.VerifyConnection = claim(mesh.VerifyConnection)
	enroll.VerifyConnection = claim(enroll.VerifyConnection)
	cfg := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		// The WAN pool enrolls nobody: its peers are of other clusters, and
		// an enrollment hands out keys and certificates of this one.
		if !n.cfg.wan && slices.Contains(h.SupportedProtos, EnrollALPN) {
			return enroll, nil
		}
		return mesh, nil
	}}
	tc := tls.Server(conn, cfg)
	if err := tc.Handshake(); err != nil {
		n.metrics.netErrors.WithLabelValues("stream_tls").Inc()
		n.auditControl(control.AuditEvent{Event: "tls_refused", Identity: claimed, Remote: conn.RemoteAddr().String(),
			Route: "mesh stream", Reason: err.Error()})
		return nil, nil, false, err
	}
	cs := tc.ConnectionState()
	isEnroll := cs.NegotiatedProtocol == EnrollALPN
	if isEnroll && len(cs.PeerCertificates) == 0 {
		return tc, nil, true, nil
	}
	id, err := identity.PeerIdentity(cs)
	if err != nil { // verified in the handshake: cannot happen
		return nil, nil, false, err
	}
	if n.certs != nil && !isEnroll {
		n.certs.addPeer(cs.PeerCertificates)
	}
	return tc, &id, isEnroll, nil
}

// checkStreamName checks a plain stream request from the peer named name: a
// push-pull must carry the sender's own state under that name, and no other alive
// member at that state's address (a node with the certificate of n5 cannot
// announce itself as n4). Tombstones at the address pass: a restarted node may
// take a dead one's address. Other frames (lease, shard) pass: their peer is a
// node of the cluster. It decodes the frame a second time, off the loop.
func (n *Node) checkStreamName(name string, req []byte) error {
	var dec wire.Decoder
	dec.Accept(n.versions)
	_, msg, err := wire.DecodeFrame(req, wire.DefaultMaxFrame, &dec)
	if err != nil {
		return nil // the stack counts and drops what does not decode
	}
	pp, ok := msg.(*wire.PushPull)
	if !ok {
		return nil
	}
	self := -1
	for i := range pp.Nodes {
		if pp.Nodes[i].Name == name {
			self = i
		}
	}
	if self < 0 {
		return fmt.Errorf("%w: certificate names %q, the push-pull has no state of that name", ErrStreamIdentity, name)
	}
	for _, ns := range pp.Nodes {
		if ns.Name != name && ns.Addr == pp.Nodes[self].Addr && ns.Status == wire.StatusAlive {
			return fmt.Errorf("%w: certificate names %q, the push-pull also claims %q at its address %s",
				ErrStreamIdentity, name, ns.Name, ns.Addr)
		}
	}
	return nil
}
