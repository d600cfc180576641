package node

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/mesh/identity"
	"github.com/omnirelay/mesh/swim"
)

// spireBinEnv names the directory holding spire-server and spire-agent (v1.13.3,
// README "Tests"); TestSPIREWorkloadAPI runs only when it is set.
const spireBinEnv = "OMNIRELAY_SPIRE_BIN"

const spireTrustDomain = "omnirelay.test"

// spire is a SPIRE server and agent on loopback and unix sockets in a temp dir.
type spire struct {
	t           *testing.T
	bin, dir    string
	serverSock  string
	agentSock   string
	serverCmd   *exec.Cmd
	agentCmd    *exec.Cmd
	serverLog   bytes.Buffer
	agentLog    bytes.Buffer
	commandsLog bytes.Buffer
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run runs a SPIRE CLI command to completion and returns its output.
func (s *spire) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(s.t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...).CombinedOutput()
	fmt.Fprintf(&s.commandsLog, "$ %s %s\n%s\n", name, strings.Join(args, " "), out)
	return string(out), err
}

func (s *spire) start(name, conf string, extra ...string) *exec.Cmd {
	path := filepath.Join(s.dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(s.bin, name), append([]string{"run", "-config", path}, extra...)...)
	log := &s.serverLog
	if name == "spire-agent" {
		log = &s.agentLog
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	s.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// waitHealthy polls `NAME healthcheck` until it passes.
func (s *spire) waitHealthy(name, sock string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.run(name, "healthcheck", "-socketPath", sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not become healthy within 60s\nserver log:\n%s\nagent log:\n%s\ncommands:\n%s", name, &s.serverLog, &s.agentLog, &s.commandsLog)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func startSPIRE(t *testing.T, bin string) *spire {
	// Unix socket paths must stay under 108 bytes: a short dir of our own.
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &spire{t: t, bin: bin, dir: dir, serverSock: filepath.Join(dir, "server.sock"), agentSock: filepath.Join(dir, "agent.sock")}
	port := freePort(t)
	s.serverCmd = s.start("spire-server", fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "WARN"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1m"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, port, s.serverSock, spireTrustDomain, filepath.Join(dir, "server-data"), filepath.Join(dir, "server-data", "datastore.sqlite3")))
	s.waitHealthy("spire-server", s.serverSock)
	out, err := s.run("spire-server", "token", "generate", "-socketPath", s.serverSock, "-spiffeID", "spiffe://"+spireTrustDomain+"/host")
	m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("spire-server token generate: %v\n%s", err, out)
	}
	s.agentCmd = s.start("spire-agent", fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "agent-data"), port, s.agentSock, spireTrustDomain), "-joinToken", m[1])
	s.waitHealthy("spire-agent", s.agentSock)
	return s
}

// register makes an entry that gives this process's user the SVID of node name.
func (s *spire) register(name string) {
	id := fmt.Sprintf("spiffe://%s/mesh/%s/node/%s", spireTrustDomain, identity.DefaultCluster, name)
	if out, err := s.run("spire-server", "entry", "create", "-socketPath", s.serverSock,
		"-parentID", "spiffe://"+spireTrustDomain+"/host", "-spiffeID", id,
		"-selector", "unix:uid:"+strconv.Itoa(os.Getuid())); err != nil {
		s.t.Fatalf("spire-server entry create %s: %v\n%s", id, err, out)
	}
}

// TestSPIREWorkloadAPI: a real SPIRE server and agent issue X.509-SVIDs through
// the Workload API to three nodes, which form a cluster over mutual TLS on them;
// two of the three have no packet key and take it from the first by enrollment;
// when SPIRE rotates the SVIDs (1-minute TTL, renewed at half-life) the sources
// take the new certificates and the cluster stays whole.
func TestSPIREWorkloadAPI(t *testing.T) {
	bin := os.Getenv(spireBinEnv)
	if bin == "" {
		t.Skipf("set %s to the directory of spire-server and spire-agent v1.13.3 (README, Tests)", spireBinEnv)
	}
	s := startSPIRE(t, bin)
	names := []string{"n1", "n2", "n3"}
	for _, n := range names {
		s.register(n)
	}
	var nodes []*Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for i, name := range names {
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		src, err := identity.NewWorkloadSource(ctx, s.agentSock, name, nil, func(err error) { t.Logf("%s: workload API: %v", name, err) })
		cancel()
		if err != nil {
			t.Fatalf("%s: no SVID from the Workload API: %v\nagent log:\n%s", name, err, &s.agentLog)
		}
		t.Cleanup(src.Close)
		if id := src.Identity(); id.Name != name || id.Role != identity.RoleNode || id.TrustDomain != spireTrustDomain {
			t.Fatalf("%s got the SVID of %s", name, id)
		}
		var cfg Config
		if i == 0 {
			cfg = loopbackConfig(name, [][]byte{testKey})
		} else {
			cfg = loopbackConfig(name, nil, nodes[0].Addr())
			cfg.KeysFromJoin = true
		}
		cfg.TLS = src
		ctx, cancel = context.WithTimeout(t.Context(), 20*time.Second)
		n, err := Start(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("%s did not start on its SVID: %v", name, err)
		}
		nodes = append(nodes, n)
		if i > 0 && (n.kr == nil || !bytes.Equal(n.kr.Keys()[0], testKey)) {
			t.Fatalf("%s did not take the packet key by enrollment", name)
		}
	}
	whole := func() bool {
		for _, n := range nodes {
			alive := 0
			for _, m := range n.Members() {
				if m.Status == swim.StatusAlive {
					alive++
				}
			}
			if alive != 3 {
				return false
			}
		}
		return true
	}
	eventually(t, 20*time.Second, "three alive members on every node", whole)
	t.Logf("three nodes formed a cluster on SPIRE SVIDs")

	first := nodes[0].cfg.TLS.Certificate().Leaf.SerialNumber
	eventually(t, 90*time.Second, "a rotated SVID taken by n1's source", func() bool {
		return nodes[0].cfg.TLS.Certificate().Leaf.SerialNumber.Cmp(first) != 0
	})
	// A push-pull after the rotation handshakes on the new certificates.
	time.Sleep(2 * time.Second)
	if !whole() {
		t.Fatal("the cluster is not whole after the SVID rotation")
	}
	t.Logf("SVID rotated (serial %x -> %x); cluster whole", first, nodes[0].cfg.TLS.Certificate().Leaf.SerialNumber)
}
