package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/omnirelay/mesh/identity"
)

// writePKI makes a CA and a certificate per name (role node for instances,
// reader for the load generator) in dir, as `omnirelay cert` lays them out.
func writePKI(t *testing.T, dir string, names map[string]identity.Role) {
	t.Helper()
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: "kv.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir, false); err != nil {
		t.Fatal(err)
	}
	for n, role := range names {
		leaf, err := ca.Issue(identity.IssueRequest{ID: identity.ID{TrustDomain: "kv.test", Cluster: identity.DefaultCluster, Role: role, Name: n}})
		if err != nil {
			t.Fatal(err)
		}
		if err := identity.SaveLeaf(dir, leaf, false); err != nil {
			t.Fatal(err)
		}
	}
}

// With certificates, instances serve the kv and control APIs over mutual TLS:
// a load generator with a certificate of the cluster gets its appends
// acknowledged and finds each exactly once, and a caller without one is
// refused at the handshake.
func TestTLSInstancesServeVerifiedClients(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	writePKI(t, pki, map[string]identity.Role{"kv1": identity.RoleNode, "kv2": identity.RoleNode, "kv3": identity.RoleNode, "load": identity.RoleReader})
	c := &cluster{cfg: scenarioConfig{Bin: bin, Env: []string{execEnv + "=1"}, Dir: dir, Shards: 8, PKI: pki, Logf: t.Logf},
		key: filepath.Join(dir, "mesh.key"), voters: []string{"kv1", "kv2", "kv3"}, procs: map[string]*proc{}}
	if err := writeKey(c.key); err != nil {
		t.Fatal(err)
	}
	defer c.stopAll()
	var kv1 *proc
	for _, n := range c.voters {
		p, err := c.start(n)
		if err != nil {
			t.Fatal(err)
		}
		if kv1 == nil {
			kv1 = p
		}
	}
	src, err := (tlsFlags{ca: filepath.Join(pki, "ca.pem"), cert: filepath.Join(pki, "load.pem"), key: filepath.Join(pki, "load-key.pem")}).source()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, err := newLoadgen(ctx, loadConfig{Agents: c.controls(), Workers: 4, Rate: 40, Keys: 16, TLS: src.ClientConfig(identity.MeshPolicy)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	runCtx, stop := context.WithTimeout(ctx, 3*time.Second)
	defer stop()
	g.setPhase("load")
	g.run(runCtx)
	v, err := g.verify()
	if err != nil {
		t.Fatal(err)
	}
	if v.Acked == 0 || v.Lost != 0 || v.Duplicated != 0 {
		t.Errorf("verify %+v: want appends acknowledged, none lost or duplicated", v)
	}
	// No client certificate: refused before any request is read.
	plain := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: src.ClientConfig(identity.MeshPolicy).Clone()}}
	plain.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = nil
	if resp, err := plain.Get(kv1.info.HTTP + "/kv/k00001"); err == nil {
		resp.Body.Close()
		t.Errorf("GET without a client certificate: %s, want a refused handshake", resp.Status)
	}
}
