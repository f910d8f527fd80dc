package entra_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	discoPublicTenant = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	discoGCCTenant    = "1a2b3c4d-0000-4000-8000-00000000000a"
	discoHighTenant   = "4c8e2a1f-7b3d-4e9a-8f1c-2d5b6a7e9c03"
	discoDoDTenant    = "1a2b3c4d-0000-4000-8000-00000000000d"
)

func TestDiscoveredCloud(t *testing.T) {
	tests := []struct {
		instance, scope, subScope string
		want                      v1alpha1.Cloud
	}{
		{"microsoftonline.com", "NA", "", v1alpha1.CloudPublic},
		{"microsoftonline.com", "EU", "", v1alpha1.CloudPublic},
		{"microsoftonline.com", "WW", "", v1alpha1.CloudPublic},
		{"microsoftonline.com", "NA", "GCC", v1alpha1.CloudUSGov},
		{"microsoftonline.us", "USGov", "DODCON", v1alpha1.CloudUSGovHigh},
		{"microsoftonline.us", "USGov", "DOD", v1alpha1.CloudDoD},
		{"microsoftonline.us", "usgov", "dod", v1alpha1.CloudDoD},
		// The sub scope decides even where the instance name says otherwise, as the
		// v1 document Microsoft's Azure Government page quotes does.
		{"microsoftonline.com", "USGov", "DODCON", v1alpha1.CloudUSGovHigh},
		{"microsoftonline.com", "USG", "", v1alpha1.CloudUSGovHigh},
		{"microsoftonline.us", "USGov", "", v1alpha1.CloudUSGovHigh},
		{"microsoftonline.us", "", "", v1alpha1.CloudUSGovHigh},
		{"partner.microsoftonline.cn", "AS", "", ""},
		{"", "NA", "", ""},
		{"", "", "", ""},
	}
	for _, tc := range tests {
		if got := entra.DiscoveredCloud(tc.instance, tc.scope, tc.subScope); got != tc.want {
			t.Errorf("DiscoveredCloud(%q, %q, %q) = %q, want %q", tc.instance, tc.scope, tc.subScope, got, tc.want)
		}
	}
}

// discoveryEmulator serves an emulator with a tenant in each cloud, each with a
// verified domain, at a Public and a US Government sign-in host.
func discoveryEmulator(t *testing.T) (emu *entraemu.Emulator, publicURL, govURL string) {
	t.Helper()
	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range []struct {
		id, domain string
		cloud      v1alpha1.Cloud
	}{
		{discoPublicTenant, "contoso.com", v1alpha1.CloudPublic},
		{discoGCCTenant, "agency.gov", v1alpha1.CloudUSGov},
		{discoHighTenant, "contractor.onmicrosoft.us", v1alpha1.CloudUSGovHigh},
		{discoDoDTenant, "army.onmicrosoft.us", v1alpha1.CloudDoD},
	} {
		emu.SetCloud(tn.id, tn.cloud)
		emu.AddDomain(tn.id, tn.domain)
	}
	public := httptest.NewServer(emu)
	t.Cleanup(public.Close)
	gov := httptest.NewServer(emu.Cloud(v1alpha1.CloudUSGovHigh))
	t.Cleanup(gov.Close)
	return emu, public.URL, gov.URL
}

func TestDiscoverTenantAgainstTheEmulator(t *testing.T) {
	_, publicURL, govURL := discoveryEmulator(t)
	tests := []struct {
		name, host, tenant string
		want               entra.TenantDiscovery
	}{
		{
			name: "commercial tenant by domain", host: publicURL, tenant: "contoso.com",
			want: entra.TenantDiscovery{TenantID: discoPublicTenant, Cloud: v1alpha1.CloudPublic, CloudInstanceName: "microsoftonline.com", RegionScope: "NA", GraphHost: "graph.microsoft.com"},
		},
		{
			name: "commercial tenant by upper-case GUID", host: publicURL, tenant: strings.ToUpper(discoPublicTenant),
			want: entra.TenantDiscovery{TenantID: discoPublicTenant, Cloud: v1alpha1.CloudPublic, CloudInstanceName: "microsoftonline.com", RegionScope: "NA", GraphHost: "graph.microsoft.com"},
		},
		{
			name: "GCC tenant by domain", host: publicURL, tenant: "Agency.GOV",
			want: entra.TenantDiscovery{TenantID: discoGCCTenant, Cloud: v1alpha1.CloudUSGov, CloudInstanceName: "microsoftonline.com", RegionScope: "NA", RegionSubScope: "GCC", GraphHost: "graph.microsoft.com"},
		},
		{
			name: "GCC High tenant asked at the commercial host", host: publicURL, tenant: discoHighTenant,
			want: entra.TenantDiscovery{TenantID: discoHighTenant, Cloud: v1alpha1.CloudUSGovHigh, CloudInstanceName: "microsoftonline.us", RegionScope: "USGov", RegionSubScope: "DODCON", GraphHost: "graph.microsoft.us"},
		},
		{
			name: "DoD tenant by domain at the US Government host", host: govURL, tenant: "army.onmicrosoft.us",
			want: entra.TenantDiscovery{TenantID: discoDoDTenant, Cloud: v1alpha1.CloudDoD, CloudInstanceName: "microsoftonline.us", RegionScope: "USGov", RegionSubScope: "DOD", GraphHost: "dod-graph.microsoft.us"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := entra.DiscoverTenant(t.Context(), nil, tc.host, tc.tenant)
			if err != nil {
				t.Fatalf("DiscoverTenant: %v", err)
			}
			if got != tc.want {
				t.Errorf("DiscoverTenant =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestDiscoverTenantNotFound(t *testing.T) {
	emu, publicURL, govURL := discoveryEmulator(t)
	for _, tc := range []struct{ host, tenant string }{
		{publicURL, "fabrikam.com"},
		{govURL, "9d8c7b6a-0000-4000-8000-000000000001"},
	} {
		_, err := entra.DiscoverTenant(t.Context(), nil, tc.host, tc.tenant)
		var nf *entra.TenantNotFoundError
		if !errors.As(err, &nf) {
			t.Fatalf("DiscoverTenant(%s) error = %v, want a *TenantNotFoundError", tc.tenant, err)
		}
		if nf.TenantOrDomain != tc.tenant || nf.TraceID == "" || nf.CorrelationID == "" {
			t.Errorf("TenantNotFoundError = %+v, want the tenant asked and the body's IDs", nf)
		}
		if emu.DiscoveryRequests(tc.tenant) != 1 {
			t.Errorf("DiscoveryRequests(%s) = %d, want 1", tc.tenant, emu.DiscoveryRequests(tc.tenant))
		}
	}
}

func TestDiscoverTenantTransportErrorIsNotNotFound(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens there any more
	_, err := entra.DiscoverTenant(t.Context(), nil, srv.URL, "contoso.com")
	var nf *entra.TenantNotFoundError
	if err == nil || errors.As(err, &nf) || errors.Is(err, entra.ErrInvalidTenantOrDomain) {
		t.Errorf("DiscoverTenant against a closed server: error = %v, want a transport error", err)
	}
}

// TestDiscoverTenantRefusesInputThatIsNotATenant checks that nothing but a GUID or
// a domain name is sent, so that no input reaches another path of the host.
func TestDiscoverTenantRefusesInputThatIsNotATenant(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	for _, in := range []string{
		"", "common", "organizations", "..", "contoso.com/../../common", "contoso.com/oauth2/v2.0/token",
		"contoso.com?x=1", "contoso.com#x", "contoso%2ecom", "conto so.com", "contoso..com", ".contoso.com",
		"-contoso.com", "contoso.com.", "user@contoso.com", "contoso_x.com", "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e1",
		"{6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11}", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 127) + "com",
	} {
		_, err := entra.DiscoverTenant(t.Context(), nil, srv.URL, in)
		if !errors.Is(err, entra.ErrInvalidTenantOrDomain) {
			t.Errorf("DiscoverTenant(%q) error = %v, want ErrInvalidTenantOrDomain", in, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent for invalid input, want 0", n)
	}
	// The positive control: a valid domain is sent.
	if _, err := entra.DiscoverTenant(t.Context(), nil, srv.URL, "contoso.com"); err == nil || requests.Load() != 1 {
		t.Errorf("DiscoverTenant(contoso.com): error %v, %d requests; want HTTP 418 after 1 request", err, requests.Load())
	}
}

func TestDiscoverTenantRejectsBadAnswers(t *testing.T) {
	const asked = discoPublicTenant
	doc := func(issuer string) string {
		return `{"issuer":"` + issuer + `","cloud_instance_name":"microsoftonline.com","tenant_region_scope":"NA","msgraph_host":"graph.microsoft.com"}`
	}
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
		want   string
	}{
		{name: "issuer without a tenant", status: 200, body: doc("https://login.microsoftonline.com/{tenantid}/v2.0"), want: "issuer names no tenant ID"},
		{name: "issuer over http", status: 200, body: doc("http://login.microsoftonline.com/" + asked + "/v2.0"), want: "issuer names no tenant ID"},
		{name: "issuer with another path", status: 200, body: doc("https://login.microsoftonline.com/" + asked + "/oauth2/v2.0"), want: "issuer names no tenant ID"},
		{name: "another tenant", status: 200, body: doc("https://login.microsoftonline.com/" + discoDoDTenant + "/v2.0"), want: "another tenant"},
		{name: "not JSON", status: 200, body: "<html>proxy login</html>", want: "not a discovery document"},
		{name: "too big", status: 200, body: `{"x":"` + strings.Repeat("a", 70<<10) + `"}`, want: "over 65536 bytes"},
		{name: "server error", status: 500, body: `{"error":"server_error","error_codes":[50033]}`, want: "HTTP 500"},
		{name: "400 that is not about the tenant", status: 400, body: `{"error":"invalid_request","error_codes":[900144]}`, want: "HTTP 400"},
		{name: "redirect", status: 302, header: map[string]string{"Location": "https://evil.example/x"}, want: "HTTP 302"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			_, err := entra.DiscoverTenant(t.Context(), srv.Client(), srv.URL, asked)
			var nf *entra.TenantNotFoundError
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &nf) {
				t.Errorf("error = %v, want one containing %q that is not TenantNotFound", err, tc.want)
			}
		})
	}
}

func TestDiscoverTenantDropsFieldsOfTheWrongShape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"issuer":"https://login.microsoftonline.com/` + discoPublicTenant + `/v2.0",` +
			`"cloud_instance_name":"microsoftonline.com/../x","tenant_region_scope":"NA\nset-cookie","tenant_region_sub_scope":"<b>GCC</b>",` +
			`"msgraph_host":"graph.microsoft.com\r\nX: y"}`))
	}))
	t.Cleanup(srv.Close)
	got, err := entra.DiscoverTenant(t.Context(), nil, srv.URL, discoPublicTenant)
	if err != nil {
		t.Fatal(err)
	}
	want := entra.TenantDiscovery{TenantID: discoPublicTenant}
	if got != want {
		t.Errorf("DiscoverTenant = %+v, want only the tenant ID: %+v", got, want)
	}
}

func TestDiscoveryURLEscapesTheTenant(t *testing.T) {
	if got, want := entra.DiscoveryURL("https://login.microsoftonline.com/", "a/b"), "https://login.microsoftonline.com/a%2Fb/v2.0/.well-known/openid-configuration"; got != want {
		t.Errorf("DiscoveryURL = %q, want %q", got, want)
	}
}
