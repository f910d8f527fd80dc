package entraemu_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	publicHost = "https://login.microsoftonline.com"
	usGovHost  = "https://login.microsoftonline.us"
	// govTenant lives in GCC High in the tests of clouds.
	govTenant  = "4c8e2a1f-7b3d-4e9a-8f1c-2d5b6a7e9c03"
	govXDRAPI  = "https://api-gov.security.microsoft.us"
	crossCloud = "Confidential Client is not supported in Cross Cloud request."
)

// cloudFixture is the fixture plus a GCC High tenant consented to the same app, and
// a server answering as login.microsoftonline.us.
func cloudFixture(t *testing.T) (f *fixture, govURL string) {
	t.Helper()
	f = newFixture(t)
	f.emu.SetCloud(govTenant, v1alpha1.CloudUSGovHigh)
	f.emu.Grant(govTenant, clientID, govXDRAPI, "Incident.Read.All")
	return f, f.serve(t, f.emu.Cloud(v1alpha1.CloudUSGovHigh))
}

func TestEachCloudServesOnlyItsOwnTenants(t *testing.T) {
	tests := []struct {
		name     string
		atGov    bool // ask login.microsoftonline.us rather than .com
		path     string
		form     url.Values
		wantCode int // 0: a token
	}{
		{name: "Public tenant at the Public host", path: v2Path(tenantID), form: creds("scope", xdrScope)},
		{name: "GCC High tenant at the US Government host", atGov: true, path: v2Path(govTenant), form: creds("scope", govXDRAPI+"/.default")},
		{name: "GCC High tenant at the Public host", path: v2Path(govTenant), form: creds("scope", govXDRAPI+"/.default"), wantCode: 900382},
		{name: "Public tenant at the US Government host", atGov: true, path: v2Path(tenantID), form: creds("scope", xdrScope), wantCode: 900382},
		{name: "GCC High tenant at the Public v1 endpoint", path: "/" + govTenant + "/oauth2/token", form: creds("resource", govXDRAPI), wantCode: 900382},
		{name: "Public tenant at the US Government v1 endpoint", atGov: true, path: v1TokenPath, form: creds("resource", xdrAPI), wantCode: 900382},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, govURL := cloudFixture(t)
			base, host := f.srv.URL, publicHost
			if tc.atGov {
				base, host = govURL, usGovHost
			}
			resp := f.postAt(t, base, tc.path, tc.form)
			if tc.wantCode == 0 {
				if resp.status != http.StatusOK {
					t.Fatalf("status = %d, body %s; want a token", resp.status, resp.body)
				}
				return
			}
			if resp.status != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", resp.status)
			}
			got := assertEntraErrorFrom(t, host, resp, "invalid_request", tc.wantCode)
			if !strings.HasPrefix(got.Description, "AADSTS900382: "+crossCloud+"\r\n") {
				t.Errorf("error_description = %q, want the text %q", got.Description, crossCloud)
			}
		})
	}
}

func TestCloudsSharingASignInHostShareItsHandler(t *testing.T) {
	const (
		gccTenant = "5d9f3b2a-8c4e-4fab-9a2d-3e6c7b8f0d14"
		dodTenant = "6eaf4c3b-9d5f-4abc-8b3e-4f7d8c9a1e25"
	)
	tests := []struct {
		name    string
		tenant  string
		cloud   v1alpha1.Cloud
		handler v1alpha1.Cloud
		wantOK  bool
	}{
		{name: "USGov tenant at the Emulator", tenant: gccTenant, cloud: v1alpha1.CloudUSGov, wantOK: true},
		{name: "USGov tenant at the USGov handler", tenant: gccTenant, cloud: v1alpha1.CloudUSGov, handler: v1alpha1.CloudUSGov, wantOK: true},
		{name: "Public tenant at the USGov handler", tenant: tenantID, handler: v1alpha1.CloudUSGov, wantOK: true},
		{name: "DoD tenant at the USGovHigh handler", tenant: dodTenant, cloud: v1alpha1.CloudDoD, handler: v1alpha1.CloudUSGovHigh, wantOK: true},
		{name: "USGovHigh tenant at the DoD handler", tenant: govTenant, cloud: v1alpha1.CloudUSGovHigh, handler: v1alpha1.CloudDoD, wantOK: true},
		{name: "DoD tenant at the Emulator", tenant: dodTenant, cloud: v1alpha1.CloudDoD},
		{name: "USGov tenant at the DoD handler", tenant: gccTenant, cloud: v1alpha1.CloudUSGov, handler: v1alpha1.CloudDoD},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.cloud != "" {
				f.emu.SetCloud(tc.tenant, tc.cloud)
			}
			f.emu.Grant(tc.tenant, clientID, xdrAPI)
			base := f.srv.URL
			if tc.handler != "" {
				base = f.serve(t, f.emu.Cloud(tc.handler))
			}
			resp := f.postAt(t, base, v2Path(tc.tenant), creds("scope", xdrScope))
			if got := resp.status == http.StatusOK; got != tc.wantOK {
				t.Errorf("status = %d, body %s; want a token: %v", resp.status, resp.body, tc.wantOK)
			}
		})
	}
}

func TestIssuerFollowsTheTenantsCloud(t *testing.T) {
	tests := []struct {
		name    string
		cloud   v1alpha1.Cloud
		version string
		wantIss string
	}{
		{name: "v2 token in Public", cloud: v1alpha1.CloudPublic, version: entraemu.TokenV2, wantIss: publicHost + "/" + govTenant + "/v2.0"},
		{name: "v2 token in USGov", cloud: v1alpha1.CloudUSGov, version: entraemu.TokenV2, wantIss: publicHost + "/" + govTenant + "/v2.0"},
		{name: "v2 token in USGovHigh", cloud: v1alpha1.CloudUSGovHigh, version: entraemu.TokenV2, wantIss: usGovHost + "/" + govTenant + "/v2.0"},
		{name: "v2 token in DoD", cloud: v1alpha1.CloudDoD, version: entraemu.TokenV2, wantIss: usGovHost + "/" + govTenant + "/v2.0"},
		{name: "v1 token in USGovHigh names sts.windows.net", cloud: v1alpha1.CloudUSGovHigh, version: entraemu.TokenV1, wantIss: "https://sts.windows.net/" + govTenant + "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.emu.SetCloud(govTenant, tc.cloud)
			f.emu.SetTokenVersion(govTenant, tc.version)
			f.emu.Grant(govTenant, clientID, govXDRAPI, "Incident.Read.All")
			base := f.serve(t, f.emu.Cloud(tc.cloud))

			_, c, _ := f.verify(t, f.tokenAt(t, base, v2Path(govTenant), creds("scope", govXDRAPI+"/.default")))
			if c.Iss != tc.wantIss || c.Idp != tc.wantIss {
				t.Errorf("iss = %q, idp = %q; want %q", c.Iss, c.Idp, tc.wantIss)
			}
		})
	}
}

func TestV2AudienceIsTheResourcesApplicationID(t *testing.T) {
	const (
		xdrApp      = "8ee8fdad-f234-4243-8f3b-15c294843740"
		endpointApp = "fc780465-2017-40d4-a0c5-307022471b92"
		graphApp    = "00000003-0000-0000-c000-000000000000"
	)
	tests := []struct {
		resource string
		want     string
	}{
		{resource: "https://api.security.microsoft.com", want: xdrApp},
		{resource: "https://api-gcc.security.microsoft.us", want: xdrApp},
		{resource: "https://api-gov.security.microsoft.us", want: xdrApp},
		{resource: "https://api.securitycenter.microsoft.com", want: endpointApp},
		{resource: "https://api-gcc.securitycenter.microsoft.us", want: endpointApp},
		{resource: "https://api-gov.securitycenter.microsoft.us", want: endpointApp},
		{resource: "https://securitycenter.onmicrosoft.com/windowsatpservice", want: endpointApp},
		{resource: "https://graph.microsoft.com", want: graphApp},
		{resource: "https://graph.microsoft.us", want: graphApp},
		{resource: "https://dod-graph.microsoft.us", want: graphApp},
		{resource: "https://Graph.Microsoft.com/", want: graphApp},
	}
	for _, tc := range tests {
		t.Run(tc.resource, func(t *testing.T) {
			f := newFixture(t)
			f.emu.SetTokenVersion(tenantID, entraemu.TokenV2)
			_, c, _ := f.verify(t, f.token(t, v2Path(tenantID), creds("scope", strings.TrimSuffix(tc.resource, "/")+"/.default")))
			if c.Aud != tc.want {
				t.Errorf("aud = %q, want %q", c.Aud, tc.want)
			}
		})
	}
}

func TestV2AudienceOfAnUnknownResourceIsStable(t *testing.T) {
	const (
		apiA = "https://api.contoso.example"
		apiB = "https://api.fabrikam.example"
	)
	f := newFixture(t)
	f.emu.SetTokenVersion(tenantID, entraemu.TokenV2)
	f.emu.AddResource(apiA)
	f.emu.AddResource(apiB)
	aud := func(resource string) string {
		_, c, _ := f.verify(t, f.token(t, v2Path(tenantID), creds("scope", resource+"/.default")))
		return c.Aud
	}

	first, again, other := aud(apiA), aud(apiA), aud(apiB)
	if !guidRE.MatchString(first) || first != again {
		t.Errorf("aud = %q, then %q; want the same GUID", first, again)
	}
	if first == other {
		t.Errorf("two resources share the aud %q", first)
	}
}

func TestTenantWithoutTheResourcesServicePrincipal(t *testing.T) {
	const (
		unlicensed  = "7fb05d4c-ae60-4bcd-9c4f-5a8e9dab2f36"
		endpointAPI = "https://api.securitycenter.microsoft.com"
	)
	f := newFixture(t)
	f.emu.Grant(unlicensed, clientID, xdrAPI, "Incident.Read.All")
	f.emu.Grant(unlicensed, clientID, endpointAPI, "Alert.Read.All")
	f.emu.RemoveResource(unlicensed, "HTTPS://API.SECURITY.MICROSOFT.COM/") // matched as Entra matches App ID URIs

	t.Run("the tenant gets 500011", func(t *testing.T) {
		resp := f.post(t, v2Path(unlicensed), creds("scope", xdrScope))
		if resp.status != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", resp.status)
		}
		got := assertEntraError(t, resp, "invalid_resource", 500011)
		want := "AADSTS500011: The resource principal named " + xdrAPI + " was not found in the tenant named " + unlicensed + ". " +
			"This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. " +
			"You might have sent your authentication request to the wrong tenant.\r\n"
		if !strings.HasPrefix(got.Description, want) {
			t.Errorf("error_description = %q, want the prefix %q", got.Description, want)
		}
	})
	t.Run("the tenant still gets its other resources", func(t *testing.T) {
		_, c, _ := f.verify(t, f.token(t, v2Path(unlicensed), creds("scope", endpointAPI+"/.default")))
		if !slices.Equal(c.Roles, []string{"Alert.Read.All"}) {
			t.Errorf("roles = %v, want [Alert.Read.All]", c.Roles)
		}
	})
	t.Run("other tenants of the same app still get the resource", func(t *testing.T) {
		f.token(t, v2Path(tenantID), creds("scope", xdrScope))
	})
	t.Run("restoring the resource brings the grant back", func(t *testing.T) {
		f.emu.RestoreResource(unlicensed, xdrAPI)
		_, c, _ := f.verify(t, f.token(t, v2Path(unlicensed), creds("scope", xdrScope)))
		if !slices.Equal(c.Roles, []string{"Incident.Read.All"}) {
			t.Errorf("roles = %v, want [Incident.Read.All]", c.Roles)
		}
	})
}

func TestUnknownCloudsPanic(t *testing.T) {
	f := newFixture(t)
	for name, call := range map[string]func(){
		"Cloud":    func() { f.emu.Cloud("AzureChina") },
		"SetCloud": func() { f.emu.SetCloud(tenantID, "AzureChina") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s(\"AzureChina\") did not panic", name)
				}
			}()
			call()
		})
	}
}
