package entraemu_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

const (
	graphAPI      = "https://graph.microsoft.com"
	graphScope    = graphAPI + "/.default"
	newCustomerID = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
)

// openConsentLink follows nothing: it returns the emulator's answer to the link, as
// the operator builds it for status.adminConsentURL.
func (f *fixture) openConsentLink(t *testing.T, tenant, resource, redirectURI string) response {
	t.Helper()
	link := entra.AdminConsentURL(f.srv.URL, tenant, clientID, resource, redirectURI) + "&state=back-to-step-3"
	req, err := http.NewRequest(http.MethodGet, link, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := *f.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	return response{status: resp.StatusCode, header: resp.Header}
}

// An admin who opens the operator's consent link grants the app what its
// registration requests on that resource, and is sent back to the redirect URI
// with Entra ID's answer parameters.
func TestAdminConsentLinkGrantsTheRequestedPermissions(t *testing.T) {
	f := newFixture(t)
	f.emu.AddTenant(newCustomerID)
	f.emu.SetAppPermissions(clientID, graphAPI, "SecurityIncident.Read.All", "ThreatHunting.Read.All")

	before := f.post(t, v2Path(newCustomerID), creds("scope", graphScope))
	assertEntraError(t, before, "invalid_client", 7000229)

	resp := f.openConsentLink(t, newCustomerID, graphAPI, "https://portal.azure.com/done")
	if resp.status != http.StatusFound {
		t.Fatalf("status %d, want 302", resp.status)
	}
	to, err := url.Parse(resp.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if to.Host != "portal.azure.com" || to.Path != "/done" {
		t.Errorf("redirected to %s, want https://portal.azure.com/done", to)
	}
	want := url.Values{"admin_consent": {"True"}, "tenant": {newCustomerID}, "scope": {graphScope}, "state": {"back-to-step-3"}}
	for k, v := range want {
		if got := to.Query()[k]; !slices.Equal(got, v) {
			t.Errorf("redirect %s = %v, want %v", k, got, v)
		}
	}

	_, claims, _ := f.verify(t, f.token(t, v2Path(newCustomerID), creds("scope", graphScope)))
	if w := []string{"SecurityIncident.Read.All", "ThreatHunting.Read.All"}; !slices.Equal(claims.Roles, w) {
		t.Errorf("roles after consent %v, want %v", claims.Roles, w)
	}
}

// Consenting again after the registration asks for more grants the new set, as a
// customer does when the partner adds a permission.
func TestAdminConsentAgainReplacesTheGrant(t *testing.T) {
	f := newFixture(t)
	f.emu.Grant(newCustomerID, clientID, graphAPI, "SecurityIncident.Read.All")
	f.emu.SetAppPermissions(clientID, graphAPI, "SecurityIncident.Read.All", "SecurityAlert.Read.All")
	if resp := f.openConsentLink(t, newCustomerID, graphAPI, "https://portal.azure.com"); resp.status != http.StatusFound {
		t.Fatalf("status %d, want 302", resp.status)
	}
	_, claims, _ := f.verify(t, f.token(t, v2Path(newCustomerID), creds("scope", graphScope)))
	// Entra ID lists roles in no documented order.
	if w := []string{"SecurityAlert.Read.All", "SecurityIncident.Read.All"}; !slices.Equal(slices.Sorted(slices.Values(claims.Roles)), w) {
		t.Errorf("roles %v, want %v", claims.Roles, w)
	}
}

func TestAdminConsentRefusals(t *testing.T) {
	f := newFixture(t)
	f.emu.AddTenant(newCustomerID)
	f.emu.SetAppPermissions(clientID, graphAPI, "SecurityIncident.Read.All")

	t.Run("unknown tenant", func(t *testing.T) {
		assertEntraError(t, f.openConsentGet(t, "/00000000-0000-0000-0000-00000000beef/v2.0/adminconsent?client_id="+clientID+"&scope="+url.QueryEscape(graphScope)), "invalid_tenant", 90002)
	})
	t.Run("resource the registration does not request", func(t *testing.T) {
		assertEntraError(t, f.openConsentGet(t, "/"+newCustomerID+"/v2.0/adminconsent?client_id="+clientID+"&scope="+url.QueryEscape(xdrScope)+"&redirect_uri=https://portal.azure.com"), "invalid_client", 650057)
	})
	t.Run("no redirect URI: consent recorded, AADSTS500113 shown", func(t *testing.T) {
		assertEntraError(t, f.openConsentGet(t, "/"+newCustomerID+"/v2.0/adminconsent?client_id="+clientID+"&scope="+url.QueryEscape(graphScope)), "invalid_request", 500113)
		f.token(t, v2Path(newCustomerID), creds("scope", graphScope))
	})
	t.Run("missing client_id", func(t *testing.T) {
		assertEntraError(t, f.openConsentGet(t, "/"+newCustomerID+"/v2.0/adminconsent?scope="+url.QueryEscape(graphScope)), "invalid_request", 900144)
	})
}

func (f *fixture) openConsentGet(t *testing.T, path string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.do(t, req)
}
