package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/omnirelay/mesh/control"
)

// keyringCommand is `omnirelay mesh keyring list|install|use|remove`: the packet
// keyring of one agent, or with --cluster of every live member (a rotation step
// must reach every node before the next: install, then use, then remove).
func keyringCommand() command {
	var cluster bool
	var keyFile string
	withCluster := func(fs *flag.FlagSet) {
		fs.BoolVar(&cluster, "cluster", false, "apply to every live member, each at its published control URL")
	}
	// each runs op on the addressed agent or every member and prints each keyring.
	each := func(ctx context.Context, a *apiFlags, stdout, stderr io.Writer, op func(*control.Client) ([]control.KeyInfo, error)) int {
		targets := []target{{name: "", url: a.addr}}
		if cluster {
			var err error
			if targets, err = liveTargets(ctx, a); err != nil {
				return meshError(stderr, a.addr, err)
			}
		}
		type result struct {
			keys []control.KeyInfo
			err  error
		}
		results := make([]result, len(targets))
		var wg sync.WaitGroup
		for i, t := range targets {
			if t.url == "" {
				results[i].err = fmt.Errorf("no control URL published")
				continue
			}
			wg.Go(func() {
				keys, err := op(&control.Client{Base: t.url, HTTP: a.client().HTTP})
				results[i] = result{keys, err}
			})
		}
		wg.Wait()
		code := 0
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tFINGERPRINT\tKEY ID\tPRIMARY")
		for i, t := range targets {
			name := t.name
			if name == "" {
				name = t.url
			}
			if err := results[i].err; err != nil {
				code = 1
				fmt.Fprintf(tw, "%s\t(failed: %s)\t\t\n", name, apiMessage(err))
				continue
			}
			for _, k := range results[i].keys {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%v\n", name, k.Fingerprint, k.KeyID, k.Primary)
			}
		}
		tw.Flush()
		if code != 0 {
			fmt.Fprintln(stderr, "omnirelay mesh keyring: not every node took the step; repeat it before the next one")
		}
		return code
	}
	return command{name: "keyring", usage: meshUsage, subs: []command{
		leaf("list", 0, 0, withCluster, func(ctx context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
			return each(ctx, a, stdout, stderr, func(c *control.Client) ([]control.KeyInfo, error) { return c.Keyring(ctx) })
		}),
		leaf("install", 0, 0, func(fs *flag.FlagSet) {
			withCluster(fs)
			fs.StringVar(&keyFile, "key-file", "", "file holding the new key (its first key; omnirelay keygen -o FILE makes one)")
		}, func(ctx context.Context, a *apiFlags, _ []string, stdout, stderr io.Writer) int {
			if keyFile == "" {
				fmt.Fprintln(stderr, "omnirelay mesh keyring install: --key-file is required (a key on the command line would be visible to every user of this host)")
				return 2
			}
			keys, err := readKeyFile(keyFile)
			if err != nil {
				fmt.Fprintf(stderr, "omnirelay mesh keyring install: %v\n", err)
				return 2
			}
			key, err := base64.StdEncoding.DecodeString(keys[0])
			if err != nil || len(key) != 32 {
				fmt.Fprintf(stderr, "omnirelay mesh keyring install: %s: the first key is not base64 of 32 bytes\n", keyFile)
				return 2
			}
			return each(ctx, a, stdout, stderr, func(c *control.Client) ([]control.KeyInfo, error) { return c.InstallKey(ctx, key) })
		}),
		leaf("use", 1, 1, withCluster, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			return each(ctx, a, stdout, stderr, func(c *control.Client) ([]control.KeyInfo, error) { return c.UseKey(ctx, pos[0]) })
		}),
		leaf("remove", 1, 1, withCluster, func(ctx context.Context, a *apiFlags, pos []string, stdout, stderr io.Writer) int {
			return each(ctx, a, stdout, stderr, func(c *control.Client) ([]control.KeyInfo, error) { return c.RemoveKey(ctx, pos[0]) })
		}),
	}}
}

// apiMessage is an error as one short phrase: the API's code and message.
func apiMessage(err error) string {
	var ae *control.APIError
	if errors.As(err, &ae) {
		return ae.Body.Code + ": " + ae.Body.Message
	}
	return strings.TrimSpace(err.Error())
}
