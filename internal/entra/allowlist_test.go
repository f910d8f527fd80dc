package entra_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

func TestDefaultAllowedResources(t *testing.T) {
	want := []string{
		"https://api.security.microsoft.com",
		"https://api.securitycenter.microsoft.com",
		"https://securitycenter.onmicrosoft.com/windowsatpservice",
		"https://api-gcc.security.microsoft.us",
		"https://api-gcc.securitycenter.microsoft.us",
		"https://api-gov.security.microsoft.us",
		"https://api-gov.securitycenter.microsoft.us",
		"https://graph.microsoft.com",
		"https://graph.microsoft.us",
		"https://dod-graph.microsoft.us",
	}
	if !slices.Equal(entra.DefaultAllowedResources, want) {
		t.Errorf("DefaultAllowedResources = %v, want %v", entra.DefaultAllowedResources, want)
	}
	if got := entra.NewAllowList(entra.DefaultAllowedResources).String(); got != strings.Join(want, ",") {
		t.Errorf("String() = %q", got)
	}
}

func TestAllowList(t *testing.T) {
	defaults := entra.NewAllowList(entra.DefaultAllowedResources)
	tests := []struct {
		name     string
		list     entra.AllowList
		resource string
		want     bool
	}{
		{"default XDR API", defaults, "https://api.security.microsoft.com", true},
		{"default with trailing slash", defaults, "https://api.security.microsoft.com/", true},
		{"default in another case", defaults, "HTTPS://API.Security.Microsoft.com", true},
		{"default App ID URI with a path", defaults, "https://securitycenter.onmicrosoft.com/WindowsATPService/", true},
		{"every default cloud: GCC High Endpoint API", defaults, "https://api-gov.securitycenter.microsoft.us", true},
		{"Microsoft Graph of every cloud: DoD", defaults, "https://dod-graph.microsoft.us", true},
		{"an unrelated API is not allowed by default", defaults, "https://management.azure.com", false},
		{"a longer host is not a match", defaults, "https://api.security.microsoft.com.example.com", false},
		{"a sub-path is not a match", defaults, "https://api.security.microsoft.com/other", false},
		{"http is not https", defaults, "http://api.security.microsoft.com", false},
		{"empty resource", defaults, "", false},
		{"zero value allows nothing", entra.AllowList{}, "https://api.security.microsoft.com", false},
		{"configured with a trailing slash", entra.NewAllowList([]string{"https://custom.example.com/"}), "https://custom.example.com", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.list.Allows(tt.resource); got != tt.want {
				t.Errorf("Allows(%q) = %v, want %v", tt.resource, got, tt.want)
			}
		})
	}
}

func TestParseAllowList(t *testing.T) {
	tests := []struct {
		name       string
		csv        string
		wantString string
		allows     []string
		wantErr    bool
	}{
		{
			name:       "single entry",
			csv:        "https://api.security.microsoft.com",
			wantString: "https://api.security.microsoft.com",
			allows:     []string{"https://api.security.microsoft.com/"},
		},
		{
			name:       "spaces trimmed, trailing slash and duplicates dropped",
			csv:        " https://api.security.microsoft.com/ ,https://graph.microsoft.com , HTTPS://API.SECURITY.MICROSOFT.COM",
			wantString: "https://api.security.microsoft.com,https://graph.microsoft.com",
			allows:     []string{"https://graph.microsoft.com", "https://api.security.microsoft.com"},
		},
		{
			name:       "the defaults round-trip",
			csv:        strings.Join(entra.DefaultAllowedResources, ","),
			wantString: strings.Join(entra.DefaultAllowedResources, ","),
			allows:     entra.DefaultAllowedResources,
		},
		{name: "empty list", csv: "", wantErr: true},
		{name: "only spaces", csv: "  ", wantErr: true},
		{name: "empty entry in the middle", csv: "https://a.example.com,,https://b.example.com", wantErr: true},
		{name: "trailing comma", csv: "https://a.example.com,", wantErr: true},
		{name: "http entry", csv: "https://a.example.com,http://b.example.com", wantErr: true},
		{name: "not a URL", csv: "api.security.microsoft.com", wantErr: true},
		{name: "entry with a query", csv: "https://a.example.com?x=1", wantErr: true},
		{name: "entry with user info", csv: "https://u:p@a.example.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := entra.ParseAllowList(tt.csv)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseAllowList(%q) error = %v, want error %v", tt.csv, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got.String() != tt.wantString {
				t.Errorf("String() = %q, want %q", got.String(), tt.wantString)
			}
			for _, r := range tt.allows {
				if !got.Allows(r) {
					t.Errorf("Allows(%q) = false, want true", r)
				}
			}
		})
	}
}
