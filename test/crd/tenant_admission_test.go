package crd

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Admission is the CRD schema and its CEL rules, enforced by the real API server.
func TestAdmissionRejectsMalformedSpecs(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	tests := []struct {
		name   string
		mutate func(spec map[string]any)
		inText string
	}{
		{"tenantID not a GUID", func(s map[string]any) { s["tenantID"] = "contoso.onmicrosoft.com" }, "spec.tenantID"},
		{"tenantID missing", func(s map[string]any) { delete(s, "tenantID") }, "spec.tenantID"},
		{"clientID not a GUID", func(s map[string]any) { s["clientID"] = "0b9f7c55-8a3e-4d2a-9c61" }, "spec.clientID"},
		{"clientSecretRef missing", func(s map[string]any) { delete(s, "clientSecretRef") }, "spec.clientSecretRef"},
		{"clientSecretRef name empty", func(s map[string]any) { s["clientSecretRef"] = map[string]any{"name": ""} }, "spec.clientSecretRef.name"},
		{"clientSecretRef name not a Secret name", func(s map[string]any) { s["clientSecretRef"] = map[string]any{"name": "Partner_App"} }, "spec.clientSecretRef.name"},
		{"cloud unknown", func(s map[string]any) { s["cloud"] = "China" }, "spec.cloud"},
		{"role empty", func(s map[string]any) { s["requiredRoles"] = []any{""} }, "spec.requiredRoles[0]"},
		{"role with whitespace", func(s map[string]any) { s["requiredRoles"] = []any{"Incident.Read.All AdvancedHunting.Read.All"} }, "spec.requiredRoles[0]"},
		{"role listed twice", func(s map[string]any) { s["requiredRoles"] = []any{"Incident.Read.All", "Incident.Read.All"} }, "spec.requiredRoles[1]"},
		{"resource over http", func(s map[string]any) { s["resource"] = "http://api.security.microsoft.com" }, "resource must be an https URL"},
		{"resource not a URL", func(s map[string]any) { s["resource"] = "api.security.microsoft.com" }, "resource must be an https URL"},
		{"refreshBefore negative", func(s map[string]any) { s["refreshBefore"] = "-5m" }, "spec.refreshBefore"},
		{"refreshBefore zero", func(s map[string]any) { s["refreshBefore"] = "0s" }, "refreshBefore must be a positive duration"},
		{"refreshBefore not a duration", func(s map[string]any) { s["refreshBefore"] = "ten minutes" }, "spec.refreshBefore"},
		{"tokenSecretName not a Secret name", func(s map[string]any) { s["tokenSecretName"] = "Contoso_Token" }, "spec.tokenSecretName"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := map[string]any{
				"tenantID":        testTenantID,
				"clientID":        testClientID,
				"clientSecretRef": map[string]any{"name": credentialName},
			}
			tt.mutate(spec)
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(),
				"kind":       "DefenderTenant",
				"metadata":   map[string]any{"name": "bad", "namespace": ns, "generateName": ""},
				"spec":       spec,
			}}
			obj.SetName("")
			obj.SetGenerateName("bad-")
			err := k8s.Create(t.Context(), obj)
			expectRejected(t, err, tt.inText)
		})
	}
}

func TestAdmissionAcceptsAndDefaultsAValidSpec(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	dt := newTenant(ns, tenantName, func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.Resource = "https://api-gov.security.microsoft.us/"
		dt.Spec.RefreshBefore = &metav1.Duration{Duration: 90 * time.Minute}
		dt.Spec.TokenSecretName = "contoso.defender-token"
	})
	if err := k8s.Create(t.Context(), dt); err != nil {
		t.Fatal(err)
	}
	// spec.cloud has no CRD default (it is refused beside appRef); an unset cloud is Public.
	if dt.Spec.Cloud != "" || dt.CloudOrDefault() != v1alpha1.CloudPublic || dt.Spec.ClientSecretRef.Key != "client-secret" {
		t.Errorf("defaults: cloud = %q, clientSecretRef.key = %q", dt.Spec.Cloud, dt.Spec.ClientSecretRef.Key)
	}
}
