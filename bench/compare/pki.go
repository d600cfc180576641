package compare

import (
	"crypto/rand"
	"os"
	"path/filepath"

	"github.com/omnirelay/mesh/identity"
)

// benchPKI is a CA in a temporary directory that issues the node certificates of
// one run, as `omnirelay cert ca` and `cert issue` would.
type benchPKI struct {
	ca  *identity.CA
	dir string
}

func newBenchPKI() (*benchPKI, error) {
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: "bench.test"})
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "omnirelay-bench-pki-")
	if err != nil {
		return nil, err
	}
	if err := ca.Save(dir, false); err != nil {
		return nil, err
	}
	return &benchPKI{ca: ca, dir: dir}, nil
}

// source issues a node certificate for name and loads it, as an agent's --tls-*.
func (p *benchPKI) source(name string) (*identity.Source, error) {
	leaf, err := p.ca.Issue(identity.IssueRequest{ID: identity.ID{TrustDomain: "bench.test",
		Cluster: identity.DefaultCluster, Role: identity.RoleNode, Name: name}})
	if err != nil {
		return nil, err
	}
	if err := identity.SaveLeaf(p.dir, leaf, true); err != nil {
		return nil, err
	}
	return identity.NewSource(identity.Files{Cert: filepath.Join(p.dir, name+".pem"),
		Key: filepath.Join(p.dir, name+"-key.pem"), Bundle: filepath.Join(p.dir, identity.CACertFile)}, nil)
}

func (p *benchPKI) close() { os.RemoveAll(p.dir) }

// packetKey is a fresh AES-256 packet key.
func packetKey() [][]byte {
	k := make([]byte, 32)
	rand.Read(k)
	return [][]byte{k}
}
