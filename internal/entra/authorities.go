package entra

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// clouds lists every cloud in the contract's order, for parsing and printing.
var clouds = []v1alpha1.Cloud{v1alpha1.CloudPublic, v1alpha1.CloudUSGov, v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD}

// Authorities is where each cloud's token requests go: a cloud it lists is sent to
// that host (a proxy or an emulator), any other to the cloud's real sign-in host.
// The nil value sends every cloud to its real host.
type Authorities map[v1alpha1.Cloud]string

// EveryCloud sends the token requests of every cloud to host, the single-URL form
// of --authority-host.
func EveryCloud(host string) Authorities {
	a := make(Authorities, len(clouds))
	for _, c := range clouds {
		a[c] = host
	}
	return a
}

// Host is the authority host for the token requests of a tenant in cloud. The empty
// cloud is Public, as everywhere else.
func (a Authorities) Host(cloud v1alpha1.Cloud) string {
	if cloud == "" {
		cloud = v1alpha1.CloudPublic
	}
	if host, ok := a[cloud]; ok {
		return host
	}
	return AuthorityHost(cloud)
}

// String lists the overrides as CLOUD=URL in the contract's cloud order, for the
// startup log; it is empty when nothing is overridden.
func (a Authorities) String() string {
	var parts []string
	for _, c := range clouds {
		if host, ok := a[c]; ok {
			parts = append(parts, string(c)+"="+host)
		}
	}
	return strings.Join(parts, ",")
}

// ParseAuthorities parses --authority-host: either one URL, which replaces the
// authority of every cloud, or CLOUD=URL entries separated by commas, which replace
// only the clouds they name, so that one operator behind per-cloud proxies keeps
// each tenant on its own cloud. Each URL is checked as ParseAuthorityHost checks
// it. USGov is its own entry although it shares Public's real sign-in host: an
// override names the clouds it serves, never more.
func ParseAuthorities(raw string) (Authorities, error) {
	hosts, err := parseCloudHosts(raw, ParseAuthorityHost)
	return Authorities(hosts), err
}

// parseCloudHosts parses one URL, which serves every cloud, or CLOUD=URL entries
// separated by commas, checking each URL with parse.
func parseCloudHosts(raw string, parse func(string) (string, error)) (map[v1alpha1.Cloud]string, error) {
	entries := strings.Split(raw, ",")
	if len(entries) == 1 && !isCloudEntry(raw) {
		host, err := parse(raw)
		if err != nil {
			return nil, err
		}
		return EveryCloud(host), nil
	}
	a := map[v1alpha1.Cloud]string{}
	var errs []error
	for _, entry := range entries {
		name, rawHost, found := strings.Cut(strings.TrimSpace(entry), "=")
		cloud := v1alpha1.Cloud(name)
		switch {
		case !found || !isCloudEntry(entry):
			errs = append(errs, fmt.Errorf("%q is not CLOUD=URL; use one URL for every cloud, or CLOUD=URL entries separated by commas", entry))
			continue
		case !slices.Contains(clouds, cloud):
			errs = append(errs, fmt.Errorf("unknown cloud %q in %q; clouds are %s", name, entry, cloudNames()))
			continue
		}
		if _, dup := a[cloud]; dup {
			errs = append(errs, fmt.Errorf("cloud %s is given twice", cloud))
			continue
		}
		host, err := parse(rawHost)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cloud, err))
			continue
		}
		a[cloud] = host
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// isCloudEntry tells CLOUD=URL from a bare URL: a cloud name holds neither a colon
// nor a slash, and every absolute URL has a colon before any "=".
func isCloudEntry(s string) bool {
	name, _, found := strings.Cut(strings.TrimSpace(s), "=")
	return found && !strings.ContainsAny(name, ":/")
}

func cloudNames() string {
	names := make([]string, len(clouds))
	for i, c := range clouds {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}
