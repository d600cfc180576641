package main

import (
	"errors"
	"flag"

	"github.com/omnirelay/mesh/identity"
)

// tlsFlags are the certificate files of an instance or a load generator, as
// `omnirelay cert ca|issue` writes them (docs/security.md). All three or none.
type tlsFlags struct{ ca, cert, key string }

func (t *tlsFlags) register(fs *flag.FlagSet, whose string) {
	fs.StringVar(&t.ca, "tls-ca", "", "CA bundle (PEM) that every certificate of the cluster chains to; with --tls-cert and --tls-key, every API is mutual TLS")
	fs.StringVar(&t.cert, "tls-cert", "", whose+" (PEM)")
	fs.StringVar(&t.key, "tls-key", "", "the key of --tls-cert (PEM)")
}

// source loads the files; nil without any of them.
func (t tlsFlags) source() (*identity.Source, error) {
	switch n := btoi(t.ca != "") + btoi(t.cert != "") + btoi(t.key != ""); n {
	case 0:
		return nil, nil
	case 3:
		return identity.NewSource(identity.Files{Cert: t.cert, Key: t.key, Bundle: t.ca}, nil)
	}
	return nil, errors.New("--tls-ca, --tls-cert and --tls-key go together: set all three or none")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
