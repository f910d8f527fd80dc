// Command promql-check puts Prometheus's own parsers behind a small command line for
// the checks of this repository, which cannot import them: the module
// github.com/prometheus/prometheus would upgrade requirements the operator pins.
//
//	promql-check exprs < exprs.json
//	    reads a JSON array of PromQL expressions and writes, for each, a JSON object
//	    {"expr", "error", "metrics"}: the parser's error, or the metric names that
//	    the expression's vector and matrix selectors select.
//	promql-check rules alerts.yaml > rules.yaml
//	    writes the spec of a PrometheusRule (monitoring.coreos.com/v1) as the plain
//	    rule file (groups:) that promtool reads.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "exprs":
		err = checkExprs(os.Stdin, os.Stdout)
	case "rules":
		if len(os.Args) != 3 {
			usage()
		}
		err = extractRules(os.Args[2], os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "promql-check:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: promql-check exprs < exprs.json | promql-check rules PROMETHEUSRULE.yaml")
	os.Exit(2)
}

type exprResult struct {
	Expr    string   `json:"expr"`
	Error   string   `json:"error,omitempty"`
	Metrics []string `json:"metrics,omitempty"`
}

func checkExprs(in io.Reader, out io.Writer) error {
	var exprs []string
	if err := json.NewDecoder(in).Decode(&exprs); err != nil {
		return fmt.Errorf("reading a JSON array of expressions: %w", err)
	}
	// The options Prometheus starts with by default: an experimental function in a
	// dashboard would fail on a server that has not enabled it.
	promql := parser.NewParser(parser.Options{})
	results := make([]exprResult, 0, len(exprs))
	for _, e := range exprs {
		r := exprResult{Expr: e}
		ast, err := promql.ParseExpr(e)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Metrics, err = selectedMetrics(ast)
			if err != nil {
				r.Error = err.Error()
			}
		}
		results = append(results, r)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// selectedMetrics returns the metric name of each vector selector (matrix selectors
// hold one). A selector without one fixed name ({__name__=~"..."}) cannot be checked
// against the metrics the operator exports, so it is an error.
func selectedMetrics(ast parser.Expr) ([]string, error) {
	var names []string
	var errs []error
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("selector %s names no single metric", vs))
			return nil
		}
		names = append(names, name)
		return nil
	})
	return names, errors.Join(errs...)
}

// prometheusRule is the part of a PrometheusRule that promtool needs; the groups
// stay YAML nodes so that they are written out exactly as given.
type prometheusRule struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Spec       struct {
		Groups yaml.Node `yaml:"groups"`
	} `yaml:"spec"`
}

func extractRules(path string, out io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rule prometheusRule
	if err := yaml.Unmarshal(data, &rule); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if rule.APIVersion != "monitoring.coreos.com/v1" || rule.Kind != "PrometheusRule" {
		return fmt.Errorf("%s: want a monitoring.coreos.com/v1 PrometheusRule, got %s %s", path, rule.APIVersion, rule.Kind)
	}
	if rule.Spec.Groups.Kind != yaml.SequenceNode || len(rule.Spec.Groups.Content) == 0 {
		return fmt.Errorf("%s: spec.groups is not a non-empty list", path)
	}
	enc := yaml.NewEncoder(out)
	enc.SetIndent(2)
	if err := enc.Encode(map[string]*yaml.Node{"groups": &rule.Spec.Groups}); err != nil {
		return err
	}
	return enc.Close()
}
