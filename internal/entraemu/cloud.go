package entraemu

import (
	"fmt"
	"net/http"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Cloud returns the handler that answers as the sign-in host of cloud c
// (entra.AuthorityHost): the Emulator itself for Public and USGov, which share
// login.microsoftonline.com, and one handler for USGovHigh and DoD, which share
// login.microsoftonline.us. All of them serve the same apps and tenants, so that a
// test can start one server per sign-in host and watch a tenant of one cloud asked
// at another. It panics on a cloud entra does not know, a programming error.
func (e *Emulator) Cloud(c v1alpha1.Cloud) http.Handler {
	return e.hosts[mustAuthorityHost(c)]
}

// SetCloud moves the tenant to cloud c; tenants are in Public until then. A token
// request for the tenant at the sign-in host of a cloud it is not in gets
// AADSTS900382, as Entra answers a confidential client asking across clouds. It
// panics on a cloud entra does not know, a programming error.
func (e *Emulator) SetCloud(tenantID string, c v1alpha1.Cloud) {
	mustAuthorityHost(c)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantLocked(tenantID).cloud = c
}

func mustAuthorityHost(c v1alpha1.Cloud) string {
	host := entra.AuthorityHost(c)
	if host == "" {
		panic(fmt.Sprintf("entraemu: unknown cloud %q", c))
	}
	return host
}

// crossCloud is Entra's answer to a confidential client asking one sign-in host for
// a tenant of a cloud behind another; the CrossCloud preset injects the same body.
func crossCloud() *Failure {
	f := CrossCloud()
	return &f
}

// Application IDs of the first-party resources, what Entra puts in the aud of a v2
// token. Each resource has one application in every cloud, whatever App ID URI the
// cloud gives it.
const (
	appIDDefenderXDR      = "8ee8fdad-f234-4243-8f3b-15c294843740" // Microsoft Threat Protection
	appIDDefenderEndpoint = "fc780465-2017-40d4-a0c5-307022471b92" // WindowsDefenderATP
	appIDGraph            = "00000003-0000-0000-c000-000000000000" // Microsoft Graph
)

// resourceAppIDs maps the resourceKey of the first-party App ID URIs to their
// application IDs.
var resourceAppIDs = map[string]string{
	resourceKey("https://api.security.microsoft.com"):                       appIDDefenderXDR,
	resourceKey("https://api-gcc.security.microsoft.us"):                    appIDDefenderXDR,
	resourceKey("https://api-gov.security.microsoft.us"):                    appIDDefenderXDR,
	resourceKey("https://api.securitycenter.microsoft.com"):                 appIDDefenderEndpoint,
	resourceKey("https://api-gcc.securitycenter.microsoft.us"):              appIDDefenderEndpoint,
	resourceKey("https://api-gov.securitycenter.microsoft.us"):              appIDDefenderEndpoint,
	resourceKey("https://securitycenter.onmicrosoft.com/windowsatpservice"): appIDDefenderEndpoint,
	resourceKey("https://graph.microsoft.com"):                              appIDGraph,
	resourceKey("https://graph.microsoft.us"):                               appIDGraph,
	resourceKey("https://dod-graph.microsoft.us"):                           appIDGraph,
}

// resourceAppID returns the application ID of the resource: the real one for the
// first-party resources, else a GUID that stays the same for the resource.
func resourceAppID(resource string) string {
	k := resourceKey(resource)
	if id, ok := resourceAppIDs[k]; ok {
		return id
	}
	return stableGUID("resource", k)
}
