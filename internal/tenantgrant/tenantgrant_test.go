package tenantgrant_test

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/tenantgrant"
)

const (
	testTenantID  = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	otherTenantID = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"
	defenderAPI   = "https://api.security.microsoft.com"
)

func TestGrantsMatchNamespaceTenantAndResource(t *testing.T) {
	const graph = "https://graph.microsoft.com"
	byName := v1alpha1.TenantGrant{Namespaces: []string{"customer-a"}, TenantIDs: []string{testTenantID}}
	bySelector := v1alpha1.TenantGrant{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"customer": "b"}},
		TenantIDs:         []string{"*"},
	}
	graphOnly := v1alpha1.TenantGrant{Namespaces: []string{"customer-a"}, TenantIDs: []string{testTenantID}, Resources: []string{graph + "/"}}
	tests := []struct {
		name      string
		grants    []v1alpha1.TenantGrant
		namespace string
		labels    map[string]string
		tenantID  string
		resource  string
		want      tenantgrant.Verdict
	}{
		{"listed namespace and tenant", []v1alpha1.TenantGrant{byName}, "customer-a", nil, testTenantID, defenderAPI, tenantgrant.Verdict{Allowed: true}},
		{"tenant GUIDs compare case-insensitively", []v1alpha1.TenantGrant{byName}, "customer-a", nil, strings.ToUpper(testTenantID), defenderAPI, tenantgrant.Verdict{Allowed: true}},
		{"listed namespace, other tenant", []v1alpha1.TenantGrant{byName}, "customer-a", nil, otherTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"other namespace, listed tenant", []v1alpha1.TenantGrant{byName}, "customer-b", nil, testTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"selector matches, any tenant", []v1alpha1.TenantGrant{bySelector}, "anything", map[string]string{"customer": "b"}, otherTenantID, defenderAPI, tenantgrant.Verdict{Allowed: true}},
		{"selector does not match", []v1alpha1.TenantGrant{bySelector}, "anything", map[string]string{"customer": "c"}, otherTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"namespace of one grant, tenant of another", []v1alpha1.TenantGrant{byName, {Namespaces: []string{"x"}, TenantIDs: []string{otherTenantID}}}, "customer-a", nil, otherTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"empty selector selects every namespace", []v1alpha1.TenantGrant{{NamespaceSelector: &metav1.LabelSelector{}, TenantIDs: []string{testTenantID}}}, "any", nil, testTenantID, defenderAPI, tenantgrant.Verdict{Allowed: true}},
		{"grant without namespaces or selector matches nothing", []v1alpha1.TenantGrant{{TenantIDs: []string{"*"}}}, "any", nil, testTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"invalid selector matches nothing", []v1alpha1.TenantGrant{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}, TenantIDs: []string{"*"}}}, "any", map[string]string{"a": "b"}, testTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"no grants", nil, "customer-a", nil, testTenantID, defenderAPI, tenantgrant.Verdict{}},
		{"a listed resource, trailing slashes ignored", []v1alpha1.TenantGrant{graphOnly}, "customer-a", nil, testTenantID, graph, tenantgrant.Verdict{Allowed: true}},
		{"a resource the grant does not list", []v1alpha1.TenantGrant{graphOnly}, "customer-a", nil, testTenantID, defenderAPI, tenantgrant.Verdict{ResourceRefused: true, Resources: []string{graph}}},
		{"a grant without resources beside a limited one", []v1alpha1.TenantGrant{graphOnly, byName}, "customer-a", nil, testTenantID, defenderAPI, tenantgrant.Verdict{Allowed: true}},
		{"a limited grant of another namespace refuses nothing here", []v1alpha1.TenantGrant{{Namespaces: []string{"x"}, TenantIDs: []string{testTenantID}, Resources: []string{graph}}}, "customer-a", nil, testTenantID, defenderAPI, tenantgrant.Verdict{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tenantgrant.Evaluate(tt.grants, tt.namespace, tt.labels, tt.tenantID, tt.resource)
			if got.Allowed != tt.want.Allowed || got.ResourceRefused != tt.want.ResourceRefused || strings.Join(got.Resources, ",") != strings.Join(tt.want.Resources, ",") {
				t.Errorf("Evaluate = %+v, want %+v", got, tt.want)
			}
		})
	}
}
