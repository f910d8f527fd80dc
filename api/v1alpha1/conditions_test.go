package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// reasonConstants reads every Reason* constant declared in conditions.go, so that a
// reason added there without a kind or documentation fails this test.
func reasonConstants(t *testing.T) map[string]string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), "conditions.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Reason") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				value, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				reasons[name.Name] = value
			}
		}
	}
	if len(reasons) < 10 {
		t.Fatalf("found only %d reasons in conditions.go; the parser missed some", len(reasons))
	}
	return reasons
}

// tableRows maps the first cell of each Markdown table row, a reason in backquotes,
// to the row's second cell.
func tableRows(t *testing.T, path string) map[string]string {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\| ([^|]*) \\|")
	for _, m := range row.FindAllStringSubmatch(string(text), -1) {
		rows[m[1]] = strings.TrimSpace(m[2])
	}
	return rows
}

func TestEveryReasonHasAKindAREADMERowAndATroubleshootingEntry(t *testing.T) {
	readme := tableRows(t, "../../README.md")
	troubleshooting := tableRows(t, "../../docs/troubleshooting.md")
	for name, reason := range reasonConstants(t) {
		kind, ok := ReasonKinds[reason]
		if !ok {
			t.Errorf("%s (%q) has no kind in ReasonKinds", name, reason)
			continue
		}
		switch row, ok := readme[reason]; {
		case !ok:
			t.Errorf("README.md's reasons table has no row for %s", reason)
		case row != string(kind):
			t.Errorf("README.md says %s is %q; ReasonKinds says %q", reason, row, kind)
		}
		if _, ok := troubleshooting[reason]; !ok {
			t.Errorf("docs/troubleshooting.md has no entry for %s", reason)
		}
	}
	for reason := range ReasonKinds {
		if _, declared := readme[reason]; !declared {
			t.Errorf("ReasonKinds has %q, which the README does not list", reason)
		}
	}
}

func TestOnlyReconcilingReasonsAreRetriedAsTransient(t *testing.T) {
	for reason, kind := range ReasonKinds {
		if got, want := Stalls(reason), kind != KindReconciling; got != want {
			t.Errorf("Stalls(%s) = %v, want %v for kind %s", reason, got, want, kind)
		}
	}
	if !Stalls("NotAReason") {
		t.Error("an unknown reason must stall: retrying it fast could storm Entra ID")
	}
}

// An app's Ready condition has its own True reason; everything else it reports is a
// reason a DefenderTenant can show too, because a tenant whose app is not Ready
// shows the app's reason.
func TestAppReasonsHaveKindsAndOnlyCredentialReadyIsAppOnly(t *testing.T) {
	for reason := range AppReasons {
		kind, ok := ReasonKinds[reason]
		if !ok {
			t.Errorf("app reason %s has no kind in ReasonKinds", reason)
			continue
		}
		if kind == KindReady && reason != ReasonCredentialReady {
			t.Errorf("app reason %s is Ready=True; only %s may be", reason, ReasonCredentialReady)
		}
		if kind != KindReady && kind != KindStalled {
			t.Errorf("app reason %s has kind %s; an app not Ready stalls its tenants", reason, kind)
		}
	}
	if !AppReasons[ReasonCredentialReady] {
		t.Errorf("AppReasons lacks %s", ReasonCredentialReady)
	}
	for reason, kind := range ReasonKinds {
		if kind == KindReady && reason != ReasonTokenReady && !AppReasons[reason] {
			t.Errorf("%s is Ready=True but neither %s nor an app reason", reason, ReasonTokenReady)
		}
	}
	if row := readmeRow(t, ReasonCredentialReady); !strings.Contains(row, "apps only") {
		t.Errorf("README's row for %s must say it is for apps only: %q", ReasonCredentialReady, row)
	}
}

// readmeRow is the whole README reasons-table row of reason.
func readmeRow(t *testing.T, reason string) string {
	t.Helper()
	text, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(text)) {
		if strings.HasPrefix(line, "| `"+reason+"` |") {
			return line
		}
	}
	return ""
}
