// Package dashboard checks the Grafana dashboard in config/grafana against the
// operator's code: every query must parse with Prometheus's PromQL parser and select
// only metrics that the operator registers. The parser runs in hack/promql-check, a
// module of its own (see hack/promtool.sh for why).
package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	// Registers the operator's metrics in controller-runtime's registry, as the
	// manager does.
	_ "github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
)

const dashboardPath = "../../config/grafana/defender-tenant-operator.json"

// The operator's own metrics, as documented in docs/metrics.md; the checks below
// take the full set from the registry, this only guards against an empty registry
// passing every check.
const operatorMetricPrefix = "defender_"

func TestDashboardQueriesParseAndSelectExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	problems, err := checkDashboard(data, exported, promqlCheck(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// The dashboard must show each of the operator's metrics: a metric that no panel
// selects is one the dashboard forgot (or a new one it should show).
func TestDashboardShowsEveryOperatorMetric(t *testing.T) {
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	queries := dash.queries()
	exprs := make([]string, 0, len(queries))
	for _, q := range queries {
		exprs = append(exprs, grafanaDurations.Replace(q.expr))
	}
	results, err := runPromQLCheck(promqlCheck(t), exprs)
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, r := range results {
		for _, m := range r.Metrics {
			shown[baseName(m)] = true
		}
	}
	for name := range exported(t) {
		if strings.HasPrefix(name, operatorMetricPrefix) && !shown[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

// The checks must refuse what they exist to catch; each dashboard below is wrong in
// one way, and must give exactly one problem that says so.
func TestDashboardCheckRefusesBrokenPanels(t *testing.T) {
	exported := exportedMetrics(t)
	check := promqlCheck(t)
	cases := []struct {
		name, panel, want string
	}{
		{"expression that does not parse",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "expr": "sum(rate(defender_tenant_token_requests_total[$__rate_interval])"}]}`,
			"does not parse"},
		{"metric the operator does not export",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "expr": "rate(defender_tenant_token_failures_total[5m])"}]}`,
			"defender_tenant_token_failures_total, which the operator does not export"},
		{"histogram series of a gauge",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "expr": "histogram_quantile(0.9, rate(defender_tenant_tenants_bucket[5m]))"}]}`,
			"defender_tenant_tenants_bucket, which the operator does not export"},
		{"histogram without a suffix",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "expr": "defender_tenant_token_request_duration_seconds"}]}`,
			"defender_tenant_token_request_duration_seconds, which the operator does not export"},
		{"selector without a metric name",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "expr": "{__name__=~\"defender_.+\"}"}]}`,
			"names no single metric"},
		{"panel without targets",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "targets": []}`,
			"has no targets"},
		{"target without an expression",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": " "}]}`,
			"has no expression"},
		{"panel on a fixed data source",
			`{"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"},
			  "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": "defender_tenant_tenants"}]}`,
			"data source"},
		{"unknown metric in a collapsed row",
			`{"title": "r", "type": "row", "collapsed": true, "panels": [
			  {"title": "p", "type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			   "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": "up"}]}]}`,
			"up, which the operator does not export"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dash := fmt.Sprintf(`{"templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
			  "panels": [%s,
			  {"title": "fine", "type": "stat", "datasource": {"type": "prometheus", "uid": "${datasource}"},
			   "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": "sum by (ready) (defender_tenant_tenants)"}]}]}`, c.panel)
			problems, err := checkDashboard([]byte(dash), exported, check)
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) != 1 || !strings.Contains(problems[0], c.want) {
				t.Errorf("problems = %q, want one saying %q", problems, c.want)
			}
		})
	}
}

// The Grafana JSON model, as far as the checks read it.
type dashboard struct {
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

type panel struct {
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	// A row holds its panels here while it is collapsed.
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// The dashboard's data source is chosen on import, through this variable.
const datasourceVariable = "${datasource}"

type query struct {
	where, expr string
}

// queries returns the PromQL of every target and of every query variable.
func (d dashboard) queries() []query {
	var qs []query
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			for _, target := range p.Targets {
				qs = append(qs, query{fmt.Sprintf("panel %q target %s", p.Title, target.RefID), target.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			qs = append(qs, query{fmt.Sprintf("variable %q", v.Name), variableSelector(v.Query)})
		}
	}
	return qs
}

// Grafana's interval variables stand where PromQL wants a duration; the value only
// has to parse.
var grafanaDurations = strings.NewReplacer(
	"${__rate_interval}", "5m", "$__rate_interval", "5m",
	"${__interval}", "1m", "$__interval", "1m",
	"${__range}", "6h", "$__range", "6h",
)

// label_values(SELECTOR, LABEL) is Grafana's, not PromQL; its selector is PromQL.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)

func variableSelector(raw json.RawMessage) string {
	var q string
	if json.Unmarshal(raw, &q) != nil {
		var editor struct {
			Query string `json:"query"`
		}
		_ = json.Unmarshal(raw, &editor)
		q = editor.Query
	}
	if m := labelValues.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	return q
}

// checkDashboard returns what is wrong with the dashboard: a panel without targets,
// a target without an expression, a query that does not parse or that selects a
// metric the operator does not export, a panel or target not on the data source
// variable.
func checkDashboard(data []byte, exported map[string]bool, promqlCheckBin string) ([]string, error) {
	var dash dashboard
	if err := json.Unmarshal(data, &dash); err != nil {
		return nil, fmt.Errorf("the dashboard is not JSON: %w", err)
	}
	var problems []string
	hasDatasourceVariable := false
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && string(v.Query) == `"prometheus"` {
			hasDatasourceVariable = true
		}
		if v.Type == "query" && !onDatasourceVariable(v.Datasource) {
			problems = append(problems, fmt.Sprintf("variable %q does not use the data source %s", v.Name, datasourceVariable))
		}
	}
	if !hasDatasourceVariable {
		problems = append(problems, "no Prometheus data source variable named datasource")
	}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				problems = append(problems, fmt.Sprintf("panel %q has no targets", p.Title))
			}
			if !onDatasourceVariable(p.Datasource) {
				problems = append(problems, fmt.Sprintf("panel %q does not use the data source %s", p.Title, datasourceVariable))
			}
			for _, target := range p.Targets {
				if !onDatasourceVariable(target.Datasource) {
					problems = append(problems, fmt.Sprintf("panel %q target %s does not use the data source %s", p.Title, target.RefID, datasourceVariable))
				}
			}
		}
	}
	walk(dash.Panels)

	all := dash.queries()
	queries := make([]query, 0, len(all))
	exprs := make([]string, 0, len(all))
	for _, q := range all {
		if strings.TrimSpace(q.expr) == "" {
			problems = append(problems, q.where+" has no expression")
			continue
		}
		queries = append(queries, q)
		exprs = append(exprs, grafanaDurations.Replace(q.expr))
	}
	results, err := runPromQLCheck(promqlCheckBin, exprs)
	if err != nil {
		return nil, err
	}
	for i, r := range results {
		if r.Error != "" {
			problems = append(problems, fmt.Sprintf("%s does not parse or cannot be checked: %s: %s", queries[i].where, r.Error, queries[i].expr))
			continue
		}
		for _, m := range r.Metrics {
			if !exported[m] {
				problems = append(problems, fmt.Sprintf("%s selects %s, which the operator does not export", queries[i].where, m))
			}
		}
	}
	return problems, nil
}

func onDatasourceVariable(ds *datasource) bool {
	return ds != nil && ds.Type == "prometheus" && ds.UID == datasourceVariable
}

type promqlResult struct {
	Expr    string   `json:"expr"`
	Error   string   `json:"error"`
	Metrics []string `json:"metrics"`
}

func runPromQLCheck(bin string, exprs []string) ([]promqlResult, error) {
	in, err := json.Marshal(exprs)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "exprs")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s exprs: %w: %s", bin, err, stderr.String())
	}
	var results []promqlResult
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		return nil, fmt.Errorf("%s exprs: %w", bin, err)
	}
	if len(results) != len(exprs) {
		return nil, fmt.Errorf("%s exprs: %d results for %d expressions", bin, len(results), len(exprs))
	}
	return results, nil
}

// promqlCheck returns the path of the hack/promql-check binary: $PROMQL_CHECK, as
// `make test` sets it after building it, or else built (once, cached) here.
func promqlCheck(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("PROMQL_CHECK"); bin != "" {
		return bin
	}
	out, err := exec.Command("../../hack/promtool.sh", "promql-check").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("hack/promtool.sh promql-check: %v: %s", err, exit.Stderr)
		}
		t.Fatalf("hack/promtool.sh promql-check: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// exported returns the metric families the operator registers, by base name.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for name := range registeredCollectors(t) {
		names[name] = true
	}
	return names
}

// exportedMetrics returns the names of the series that the operator's /metrics
// serves, from controller-runtime's registry (which the manager serves): a
// histogram's _bucket, _sum and _count, a summary's name, _sum and _count, any other
// metric's name.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	operators := 0
	for name, c := range registeredCollectors(t) {
		if strings.HasPrefix(name, operatorMetricPrefix) {
			operators++
		}
		switch c.(type) {
		case *prometheus.HistogramVec:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case *prometheus.SummaryVec:
			names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
		default:
			names[name] = true
		}
	}
	if operators == 0 {
		t.Fatalf("the registry holds none of the operator's %s* metrics", operatorMetricPrefix)
	}
	return names
}

var descName = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*")`)

// registeredCollectors returns each metric name in controller-runtime's registry with
// the collector that registered it. The registry gives out only descriptors, which
// carry no type; registering a collector with one of them again makes the registry
// answer AlreadyRegisteredError with the collector that has it. A collector of
// several metrics (the Go runtime's) does not match one descriptor: it shows as nil.
// The operator's metrics are all vectors: a plain Histogram or Gauge has an
// unexported type (and their interfaces overlap), so one would show here as neither,
// and TestMetricsDocListsExportedMetrics would fail on it rather than guess.
func registeredCollectors(t *testing.T) map[string]prometheus.Collector {
	t.Helper()
	registry, ok := metrics.Registry.(prometheus.Collector)
	if !ok {
		t.Fatalf("controller-runtime's registry is a %T, which cannot describe its metrics", metrics.Registry)
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		registry.Describe(ch)
		close(ch)
	}()
	// Describe holds the registry's lock until it is done: collect all first, then
	// probe.
	descs := make([]*prometheus.Desc, 0, 64)
	for desc := range ch {
		descs = append(descs, desc)
	}
	collectors := map[string]prometheus.Collector{}
	for _, desc := range descs {
		m := descName.FindStringSubmatch(desc.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", desc)
		}
		name, err := strconv.Unquote(m[1])
		if err != nil {
			t.Fatalf("cannot read the name of %s: %v", desc, err)
		}
		probe := describes{desc}
		err = metrics.Registry.Register(probe)
		var already prometheus.AlreadyRegisteredError
		switch {
		case errors.As(err, &already):
			collectors[name] = already.ExistingCollector
		case err == nil:
			metrics.Registry.Unregister(probe)
			t.Fatalf("%s was not registered", name)
		default:
			collectors[name] = nil
		}
	}
	return collectors
}

// describes is a collector of one descriptor and no metrics.
type describes struct{ desc *prometheus.Desc }

func (d describes) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }
func (d describes) Collect(chan<- prometheus.Metric)    {}

// baseName strips a histogram's or summary's series suffix.
func baseName(series string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if s, ok := strings.CutSuffix(series, suffix); ok {
			return s
		}
	}
	return series
}

// docs/metrics.md's table must list exactly the operator's metrics, with their types.
func TestMetricsDocListsExportedMetrics(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(" + operatorMetricPrefix + "[a-z_]+)` \\| ([a-z]+) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2]
	}
	registered := map[string]string{}
	for name, c := range registeredCollectors(t) {
		if !strings.HasPrefix(name, operatorMetricPrefix) {
			continue
		}
		switch c.(type) {
		case *prometheus.HistogramVec:
			registered[name] = "histogram"
		case *prometheus.CounterVec:
			registered[name] = "counter"
		case *prometheus.GaugeVec:
			registered[name] = "gauge"
		case *prometheus.SummaryVec:
			registered[name] = "summary"
		default:
			registered[name] = fmt.Sprintf("%T", c)
		}
	}
	for _, name := range sortedKeys(registered) {
		if documented[name] != registered[name] {
			t.Errorf("docs/metrics.md lists %s as %q, the operator registers a %s", name, documented[name], registered[name])
		}
	}
	for _, name := range sortedKeys(documented) {
		if _, ok := registered[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the operator does not register", name)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
