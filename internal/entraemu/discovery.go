package entraemu

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// OpenID Connect discovery: GET /{tenant}/v2.0/.well-known/openid-configuration and
// its v1 form GET /{tenant}/.well-known/openid-configuration, where {tenant} is a
// tenant ID or a domain verified in the tenant (AddDomain).
//
// What the documents hold, and where each fact comes from:
//   - The v2 and v1 bodies of a commercial tenant, field for field and in Entra's
//     order, with the headers of the answer: recorded answers of
//     login.microsoftonline.com kept as test fixtures by Azure SDKs (2021, 2022),
//     and Microsoft's Azure Government identity page, which quotes a v1 body.
//   - tenant_region_scope and tenant_region_sub_scope per cloud: commercial "NA"
//     (or another region: EU, AS, OC, WW…), GCC "NA" + "GCC", GCC High "USGov" +
//     "DODCON", DoD "USGov" + "DOD", as CISA's ScubaGear reads them, and a GCC High
//     tenant's "USGov"/"DODCON" quoted in an issue on Microsoft's docs. The emulator
//     gives every commercial tenant "NA".
//   - That login.microsoftonline.com answers for a government tenant: Microsoft's
//     Azure Government identity page tells customers to find out whether a tenant
//     is a government one by asking login.microsoftonline.com, and Microsoft365DSC's
//     MSCloudLoginAssistant asks that host for every tenant and reads the cloud from
//     the answer's token_endpoint (login.microsoftonline.us for GCC High and DoD).
//
// Unconfirmed, and chosen from what the fields state:
//   - Whether login.microsoftonline.us answers for a commercial tenant. The emulator
//     answers the same document at every sign-in host, so that a client asking the
//     wrong one learns the tenant's cloud rather than nothing.
//   - For government tenants: the endpoints' host (the tenant's own sign-in host,
//     login.microsoftonline.us, as MSCloudLoginAssistant's fixtures show for
//     token_endpoint), cloud_graph_host_name "graph.microsoftazure.us", rbac_url
//     "https://pasff.usgovcloudapi.net", the userinfo endpoint on the cloud's Graph
//     host, and the v1 issuer on sts.windows.net (as the emulator's v1 tokens have).
//   - The headers and error_uri of the error body for an unknown tenant; the body
//     itself (400, invalid_tenant, AADSTS90002, the trace and correlation IDs and
//     the timestamp) is the one Entra's token and authorize endpoints answer with
//     and that OpenID clients quote from the discovery endpoint.

// cloudFacts are what a discovery document says about the tenant's cloud.
type cloudFacts struct {
	instanceName   string // cloud_instance_name
	regionScope    string // tenant_region_scope
	regionSubScope string // tenant_region_sub_scope; empty: the field is left out
	graphHost      string // msgraph_host
	aadGraphHost   string // cloud_graph_host_name, the retired Azure AD Graph
	rbacURL        string
}

func factsOf(c v1alpha1.Cloud) cloudFacts {
	commercial := cloudFacts{
		instanceName: "microsoftonline.com",
		regionScope:  "NA",
		graphHost:    "graph.microsoft.com",
		aadGraphHost: "graph.windows.net",
		rbacURL:      "https://pas.windows.net",
	}
	government := cloudFacts{
		instanceName: "microsoftonline.us",
		regionScope:  "USGov",
		graphHost:    "graph.microsoft.us",
		aadGraphHost: "graph.microsoftazure.us",
		rbacURL:      "https://pasff.usgovcloudapi.net",
	}
	switch c {
	case v1alpha1.CloudUSGov:
		commercial.regionSubScope = "GCC"
		return commercial
	case v1alpha1.CloudUSGovHigh:
		government.regionSubScope = "DODCON"
		return government
	case v1alpha1.CloudDoD:
		government.regionSubScope = "DOD"
		government.graphHost = "dod-graph.microsoft.us"
		return government
	default:
		return commercial
	}
}

// openIDConfigurationV2 is the v2 document, its fields in Entra's order.
type openIDConfigurationV2 struct {
	TokenEndpoint                     string   `json:"token_endpoint"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	JWKSURI                           string   `json:"jwks_uri"`
	ResponseModesSupported            []string `json:"response_modes_supported"`
	SubjectTypesSupported             []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported  []string `json:"id_token_signing_alg_values_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	ScopesSupported                   []string `json:"scopes_supported"`
	Issuer                            string   `json:"issuer"`
	RequestURIParameterSupported      bool     `json:"request_uri_parameter_supported"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	DeviceAuthorizationEndpoint       string   `json:"device_authorization_endpoint"`
	HTTPLogoutSupported               bool     `json:"http_logout_supported"`
	FrontchannelLogoutSupported       bool     `json:"frontchannel_logout_supported"`
	EndSessionEndpoint                string   `json:"end_session_endpoint"`
	ClaimsSupported                   []string `json:"claims_supported"`
	KerberosEndpoint                  string   `json:"kerberos_endpoint"`
	tenantFields
}

// openIDConfigurationV1 is the v1 document, its fields in Entra's order.
type openIDConfigurationV1 struct {
	TokenEndpoint                     string   `json:"token_endpoint"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	JWKSURI                           string   `json:"jwks_uri"`
	ResponseModesSupported            []string `json:"response_modes_supported"`
	SubjectTypesSupported             []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported  []string `json:"id_token_signing_alg_values_supported"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	ScopesSupported                   []string `json:"scopes_supported"`
	Issuer                            string   `json:"issuer"`
	MicrosoftMultiRefreshToken        bool     `json:"microsoft_multi_refresh_token"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	DeviceAuthorizationEndpoint       string   `json:"device_authorization_endpoint"`
	HTTPLogoutSupported               bool     `json:"http_logout_supported"`
	FrontchannelLogoutSupported       bool     `json:"frontchannel_logout_supported"`
	EndSessionEndpoint                string   `json:"end_session_endpoint"`
	ClaimsSupported                   []string `json:"claims_supported"`
	CheckSessionIframe                string   `json:"check_session_iframe"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint"`
	KerberosEndpoint                  string   `json:"kerberos_endpoint"`
	tenantFields
}

// tenantFields close both documents: Microsoft's extensions about the tenant and
// its cloud. An embedded struct's fields are encoded in place, so the order holds.
type tenantFields struct {
	TenantRegionScope    string `json:"tenant_region_scope"`
	TenantRegionSubScope string `json:"tenant_region_sub_scope,omitempty"`
	CloudInstanceName    string `json:"cloud_instance_name"`
	CloudGraphHostName   string `json:"cloud_graph_host_name"`
	MSGraphHost          string `json:"msgraph_host"`
	RBACURL              string `json:"rbac_url"`
}

var (
	authMethods   = []string{"client_secret_post", "private_key_jwt", "client_secret_basic"}
	responseModes = []string{"query", "fragment", "form_post"}
	v2Claims      = []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
		"msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver",
		"at_hash", "c_hash", "email"}
	v1Claims = []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
		"msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name", "family_name",
		"nickname"}
)

func documentV2(host, tenantID string, facts cloudFacts) openIDConfigurationV2 {
	base := host + "/" + tenantID
	return openIDConfigurationV2{
		TokenEndpoint:                     base + "/oauth2/v2.0/token",
		TokenEndpointAuthMethodsSupported: authMethods,
		JWKSURI:                           base + "/discovery/v2.0/keys",
		ResponseModesSupported:            responseModes,
		SubjectTypesSupported:             []string{"pairwise"},
		IDTokenSigningAlgValuesSupported:  []string{"RS256"},
		ResponseTypesSupported:            []string{"code", "id_token", "code id_token", "id_token token"},
		ScopesSupported:                   []string{"openid", "profile", "email", "offline_access"},
		Issuer:                            base + "/v2.0",
		UserinfoEndpoint:                  "https://" + facts.graphHost + "/oidc/userinfo",
		AuthorizationEndpoint:             base + "/oauth2/v2.0/authorize",
		DeviceAuthorizationEndpoint:       base + "/oauth2/v2.0/devicecode",
		HTTPLogoutSupported:               true,
		FrontchannelLogoutSupported:       true,
		EndSessionEndpoint:                base + "/oauth2/v2.0/logout",
		ClaimsSupported:                   v2Claims,
		KerberosEndpoint:                  base + "/kerberos",
		tenantFields:                      facts.fields(),
	}
}

func documentV1(host, tenantID string, facts cloudFacts) openIDConfigurationV1 {
	base := host + "/" + tenantID
	return openIDConfigurationV1{
		TokenEndpoint:                     base + "/oauth2/token",
		TokenEndpointAuthMethodsSupported: authMethods,
		JWKSURI:                           host + "/common/discovery/keys",
		ResponseModesSupported:            responseModes,
		SubjectTypesSupported:             []string{"pairwise"},
		IDTokenSigningAlgValuesSupported:  []string{"RS256"},
		ResponseTypesSupported:            []string{"code", "id_token", "code id_token", "token id_token", "token"},
		ScopesSupported:                   []string{"openid"},
		Issuer:                            "https://sts.windows.net/" + tenantID + "/",
		MicrosoftMultiRefreshToken:        true,
		AuthorizationEndpoint:             base + "/oauth2/authorize",
		DeviceAuthorizationEndpoint:       base + "/oauth2/devicecode",
		HTTPLogoutSupported:               true,
		FrontchannelLogoutSupported:       true,
		EndSessionEndpoint:                base + "/oauth2/logout",
		ClaimsSupported:                   v1Claims,
		CheckSessionIframe:                base + "/oauth2/checksession",
		UserinfoEndpoint:                  base + "/openid/userinfo",
		KerberosEndpoint:                  base + "/kerberos",
		tenantFields:                      facts.fields(),
	}
}

func (f cloudFacts) fields() tenantFields {
	return tenantFields{
		TenantRegionScope:    f.regionScope,
		TenantRegionSubScope: f.regionSubScope,
		CloudInstanceName:    f.instanceName,
		CloudGraphHostName:   f.aadGraphHost,
		MSGraphHost:          f.graphHost,
		RBACURL:              f.rbacURL,
	}
}

// AddDomain verifies domain in the tenant, adding the tenant if needed: discovery
// then answers for the domain with the tenant's document. A domain can be verified
// in one tenant only, in any cloud; verifying it in a second tenant, or a domain
// that is not a DNS name, panics, a programming error.
func (e *Emulator) AddDomain(tenantID, domain string) {
	name := strings.ToLower(domain)
	if !isDomainName(name) {
		panic(fmt.Sprintf("entraemu: %q is not a domain name", domain))
	}
	id := normalizeID(tenantID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if owner, ok := e.domains[name]; ok && owner != id {
		panic(fmt.Sprintf("entraemu: domain %q is already verified in tenant %s", domain, owner))
	}
	e.tenantLocked(id)
	e.domains[name] = id
}

// DiscoveryRequests returns the number of OpenID discovery requests, v1 and v2,
// that named tenantOrDomain in their path, whatever their answer.
func (e *Emulator) DiscoveryRequests(tenantOrDomain string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.discoveries[strings.ToLower(tenantOrDomain)]
}

// discoveryVersion tells the two discovery documents apart.
type discoveryVersion int

const (
	discoveryV1 discoveryVersion = iota + 1
	discoveryV2
)

// discoveryHandler serves one of the discovery documents at the sign-in host.
func (e *Emulator) discoveryHandler(host string, v discoveryVersion) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		segment := strings.ToLower(r.PathValue("tenant"))
		tenantID, c, fail := e.lookUpTenant(segment)
		if fail != nil {
			writeJSON(w, fail.Status, e.errorBody(host, *fail))
			return
		}
		// The endpoints are on the sign-in host of the tenant's cloud, whichever
		// host was asked.
		tenantHost := entra.AuthorityHost(c)
		facts := factsOf(c)
		h := w.Header()
		h.Set("Content-Type", jsonContentType)
		h.Set("Cache-Control", "max-age=86400, private")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		w.WriteHeader(http.StatusOK)
		var doc any = documentV2(tenantHost, tenantID, facts)
		if v == discoveryV1 {
			doc = documentV1(tenantHost, tenantID, facts)
		}
		_ = jsonEncode(w, doc) // a failed write means the client is gone
	}
}

// lookUpTenant counts a discovery request for the path segment and finds the
// tenant it names, by ID or by a verified domain.
func (e *Emulator) lookUpTenant(segment string) (tenantID string, c v1alpha1.Cloud, fail *Failure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.discoveries[segment]++
	switch {
	case isGUID(segment):
		tenantID = segment
	case isDomainName(segment):
		tenantID = e.domains[segment]
	default:
		return "", "", oauthError(http.StatusBadRequest, "invalid_request", 900023,
			"Specified tenant identifier '%s' is neither a valid DNS name, nor a valid external domain.", segment)
	}
	t, ok := e.tenants[tenantID]
	if !ok {
		return "", "", tenantNotFound(segment)
	}
	return tenantID, t.cloud, nil
}

// tenantNotFound is Entra's answer for a tenant ID or domain it does not know.
func tenantNotFound(tenant string) *Failure {
	return oauthError(http.StatusBadRequest, "invalid_tenant", 90002,
		"Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. "+
			"Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", tenant)
}
