package mesh_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestAPIDocNamesEveryNodeMethod: every exported method of *node.Node, read from
// node's source, is named in docs/api.md's embedding table as "n.Method(".
func TestAPIDocNamesEveryNodeMethod(t *testing.T) {
	doc, err := os.ReadFile("docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("node")
	if err != nil {
		t.Fatal(err)
	}
	methods := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), "node/"+e.Name(), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || !fd.Name.IsExported() {
				continue
			}
			star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
			if !ok {
				continue
			}
			if id, ok := star.X.(*ast.Ident); !ok || id.Name != "Node" {
				continue
			}
			methods++
			if !strings.Contains(string(doc), "n."+fd.Name.Name+"(") {
				t.Errorf("(*node.Node).%s is not documented in docs/api.md (want `n.%s(...)` in the embedding table)", fd.Name.Name, fd.Name.Name)
			}
		}
	}
	if methods < 10 {
		t.Fatalf("found only %d methods of *node.Node", methods)
	}
}
