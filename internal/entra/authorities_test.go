package entra_test

import (
	"strings"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

func TestParseAuthorities(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    map[v1alpha1.Cloud]string // every cloud's host
		wantErr string
	}{
		{
			name: "one URL replaces every cloud",
			raw:  "http://127.0.0.1:8080/",
			want: map[v1alpha1.Cloud]string{
				v1alpha1.CloudPublic: "http://127.0.0.1:8080", v1alpha1.CloudUSGov: "http://127.0.0.1:8080",
				v1alpha1.CloudUSGovHigh: "http://127.0.0.1:8080", v1alpha1.CloudDoD: "http://127.0.0.1:8080",
			},
		},
		{
			name: "per cloud: unnamed clouds keep their real host",
			raw:  "Public=https://proxy-a.example, USGovHigh=https://proxy-b.example/entra",
			want: map[v1alpha1.Cloud]string{
				v1alpha1.CloudPublic: "https://proxy-a.example", v1alpha1.CloudUSGov: "https://login.microsoftonline.com",
				v1alpha1.CloudUSGovHigh: "https://proxy-b.example/entra", v1alpha1.CloudDoD: "https://login.microsoftonline.us",
			},
		},
		{
			name: "a URL whose path holds an equals sign is one URL",
			raw:  "https://proxy.example/a=b",
			want: map[v1alpha1.Cloud]string{
				v1alpha1.CloudPublic: "https://proxy.example/a=b", v1alpha1.CloudUSGov: "https://proxy.example/a=b",
				v1alpha1.CloudUSGovHigh: "https://proxy.example/a=b", v1alpha1.CloudDoD: "https://proxy.example/a=b",
			},
		},
		{name: "unknown cloud", raw: "China=https://login.chinacloudapi.cn", wantErr: `unknown cloud "China"`},
		{name: "cloud names are case-sensitive like the CRD enum", raw: "public=https://proxy.example", wantErr: `unknown cloud "public"`},
		{name: "cloud twice", raw: "DoD=https://a.example,DoD=https://b.example", wantErr: "cloud DoD is given twice"},
		{name: "plain http to a remote proxy", raw: "USGov=http://proxy.example", wantErr: "plain http is only allowed for loopback hosts"},
		{name: "a bare URL among entries", raw: "Public=https://a.example,https://b.example", wantErr: "is not CLOUD=URL"},
		{name: "empty URL", raw: "Public=", wantErr: "must not be empty"},
		{name: "empty flag value", raw: "", wantErr: "must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := entra.ParseAuthorities(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAuthorities(%q) = %v, %v; want an error containing %q", tt.raw, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAuthorities(%q): %v", tt.raw, err)
			}
			for cloud, host := range tt.want {
				if h := got.Host(cloud); h != host {
					t.Errorf("Host(%s) = %q, want %q", cloud, h, host)
				}
			}
		})
	}
}

func TestAuthoritiesWithoutOverridesAreTheRealClouds(t *testing.T) {
	var none entra.Authorities
	for _, cloud := range []v1alpha1.Cloud{"", v1alpha1.CloudPublic, v1alpha1.CloudUSGov, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD} {
		if got, want := none.Host(cloud), entra.AuthorityHost(cloud); got != want || got == "" {
			t.Errorf("Host(%q) = %q, want the real host %q", cloud, got, want)
		}
	}
	if s := none.String(); s != "" {
		t.Errorf("String() = %q, want empty", s)
	}
	some := entra.Authorities{v1alpha1.CloudDoD: "https://b", v1alpha1.CloudPublic: "https://a"}
	if s := some.String(); s != "Public=https://a,DoD=https://b" {
		t.Errorf("String() = %q", s)
	}
}
