package crd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/secrettemplate"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// siemTemplate is the SIEM configuration of docs/workloads.md, on one line.
const siemTemplate = `{"tenantId": "{{ .TenantID }}", "resource": "{{ .Resource }}", "accessToken": "{{ .AccessToken }}", "expiresAt": "{{ .ExpiresAt }}"}`

// wideVerbs is the template of the security finding: each verb makes printf build
// a million bytes, before text/template could count them.
var wideVerbs = `{{ printf "` + strings.Repeat("%0999999d", 200) + `"` + strings.Repeat(" 1", 200) + ` }}`

// The CRD's messages for a refused template, as kubectl apply shows them.
const (
	notInterpolationMessage  = "a data template is literal text with {{ .AccessToken }}, {{ .TokenType }}, {{ .ExpiresAt }}, {{ .TenantID }} and {{ .Resource }} references only ({{- and -}} may trim spaces): functions (printf, slice, index, len and the others), pipelines, variables, conditionals and comments are not allowed"
	tooManyReferencesMessage = "a data template has at most 5 references"
)

// secretTemplateRules are the templates that secrettemplate.Parse and the CRD must
// both accept, or both refuse (with the CRD message given).
var secretTemplateRules = []struct {
	name     string
	template string
	refused  string // the CRD's message; "" when accepted
}{
	{"docs: authorization", "Bearer {{ .AccessToken }}", ""},
	{"docs: curl header line", "Authorization: {{ .TokenType }} {{ .AccessToken }}", ""},
	{"docs: .env", "TOKEN={{ .AccessToken }}", ""},
	{"docs: SIEM config on one line", siemTemplate, ""},
	{"docs: SIEM config over lines", "{\n  \"tenantId\": \"{{ .TenantID }}\",\n  \"apiBaseUrl\": \"{{ .Resource }}\",\n  \"accessToken\": \"{{ .AccessToken }}\",\n  \"expiresAt\": \"{{ .ExpiresAt }}\"\n}\n", ""},
	{"all five fields", "{{ .AccessToken }}{{ .TokenType }}{{ .ExpiresAt }}{{ .TenantID }}{{ .Resource }}", ""},
	{"trim markers", "a {{- .AccessToken -}} b", ""},
	{"trim markers with a tab and newlines", "a\n{{-\t.AccessToken\n-}}\nb", ""},
	{"no spaces", "{{.AccessToken}}", ""},
	{"literal single braces", "{ {} x{ {", ""},
	{"}} in text", "}} {{ .TenantID }} }}", ""},
	{"empty value", "", ""},

	{"printf with a wide verb", `{{ printf "%9999999d" 1 }}`, notInterpolationMessage},
	{"printf with two hundred wide verbs", wideVerbs, notInterpolationMessage},
	{"print with variables", `{{ $a := .AccessToken }}{{ print $a $a }}`, notInterpolationMessage},
	{"slice and index", `{{ slice .AccessToken (index .AccessToken 1) 0 }}`, notInterpolationMessage},
	{"len", `{{ len .AccessToken }}`, notInterpolationMessage},
	{"pipeline", `{{ .AccessToken | printf "%s" }}`, notInterpolationMessage},
	{"pipe to nothing", `{{ .Resource | }}`, notInterpolationMessage},
	{"if", `{{ if .TenantID }}x{{ end }}`, notInterpolationMessage},
	{"with", `{{ with .TenantID }}x{{ end }}`, notInterpolationMessage},
	{"range", `{{ range 3 }}x{{ end }}`, notInterpolationMessage},
	{"comment", `{{/* x */}}`, notInterpolationMessage},
	{"dot", `{{ . }}`, notInterpolationMessage},
	{"unknown field", `{{ .Nope }}`, notInterpolationMessage},
	{"field of a field", `{{ .AccessToken.Foo }}`, notInterpolationMessage},
	{"triple brace", `{{{ .AccessToken }}`, notInterpolationMessage},
	{"unterminated", "Bearer {{ .AccessToken ", notInterpolationMessage},
	{"left trim marker without its space", `{{-.AccessToken }}`, notInterpolationMessage},
	{"right trim marker without its space", `{{ .AccessToken-}}`, notInterpolationMessage},
	{"form feed is no space in an action", "{{\f.AccessToken }}", notInterpolationMessage},
	{"define", `{{ define "t" }}x{{ end }}`, notInterpolationMessage},
	{"six references", strings.Repeat("{{ .TenantID }}", 6), tooManyReferencesMessage},
}

func tenantWithDataTemplate(ns, template string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "DefenderTenant",
		"metadata":   map[string]any{"generateName": "template-", "namespace": ns},
		"spec": map[string]any{
			"tenantID":        testTenantID,
			"clientID":        testClientID,
			"clientSecretRef": map[string]any{"name": credentialName},
			"secretTemplate":  map[string]any{"data": map[string]any{"k": template}},
		},
	}}
}

// TestSecretTemplateParseAndAdmissionAgree: the operator's check and the CRD's rules
// accept and refuse the same templates, so that admission catches what the
// operator would refuse, and the operator refuses nothing admission let through.
func TestSecretTemplateParseAndAdmissionAgree(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	for _, tt := range secretTemplateRules {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, parseErr := secrettemplate.Parse(map[string]string{"k": tt.template})
			createErr := k8s.Create(t.Context(), tenantWithDataTemplate(ns, tt.template))
			if tt.refused == "" {
				if parseErr != nil {
					t.Errorf("Parse refused: %v", parseErr)
				}
				if createErr != nil {
					t.Errorf("the API server refused: %v", createErr)
				}
				return
			}
			if parseErr == nil {
				t.Error("Parse accepted")
			}
			expectRejected(t, createErr, "spec.secretTemplate.data[k]: Invalid value: ")
			expectRejected(t, createErr, "\": "+tt.refused)
		})
	}
}

func TestAdmissionRefusesReservedSecretTemplateKeysAndLabels(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	many := map[string]any{}
	for i := range 33 {
		many[fmt.Sprintf("k%d", i)] = "x"
	}
	tests := []struct {
		name     string
		template map[string]any
		inText   string
	}{
		{"data key access_token", map[string]any{"data": map[string]any{"access_token": "x"}}, "data keys may not be access_token"},
		{"data key tenant_id", map[string]any{"data": map[string]any{"tenant_id": "x"}}, "data keys may not be access_token"},
		{"data key not a Secret key", map[string]any{"data": map[string]any{"config/file": "x"}}, "data keys must be valid Secret keys"},
		{"data key too long", map[string]any{"data": map[string]any{strings.Repeat("k", 254): "x"}}, "data keys must be valid Secret keys"},
		{"data template too long", map[string]any{"data": map[string]any{"k": strings.Repeat("x", 4097)}}, "4096"},
		{"too many data keys", map[string]any{"data": many}, "spec.secretTemplate.data"},
		{"label managed-by", map[string]any{"labels": map[string]any{"app.kubernetes.io/managed-by": "argocd"}}, "labels may not set app.kubernetes.io/managed-by"},
		{"label tenant", map[string]any{"labels": map[string]any{"defender.tenantcreds.io/tenant": "other"}}, "labels may not set"},
		{"label key invalid", map[string]any{"labels": map[string]any{"team name": "soc"}}, "label keys must be"},
		{"label value invalid", map[string]any{"labels": map[string]any{"team": "soc team"}}, "spec.secretTemplate.labels.team"},
		{"label value too long", map[string]any{"labels": map[string]any{"team": strings.Repeat("s", 64)}}, "spec.secretTemplate.labels.team"},
		{"annotation key invalid", map[string]any{"annotations": map[string]any{"/reloader": "true"}}, "annotation keys must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(),
				"kind":       "DefenderTenant",
				"metadata":   map[string]any{"generateName": "bad-", "namespace": ns},
				"spec": map[string]any{
					"tenantID":        testTenantID,
					"clientID":        testClientID,
					"clientSecretRef": map[string]any{"name": credentialName},
					"secretTemplate":  tt.template,
				},
			}}
			err := k8s.Create(t.Context(), obj)
			expectRejected(t, err, tt.inText)
		})
	}
}

func TestAdmissionAcceptsTheDocumentedSecretTemplates(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	dt := newTenant(ns, tenantName, func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.SecretTemplate = &v1alpha1.SecretTemplate{
			Labels:      map[string]v1alpha1.LabelValue{"team": "soc", "example.com/tier": "gold", "empty": ""},
			Annotations: map[string]string{"reloader.stakater.com/match": "true", "secret.reloader.stakater.com/reload": "contoso-token"},
			Data:        map[string]v1alpha1.DataTemplate{"authorization": "Bearer {{ .AccessToken }}", "siem.json": siemTemplate, ".env": "TOKEN={{ .AccessToken }}"},
		}
	})
	if err := k8s.Create(t.Context(), dt); err != nil {
		t.Fatal(err)
	}
}
