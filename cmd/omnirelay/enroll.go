package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/node"
)

// identityPlan is what the agent does about its identity before it starts, when
// that needs the network or a goroutine (so parseAgent, which SIGHUP runs again,
// does none of it): take certificates from the SPIFFE Workload API, redeem a join
// token for them, and become a signing member.
type identityPlan struct {
	spiffeSocket string   // --spiffe-socket
	joinToken    string   // --join-token, when the certificate files do not exist yet
	files        tlsFlags // where a redeemed certificate and key are written
	caKey        string   // --tls-ca-key
	tokenFile    string   // the signer's token store; "" keeps tokens in memory
}

// spiffeWait bounds the wait for a first SVID from the Workload API.
const spiffeWait = 30 * time.Second

// planIdentity checks the identity flags; tf are the --tls-* files.
func planIdentity(tf tlsFlags, spiffeSocket, joinToken, caKey, dataDir string, join []string) (identityPlan, error) {
	p := identityPlan{spiffeSocket: spiffeSocket, files: tf, caKey: caKey}
	if dataDir != "" {
		p.tokenFile = filepath.Join(dataDir, "join-tokens.json")
	}
	if spiffeSocket != "" && (tf.ca != "" || tf.cert != "" || tf.key != "" || joinToken != "") {
		return p, errors.New("--spiffe-socket takes the certificate and the trust bundle from the SPIFFE Workload API: give it without --tls-ca, --tls-cert, --tls-key and --join-token")
	}
	if caKey != "" && tf.ca == "" {
		return p, errors.New("--tls-ca-key needs --tls-ca, the bundle that holds the CA certificate of that key")
	}
	if joinToken == "" {
		return p, nil
	}
	if _, _, err := identity.ParseToken(joinToken); err != nil {
		return p, fmt.Errorf("--join-token: %w", err)
	}
	if tf.ca == "" || tf.cert == "" || tf.key == "" || len(join) == 0 {
		return p, errors.New("--join-token needs --join (members: any of them relays the token to a signing member), --tls-ca (the trust bundle that authenticates them), and --tls-cert and --tls-key (where the issued certificate and its key are written)")
	}
	if _, err := os.Stat(tf.cert); err != nil {
		p.joinToken = joinToken // else the certificate was issued at an earlier start
	}
	return p, nil
}

// pending reports whether the identity is made only by prepare.
func (p identityPlan) pending() bool { return p.spiffeSocket != "" || p.joinToken != "" }

// prepare makes the identity the plan names, writing s.cfg.TLS (and Keys, when a
// token brought them) and s.cfg.Signer. It returns a function that releases what
// it started.
func (p identityPlan) prepare(ctx context.Context, s *agentSettings, log *slog.Logger) (func(), error) {
	release := func() {}
	switch {
	case p.spiffeSocket != "":
		wctx, cancel := context.WithTimeout(ctx, spiffeWait)
		defer cancel()
		src, err := identity.NewWorkloadSource(wctx, p.spiffeSocket, s.cfg.Name, nil, func(err error) {
			log.Warn("SPIFFE Workload API update refused; the current certificate stays", "err", err)
		})
		if err != nil {
			return release, err
		}
		log.Info("identity from the SPIFFE Workload API", "socket", p.spiffeSocket, "id", src.Identity().String())
		s.cfg.TLS, release = src, src.Close
	case p.joinToken != "":
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return release, err
		}
		e, err := node.Enroll(ctx, node.EnrollRequest{Seeds: s.cfg.Join, Name: s.cfg.Name, Token: p.joinToken, Bundle: p.files.ca, Key: key})
		if err != nil {
			return release, fmt.Errorf("--join-token: %w", err)
		}
		keyPEM, err := identity.EncodeKeyPEM(key)
		if err != nil {
			return release, err
		}
		if err := writeFileAtomic(p.files.key, keyPEM); err != nil {
			return release, fmt.Errorf("writing --tls-key: %w", err)
		}
		if err := writeFileAtomic(p.files.cert, identity.EncodeCertsPEM(e.Chain...)); err != nil {
			return release, fmt.Errorf("writing --tls-cert: %w", err)
		}
		if s.cfg.TLS, err = p.files.source(); err != nil {
			return release, err
		}
		log.Info("join token redeemed for a certificate", "from", e.From, "id", s.cfg.TLS.Identity().String(), "keys", len(e.Keys))
		if len(s.cfg.Keys) == 0 {
			s.cfg.Keys, s.cfg.KeysFromJoin = e.Keys, false
		}
	}
	if p.caKey != "" {
		ca, err := identity.LoadCAFiles(p.files.ca, p.caKey)
		if err != nil {
			return release, fmt.Errorf("--tls-ca-key: %w", err)
		}
		var store identity.TokenStore = identity.NewMemTokenStore()
		if p.tokenFile != "" {
			if err := os.MkdirAll(filepath.Dir(p.tokenFile), 0o700); err != nil {
				return release, fmt.Errorf("--data-dir: %w", err)
			}
			if store, err = identity.OpenFileTokenStore(p.tokenFile); err != nil {
				return release, err
			}
		}
		s.cfg.Signer = &node.Signer{CA: ca, Tokens: store}
		log.Warn("this agent holds the CA key: it signs node certificates for join tokens; guard its disk as the CA's", "tokens", p.tokenFile)
	}
	return release, nil
}
