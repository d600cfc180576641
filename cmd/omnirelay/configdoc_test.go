package main

import (
	"errors"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docTable returns the rows of the markdown table in doc whose header row starts
// with header, as cells with the outer pipes removed.
func docTable(t *testing.T, doc, header string) [][]string {
	t.Helper()
	var rows [][]string
	in := false
	for line := range strings.Lines(doc) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, header):
			in = true
		case in && strings.HasPrefix(line, "| ---"):
		case in && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			rows = append(rows, cells)
		case in:
			return rows
		}
	}
	if len(rows) == 0 {
		t.Fatalf("docs/configuration.md has no table %q", header)
	}
	return rows
}

// jsonKeys returns the json tags of struct type t's fields.
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if k, _, _ := strings.Cut(f.Tag.Get("json"), ","); k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	return keys
}

// sameSet reports, both ways, what one list has and the other lacks.
func sameSet(t *testing.T, what string, code, doc []string) {
	t.Helper()
	for _, k := range code {
		if !slices.Contains(doc, k) {
			t.Errorf("the agent has %s %s; docs/configuration.md does not document it", what, k)
		}
	}
	for _, k := range doc {
		if !slices.Contains(code, k) {
			t.Errorf("docs/configuration.md documents %s %s; the agent has no such thing", what, k)
		}
	}
}

// TestConfigDocMatchesTheAgent: the file keys, swim keys and flags documented in
// docs/configuration.md are exactly those of the config file's types and of the
// agent's flag set.
func TestConfigDocMatchesTheAgent(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	tick := regexp.MustCompile("^`([a-z_]+)`$")
	flagRe := regexp.MustCompile("`--([a-z][a-z-]*)")
	var keys, flags []string
	for _, row := range docTable(t, doc, "| file key | flag |") {
		if len(row) != 5 {
			t.Errorf("a keys-and-flags row with %d cells, want 5: %q", len(row), row)
			continue
		}
		if m := tick.FindStringSubmatch(row[0]); m != nil {
			keys = append(keys, m[1])
		} else if row[0] != "—" {
			t.Errorf("file key cell %q: want `key` or —", row[0])
		}
		for _, m := range flagRe.FindAllStringSubmatch(row[1], -1) {
			flags = append(flags, "--"+m[1])
		}
	}
	sameSet(t, "config key", jsonKeys(reflect.TypeFor[agentFile]()), keys)

	var swimKeys []string
	for _, row := range docTable(t, doc, "| key | lan | memberlist |") {
		if m := tick.FindStringSubmatch(row[0]); m != nil {
			swimKeys = append(swimKeys, m[1])
		}
	}
	sameSet(t, "swim key", jsonKeys(reflect.TypeFor[swimFile]()), swimKeys)

	_, err = parseAgent([]string{"--help"}, io.Discard)
	var help helpText
	if !errors.As(err, &help) {
		t.Fatalf("agent --help: %v", err)
	}
	var agentFlags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`).FindAllStringSubmatch(string(help), -1) {
		agentFlags = append(agentFlags, "--"+m[1])
	}
	sameSet(t, "flag", agentFlags, flags)
}

// TestConfigDocTablesAreWhole: every table of docs/configuration.md starts with a
// header and its separator, so a blank line inside one (which splits it and
// renders its tail as text) is caught.
func TestConfigDocTablesAreWhole(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "|") && (i == 0 || !strings.HasPrefix(lines[i-1], "|")) &&
			(i+1 == len(lines) || !strings.HasPrefix(lines[i+1], "| ---")) {
			t.Errorf("docs/configuration.md:%d: a table row with no header above it: %.60s", i+1, l)
		}
	}
}
