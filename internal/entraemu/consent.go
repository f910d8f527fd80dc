package entraemu

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// SetAppPermissions sets the application permissions that the app registration
// requests on resource (its requiredResourceAccess, "API permissions" in the
// portal), registering the app if needed. Admin consent through the consent
// endpoint grants exactly these; nothing is granted until an admin consents.
func (e *Emulator) SetAppPermissions(clientID, resource string, roles ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appLocked(clientID)
	if a.permissions == nil {
		a.permissions = map[string][]string{}
	}
	a.permissions[e.addResourceLocked(resource)] = slices.Clone(roles)
}

// serveAdminConsent answers GET /{tenant}/v2.0/adminconsent, the link in a
// DefenderTenant's status.adminConsentURL. Entra ID first has the tenant's admin
// sign in and approve on an interactive page; the emulator has no browser, so
// opening the link stands for an admin who approved. As with a static scope
// ({resource}/.default) in Entra ID, the app's service principal is created in the
// tenant and given every application permission the app registration requests on
// each resource in scope (SetAppPermissions), replacing earlier grants there.
//
// Entra ID then redirects to redirect_uri with admin_consent=True, tenant, scope and
// state, as Microsoft's "Admin consent on the Microsoft identity platform" page
// shows. Without a redirect_uri, Entra ID records the consent and shows the admin
// AADSTS500113 (no reply address); the emulator answers that in a JSON error body,
// where Entra ID shows an HTML page: the interactive pages are not emulated.
func (e *Emulator) serveAdminConsent(host string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenantID := normalizeID(r.PathValue("tenant"))
		q := r.URL.Query()
		clientID := normalizeID(q.Get("client_id"))
		if clientID == "" {
			e.writeFailure(w, host, tenantID, *missingParameter("client_id"))
			return
		}
		scope := q.Get("scope")
		if scope == "" {
			e.writeFailure(w, host, tenantID, *missingParameter("scope"))
			return
		}
		if fail := e.consent(host, tenantID, clientID, strings.Fields(scope)); fail != nil {
			e.writeFailure(w, host, tenantID, *fail)
			return
		}
		redirect := q.Get("redirect_uri")
		if redirect == "" {
			e.writeFailure(w, host, tenantID, *oauthError(http.StatusBadRequest, "invalid_request", 500113,
				"No reply address is registered for the application."))
			return
		}
		to, err := url.Parse(redirect)
		if err != nil {
			e.writeFailure(w, host, tenantID, *oauthError(http.StatusBadRequest, "invalid_request", 50011,
				"The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'.", redirect, clientID))
			return
		}
		back := to.Query()
		back.Set("admin_consent", "True")
		back.Set("tenant", tenantID)
		back.Set("scope", scope)
		if state := q.Get("state"); state != "" {
			back.Set("state", state)
		}
		to.RawQuery = back.Encode()
		http.Redirect(w, r, to.String(), http.StatusFound)
	}
}

// consent grants the app's requested permissions on each {resource}/.default scope
// in the tenant, in the order Entra ID would refuse the request.
func (e *Emulator) consent(host, tenantID, clientID string, scopes []string) *Failure {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tenants[tenantID]
	if !ok {
		return oauthError(http.StatusBadRequest, "invalid_tenant", 90002,
			"Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. "+
				"Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", tenantID)
	}
	if entra.AuthorityHost(t.cloud) != host {
		return crossCloud()
	}
	a, ok := e.apps[clientID]
	if !ok {
		return oauthError(http.StatusBadRequest, "unauthorized_client", 700016,
			"Application with identifier '%s' was not found in the directory '%s'.", clientID, tenantID)
	}
	resources := make([]string, 0, len(scopes))
	for _, s := range scopes {
		resource, ok := strings.CutSuffix(s, "/.default")
		if !ok {
			continue // delegated scopes such as openid grant no application permission
		}
		known, ok := e.resources[resourceKey(resource)]
		if !ok || t.missing[resourceKey(resource)] {
			return oauthError(http.StatusBadRequest, "invalid_resource", 500011,
				"The resource principal named %s was not found in the tenant named %s. "+
					"This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. "+
					"You might have sent your authentication request to the wrong tenant.", resource, tenantID)
		}
		if _, requested := a.permissions[resourceKey(resource)]; !requested {
			return oauthError(http.StatusBadRequest, "invalid_client", 650057,
				"Invalid resource. The client has requested access to a resource which is not listed in the requested permissions in the client's application registration. "+
					"Client app ID: %s. Resource value from request: %s.", clientID, resource)
		}
		resources = append(resources, known)
	}
	if t.principals[clientID] == nil {
		t.principals[clientID] = map[string][]string{}
	}
	for _, r := range resources {
		t.principals[clientID][resourceKey(r)] = slices.Clone(a.permissions[resourceKey(r)])
	}
	return nil
}
