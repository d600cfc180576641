package mesh_test

// One of the architecture rules, beside deps_test.go's: msgpack is parsed in one
// place.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// msgpack is parsed in one place, internal/msgp: a second parser of the same
// untrusted format is a second thing to fuzz and a second set of bounds to keep
// equal. Outside it, a non-test file naming the type bytes of msgpack's map 16/32
// or array 16/32 headers is taken for a second codec.
func TestOneMsgpackCodec(t *testing.T) {
	pkgs := listPackages(t)
	for name, p := range pkgs {
		if name == "internal/msgp" {
			continue
		}
		for _, f := range p.GoFiles {
			for _, at := range msgpackHeaderBytes(t, filepath.Join(p.Dir, f)) {
				t.Errorf("%s: a msgpack header byte outside internal/msgp: use its codec", at)
			}
		}
	}
	for _, name := range []string{"wire", "crdt", "lease", "shard"} { // lease and shard write their bodies with it
		if p, ok := pkgs[name]; ok && !slices.Contains(p.Imports, module+"/internal/msgp") {
			t.Errorf("%s does not use internal/msgp", name)
		}
	}
}

// msgpackHeaderBytes returns where path's code has the literals 0xdc..0xdf.
func msgpackHeaderBytes(t *testing.T, path string) []string {
	t.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(file, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.INT {
			if v, err := strconv.ParseUint(lit.Value, 0, 64); err == nil && v >= 0xdc && v <= 0xdf && strings.HasPrefix(strings.ToLower(lit.Value), "0x") {
				out = append(out, fset.Position(lit.Pos()).String())
			}
		}
		return true
	})
	return out
}

func TestMsgpackCheckerCatchesACodec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "codec.go")
	src := "package bad\n\nfunc mapLen(c byte) bool { return c == 0xDE || c == 0xdf || c == 222 }\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := msgpackHeaderBytes(t, path); len(v) != 2 {
		t.Fatalf("want 2 header bytes (0xDE, 0xdf), got %v", v)
	}
}
