package entra_test

import (
	"net/url"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

func TestCloudTable(t *testing.T) {
	tests := []struct {
		cloud         v1alpha1.Cloud
		wantAuthority string
		wantResource  string
		wantTokenURL  string
		wantScope     string
	}{
		{
			cloud:         "",
			wantAuthority: "https://login.microsoftonline.com",
			wantResource:  "https://api.security.microsoft.com",
			wantTokenURL:  "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token",
			wantScope:     "https://api.security.microsoft.com/.default",
		},
		{
			cloud:         v1alpha1.CloudPublic,
			wantAuthority: "https://login.microsoftonline.com",
			wantResource:  "https://api.security.microsoft.com",
			wantTokenURL:  "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token",
			wantScope:     "https://api.security.microsoft.com/.default",
		},
		{
			cloud:         v1alpha1.CloudUSGov,
			wantAuthority: "https://login.microsoftonline.com",
			wantResource:  "https://api-gcc.security.microsoft.us",
			wantTokenURL:  "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token",
			wantScope:     "https://api-gcc.security.microsoft.us/.default",
		},
		{
			cloud:         v1alpha1.CloudUSGovHigh,
			wantAuthority: "https://login.microsoftonline.us",
			wantResource:  "https://api-gov.security.microsoft.us",
			wantTokenURL:  "https://login.microsoftonline.us/" + testTenant + "/oauth2/v2.0/token",
			wantScope:     "https://api-gov.security.microsoft.us/.default",
		},
		{
			cloud:         v1alpha1.CloudDoD,
			wantAuthority: "https://login.microsoftonline.us",
			wantResource:  "https://api-gov.security.microsoft.us",
			wantTokenURL:  "https://login.microsoftonline.us/" + testTenant + "/oauth2/v2.0/token",
			wantScope:     "https://api-gov.security.microsoft.us/.default",
		},
	}
	for _, tt := range tests {
		t.Run("cloud "+string(tt.cloud), func(t *testing.T) {
			authority, resource := entra.AuthorityHost(tt.cloud), entra.DefaultResource(tt.cloud)
			if authority != tt.wantAuthority || resource != tt.wantResource {
				t.Errorf("AuthorityHost, DefaultResource = %q, %q; want %q, %q", authority, resource, tt.wantAuthority, tt.wantResource)
			}
			if got := entra.TokenURL(authority, testTenant); got != tt.wantTokenURL {
				t.Errorf("TokenURL = %q, want %q", got, tt.wantTokenURL)
			}
			if got := entra.Scope(resource); got != tt.wantScope {
				t.Errorf("Scope = %q, want %q", got, tt.wantScope)
			}
		})
	}
}

func TestUnknownCloudHasNoHosts(t *testing.T) {
	if a, r := entra.AuthorityHost("China"), entra.DefaultResource("China"); a != "" || r != "" {
		t.Errorf("unknown cloud gave %q, %q; want empty strings", a, r)
	}
}

func TestTokenURLAndScopeEdgeCases(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"token URL with trailing slash on the authority", entra.TokenURL("https://login.microsoftonline.com/", testTenant), "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token"},
		{"token URL under a proxy path prefix", entra.TokenURL("https://proxy.example.com/entra", testTenant), "https://proxy.example.com/entra/" + testTenant + "/oauth2/v2.0/token"},
		{"token URL escapes a tenant that is not a GUID", entra.TokenURL("https://login.microsoftonline.com", "a/b?c"), "https://login.microsoftonline.com/a%2Fb%3Fc/oauth2/v2.0/token"},
		{"scope drops a trailing slash", entra.Scope("https://api.security.microsoft.com/"), "https://api.security.microsoft.com/.default"},
		{"scope keeps a path", entra.Scope("https://securitycenter.onmicrosoft.com/windowsatpservice"), "https://securitycenter.onmicrosoft.com/windowsatpservice/.default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestAdminConsentURL(t *testing.T) {
	tests := []struct {
		name      string
		authority string
		resource  string
		redirect  string
		want      string
	}{
		{
			name:      "public cloud",
			authority: entra.AuthorityHost(v1alpha1.CloudPublic),
			resource:  "https://api.security.microsoft.com",
			want:      "https://login.microsoftonline.com/" + testTenant + "/v2.0/adminconsent?client_id=" + testClient + "&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default",
		},
		{
			name:      "GCC High with a trailing slash on the resource",
			authority: entra.AuthorityHost(v1alpha1.CloudUSGovHigh),
			resource:  "https://api-gov.security.microsoft.us/",
			want:      "https://login.microsoftonline.us/" + testTenant + "/v2.0/adminconsent?client_id=" + testClient + "&scope=https%3A%2F%2Fapi-gov.security.microsoft.us%2F.default",
		},
		{
			name:      "with a redirect URI",
			authority: entra.AuthorityHost(v1alpha1.CloudPublic),
			resource:  "https://api.security.microsoft.com",
			redirect:  "https://portal.azure.com",
			want:      "https://login.microsoftonline.com/" + testTenant + "/v2.0/adminconsent?client_id=" + testClient + "&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default&redirect_uri=https%3A%2F%2Fportal.azure.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := entra.AdminConsentURL(tt.authority, testTenant, testClient, tt.resource, tt.redirect)
			if got != tt.want {
				t.Errorf("AdminConsentURL = %q, want %q", got, tt.want)
			}
			u, err := url.Parse(got)
			if err != nil {
				t.Fatalf("not a URL: %v", err)
			}
			if q := u.Query(); q.Get("client_id") != testClient || q.Get("scope") != entra.Scope(tt.resource) || q.Get("redirect_uri") != tt.redirect {
				t.Errorf("query decodes to %v", q)
			}
		})
	}
}

func TestParseRedirectURI(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://portal.azure.com":              true,
		"https://partner.example.com/consented": true,
		"http://localhost:8400/consented":       true,
		"http://partner.example.com/consented":  false,
		"portal.azure.com":                      false,
		"https://user@partner.example.com":      false,
		"https://partner.example.com/#fragment": false,
		"ftp://partner.example.com":             false,
		"":                                      false,
	} {
		got, err := entra.ParseRedirectURI(raw)
		if ok && (err != nil || got != raw) {
			t.Errorf("ParseRedirectURI(%q) = %q, %v; want it accepted", raw, got, err)
		}
		if !ok && err == nil {
			t.Errorf("ParseRedirectURI(%q) accepted it; want an error", raw)
		}
	}
}

func TestParseAuthorityHost(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    string
		wantErr bool
	}{
		{name: "public authority", raw: "https://login.microsoftonline.com", want: "https://login.microsoftonline.com"},
		{name: "trailing slash dropped", raw: "https://login.microsoftonline.us/", want: "https://login.microsoftonline.us"},
		{name: "proxy path prefix kept", raw: "https://egress.example.com:8443/entra/", want: "https://egress.example.com:8443/entra"},
		{name: "http on localhost", raw: "http://localhost:8080", want: "http://localhost:8080"},
		{name: "http on LOCALHOST", raw: "http://LOCALHOST:8080/", want: "http://LOCALHOST:8080"},
		{name: "http on 127.0.0.1", raw: "http://127.0.0.1:39123", want: "http://127.0.0.1:39123"},
		{name: "http anywhere in 127.0.0.0/8", raw: "http://127.8.9.10", want: "http://127.8.9.10"},
		{name: "http on ::1", raw: "http://[::1]:9000", want: "http://[::1]:9000"},
		{name: "scheme is case-insensitive", raw: "HTTPS://login.microsoftonline.com", want: "https://login.microsoftonline.com"},
		{name: "empty", raw: "", wantErr: true},
		{name: "no scheme", raw: "login.microsoftonline.com", wantErr: true},
		{name: "relative path", raw: "/entra", wantErr: true},
		{name: "no host", raw: "https:///entra", wantErr: true},
		{name: "opaque URL", raw: "https:login.microsoftonline.com", wantErr: true},
		{name: "http on a public host", raw: "http://login.microsoftonline.com", wantErr: true},
		{name: "http on a private address", raw: "http://10.0.0.1", wantErr: true},
		{name: "http on a name that merely starts with localhost", raw: "http://localhost.example.com", wantErr: true},
		{name: "http on 127.0.0.1 as a DNS label", raw: "http://127.0.0.1.nip.io", wantErr: true},
		{name: "other scheme", raw: "ftp://login.microsoftonline.com", wantErr: true},
		{name: "query", raw: "https://login.microsoftonline.com?x=1", wantErr: true},
		{name: "empty query", raw: "https://login.microsoftonline.com?", wantErr: true},
		{name: "fragment", raw: "https://login.microsoftonline.com#x", wantErr: true},
		{name: "empty fragment", raw: "https://login.microsoftonline.com#", wantErr: true},
		{name: "user info", raw: "https://user:pass@login.microsoftonline.com", wantErr: true},
		{name: "unparseable", raw: "https://login microsoftonline.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := entra.ParseAuthorityHost(tt.raw)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseAuthorityHost(%q) = %q, %v; want error %v", tt.raw, got, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseAuthorityHost(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
}
