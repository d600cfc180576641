package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestEveryCommandHelpGoesToStdout walks the dispatch tree: -h and --help of every
// command print its usage (and a leaf's flags) on stdout and exit 0.
func TestEveryCommandHelpGoesToStdout(t *testing.T) {
	var walk func(path []string, c command)
	walk = func(path []string, c command) {
		for _, h := range []string{"-h", "--help"} {
			args := append(append([]string{}, path...), h)
			var out, errb bytes.Buffer
			code := run(args, &out, &errb)
			if code != 0 || out.Len() == 0 || errb.Len() != 0 {
				t.Errorf("omnirelay %s: exit %d, %d bytes on stdout, stderr %q", strings.Join(args, " "), code, out.Len(), errb.String())
			}
			if c.run != nil && !strings.Contains(out.String(), "flags:") {
				t.Errorf("omnirelay %s: no flags in\n%s", strings.Join(args, " "), out.String())
			}
		}
		for _, s := range c.subs {
			walk(append(append([]string{}, path...), s.name), s)
		}
	}
	walk(nil, commandTree())
}
