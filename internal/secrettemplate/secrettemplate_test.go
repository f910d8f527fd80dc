package secrettemplate

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

var testValues = Values{
	AccessToken: "eyJ0eXAiOiJKV1QifQ.eyJ0aWQiOiJ4In0.c2ln",
	TokenType:   "Bearer",
	ExpiresAt:   "2026-11-21T12:59:59Z",
	TenantID:    "4b1d3c9e-2f6a-4e8b-9d7c-1a2b3c4d5e6f",
	Resource:    "https://api.security.microsoft.com",
}

func mustParse(t *testing.T, data map[string]string) *Template {
	t.Helper()
	parsed, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func TestRenderInterpolatesTheFiveValues(t *testing.T) {
	got := mustParse(t, map[string]string{
		"authorization": "Bearer {{ .AccessToken }}",
		"siem.json":     `{"tenant":"{{ .TenantID }}","resource":"{{.Resource}}","expires":"{{ .ExpiresAt }}","type":"{{ .TokenType }}"}`,
		"plain":         "no action, { and } and }} are text",
		"trimmed":       "token:\n\t{{- .AccessToken -}}\n\r\n; type: {{-\t.TokenType\n-}} .",
		"empty":         "",
	}).Render(testValues)
	want := map[string]string{
		"authorization": "Bearer " + testValues.AccessToken,
		"siem.json":     `{"tenant":"4b1d3c9e-2f6a-4e8b-9d7c-1a2b3c4d5e6f","resource":"https://api.security.microsoft.com","expires":"2026-11-21T12:59:59Z","type":"Bearer"}`,
		"plain":         "no action, { and } and }} are text",
		"trimmed":       "token:" + testValues.AccessToken + "; type:Bearer.",
		"empty":         "",
	}
	if len(got) != len(want) {
		t.Fatalf("keys = %d, want %d", len(got), len(want))
	}
	for k, v := range want {
		if string(got[k]) != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestRenderedSizeIsBoundedByTheTemplateAndFiveValues(t *testing.T) {
	tmpl := "{{ .AccessToken }}{{ .AccessToken }}{{ .AccessToken }}{{ .AccessToken }}{{ .AccessToken }}"
	long := testValues
	long.AccessToken = strings.Repeat("a", 1<<20)
	got := mustParse(t, map[string]string{"k": tmpl}).Render(long)
	if n := len(got["k"]); n != 5<<20 {
		t.Errorf("rendered %d bytes, want five tokens of 1 MiB", n)
	}
	if _, err := Parse(map[string]string{"k": tmpl + "{{ .AccessToken }}"}); err == nil {
		t.Errorf("a sixth reference was accepted")
	}
}

// The templates of the security finding, and every other construct, are refused
// by Parse with a message that names the key, says what was found, and where.
func TestParseRefuses(t *testing.T) {
	long := strings.Repeat("é", MaxTemplateLength+1)
	tests := []struct {
		name     string
		key      string
		template string
		inText   []string
	}{
		{"printf with a wide verb", "k", `{{ printf "%9999999d" 1 }}`, []string{`data key "k"`, "a function call (printf)", "line 1, column 4"}},
		{"print of variables", "k", `{{ $a := .AccessToken }}{{ print $a $a }}`, []string{"a variable", "column 4"}},
		{"slice quoting the token", "k", `{{ slice .AccessToken (index .AccessToken 1) 0 }}`, []string{"a function call (slice)"}},
		{"index", "k", `{{ index .AccessToken 1 }}`, []string{"a function call (index)"}},
		{"len", "k", `x{{ len .AccessToken }}`, []string{"a function call (len)", "column 5"}},
		{"pipeline", "k", `{{ .AccessToken | printf "%s" }}`, []string{"a pipeline"}},
		{"pipe to nothing", "k", `{{.Resource|}}`, []string{"a pipeline (a trailing |)", "column 3"}},
		{"if", "k", "a\n{{ if .TenantID }}x{{ end }}", []string{"a conditional (if)", "line 2"}},
		{"with", "k", `{{ with .TenantID }}{{ . }}{{ end }}`, []string{"a conditional (with)"}},
		{"range", "k", `{{ range 10 }}x{{ end }}`, []string{"a loop (range)"}},
		{"comment", "k", `{{/* x */}}`, []string{"a comment"}},
		{"dot", "k", `{{ . }}`, []string{"dot alone"}},
		{"unknown field", "k", `{{ .Nope }}`, []string{"an unknown field (.Nope)"}},
		{"field of a field", "k", `{{ .AccessToken.Foo }}`, []string{"a field of a field (.AccessToken.Foo)"}},
		{"field with arguments", "k", `{{ .AccessToken 1 }}`, []string{"a reference with arguments"}},
		{"parenthesized", "k", `{{ (.AccessToken) }}`, []string{"a parenthesized pipeline"}},
		{"constant", "k", `{{ "x" }}`, []string{"a constant"}},
		{"template call", "k", `{{ template "k" }}`, []string{"a template call"}},
		{"define", "k", `{{ define "a" }}x{{ end }}`, []string{"a template definition"}},
		{"define replacing the root", "k", `{{ define "t" }}{{ printf "%9999999d" 1 }}{{ end }}`, []string{"a template definition"}},
		{"block", "k", `{{ block "b" . }}x{{ end }}`, []string{"a template"}},
		{"triple brace", "k", `{{{ .AccessToken }}`, []string{"does not parse (line 1:"}},
		{"unterminated", "k", "Bearer {{ .AccessToken ", []string{"does not parse (line 1: unclosed action"}},
		{"trim marker without a space", "k", `{{-.AccessToken }}`, []string{"does not parse"}},
		{"six references", "k", strings.Repeat("{{ .TenantID }},", 6), []string{"more than 5 references", "column 84"}},
		{"reserved key", "access_token", "x", []string{"reserved"}},
		{"invalid key", "a/b", "x", []string{"not a valid Secret data key"}},
		{"template too long", "k", long, []string{"longer than 4096 characters"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(map[string]string{tt.key: tt.template, "fine": "{{ .AccessToken }}"})
			if err == nil {
				t.Fatalf("Parse accepted %q", tt.template)
			}
			if got != nil {
				t.Errorf("Parse returned a template beside its error")
			}
			for _, want := range tt.inText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if !strings.Contains(err.Error(), "{{ .AccessToken }}, {{ .TokenType }}, {{ .ExpiresAt }}, {{ .TenantID }} and {{ .Resource }}") && tt.key == "k" && len(tt.template) <= MaxTemplateLength {
				t.Errorf("error %q does not say what a template may hold", err)
			}
		})
	}
}

// The CRD's maxLength counts characters, not bytes.
func TestParseAcceptsATemplateOfTheLongestLengthInCharacters(t *testing.T) {
	if _, err := Parse(map[string]string{"k": strings.Repeat("é", MaxTemplateLength)}); err != nil {
		t.Error(err)
	}
}

func TestParseRefusesTooManyKeys(t *testing.T) {
	data := map[string]string{}
	for i := range MaxKeys + 1 {
		data["k"+strings.Repeat("x", i)] = "x"
	}
	if _, err := Parse(data); err == nil {
		t.Fatalf("Parse of %d keys succeeded", MaxKeys+1)
	}
}

// crdRule is the regular expression with which the DefenderTenant CRD accepts a
// template, read from the generated CRD, so that the tests compare Parse with what
// admission enforces.
func crdRule(tb testing.TB) *regexp.Regexp {
	tb.Helper()
	text, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "defender.tenantcreds.io_defendertenants.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							Properties map[string]struct {
								Properties map[string]struct {
									AdditionalProperties struct {
										Validations []struct {
											Rule string `json:"rule"`
										} `json:"x-kubernetes-validations"`
									} `json:"additionalProperties"`
								} `json:"properties"`
							} `json:"properties"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(text, &crd); err != nil {
		tb.Fatal(err)
	}
	for _, v := range crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["secretTemplate"].Properties["data"].AdditionalProperties.Validations {
		if pattern, ok := strings.CutPrefix(v.Rule, "self.matches(r'"); ok {
			return regexp.MustCompile(strings.TrimSuffix(pattern, "')"))
		}
	}
	tb.Fatal("the CRD has no matches rule on secretTemplate.data's values")
	return nil
}

// admitted is what the CRD's two rules on a template accept: the pattern, and at
// most five {{ (CEL's split counts them without overlap, as strings.Count does).
func admitted(rule *regexp.Regexp, template string) bool {
	return rule.MatchString(template) && strings.Count(template, "{{") <= MaxReferences
}

// reference is one reference as the CRD's pattern spells it, with its trim markers.
var referenceSyntax = regexp.MustCompile(`[{][{](-[ \t\r\n])?[ \t\r\n]*[.](AccessToken|TokenType|ExpiresAt|TenantID|Resource)[ \t\r\n]*([ \t\r\n]-)?[}][}]`)

// interpolated renders a template the CRD admits by plain string substitution, as
// text/template would: the model Render must agree with.
func interpolated(template string, v Values) string {
	value := map[string]string{"AccessToken": v.AccessToken, "TokenType": v.TokenType, "ExpiresAt": v.ExpiresAt, "TenantID": v.TenantID, "Resource": v.Resource}
	matches := referenceSyntax.FindAllStringSubmatchIndex(template, -1)
	texts := make([]string, len(matches)+1)
	start := 0
	for i, m := range matches {
		texts[i] = template[start:m[0]]
		start = m[1]
	}
	texts[len(matches)] = template[start:]
	for i, m := range matches {
		if m[2] >= 0 {
			texts[i] = strings.TrimRight(texts[i], " \t\r\n")
		}
		if m[6] >= 0 {
			texts[i+1] = strings.TrimLeft(texts[i+1], " \t\r\n")
		}
	}
	var b strings.Builder
	for i, m := range matches {
		b.WriteString(texts[i])
		b.WriteString(value[template[m[4]:m[5]]])
	}
	b.WriteString(texts[len(matches)])
	return b.String()
}

func TestParseAcceptsWhatTheCRDAdmits(t *testing.T) {
	rule := crdRule(t)
	for _, tmpl := range fuzzSeeds {
		_, err := Parse(map[string]string{"k": tmpl})
		if accepted, want := err == nil, admitted(rule, tmpl); accepted != want {
			t.Errorf("%q: Parse accepts = %v (%v), the CRD admits = %v", tmpl, accepted, err, want)
		}
	}
}

var fuzzSeeds = []string{
	"Bearer {{ .AccessToken }}",
	`{"t":"{{ .TenantID }}","e":"{{.ExpiresAt}}","r":"{{ .Resource }}","y":"{{ .TokenType }}"}`,
	"a {{- .AccessToken -}} b",
	"a\n{{-\n.AccessToken\r-}}\tb",
	"{{- .AccessToken}}{{.TokenType -}}",
	"{ {} }} {",
	"{",
	"",
	"{{{ .AccessToken }}",
	"{{ .AccessToken ",
	"{{",
	"{{-.AccessToken }}",
	"{{ .AccessToken-}}",
	"{{ .AccessToken  -}}",
	"{{\f.AccessToken }}",
	"{{ .AccessToken\u00a0}}",
	`{{ printf "%9999999d" 1 }}`,
	`{{ $a := .AccessToken }}{{ print $a $a }}`,
	`{{ slice .AccessToken (index .AccessToken 1) 0 }}`,
	`{{ .AccessToken | printf "%s" }}`,
	`{{ .Resource | }}`,
	`{{ .Resource |-}}`,
	`{{ if .TenantID }}x{{ else }}y{{ end }}`,
	`{{/* x */}}`,
	`{{- /* x */ -}}`,
	`{{ . }}`,
	`{{ .Nope }}`,
	`{{ .AccessToken.Foo }}`,
	`{{ .AccessTokenX }}`,
	`{{ define "t" }}x{{ end }}`,
	strings.Repeat("{{ .TenantID }}", 5),
	strings.Repeat("{{ .TenantID }}", 6),
}

// FuzzRender: whatever the template and values, Parse accepts exactly what the CRD
// admits, and an accepted template renders without failing to its literal text and
// the values it references, nothing else, within its length plus five values.
func FuzzRender(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s, testValues.AccessToken, testValues.Resource)
	}
	f.Add("{{ .AccessToken }}{{ .Resource }}", "{{ .TenantID }}", "%s")
	rule := crdRule(f)
	f.Fuzz(func(t *testing.T, tmpl, accessToken, resource string) {
		v := testValues
		v.AccessToken, v.Resource = accessToken, resource
		parsed, err := Parse(map[string]string{"k": tmpl, "fixed": "{{ .TenantID }}"})
		if utf8.RuneCountInString(tmpl) <= MaxTemplateLength {
			if accepted, want := err == nil, admitted(rule, tmpl); accepted != want {
				t.Fatalf("%q: Parse accepts = %v (%v), the CRD admits = %v", tmpl, accepted, err, want)
			}
		}
		if err != nil {
			return
		}
		got := parsed.Render(v)
		if len(got) != 2 || string(got["fixed"]) != v.TenantID {
			t.Fatalf("rendered %d keys, fixed = %q", len(got), got["fixed"])
		}
		longest := max(len(v.AccessToken), len(v.TokenType), len(v.ExpiresAt), len(v.TenantID), len(v.Resource))
		if len(got["k"]) > len(tmpl)+MaxReferences*longest {
			t.Fatalf("%q rendered to %d bytes", tmpl, len(got["k"]))
		}
		if want := interpolated(tmpl, v); string(got["k"]) != want {
			t.Fatalf("%q rendered to %q, want %q", tmpl, got["k"], want)
		}
	})
}
