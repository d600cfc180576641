package control

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	controlv1 "github.com/omnirelay/mesh/proto/omnirelay/control/v1"
	"github.com/omnirelay/mesh/proto/omnirelay/control/v1/controlv1connect"
)

// The routes and error codes of docs/api.md against the server's own: the routes
// are the route table (routes.go, which the handler registers), the codes the Code
// constants of codes.go, read from the source: a new one cannot be left undocumented.

// apiDoc reads docs/api.md.
func apiDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serverRoutes returns the patterns of the route table ("GET /healthz").
func serverRoutes(t *testing.T) []string {
	t.Helper()
	var routes []string
	for _, r := range Routes() {
		routes = append(routes, r.Pattern())
	}
	return routes
}

// serverCodes returns the values of codes.go's Code constants.
func serverCodes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && strings.HasPrefix(name.Name, "Code") {
					c, _ := strconv.Unquote(lit.Value)
					codes = append(codes, c)
				}
			}
		}
	}
	return codes
}

func TestAPIDocRoutesMatchTheServer(t *testing.T) {
	doc := apiDoc(t)
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`((?:GET|POST|PUT|PATCH|DELETE) /[^`?\\s]*)").FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = true
	}
	bothWays(t, "route", serverRoutes(t), documented)
}

// bothWays reports what the server has that the doc lacks, and the reverse.
func bothWays(t *testing.T, what string, server []string, doc map[string]bool) {
	t.Helper()
	for _, x := range server {
		if !doc[x] {
			t.Errorf("the server has %s %q; docs/api.md does not document it", what, x)
		}
	}
	for x := range doc {
		if !slices.Contains(server, x) {
			t.Errorf("docs/api.md documents %s %q; the server has no such %s", what, x, what)
		}
	}
}

func TestAPIDocErrorCodesMatchTheServer(t *testing.T) {
	doc := apiDoc(t)
	// The error table: rows "| `code` | status | when |".
	table := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| [1-5][0-9][0-9] \\|").FindAllStringSubmatch(doc, -1) {
		table[m[1]] = true
	}
	codes := serverCodes(t)
	bothWays(t, "error code", codes, table)
	// Codes named anywhere else in the page, as in `404 unknown_peer` or an example body.
	for _, m := range regexp.MustCompile("`[1-5][0-9][0-9] ([a-z_]+)`|\"code\": \"([a-z_]+)\"").FindAllStringSubmatch(doc, -1) {
		if c := m[1] + m[2]; !slices.Contains(codes, c) {
			t.Errorf("docs/api.md names error code %q; the server has no such code", c)
		}
	}
}

// TestAPIDocRolesMatchTheRouteTable: the "Routes and roles" table of docs/api.md,
// rows "| `METHOD PATH` | role |", names every route with the role the table gives it.
func TestAPIDocRolesMatchTheRouteTable(t *testing.T) {
	doc := apiDoc(t)
	documented := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `((?:GET|POST|PUT|DELETE) /[^`]*)` \\| ([a-z]+) \\|").FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = m[2]
	}
	for _, r := range Routes() {
		if got, ok := documented[r.Pattern()]; !ok {
			t.Errorf("docs/api.md's roles table lacks %s (role %s)", r.Pattern(), r.Role)
		} else if got != string(r.Role) {
			t.Errorf("docs/api.md gives %s role %s; the route table %s", r.Pattern(), got, r.Role)
		}
		delete(documented, r.Pattern())
	}
	for p := range documented {
		t.Errorf("docs/api.md's roles table names %s, which is no route", p)
	}
}

// TestAPIDocListsEveryRPC: the RPC table of docs/api.md, rows
// "| `Name` | `METHOD PATH` | kind |", names every RPC of ControlService with the
// route it runs (rpcRoutes) and whether it streams.
func TestAPIDocListsEveryRPC(t *testing.T) {
	doc := apiDoc(t)
	type row struct{ route, kind string }
	documented := map[string]row{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z][A-Za-z]+)` \\| `([A-Z]+ /[^`?]*)[^`]*` \\| (unary|server stream) \\|").FindAllStringSubmatch(doc, -1) {
		documented["/"+controlv1connect.ControlServiceName+"/"+m[1]] = row{m[2], m[3]}
	}
	methods := controlv1.File_omnirelay_control_v1_control_proto.Services().ByName("ControlService").Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		proc := "/" + controlv1connect.ControlServiceName + "/" + string(md.Name())
		kind := "unary"
		if md.IsStreamingServer() {
			kind = "server stream"
		}
		got, ok := documented[proc]
		switch {
		case !ok:
			t.Errorf("docs/api.md's RPC table lacks %s", md.Name())
		case got.route != rpcRoutes[proc].pattern || got.kind != kind:
			t.Errorf("docs/api.md gives %s as %s, %s; it runs %s, %s", md.Name(), got.route, got.kind, rpcRoutes[proc].pattern, kind)
		}
		delete(documented, proc)
	}
	for p := range documented {
		t.Errorf("docs/api.md's RPC table names %s, which the service does not have", p)
	}
}
