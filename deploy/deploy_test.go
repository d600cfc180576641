// Package deploy_test proves the operator assets under deploy/ against reality: the
// Grafana dashboard and the Prometheus rules are checked for shape, then every query
// they contain is run by a real Prometheus server scraping three real agents.
package deploy_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// root is the repository root, seen from this package's directory.
const root = ".."

const (
	dashboardPath = "deploy/grafana/omnirelay-mesh.json"
	rulesPath     = "deploy/prometheus/rules.yml"
	ruleTestsPath = "deploy/prometheus/tests/alerts_test.yml"
	runbookPrefix = "https://github.com/omnirelay/mesh/blob/main/"
)

// pendingMetrics are the metrics the dashboard and the rules use that no agent
// exposes yet, each with what will add it (none now: the shard metrics landed with
// issue 7). A query that returns no series is excused only if it
// references one of these; the live test fails as soon as an agent exposes a name
// on this list, so the list cannot go stale: remove the name when the metric lands.
var pendingMetrics = map[string]string{}

// lazyMetrics exist but only after their first event (a labelled counter whose
// label values node does not create at start), so a healthy cluster may not expose
// them: a query over one is excused when it returns nothing. Once node creates every
// label value at start, drop the name from here.
var lazyMetrics = map[string]string{
	// Series exist only while a shard is in flight (the leader's moves).
	"omnirelay_shard_moving": "one series per shard the leader is moving",
	// Label values are node names, known only once the leader moves a shard.
	"omnirelay_shard_moves_total": "labelled by the nodes a shard moved between",
}

// histogramSuffixes are the series names Prometheus derives from one histogram.
var histogramSuffixes = []string{"_bucket", "_count", "_sum"}

// pendingName returns the pending metric a series name belongs to, if any.
func pendingName(name string) (string, bool) {
	if _, ok := pendingMetrics[name]; ok {
		return name, true
	}
	for _, s := range histogramSuffixes {
		if base, ok := strings.CutSuffix(name, s); ok {
			if _, ok := pendingMetrics[base]; ok {
				return base, true
			}
		}
	}
	return "", false
}

// metricRe finds metric names (and recording rule names, which contain ':') of ours
// in an expression.
var metricRe = regexp.MustCompile(`\bomnirelay[_:][a-zA-Z0-9_:]*`)

func metricNames(expr string) []string {
	names := metricRe.FindAllString(expr, -1)
	slices.Sort(names)
	return slices.Compact(names)
}

// ---- dashboard ----

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string     `json:"name"`
			Expr       string     `json:"expr"`
			Datasource datasource `json:"datasource"`
			TextFormat string     `json:"textFormat"`
		} `json:"list"`
	} `json:"annotations"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasource              `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

// query is one PromQL expression the assets contain, named for error messages.
type query struct{ where, expr string }

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// grafanaVars stands in for Grafana's template variables: the built-in intervals
// get typical values, and the dashboard's own selectors match everything.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "15s",
	"$__range", "1h",
	"${job}", ".*", "$job", ".*",
	"${node}", ".*", "$node", ".*",
)

// labelValuesRe matches a Grafana variable query label_values(SELECTOR, LABEL).
var labelValuesRe = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]+)\)$`)

// dashboardQueries returns every PromQL expression of the dashboard with the
// template variables substituted: panel targets, annotations, and the selectors of
// label_values variable queries.
func dashboardQueries(t *testing.T, d dashboard) []query {
	t.Helper()
	var qs []query
	add := func(where, expr string) {
		e := grafanaVars.Replace(expr)
		if strings.Contains(e, "$") {
			t.Errorf("%s: unknown template variable left in %q", where, e)
		}
		qs = append(qs, query{where, e})
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			add(fmt.Sprintf("annotation %q", a.Name), a.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query: %v", v.Name, err)
			continue
		}
		m := labelValuesRe.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: want label_values(selector, label), got %q", v.Name, q.Query)
			continue
		}
		add("variable "+v.Name, m[1])
	}
	return qs
}

// TestDashboardShape checks what Grafana 10 needs to import the dashboard and what
// operators need from it: a datasource variable every query goes through, the rows
// the issue asks for, unique ids, a layout within 24 columns, one expression per
// target.
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and schemaVersion >= 36 (Grafana 10)", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query through ${datasource}", v.Name)
		}
	}
	if vars["datasource"] != "datasource" || vars["node"] != "query" {
		t.Errorf("template variables %v: want datasource (type datasource) and node (type query)", vars)
	}
	ds := func(where string, s *datasource) {
		if s == nil || s.Type != "prometheus" || s.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want prometheus ${datasource}", where, s)
		}
	}
	ids := map[int]bool{}
	var rows []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside 24 columns", p.Title, g)
		}
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		ds("panel "+p.Title, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			ds("panel "+p.Title+" target "+tg.RefID, tg.Datasource)
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q with expr %q: want a unique refId and an expression", p.Title, tg.RefID, tg.Expr)
			}
			refs[tg.RefID] = true
		}
	}
	for _, want := range []string{"Membership", "Gossip", "Leadership", "Shards", "Control API error budget"} {
		if !slices.Contains(rows, want) {
			t.Errorf("rows %q lack %q", rows, want)
		}
	}
	moves := false
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			ds("annotation "+a.Name, &a.Datasource)
		}
		moves = moves || strings.Contains(a.TextFormat, "shard {{shard}} {{state}} from {{from}} to {{to}}")
	}
	if !moves {
		t.Error("no annotation renders shard moves as \"shard N STATE from A to B\"")
	}
	dashboardQueries(t, d) // reports leftover template variables
}

// TestRulesHaveRunbooksAndUnitTests reads the rules file line by line (the live test
// reads the parsed rules from Prometheus): every alert links a runbook page that
// exists, every runbook page belongs to an alert, and every alert has a promtool
// unit test.
func TestRulesHaveRunbooksAndUnitTests(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join(root, rulesPath))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(root, ruleTestsPath))
	if err != nil {
		t.Fatal(err)
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)$`).FindAllStringSubmatch(string(rules), -1)
	links := regexp.MustCompile(`(?m)^\s*runbook_url: "([^"]+)"$`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) == 0 || len(alerts) != len(links) {
		t.Fatalf("%d alerts, %d runbook_url annotations: want one per alert", len(alerts), len(links))
	}
	for _, a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a[1]+"\n") {
			t.Errorf("alert %s has no promtool unit test in %s", a[1], ruleTestsPath)
		}
	}
	linked := map[string]bool{}
	for _, l := range links {
		rel, ok := strings.CutPrefix(l[1], runbookPrefix+"docs/runbooks/")
		if !ok {
			t.Errorf("runbook_url %s is not under %sdocs/runbooks/", l[1], runbookPrefix)
			continue
		}
		linked[rel] = true
		if _, err := os.Stat(filepath.Join(root, "docs/runbooks", rel)); err != nil {
			t.Errorf("runbook_url %s: %v", l[1], err)
		}
	}
	pages, _ := filepath.Glob(filepath.Join(root, "docs/runbooks/*.md"))
	for _, p := range pages {
		if b := filepath.Base(p); b != "README.md" && !linked[b] {
			t.Errorf("runbook %s is linked from no alert", b)
		}
	}
}

// ---- PromQL signals ----

// splitOps are the binary operators an alert's expression is split at: comparisons
// and set operators. Longer spellings come first so ">=" is not read as ">".
var splitOps = []string{"==", "!=", ">=", "<=", ">", "<", "and", "or", "unless"}

// modifierRe matches what may follow a binary operator before its right operand.
var modifierRe = regexp.MustCompile(`^(bool|(on|ignoring|group_left|group_right)\s*\([^)]*\))\s*`)

// signals splits an expression at top-level comparison and set operators and
// returns the operands that are not number literals. An alert `rate(x[5m]) > 0`
// returns nothing while healthy; its signal `rate(x[5m])` must still return series,
// or the alert watches a metric that does not exist.
func signals(expr string) []string {
	var parts []string
	depth, start := 0, 0
	var quote byte
	word := func(c byte) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
			continue
		case c == '"' || c == '\'' || c == '`':
			quote = c
			continue
		case c == '(' || c == '[' || c == '{':
			depth++
			continue
		case c == ')' || c == ']' || c == '}':
			depth--
			continue
		}
		if depth != 0 {
			continue
		}
		for _, op := range splitOps {
			if !strings.HasPrefix(expr[i:], op) {
				continue
			}
			if word(op[0]) && (i > 0 && word(expr[i-1]) || i+len(op) < len(expr) && word(expr[i+len(op)])) {
				continue // part of a longer name, e.g. "order"
			}
			parts = append(parts, expr[start:i])
			i += len(op) - 1
			start = i + 1
			break
		}
	}
	parts = append(parts, expr[start:])
	var out []string
	for _, p := range parts {
		p = strings.TrimSpace(p)
		for m := modifierRe.FindString(p); m != ""; m = modifierRe.FindString(p) {
			p = p[len(m):]
		}
		if _, err := strconv.ParseFloat(p, 64); err == nil || p == "" {
			continue
		}
		out = append(out, p)
	}
	return out
}

func TestSignals(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`rate(x[5m]) > 0`, []string{`rate(x[5m])`}},
		{`a{code=~"5..",b!="c"} >= bool 2`, []string{`a{code=~"5..",b!="c"}`}},
		{`a > on(job) group_left(x) b unless c`, []string{"a", "b", "c"}},
		{`sum by (job) (x) < 1 and order > 3`, []string{"sum by (job) (x)", "order"}},
		{`count_values("a > b", x) == 1`, []string{`count_values("a > b", x)`}},
		{`max(x) / clamp_min(min(x), 1)`, []string{`max(x) / clamp_min(min(x), 1)`}},
	} {
		if got := signals(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("signals(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}

// ---- Prometheus HTTP API ----

type promAPI struct{ base string }

// get fetches an API path and decodes its "data" into v.
func (p promAPI) get(path string, v any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: HTTP %d: %v", path, resp.StatusCode, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s", env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// query runs an instant query and returns how many series (or 1 for a scalar) it
// gave.
func (p promAPI) query(expr string) (int, error) {
	var d struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(expr), &d); err != nil {
		return 0, err
	}
	if d.ResultType == "scalar" {
		return 1, nil
	}
	return len(d.Result), nil
}

// freePort returns a loopback port that was free a moment ago: Prometheus cannot
// listen on port 0 and report it.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
