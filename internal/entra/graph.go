package entra

import (
	"slices"
	"strings"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// DefenderAPIsRetireAt is when the Defender for Endpoint and Defender XDR APIs stop
// working: "after February 1, 2027" in Microsoft's message center item MC1220762,
// which moves their callers to the Microsoft Graph security API.
var DefenderAPIsRetireAt = time.Date(2027, time.February, 1, 0, 0, 0, 0, time.UTC)

// retiringResources are the App ID URIs of the Defender XDR and Defender for
// Endpoint APIs in every cloud: every resource of DefaultAllowedResources except
// Microsoft Graph. MC1220762 does not list hosts; the whole of each API is taken
// as retiring, because which of its endpoints might survive is not confirmed.
var retiringResources = map[string]struct{}{
	resourceKey("https://api.security.microsoft.com"):                       {},
	resourceKey("https://api.securitycenter.microsoft.com"):                 {},
	resourceKey("https://securitycenter.onmicrosoft.com/windowsatpservice"): {},
	resourceKey("https://api-gcc.security.microsoft.us"):                    {},
	resourceKey("https://api-gcc.securitycenter.microsoft.us"):              {},
	resourceKey("https://api-gov.security.microsoft.us"):                    {},
	resourceKey("https://api-gov.securitycenter.microsoft.us"):              {},
}

// RetiresAt reports when resource stops working, for the retiring Defender APIs.
// A trailing slash and letter case are ignored, as in AllowList.
func RetiresAt(resource string) (time.Time, bool) {
	if _, ok := retiringResources[resourceKey(resource)]; ok {
		return DefenderAPIsRetireAt, true
	}
	return time.Time{}, false
}

// Microsoft Graph's host per cloud. GCC (USGov) tenants use the commercial Graph;
// GCC High and DoD have their own.
const (
	graphPublic    = "https://graph.microsoft.com"
	graphUSGovHigh = "https://graph.microsoft.us"
	graphDoD       = "https://dod-graph.microsoft.us"
)

// GraphResource is Microsoft Graph's resource in cloud: the resource a tenant moves
// to from a retiring Defender API. Like DefaultResource, the empty cloud is Public
// and an unknown cloud yields "".
func GraphResource(cloud v1alpha1.Cloud) string {
	switch cloud {
	case "", v1alpha1.CloudPublic, v1alpha1.CloudUSGov:
		return graphPublic
	case v1alpha1.CloudUSGovHigh:
		return graphUSGovHigh
	case v1alpha1.CloudDoD:
		return graphDoD
	default:
		return ""
	}
}

// GraphRoleFor maps a Defender API application role to the Microsoft Graph
// security API role that covers the same data, as docs/migrating-to-graph.md's
// table says (a test keeps the two equal, and the document cites a source for
// each row). A role absent here has no Graph equivalent.
var GraphRoleFor = map[string]string{
	"Incident.Read.All":        "SecurityIncident.Read.All",
	"Incident.ReadWrite.All":   "SecurityIncident.ReadWrite.All",
	"Alert.Read.All":           "SecurityAlert.Read.All",
	"Alert.ReadWrite.All":      "SecurityAlert.ReadWrite.All",
	"AdvancedHunting.Read.All": "ThreatHunting.Read.All",
	"AdvancedQuery.Read.All":   "ThreatHunting.Read.All",
}

// GraphRoles maps Defender API roles to Graph roles: mapped holds each Graph role
// once, sorted; unmapped holds the roles without a Graph equivalent, sorted, so
// that a migration lists them instead of dropping them. A role that already is a
// Graph role (it is one of the map's values) is kept as it is.
func GraphRoles(roles []string) (mapped, unmapped []string) {
	graph := make(map[string]struct{}, len(GraphRoleFor))
	for _, g := range GraphRoleFor {
		graph[g] = struct{}{}
	}
	for _, r := range roles {
		r = strings.TrimSpace(r)
		if g, ok := GraphRoleFor[r]; ok {
			mapped = append(mapped, g)
		} else if _, ok := graph[r]; ok {
			mapped = append(mapped, r)
		} else if r != "" {
			unmapped = append(unmapped, r)
		}
	}
	slices.Sort(mapped)
	slices.Sort(unmapped)
	return slices.Compact(mapped), slices.Compact(unmapped)
}
