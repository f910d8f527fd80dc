package entra

import (
	"slices"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

func TestRetiresAt(t *testing.T) {
	retireDay := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		resource string
		retiring bool
	}{
		{"https://api.security.microsoft.com", true},
		{"https://API.security.microsoft.com/", true},
		{"https://api.securitycenter.microsoft.com", true},
		{"https://securitycenter.onmicrosoft.com/windowsatpservice", true},
		{"https://api-gcc.security.microsoft.us", true},
		{"https://api-gcc.securitycenter.microsoft.us", true},
		{"https://api-gov.security.microsoft.us", true},
		{"https://api-gov.securitycenter.microsoft.us", true},
		{"https://graph.microsoft.com", false},
		{"https://graph.microsoft.us", false},
		{"https://dod-graph.microsoft.us", false},
		{"https://api.security.microsoft.com.evil.example", false},
		{"", false},
	} {
		at, ok := RetiresAt(tc.resource)
		if ok != tc.retiring {
			t.Errorf("RetiresAt(%q) retiring = %v, want %v", tc.resource, ok, tc.retiring)
		}
		if ok && !at.Equal(retireDay) {
			t.Errorf("RetiresAt(%q) = %v, want %v", tc.resource, at, retireDay)
		}
	}
}

// Every default resource of every cloud is retiring, so each gets the warning; the
// resource a tenant is moved to never is.
func TestEveryCloudsDefaultRetiresAndItsGraphDoesNot(t *testing.T) {
	for _, cloud := range []v1alpha1.Cloud{v1alpha1.CloudPublic, v1alpha1.CloudUSGov, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD} {
		if _, ok := RetiresAt(DefaultResource(cloud)); !ok {
			t.Errorf("%s: default resource %q not retiring", cloud, DefaultResource(cloud))
		}
		if _, ok := RetiresAt(GraphResource(cloud)); ok {
			t.Errorf("%s: Graph resource %q retiring", cloud, GraphResource(cloud))
		}
	}
	want := map[v1alpha1.Cloud]string{
		v1alpha1.CloudPublic:    "https://graph.microsoft.com",
		v1alpha1.CloudUSGov:     "https://graph.microsoft.com",
		v1alpha1.CloudUSGovHigh: "https://graph.microsoft.us",
		v1alpha1.CloudDoD:       "https://dod-graph.microsoft.us",
		"Mars":                  "",
	}
	for cloud, w := range want {
		if got := GraphResource(cloud); got != w {
			t.Errorf("GraphResource(%q) = %q, want %q", cloud, got, w)
		}
	}
}

func TestGraphRoles(t *testing.T) {
	mapped, unmapped := GraphRoles([]string{
		"AdvancedQuery.Read.All", "Incident.Read.All", "AdvancedHunting.Read.All",
		"Machine.Isolate", "SecurityAlert.Read.All", "Ti.ReadWrite", " ",
	})
	wantMapped := []string{"SecurityAlert.Read.All", "SecurityIncident.Read.All", "ThreatHunting.Read.All"}
	wantUnmapped := []string{"Machine.Isolate", "Ti.ReadWrite"}
	if !slices.Equal(mapped, wantMapped) {
		t.Errorf("mapped = %v, want %v", mapped, wantMapped)
	}
	if !slices.Equal(unmapped, wantUnmapped) {
		t.Errorf("unmapped = %v, want %v", unmapped, wantUnmapped)
	}
}
