package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/omnirelay/mesh/identity"
)

const certUsage = `usage:
  omnirelay cert ca --out DIR [--trust-domain TD] [--ttl D] [--force]
  omnirelay cert issue --ca DIR --name NAME --out DIR [--cluster C]
                       [--role node|reader|operator|admin] [--ttl D]
                       [--dns NAME,...] [--ip ADDR,...] [--force]

"cert ca" creates a CA (ECDSA P-256, self-signed) in DIR/ca.pem and DIR/ca-key.pem.
"cert issue" signs DIR/NAME.pem and DIR/NAME-key.pem with it, for the identity
spiffe://<trust-domain>/mesh/<cluster>/<role>/<name>. Key files are mode 0600; keep
the CA key off the mesh's nodes. Existing files are never overwritten without --force.
`

// defaultTrustDomain is the trust domain of a CA made without --trust-domain.
const defaultTrustDomain = "omnirelay.local"

// certCommand is `omnirelay cert`.
func certCommand() command {
	return command{name: "cert", usage: certUsage, subs: []command{
		{name: "ca", run: runCertCA},
		{name: "issue", run: runCertIssue},
	}}
}

// parseCertFlags parses args, which hold no positional argument. It returns the
// exit code to stop with, or -1 to go on.
func parseCertFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	fs.SetOutput(stderr)
	pos, err := parseArgs(fs, certUsage, args)
	if err != nil {
		return parseExit(err, stdout)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "omnirelay %s: unexpected argument %q\n%s", fs.Name(), pos[0], certUsage)
		return 2
	}
	return -1
}

func runCertCA(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cert ca", flag.ContinueOnError)
	out := fs.String("out", "", "directory to write ca.pem and ca-key.pem to (created 0700 if missing)")
	td := fs.String("trust-domain", defaultTrustDomain, "SPIFFE trust domain the CA signs for")
	ttl := fs.Duration("ttl", identity.DefaultCATTL, "validity of the CA certificate")
	force := fs.Bool("force", false, "overwrite existing files")
	if code := parseCertFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if *out == "" {
		fmt.Fprintln(stderr, "omnirelay cert ca: --out is required")
		return 2
	}
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: *td, TTL: *ttl})
	if err == nil {
		err = os.MkdirAll(*out, 0o700)
	}
	if err == nil {
		err = ca.Save(*out, *force)
	}
	if err != nil {
		fmt.Fprintf(stderr, "omnirelay cert ca: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s and %s: CA for trust domain %q, valid until %s\n",
		filepath.Join(*out, identity.CACertFile), filepath.Join(*out, identity.CAKeyFile),
		ca.TrustDomain, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return 0
}

func runCertIssue(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cert issue", flag.ContinueOnError)
	caDir := fs.String("ca", "", "directory holding ca.pem and ca-key.pem")
	name := fs.String("name", "", "node or person name: letters, digits, '.', '_', '-' (the node's --name for a node)")
	cluster := fs.String("cluster", identity.DefaultCluster, "cluster the identity belongs to")
	role := fs.String("role", string(identity.RoleNode), "node, reader, operator or admin")
	ttl := fs.Duration("ttl", identity.DefaultLeafTTL, "validity of the certificate")
	var dns, ips listFlag
	fs.Var(&dns, "dns", "DNS SAN, repeatable or comma-separated (peers verify the SPIFFE ID; add these only for other TLS clients)")
	fs.Var(&ips, "ip", "IP SAN, repeatable or comma-separated (as --dns)")
	out := fs.String("out", "", "directory to write NAME.pem and NAME-key.pem to (created 0700 if missing)")
	force := fs.Bool("force", false, "overwrite existing files")
	if code := parseCertFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	fail := func(code int, format string, args ...any) int {
		fmt.Fprintf(stderr, "omnirelay cert issue: "+format+"\n", args...)
		return code
	}
	if *caDir == "" || *name == "" || *out == "" {
		return fail(2, "--ca, --name and --out are required")
	}
	r, err := identity.ParseRole(*role)
	if err != nil {
		return fail(2, "--role: %v", err)
	}
	req := identity.IssueRequest{TTL: *ttl, DNSNames: dns}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return fail(2, "--ip: %q is not an IP address", s)
		}
		req.IPAddresses = append(req.IPAddresses, ip)
	}
	if *name == "ca" && filepath.Clean(*out) == filepath.Clean(*caDir) {
		// NAME.pem and NAME-key.pem would be the CA's own files.
		return fail(2, "--name ca with --out equal to --ca would overwrite the CA")
	}
	ca, err := identity.LoadCA(*caDir)
	if err != nil {
		return fail(1, "--ca %s: %v", *caDir, err)
	}
	req.ID = identity.ID{TrustDomain: ca.TrustDomain, Cluster: *cluster, Role: r, Name: *name}
	leaf, err := ca.Issue(req)
	if err == nil {
		err = os.MkdirAll(*out, 0o700)
	}
	if err == nil {
		err = identity.SaveLeaf(*out, leaf, *force)
	}
	if err != nil {
		return fail(1, "%v", err)
	}
	fmt.Fprintf(stdout, "wrote %s and %s: %s, valid until %s\n",
		filepath.Join(*out, *name+".pem"), filepath.Join(*out, *name+"-key.pem"),
		req.ID, leaf.Cert.NotAfter.UTC().Format(time.RFC3339))
	return 0
}
