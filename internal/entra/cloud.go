// Package entra requests app-only access tokens from Microsoft Entra ID with the
// OAuth2 client-credentials grant, and turns every way that can fail into one of
// the contract's condition reasons (see Classify).
//
// It knows nothing about Kubernetes: the controller hands it a Request and gets a
// Token or a *Failure back.
package entra

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Authority hosts and default resources of the clouds, from the cloud table of the
// API contract.
const (
	authorityPublic = "https://login.microsoftonline.com"
	authorityUSGov  = "https://login.microsoftonline.us"

	resourcePublic     = "https://api.security.microsoft.com"
	resourceGCC        = "https://api-gcc.security.microsoft.us"
	resourceGCCHigh    = "https://api-gov.security.microsoft.us"
	defaultScopeSuffix = "/.default"
)

// AuthorityHost is the Entra ID sign-in host of cloud, without a trailing slash.
// The empty cloud is Public, as the CRD defaults it. A cloud this package does not
// know yields "": the CRD enum rejects such values, so callers should treat "" as
// a bug rather than guess a cloud and send a tenant's credentials to the wrong one.
func AuthorityHost(cloud v1alpha1.Cloud) string {
	switch cloud {
	case "", v1alpha1.CloudPublic, v1alpha1.CloudUSGov:
		// GCC tenants sign in through the commercial authority; only their
		// Defender API lives in the US Government cloud.
		return authorityPublic
	case v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD:
		return authorityUSGov
	default:
		return ""
	}
}

// DefaultResource is the Defender XDR API of cloud, used when spec.resource is
// empty. Like AuthorityHost, the empty cloud is Public and an unknown cloud yields "".
func DefaultResource(cloud v1alpha1.Cloud) string {
	switch cloud {
	case "", v1alpha1.CloudPublic:
		return resourcePublic
	case v1alpha1.CloudUSGov:
		return resourceGCC
	case v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD:
		return resourceGCCHigh
	default:
		return ""
	}
}

// ParseAuthorityHost validates the --authority-host flag and returns it without a
// trailing slash, ready for TokenURL and AdminConsentURL.
//
// The URL must be absolute and use https. Plain http is accepted only for loopback
// hosts (localhost, 127.0.0.0/8, ::1) so that local emulators work while the client
// secret never crosses a network unencrypted. A path prefix is kept, for proxies
// that mount Entra ID under a path. User info, a query or a fragment are rejected:
// each would end up in the token URL in a way Entra ID does not expect.
func ParseAuthorityHost(raw string) (string, error) {
	u, err := parseAbsoluteURL(raw)
	if err != nil {
		return "", fmt.Errorf("invalid authority host %q: %w", raw, err)
	}
	switch {
	case secureOrLoopback(u):
	case u.Scheme == "http":
		return "", fmt.Errorf("invalid authority host %q: plain http is only allowed for loopback hosts, use https", raw)
	default:
		return "", fmt.Errorf("invalid authority host %q: scheme must be https", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// secureOrLoopback: https, or plain http to a loopback host, where nothing crosses
// a network.
func secureOrLoopback(u *url.URL) bool {
	return u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())
}

// parseAbsoluteURL parses raw and rejects what neither an authority host nor a
// resource may carry. The scheme is left to the caller.
func parseAbsoluteURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("must not be empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme == "" || u.Host == "" || u.Hostname() == "":
		return nil, errors.New("must be an absolute URL such as https://login.microsoftonline.com")
	case u.User != nil:
		return nil, errors.New("must not contain user info")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("must not contain a query")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, errors.New("must not contain a fragment")
	}
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TokenURL is the v2.0 token endpoint of tenantID under authorityHost:
// {authorityHost}/{tenantID}/oauth2/v2.0/token.
func TokenURL(authorityHost, tenantID string) string {
	return tenantURL(authorityHost, tenantID) + "/oauth2/v2.0/token"
}

// Scope is the client-credentials scope for resource: the resource without its
// trailing slash followed by "/.default", which asks for every application
// permission the tenant granted.
func Scope(resource string) string {
	return strings.TrimRight(resource, "/") + defaultScopeSuffix
}

// AdminConsentURL is the link a customer tenant's admin opens to grant the
// application its permissions on resource:
// {authorityHost}/{tenantID}/v2.0/adminconsent?client_id={clientID}&scope={resource}/.default,
// and &redirect_uri={redirectURI} when that is set. Without a redirect_uri, an app
// with no registered reply address shows the admin AADSTS500113 after consenting.
func AdminConsentURL(authorityHost, tenantID, clientID, resource, redirectURI string) string {
	q := url.Values{
		"client_id": {clientID},
		"scope":     {Scope(resource)},
	}
	consent := tenantURL(authorityHost, tenantID) + "/v2.0/adminconsent?" + q.Encode()
	if redirectURI != "" {
		consent += "&redirect_uri=" + url.QueryEscape(redirectURI)
	}
	return consent
}

// ParseRedirectURI validates an admin consent redirect URI as Entra ID accepts one
// for a Web platform: absolute, https (plain http only for loopback hosts), without
// user info or a fragment. It must also be registered on the app registration.
func ParseRedirectURI(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", fmt.Errorf("invalid redirect URI %q: %w", raw, err)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("invalid redirect URI %q: must be an absolute URL such as https://portal.azure.com", raw)
	case u.User != nil || u.Fragment != "":
		return "", fmt.Errorf("invalid redirect URI %q: must not contain user info or a fragment", raw)
	case secureOrLoopback(u):
		return raw, nil
	default:
		return "", fmt.Errorf("invalid redirect URI %q: must be https (plain http only for loopback hosts)", raw)
	}
}

// tenantURL escapes tenantID as one path segment. Admission already enforces a
// GUID; escaping keeps a malformed value from reaching another path on the host.
func tenantURL(authorityHost, tenantID string) string {
	return strings.TrimRight(authorityHost, "/") + "/" + url.PathEscape(tenantID)
}
