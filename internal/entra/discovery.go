package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// TenantDiscovery is what Entra ID's OpenID discovery document says about a tenant.
// Every string in it has been checked against the shape its field must have, so
// that nothing a hostile or broken endpoint sends is passed on unchecked; only
// TenantID and Cloud are meant for conditions and messages.
type TenantDiscovery struct {
	// TenantID is the tenant's GUID, in lower case, read from the issuer.
	TenantID string
	// Cloud is the cloud the fields place the tenant in (see DiscoveredCloud), or
	// "" when they name none this operator serves, such as China's.
	Cloud v1alpha1.Cloud
	// CloudInstanceName is cloud_instance_name, such as microsoftonline.us.
	CloudInstanceName string
	// RegionScope is tenant_region_scope, such as NA, EU or USGov.
	RegionScope string
	// RegionSubScope is tenant_region_sub_scope (GCC, DODCON, DOD), empty for most
	// tenants, which have none.
	RegionSubScope string
	// GraphHost is msgraph_host, the tenant's Microsoft Graph host, such as
	// graph.microsoft.us.
	GraphHost string
}

// ErrInvalidTenantOrDomain is wrapped by DiscoverTenant's error for an argument that
// is neither a GUID nor a domain name; no request is sent then.
var ErrInvalidTenantOrDomain = errors.New("neither a tenant ID (GUID) nor a domain name")

// TenantNotFoundError is Entra ID's answer that it knows no tenant of that ID or
// domain (AADSTS90002) at the sign-in host asked.
type TenantNotFoundError struct {
	// TenantOrDomain is the tenant ID or domain as it was asked for.
	TenantOrDomain string
	// TraceID and CorrelationID are the error body's, when they are GUIDs.
	TraceID       string
	CorrelationID string
}

func (e *TenantNotFoundError) Error() string {
	return fmt.Sprintf("Entra ID knows no tenant %q (AADSTS90002)", e.TenantOrDomain)
}

// schemeHTTPS is the only scheme an issuer of Entra ID has.
const schemeHTTPS = "https"

// maxDiscoveryBody bounds the discovery document read: Entra's is under 2 KiB.
const maxDiscoveryBody = 64 << 10

// discoveryTimeout bounds a discovery request whose context has no deadline.
const discoveryTimeout = 30 * time.Second

// DiscoveryURL is the v2 OpenID discovery document of a tenant ID or domain under
// authorityHost: {authorityHost}/{tenantOrDomain}/v2.0/.well-known/openid-configuration.
func DiscoveryURL(authorityHost, tenantOrDomain string) string {
	return tenantURL(authorityHost, tenantOrDomain) + "/v2.0/.well-known/openid-configuration"
}

// DiscoverTenant asks authorityHost (a sign-in host, as ParseAuthorityHost returns
// it) for the OpenID discovery document of tenantOrDomain, a tenant ID or a domain
// verified in the tenant, and returns what it says about the tenant.
//
// Its errors: ErrInvalidTenantOrDomain (wrapped) for an argument that is neither a
// GUID nor a domain name, sent nowhere; *TenantNotFoundError when Entra ID does not
// know the tenant; anything else for a transport failure, another HTTP status, or
// a document that does not hold what it must (an issuer naming a tenant GUID, the
// same GUID that was asked for). httpClient nil means the package's shared client;
// redirects are never followed, and at most 64 KiB of the answer is read.
func DiscoverTenant(ctx context.Context, httpClient *http.Client, authorityHost, tenantOrDomain string) (TenantDiscovery, error) {
	asked := strings.ToLower(tenantOrDomain)
	if !isGUID(asked) && !isDomainName(asked) {
		return TenantDiscovery{}, fmt.Errorf("OpenID discovery: %q is %w", tenantOrDomain, ErrInvalidTenantOrDomain)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, discoveryTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, DiscoveryURL(authorityHost, asked), nil)
	if err != nil {
		return TenantDiscovery{}, fmt.Errorf("OpenID discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	hc := defaultHTTPClient()
	if httpClient != nil {
		copied := *httpClient
		copied.CheckRedirect = refuseRedirect
		hc = &copied
	}
	resp, err := hc.Do(req)
	if err != nil {
		return TenantDiscovery{}, fmt.Errorf("OpenID discovery: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // nothing left to read that matters
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBody+1))
	if err != nil {
		return TenantDiscovery{}, fmt.Errorf("OpenID discovery: reading the answer: %w", err)
	}
	if len(body) > maxDiscoveryBody {
		return TenantDiscovery{}, fmt.Errorf("OpenID discovery: the answer is over %d bytes", maxDiscoveryBody)
	}
	if resp.StatusCode != http.StatusOK {
		if nf := notFound(resp.StatusCode, body, tenantOrDomain); nf != nil {
			return TenantDiscovery{}, nf
		}
		return TenantDiscovery{}, fmt.Errorf("OpenID discovery: HTTP %d", resp.StatusCode)
	}
	return parseDiscovery(body, asked)
}

// notFound reads an error body that says the tenant does not exist; nil for any
// other answer.
func notFound(status int, body []byte, asked string) *TenantNotFoundError {
	if status != http.StatusBadRequest {
		return nil
	}
	var e struct {
		Error         string `json:"error"`
		Codes         []int  `json:"error_codes"`
		TraceID       string `json:"trace_id"`
		CorrelationID string `json:"correlation_id"`
	}
	if json.Unmarshal(body, &e) != nil || !slices.Contains(e.Codes, 90002) && e.Error != "invalid_tenant" {
		return nil
	}
	nf := &TenantNotFoundError{TenantOrDomain: asked}
	if isGUID(e.TraceID) {
		nf.TraceID = e.TraceID
	}
	if isGUID(e.CorrelationID) {
		nf.CorrelationID = e.CorrelationID
	}
	return nf
}

// parseDiscovery reads a discovery document asked for by asked (lower case).
func parseDiscovery(body []byte, asked string) (TenantDiscovery, error) {
	var doc struct {
		Issuer            string `json:"issuer"`
		CloudInstanceName string `json:"cloud_instance_name"`
		RegionScope       string `json:"tenant_region_scope"`
		RegionSubScope    string `json:"tenant_region_sub_scope"`
		GraphHost         string `json:"msgraph_host"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return TenantDiscovery{}, errors.New("OpenID discovery: the answer is not a discovery document")
	}
	tenantID, ok := issuerTenant(doc.Issuer)
	if !ok {
		return TenantDiscovery{}, errors.New("OpenID discovery: the document's issuer names no tenant ID")
	}
	if isGUID(asked) && tenantID != asked {
		return TenantDiscovery{}, errors.New("OpenID discovery: the document is for another tenant than the one asked for")
	}
	d := TenantDiscovery{
		TenantID:          tenantID,
		CloudInstanceName: hostOrEmpty(doc.CloudInstanceName),
		RegionScope:       scopeOrEmpty(doc.RegionScope),
		RegionSubScope:    scopeOrEmpty(doc.RegionSubScope),
		GraphHost:         hostOrEmpty(doc.GraphHost),
	}
	d.Cloud = DiscoveredCloud(d.CloudInstanceName, d.RegionScope, d.RegionSubScope)
	return d, nil
}

// issuerTenant reads the tenant GUID from a v2 issuer,
// https://{sign-in host}/{tenant ID}/v2.0 (or a v1 one, https://sts.windows.net/{tenant ID}/).
func issuerTenant(issuer string) (string, bool) {
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != schemeHTTPS || u.Host == "" {
		return "", false
	}
	segments := strings.Split(strings.Trim(u.Path, "/"), "/")
	switch {
	case len(segments) == 2 && segments[1] == "v2.0", len(segments) == 1:
	default:
		return "", false
	}
	id := strings.ToLower(segments[0])
	return id, isGUID(id)
}

// DiscoveredCloud is the cloud a discovery document's fields place a tenant in,
// the first rule that applies deciding:
//
//   - tenant_region_sub_scope DOD: DoD; DODCON: USGovHigh (GCC High); GCC: USGov
//     (GCC, which signs in at the commercial host).
//   - tenant_region_scope USGov or USG (an Azure Government tenant without a sub
//     scope): USGovHigh, the cloud whose sign-in host (login.microsoftonline.us)
//     and Graph host (graph.microsoft.us) such a tenant uses.
//   - cloud_instance_name microsoftonline.com: Public; microsoftonline.us: USGovHigh.
//   - otherwise "": a cloud this operator does not serve (such as China's,
//     partner.microsoftonline.cn) or a document that does not say.
//
// Values are compared without regard to case. The sub scopes and scopes are those
// CISA's ScubaGear and Microsoft's Azure Government pages name; which values
// every sovereign tenant type returns is not documented by Microsoft.
func DiscoveredCloud(cloudInstanceName, regionScope, regionSubScope string) v1alpha1.Cloud {
	switch strings.ToUpper(regionSubScope) {
	case "DOD":
		return v1alpha1.CloudDoD
	case "DODCON":
		return v1alpha1.CloudUSGovHigh
	case "GCC":
		return v1alpha1.CloudUSGov
	}
	switch strings.ToUpper(regionScope) {
	case "USGOV", "USG":
		return v1alpha1.CloudUSGovHigh
	}
	switch strings.ToLower(cloudInstanceName) {
	case "microsoftonline.com":
		return v1alpha1.CloudPublic
	case "microsoftonline.us":
		return v1alpha1.CloudUSGovHigh
	}
	return ""
}

var scopeRE = regexp.MustCompile(`^[A-Za-z0-9]{1,16}$`)

func scopeOrEmpty(s string) string {
	if scopeRE.MatchString(s) {
		return s
	}
	return ""
}

func hostOrEmpty(s string) string {
	if isDomainName(strings.ToLower(s)) {
		return strings.ToLower(s)
	}
	return ""
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 hexadecimal form.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// isDomainName reports whether s, in lower case, is a DNS name of at least two
// labels of letters, digits and hyphens, as a verified domain is: nothing that
// could reach another path or host once in a URL (no '/', '?', '%', '.' label).
func isDomainName(s string) bool {
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}
