package entra

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultAllowedResources is the default of --allowed-resources: the Defender XDR
// and Defender for Endpoint APIs of the four clouds, the App ID URI that the
// Defender documentation uses in its curl example, and Microsoft Graph of each
// cloud, where Microsoft is moving the Defender XDR incidents and advanced hunting
// APIs (the Graph security API).
var DefaultAllowedResources = []string{
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

// AllowList is the set of resources a DefenderTenant may request tokens for
// (--allowed-resources). It exists so that whoever can create a DefenderTenant
// cannot use the partner's application to mint tokens for unrelated APIs, such as
// Azure Resource Manager. Which Graph permissions a token carries is decided by
// the customer's consent, and requiredRoles checks it. The zero value allows nothing.
type AllowList struct {
	entries []string            // as configured, trailing slash dropped, for String
	keys    map[string]struct{} // normalised with resourceKey
}

// NewAllowList returns an AllowList of resources without validating them; use it
// for trusted values such as DefaultAllowedResources. Duplicates are dropped.
func NewAllowList(resources []string) AllowList {
	a := AllowList{keys: make(map[string]struct{}, len(resources))}
	for _, r := range resources {
		k := resourceKey(r)
		if _, dup := a.keys[k]; dup {
			continue
		}
		a.keys[k] = struct{}{}
		a.entries = append(a.entries, strings.TrimRight(r, "/"))
	}
	return a
}

// ParseAllowList parses the --allowed-resources flag: a comma-separated list of
// https URLs. Spaces around entries are trimmed; an empty entry is an error rather
// than ignored, because "a,,b" is more likely a typo than a wish.
func ParseAllowList(csv string) (AllowList, error) {
	parts := strings.Split(csv, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return AllowList{}, fmt.Errorf("allowed resources: entry %d is empty", i+1)
		}
		if err := validateResource(p); err != nil {
			return AllowList{}, fmt.Errorf("allowed resources: %q: %w", p, err)
		}
		parts[i] = p
	}
	return NewAllowList(parts), nil
}

// Allows reports whether resource is in the list. A trailing slash and letter case
// are ignored, as Entra ID ignores them when it resolves a scope.
func (a AllowList) Allows(resource string) bool {
	_, ok := a.keys[resourceKey(resource)]
	return ok
}

// String is the list in the --allowed-resources format, for logs and flag help.
func (a AllowList) String() string {
	return strings.Join(a.entries, ",")
}

func resourceKey(resource string) string {
	return strings.ToLower(strings.TrimRight(resource, "/"))
}

func validateResource(resource string) error {
	u, err := parseAbsoluteURL(resource)
	if err != nil {
		return err
	}
	if u.Scheme != "https" {
		return errors.New("must be an https URL")
	}
	return nil
}
