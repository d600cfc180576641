package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/omnirelay/mesh/control"
	"github.com/omnirelay/mesh/node"
)

const keyringUsage = `usage:
  omnirelay mesh keyring list [--addr URL] [-o table|json]
  omnirelay mesh keyring install|use|remove --key-file FILE [--addr URL] [-o table|json]

Asks every live member, at the control URL it publishes (metadata "control"), and
prints each node's answer; exits 1 if any node failed or could not be asked. Rotate
a key with install (everywhere), then use, then remove of the old key, each step
only once every node answered ok. --key-file is a file as omnirelay keygen -o
writes it (the first key is used). Needs the operator role. Also takes --timeout D
and the --tls-* flags of every mesh command.
`

// keyringCommand is `omnirelay mesh keyring`.
func keyringCommand() command {
	c := command{name: "keyring", usage: keyringUsage}
	for _, sub := range []string{"list", "install", "use", "remove"} {
		c.subs = append(c.subs, command{name: sub, run: func(args []string, stdout, stderr io.Writer) int {
			return runKeyring(sub, args, stdout, stderr)
		}})
	}
	return c
}

// KeyringAnswer is one node's answer to a keyring command (-o json prints a list).
type KeyringAnswer struct {
	Node  string            `json:"node"`
	URL   string            `json:"url"`
	Keys  []control.KeyInfo `json:"keys,omitempty"`
	Error string            `json:"error,omitempty"`
}

func runKeyring(sub string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mesh keyring "+sub, flag.ContinueOnError)
	var a apiFlags
	keyFile := ""
	if sub != "list" {
		fs.StringVar(&keyFile, "key-file", "", "file holding the key (as omnirelay keygen -o writes it)")
	}
	if _, code := parseMeshUsage(fs, &a, args, 0, keyringUsage, stdout, stderr); code >= 0 {
		return code
	}
	var key []byte
	if sub != "list" {
		if keyFile == "" {
			fmt.Fprintf(stderr, "omnirelay mesh keyring %s: --key-file is required\n", sub)
			return 2
		}
		keys, err := readKeyFile(keyFile)
		if err == nil {
			key, err = base64.StdEncoding.DecodeString(keys[0])
		}
		if err == nil && len(key) != control.KeySize {
			err = fmt.Errorf("key file %s: the key is %d bytes, want %d", keyFile, len(key), control.KeySize)
		}
		if err != nil {
			fmt.Fprintf(stderr, "omnirelay mesh keyring %s: %v\n", sub, err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	peers, _, err := a.client().ListPeers(ctx, control.ListOptions{Status: []string{"alive", "suspect"}})
	if err != nil {
		return meshError(stderr, a.addr, err)
	}
	var answers []KeyringAnswer
	failed := false
	for _, p := range peers {
		ans := KeyringAnswer{Node: p.Name, URL: p.Meta[node.ControlMetaKey]}
		if p.Local {
			ans.URL = a.addr
		}
		if ans.URL == "" {
			ans.Error = "publishes no control URL (metadata \"control\")"
		} else {
			cl := a.client()
			cl.Base = ans.URL
			var r control.KeyringReply
			if sub == "list" {
				r, err = cl.Keyring(ctx)
			} else {
				r, err = cl.KeyOp(ctx, sub, key)
			}
			if err != nil {
				ans.Error = err.Error()
			}
			ans.Keys = r.Keys
		}
		failed = failed || ans.Error != ""
		answers = append(answers, ans)
	}
	if a.out == "json" {
		writeJSONOut(stdout, answers)
	} else {
		printKeyring(stdout, answers)
	}
	if failed {
		return 1
	}
	return 0
}

func printKeyring(w io.Writer, answers []KeyringAnswer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRESULT\tPRIMARY\tKEYS")
	for _, ans := range answers {
		if ans.Error != "" {
			fmt.Fprintf(tw, "%s\terror: %s\t-\t-\n", ans.Node, ans.Error)
			continue
		}
		primary, all := "-", []string{}
		for _, k := range ans.Keys {
			if k.Primary {
				primary = k.Fingerprint
			}
			all = append(all, k.Fingerprint)
		}
		slices.Sort(all)
		fmt.Fprintf(tw, "%s\tok\t%s\t%s\n", ans.Node, primary, strings.Join(all, ","))
	}
	tw.Flush()
}
