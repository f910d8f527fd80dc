package entraemu_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// discoveryTenants are one tenant per cloud, each with a verified domain.
var discoveryTenants = []struct {
	cloud  v1alpha1.Cloud
	id     string
	domain string
}{
	{v1alpha1.CloudPublic, tenantID, "contoso.com"},
	{v1alpha1.CloudUSGov, "1a2b3c4d-0000-4000-8000-00000000000a", "agency.gov"},
	{v1alpha1.CloudUSGovHigh, govTenant, "contractor.onmicrosoft.us"},
	{v1alpha1.CloudDoD, "1a2b3c4d-0000-4000-8000-00000000000d", "army.onmicrosoft.us"},
}

// discoveryFixture is the fixture with discoveryTenants and a server answering as
// login.microsoftonline.us.
func discoveryFixture(t *testing.T) (f *fixture, govURL string) {
	t.Helper()
	f = newFixture(t)
	for _, dt := range discoveryTenants {
		f.emu.SetCloud(dt.id, dt.cloud)
		f.emu.AddDomain(dt.id, dt.domain)
	}
	return f, f.serve(t, f.emu.Cloud(v1alpha1.CloudUSGovHigh))
}

func (f *fixture) getAt(t *testing.T, base, path string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.do(t, req)
}

func TestDiscoveryDocumentOfEachCloud(t *testing.T) {
	// The values each cloud's document states (see discovery.go for their sources).
	want := map[v1alpha1.Cloud]struct {
		host, instance, scope, subScope, graph, aadGraph string
	}{
		v1alpha1.CloudPublic:    {publicHost, "microsoftonline.com", "NA", "", "graph.microsoft.com", "graph.windows.net"},
		v1alpha1.CloudUSGov:     {publicHost, "microsoftonline.com", "NA", "GCC", "graph.microsoft.com", "graph.windows.net"},
		v1alpha1.CloudUSGovHigh: {usGovHost, "microsoftonline.us", "USGov", "DODCON", "graph.microsoft.us", "graph.microsoftazure.us"},
		v1alpha1.CloudDoD:       {usGovHost, "microsoftonline.us", "USGov", "DOD", "dod-graph.microsoft.us", "graph.microsoftazure.us"},
	}
	f, govURL := discoveryFixture(t)
	for _, dt := range discoveryTenants {
		w := want[dt.cloud]
		for _, asked := range []struct{ name, base string }{{"at login.microsoftonline.com", f.srv.URL}, {"at login.microsoftonline.us", govURL}} {
			for _, name := range []string{dt.id, dt.domain, strings.ToUpper(dt.domain)} {
				t.Run(string(dt.cloud)+" "+name+" "+asked.name, func(t *testing.T) {
					v2 := f.getAt(t, asked.base, "/"+name+"/v2.0/.well-known/openid-configuration")
					if v2.status != http.StatusOK {
						t.Fatalf("v2: status %d, body %s", v2.status, v2.body)
					}
					if got := v2.header.Get("Content-Type"); got != entraJSON {
						t.Errorf("Content-Type = %q", got)
					}
					if got := v2.header.Get("Cache-Control"); got != "max-age=86400, private" {
						t.Errorf("Cache-Control = %q", got)
					}
					var doc map[string]any
					if err := json.Unmarshal(v2.body, &doc); err != nil {
						t.Fatal(err)
					}
					base := w.host + "/" + dt.id
					checkFields(t, doc, map[string]any{
						"issuer":                 base + "/v2.0",
						"token_endpoint":         base + "/oauth2/v2.0/token",
						"authorization_endpoint": base + "/oauth2/v2.0/authorize",
						"jwks_uri":               base + "/discovery/v2.0/keys",
						"end_session_endpoint":   base + "/oauth2/v2.0/logout",
						"cloud_instance_name":    w.instance,
						"cloud_graph_host_name":  w.aadGraph,
						"msgraph_host":           w.graph,
						"tenant_region_scope":    w.scope,
					})
					sub, present := doc["tenant_region_sub_scope"]
					switch {
					case w.subScope == "" && present:
						t.Errorf("tenant_region_sub_scope = %v, want the field left out", sub)
					case w.subScope != "" && sub != w.subScope:
						t.Errorf("tenant_region_sub_scope = %v, want %q", sub, w.subScope)
					}

					v1 := f.getAt(t, asked.base, "/"+name+"/.well-known/openid-configuration")
					if v1.status != http.StatusOK {
						t.Fatalf("v1: status %d, body %s", v1.status, v1.body)
					}
					var doc1 map[string]any
					if err := json.Unmarshal(v1.body, &doc1); err != nil {
						t.Fatal(err)
					}
					checkFields(t, doc1, map[string]any{
						"issuer":                 "https://sts.windows.net/" + dt.id + "/",
						"token_endpoint":         base + "/oauth2/token",
						"authorization_endpoint": base + "/oauth2/authorize",
						"jwks_uri":               w.host + "/common/discovery/keys",
						"cloud_instance_name":    w.instance,
						"msgraph_host":           w.graph,
						"tenant_region_scope":    w.scope,
					})
				})
			}
		}
	}
}

func checkFields(t *testing.T, doc map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
}

// TestDiscoveryDocumentFieldOrder checks the keys of both documents, in order,
// against those of answers recorded from login.microsoftonline.com.
func TestDiscoveryDocumentFieldOrder(t *testing.T) {
	f, _ := discoveryFixture(t)
	tests := []struct {
		path string
		want []string
	}{
		{
			path: "/contoso.com/v2.0/.well-known/openid-configuration",
			want: []string{"token_endpoint", "token_endpoint_auth_methods_supported", "jwks_uri", "response_modes_supported",
				"subject_types_supported", "id_token_signing_alg_values_supported", "response_types_supported", "scopes_supported",
				"issuer", "request_uri_parameter_supported", "userinfo_endpoint", "authorization_endpoint",
				"device_authorization_endpoint", "http_logout_supported", "frontchannel_logout_supported", "end_session_endpoint",
				"claims_supported", "kerberos_endpoint", "tenant_region_scope", "cloud_instance_name", "cloud_graph_host_name",
				"msgraph_host", "rbac_url"},
		},
		{
			path: "/agency.gov/.well-known/openid-configuration",
			want: []string{"token_endpoint", "token_endpoint_auth_methods_supported", "jwks_uri", "response_modes_supported",
				"subject_types_supported", "id_token_signing_alg_values_supported", "response_types_supported", "scopes_supported",
				"issuer", "microsoft_multi_refresh_token", "authorization_endpoint", "device_authorization_endpoint",
				"http_logout_supported", "frontchannel_logout_supported", "end_session_endpoint", "claims_supported",
				"check_session_iframe", "userinfo_endpoint", "kerberos_endpoint", "tenant_region_scope", "tenant_region_sub_scope",
				"cloud_instance_name", "cloud_graph_host_name", "msgraph_host", "rbac_url"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp := f.getAt(t, f.srv.URL, tc.path)
			if got := topLevelKeys(t, resp.body); !slices.Equal(got, tc.want) {
				t.Errorf("keys =\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

// topLevelKeys returns the keys of a JSON object in the order they appear.
func topLevelKeys(t *testing.T, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", body)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestDiscoveryOfAnUnknownTenant(t *testing.T) {
	f, govURL := discoveryFixture(t)
	tests := []struct {
		name, base, tenant, path string
		wantStatus, wantCode     int
		wantError, wantDesc      string
	}{
		{
			name: "unknown domain", base: f.srv.URL, tenant: "fabrikam.com", path: "/v2.0/.well-known/openid-configuration",
			wantStatus: 400, wantCode: 90002, wantError: "invalid_tenant",
			wantDesc: "AADSTS90002: Tenant 'fabrikam.com' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
		},
		{
			name: "unknown GUID at the US Government host", base: govURL, tenant: "9d8c7b6a-0000-4000-8000-000000000001", path: "/v2.0/.well-known/openid-configuration",
			wantStatus: 400, wantCode: 90002, wantError: "invalid_tenant",
			wantDesc: "AADSTS90002: Tenant '9d8c7b6a-0000-4000-8000-000000000001' not found.",
		},
		{
			name: "unknown domain, v1", base: f.srv.URL, tenant: "fabrikam.com", path: "/.well-known/openid-configuration",
			wantStatus: 400, wantCode: 90002, wantError: "invalid_tenant", wantDesc: "AADSTS90002: Tenant 'fabrikam.com' not found.",
		},
		{
			name: "neither a GUID nor a domain", base: f.srv.URL, tenant: "not_a_tenant", path: "/v2.0/.well-known/openid-configuration",
			wantStatus: 400, wantCode: 900023, wantError: "invalid_request",
			wantDesc: "AADSTS900023: Specified tenant identifier 'not_a_tenant' is neither a valid DNS name, nor a valid external domain.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.emu.DiscoveryRequests(tc.tenant)
			resp := f.getAt(t, tc.base, "/"+tc.tenant+tc.path)
			if resp.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tc.wantStatus, resp.body)
			}
			var body entraError
			if err := json.Unmarshal(resp.body, &body); err != nil {
				t.Fatalf("decoding %s: %v", resp.body, err)
			}
			if body.Error != tc.wantError || !slices.Equal(body.Codes, []int{tc.wantCode}) {
				t.Errorf("error = %q, error_codes = %v; want %q, [%d]", body.Error, body.Codes, tc.wantError, tc.wantCode)
			}
			if !strings.HasPrefix(body.Description, tc.wantDesc) {
				t.Errorf("error_description = %q, want it to start with %q", body.Description, tc.wantDesc)
			}
			if !guidRE.MatchString(body.TraceID) || !guidRE.MatchString(body.CorrelationID) || body.Timestamp != "2026-11-21 12:00:00Z" {
				t.Errorf("trace_id %q, correlation_id %q, timestamp %q", body.TraceID, body.CorrelationID, body.Timestamp)
			}
			if !strings.HasSuffix(body.Description, "\r\nTrace ID: "+body.TraceID+"\r\nCorrelation ID: "+body.CorrelationID+"\r\nTimestamp: 2026-11-21 12:00:00Z") {
				t.Errorf("error_description %q does not end with the IDs and the time", body.Description)
			}
			if got := f.emu.DiscoveryRequests(tc.tenant); got != before+1 {
				t.Errorf("DiscoveryRequests = %d, want %d", got, before+1)
			}
		})
	}
	if n := f.emu.TotalRequests(); n != 0 {
		t.Errorf("TotalRequests = %d after discovery only, want 0: discovery is not a token request", n)
	}
}

func TestAddDomainRefusesADomainOfAnotherTenant(t *testing.T) {
	f := newFixture(t)
	f.emu.AddDomain(tenantID, "contoso.com")
	f.emu.AddDomain(tenantID, "CONTOSO.com") // the same tenant again is fine
	defer func() {
		if recover() == nil {
			t.Error("AddDomain of a domain verified in another tenant did not panic")
		}
	}()
	f.emu.AddDomain(govTenant, "contoso.com")
}

func TestLoadConfigDomains(t *testing.T) {
	cfg, err := entraemu.ParseConfig([]byte("tenants:\n  - tenantID: " + govTenant + "\n    cloud: DoD\n    domains: [army.onmicrosoft.us]\n"))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	f := newFixture(t)
	f.emu.Load(cfg)
	resp := f.getAt(t, f.srv.URL, "/army.onmicrosoft.us/v2.0/.well-known/openid-configuration")
	var doc map[string]any
	if err := json.Unmarshal(resp.body, &doc); err != nil || resp.status != http.StatusOK {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	checkFields(t, doc, map[string]any{"issuer": usGovHost + "/" + govTenant + "/v2.0", "tenant_region_sub_scope": "DOD"})

	for _, bad := range []struct{ yaml, want string }{
		{"tenants:\n  - tenantID: " + tenantID + "\n    domains: [contoso]", `domains[0]: "contoso" is not a domain name`},
		{
			"tenants:\n  - tenantID: " + tenantID + "\n    domains: [contoso.com]\n  - tenantID: " + govTenant + "\n    domains: [Contoso.com]",
			`tenants[1].domains[0]: "Contoso.com" is already verified in tenants[0]`,
		},
	} {
		if _, err := entraemu.ParseConfig([]byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseConfig error = %v, want one containing %q", err, bad.want)
		}
	}
}
