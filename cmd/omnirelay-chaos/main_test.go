package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/omnirelay/mesh/internal/chaos"
)

func TestListNamesEveryScenario(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"list"}, &out, &errb); code != 0 {
		t.Fatalf("list: exit %d: %s", code, errb.String())
	}
	for _, s := range chaos.Scenarios() {
		if !strings.Contains(out.String(), s.Name+" ") {
			t.Errorf("list does not name %s:\n%s", s.Name, out.String())
		}
	}
}

// Usage errors exit 2 before anything is checked or built, naming the choices.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage:"},
		{[]string{"explode"}, `unknown command "explode"`},
		{[]string{"run", "--scenario", "nope"}, `unknown --scenario "nope"; one of: leader-kill,`},
		{[]string{"run", "--bogus"}, "flag provided but not defined"},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}
