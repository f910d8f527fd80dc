// Package tenantgrant decides whether a ClusterDefenderApp's tenantGrants let it
// serve a tenant: the operator decides so before every token it mints, and
// `kubectl defender onboard` before it writes a DefenderTenant, by the same rule.
package tenantgrant

import (
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Verdict is what an app's grants say of one tenant and resource.
type Verdict struct {
	// Allowed: a grant matches the namespace, the tenant and the resource.
	Allowed bool
	// ResourceRefused: grants cover the namespace and tenant, but only for other
	// resources, which Resources lists (without trailing slashes).
	ResourceRefused bool
	Resources       []string
}

// Evaluate allows when one grant matches the namespace, the tenant and the resource. A grant
// with neither namespaces nor a selector matches nothing (admission refuses it), and
// a selector that does not parse matches nothing: a grant never widens by mistake.
// An empty selector ({}) matches every namespace, as in a NetworkPolicy. A grant
// without resources covers every resource.
func Evaluate(grants []v1alpha1.TenantGrant, namespace string, namespaceLabels map[string]string, tenantID, resource string) Verdict {
	var verdict Verdict
	for _, g := range grants {
		if !coversNamespace(g, namespace, namespaceLabels) || !coversTenant(g, tenantID) {
			continue
		}
		if coversResource(g, resource) {
			return Verdict{Allowed: true}
		}
		verdict.ResourceRefused = true
		for _, r := range g.Resources {
			if r = strings.TrimSuffix(r, "/"); !slices.Contains(verdict.Resources, r) {
				verdict.Resources = append(verdict.Resources, r)
			}
		}
	}
	return verdict
}

// coversResource compares URLs as --allowed-resources does: a trailing slash is
// ignored.
func coversResource(g v1alpha1.TenantGrant, resource string) bool {
	if len(g.Resources) == 0 {
		return true
	}
	resource = strings.TrimSuffix(resource, "/")
	return slices.ContainsFunc(g.Resources, func(r string) bool { return strings.TrimSuffix(r, "/") == resource })
}

func coversNamespace(g v1alpha1.TenantGrant, namespace string, namespaceLabels map[string]string) bool {
	if slices.Contains(g.Namespaces, namespace) {
		return true
	}
	if g.NamespaceSelector == nil {
		return false
	}
	// An empty selector selects every namespace, as everywhere in Kubernetes.
	selector, err := metav1.LabelSelectorAsSelector(g.NamespaceSelector)
	return err == nil && selector.Matches(labels.Set(namespaceLabels))
}

// coversTenant compares GUIDs case-insensitively, as Entra ID does.
func coversTenant(g v1alpha1.TenantGrant, tenantID string) bool {
	return slices.ContainsFunc(g.TenantIDs, func(id string) bool {
		return id == "*" || strings.EqualFold(id, tenantID)
	})
}
