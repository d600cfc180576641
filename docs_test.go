package mesh_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strings"
	"testing"
)

// exportedMethods returns the exported methods of *typ declared in package dir's
// non-test sources, read from the source itself.
func exportedMethods(t *testing.T, dir, typ string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), dir+"/"+e.Name(), nil, parser.SkipObjectResolution)
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
			if id, ok := star.X.(*ast.Ident); ok && id.Name == typ {
				methods[fd.Name.Name] = true
			}
		}
	}
	if len(methods) < 5 {
		t.Fatalf("found only %d methods of *%s in %s", len(methods), typ, dir)
	}
	return methods
}

// TestAPIDocNamesEveryNodeMethod: every exported method of *node.Node, read from
// node's source, is named in docs/api.md's embedding table as "n.Method(".
func TestAPIDocNamesEveryNodeMethod(t *testing.T) {
	doc, err := os.ReadFile("docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	for m := range exportedMethods(t, "node", "Node") {
		if !strings.Contains(string(doc), "n."+m+"(") {
			t.Errorf("(*node.Node).%s is not documented in docs/api.md (want `n.%s(...)` in the embedding table)", m, m)
		}
	}
}

// TestIntegrationGuideNamesRealMethods: every `n.Method(` and `c.Method(` that
// docs/integration.md tells a service to call exists on *node.Node and
// *client.Client, so the checklist cannot drift from the API.
func TestIntegrationGuideNamesRealMethods(t *testing.T) {
	doc, err := os.ReadFile("docs/integration.md")
	if err != nil {
		t.Fatal(err)
	}
	for recv, typ := range map[string][2]string{"n": {"node", "Node"}, "c": {"client", "Client"}} {
		have := exportedMethods(t, typ[0], typ[1])
		calls := regexp.MustCompile(`\b`+recv+`\.([A-Z]\w*)\(`).FindAllStringSubmatch(string(doc), -1)
		if len(calls) == 0 {
			t.Errorf("docs/integration.md names no %s.Method( call", recv)
		}
		for _, c := range calls {
			if !have[c[1]] {
				t.Errorf("docs/integration.md calls %s.%s, which (*%s.%s) does not have", recv, c[1], typ[0], typ[1])
			}
		}
	}
}
