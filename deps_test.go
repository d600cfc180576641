package mesh_test

// The architecture rules of docs/design.md, as tests: which package may import which, and
// which calls protocol code may never make.

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/omnirelay/mesh"

// Leaves import no package of this module but those leafImports allows them.
// The generated gRPC code is one: the schema knows nothing of the runtime.
var leaves = []string{"wire", "crdt", "rendezvous", "internal/msgp", controlProto, controlProto + "/controlv1connect"}

const controlProto = "proto/omnirelay/control/v1"

// wire and crdt share one msgpack codec, itself a leaf.
var leafImports = map[string][]string{"wire": {"internal/msgp"}, "crdt": {"internal/msgp"},
	controlProto + "/controlv1connect": {controlProto}}

// Protocol packages are pure: no clock, no goroutines, no sockets, no global random.
// internal/vnet, the virtual network that sim and the protocols' tests share, is
// held to the same rules: a run on it must be a function of its seed.
var protocol = []string{"wire", "crdt", "rendezvous", "internal/msgp", "swim", "lease", "shard", "stack", "internal/vnet", "cluster"}

// Packages that must import others directly: lease and shard own their message
// types and encode them through wire's framing, and stack builds the wire.Registry
// from the protocols it runs (wire itself is a leaf: it imports no protocol package).
var requiredImports = map[string][]string{
	"lease": {"wire"},
	"shard": {"wire"},
	"stack": {"wire", "lease", "shard"},
}

// Test support: imported by tests only, never by a package's own code.
var testOnly = []string{"internal/wiretest"}

// Packages whose code may build a wire.Registry: which protocols a process runs is
// the stack's to say, so no package registers itself anywhere else.
var registryBuilders = []string{"stack"}

// Packages protocol code must never depend on, directly or not.
var forbiddenForProtocol = []string{module + "/node", module + "/sim", module + "/control", "net"}

type listedPackage struct {
	ImportPath string
	Deps       []string
	Imports    []string
	Dir        string
	GoFiles    []string
}

// listPackages returns the module's packages that exist (have non-test Go files).
func listPackages(t *testing.T) map[string]listedPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]listedPackage{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = p
	}
	return pkgs
}

func TestImportRules(t *testing.T) {
	for _, v := range importViolations(listPackages(t)) {
		t.Error(v)
	}
}

// Pairs {a, b}: a must not depend on b nor on any package under b. identity is below
// the runtime: node, control and the CLI import it, never the reverse. client is for
// services that do not embed node, so it links none of the runtime.
var forbiddenPairs = [][2]string{
	{"node", "sim"}, {"sim", "node"},
	{"identity", "node"}, {"identity", "control"}, {"identity", "sim"},
	{"client", "node"}, {"client", "sim"},
}

// importViolations applies the import rules to the packages go list found. A package
// a rule names but that does not exist is a violation too: a renamed package must not
// silently drop out of its rule.
func importViolations(pkgs map[string]listedPackage) []string {
	var out []string
	missing := map[string]bool{}
	get := func(name string) (listedPackage, bool) {
		p, ok := pkgs[name]
		if !ok && !missing[name] { // reported once, however many rules name it
			missing[name] = true
			out = append(out, fmt.Sprintf("the rules name package %s, which does not exist: update deps_test.go", name))
		}
		return p, ok
	}
	for _, name := range leaves {
		p, _ := get(name)
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/") && !slices.Contains(leafImports[name], strings.TrimPrefix(d, module+"/")) {
				out = append(out, fmt.Sprintf("%s is a leaf but depends on %s", name, d))
			}
		}
	}
	for _, name := range protocol {
		p, _ := get(name)
		for _, d := range p.Deps {
			if slices.Contains(forbiddenForProtocol, d) {
				out = append(out, fmt.Sprintf("protocol package %s depends on %s", name, d))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(requiredImports)) {
		p, _ := get(name)
		for _, want := range requiredImports[name] {
			if !slices.Contains(p.Imports, module+"/"+want) {
				out = append(out, fmt.Sprintf("%s does not import %s", name, want))
			}
		}
	}
	for _, name := range testOnly {
		get(name)
		for _, pn := range slices.Sorted(maps.Keys(pkgs)) {
			if slices.Contains(pkgs[pn].Deps, module+"/"+name) {
				out = append(out, fmt.Sprintf("%s depends on %s, which is for tests only", pn, name))
			}
		}
	}
	for _, pair := range forbiddenPairs {
		p, _ := get(pair[0])
		for _, d := range p.Deps {
			if d == module+"/"+pair[1] || strings.HasPrefix(d, module+"/"+pair[1]+"/") {
				out = append(out, fmt.Sprintf("%s depends on %s (via %s)", pair[0], pair[1], d))
			}
		}
	}
	return out
}

// The import checker itself must be able to fail: a clean module passes, and each
// kind of breach is reported once.
func TestImportCheckerCatchesViolations(t *testing.T) {
	clean := func() map[string]listedPackage {
		pkgs := map[string]listedPackage{}
		for _, n := range append(slices.Clone(protocol), "node", "sim", "control", "identity", "client", controlProto, controlProto+"/controlv1connect", "internal/wiretest") { // every package a rule names
			pkgs[n] = listedPackage{ImportPath: module + "/" + n, Deps: []string{"fmt", "time"}}
		}
		for n, imps := range requiredImports {
			p := pkgs[n]
			for _, i := range imps {
				p.Imports = append(p.Imports, module+"/"+i)
			}
			pkgs[n] = p
		}
		return pkgs
	}
	if v := importViolations(clean()); len(v) != 0 {
		t.Fatalf("a clean module reports violations: %v", v)
	}
	bad := clean()
	bad["crdt"] = listedPackage{Deps: []string{module + "/wire"}}
	bad["swim"] = listedPackage{Deps: []string{"net"}}
	bad["identity"] = listedPackage{Deps: []string{module + "/node"}}
	bad["sim"] = listedPackage{Deps: []string{module + "/node/sub"}}
	bad["client"] = listedPackage{Deps: []string{module + "/node"}}
	bad["shard"] = listedPackage{Imports: []string{module + "/lease"}}
	bad["control"] = listedPackage{Deps: []string{module + "/internal/wiretest"}}
	delete(bad, "lease")
	want := []string{
		"crdt is a leaf but depends on " + module + "/wire",
		"protocol package swim depends on net",
		"identity depends on node",
		"sim depends on node",
		"client depends on node",
		"package lease, which does not exist",
		"lease does not import wire", // it does not exist either
		"shard does not import wire",
		"control depends on internal/wiretest, which is for tests only",
	}
	got := importViolations(bad)
	if len(got) != len(want) {
		t.Fatalf("got %d violations, want %d: %q", len(got), len(want), got)
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no violation mentions %q: %q", w, got)
		}
	}
}

// Calls that read the wall clock or arm real timers.
var forbiddenTimeFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "NewTimer": true, "NewTicker": true, "Tick": true,
}

// Package-level math/rand/v2 functions that are allowed: they build a source, they do
// not draw from the global one.
var allowedRandFuncs = map[string]bool{"New": true, "NewPCG": true, "NewChaCha8": true, "NewZipf": true}

// Every protocol package is checked, file by file; one the rule names but that has no
// source files fails, so the check never passes vacuously.
func TestProtocolCodeIsPure(t *testing.T) {
	pkgs := listPackages(t)
	for _, name := range protocol {
		p, ok := pkgs[name]
		if !ok || len(p.GoFiles) == 0 {
			t.Errorf("protocol package %s has no source files: update deps_test.go", name)
			continue
		}
		for _, f := range p.GoFiles {
			for _, v := range purityViolations(t, filepath.Join(p.Dir, f)) {
				t.Errorf("%s/%s: %s", name, f, v)
			}
		}
	}
}

func purityViolations(t *testing.T, path string) []string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, path, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Local names of the imports we police.
	names := map[string]string{} // local name -> import path
	var out []string
	for _, imp := range file.Imports {
		ip, _ := strconv.Unquote(imp.Path.Value)
		local := filepath.Base(ip)
		if ip == "math/rand/v2" {
			local = "rand"
		}
		if imp.Name != nil {
			local = imp.Name.Name
		}
		switch ip {
		case "math/rand":
			out = append(out, "imports math/rand (use an injected *rand.Rand from math/rand/v2)")
		case "time", "math/rand/v2":
			// A dot import would hide every call from the selector check below.
			if local == "." {
				out = append(out, "dot-imports "+ip)
			}
			names[local] = ip
		}
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			out = append(out, fset.Position(n.Pos()).String()+": starts a goroutine")
		case *ast.SelectorExpr:
			id, ok := n.X.(*ast.Ident)
			if !ok || id.Obj != nil { // Obj != nil: a local variable, not a package
				return true
			}
			switch names[id.Name] {
			case "time":
				if forbiddenTimeFuncs[n.Sel.Name] {
					out = append(out, fset.Position(n.Pos()).String()+": calls time."+n.Sel.Name)
				}
			case "math/rand/v2":
				if ast.IsExported(n.Sel.Name) && !allowedRandFuncs[n.Sel.Name] && !isRandType(n.Sel.Name) {
					out = append(out, fset.Position(n.Pos()).String()+": uses the global random source rand."+n.Sel.Name)
				}
			}
		}
		return true
	})
	return out
}

func isRandType(name string) bool {
	switch name {
	case "Rand", "Source", "PCG", "ChaCha8", "Zipf":
		return true
	}
	return false
}

// The checker itself must be able to fail.
func TestPurityCheckerCatchesViolations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.go")
	src := `package bad

import (
	"math/rand/v2"
	clock "time"
)

func f() {
	_ = clock.Now()
	go func() {}()
	_ = rand.IntN(3)
	r := rand.New(rand.NewPCG(1, 2))
	_ = r.IntN(3)
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	v := purityViolations(t, path)
	if len(v) != 3 {
		t.Fatalf("want 3 violations (time.Now, go, rand.IntN), got %d: %v", len(v), v)
	}
}

// Imports that would hide calls from the selector check, or draw from v1's global
// source, are violations by themselves.
func TestPurityCheckerCatchesImports(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.go")
	src := `package bad

import (
	"math/rand"
	. "time"
)

func f() { _ = Now(); _ = rand.Intn(3) }
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	v := purityViolations(t, path)
	if len(v) != 2 || !strings.Contains(v[0], "math/rand") || !strings.Contains(v[1], "dot-imports time") {
		t.Fatalf("want the math/rand import and the dot import of time, got %q", v)
	}
}

// Only the registryBuilders call wire.NewRegistry in their code, and each of them
// does: the check cannot pass because the call moved or was renamed.
func TestOnlyTheStackBuildsTheRegistry(t *testing.T) {
	pkgs := listPackages(t)
	for _, name := range slices.Sorted(maps.Keys(pkgs)) {
		p := pkgs[name]
		calls := 0
		for _, f := range p.GoFiles {
			calls += len(registryCalls(t, filepath.Join(p.Dir, f)))
		}
		switch builder := slices.Contains(registryBuilders, name); {
		case builder && calls == 0:
			t.Errorf("%s builds no wire.Registry: update deps_test.go", name)
		case !builder && calls > 0:
			t.Errorf("%s builds a wire.Registry: only %v choose the protocols a process runs", name, registryBuilders)
		}
	}
}

// registryCalls returns where path's code names wire.NewRegistry, following import
// aliases.
func registryCalls(t *testing.T, path string) []string {
	t.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	local := ""
	for _, imp := range file.Imports {
		if ip, _ := strconv.Unquote(imp.Path.Value); ip == module+"/wire" {
			local = "wire"
			if imp.Name != nil {
				local = imp.Name.Name
			}
		}
	}
	var out []string
	if local == "" {
		return nil
	}
	ast.Inspect(file, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewRegistry" {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == local && id.Obj == nil {
				out = append(out, fset.Position(n.Pos()).String())
			}
		}
		return true
	})
	return out
}

func TestRegistryCheckerCatchesCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.go")
	src := `package bad

import w "github.com/omnirelay/mesh/wire"

var r, _ = w.NewRegistry(w.Membership())
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := registryCalls(t, path); len(v) != 1 {
		t.Fatalf("want the aliased call to wire.NewRegistry, got %q", v)
	}
}
