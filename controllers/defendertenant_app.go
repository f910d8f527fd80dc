package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// DefaultClusterResourceNamespace is where ClusterDefenderApp credentials live when
// neither --cluster-resource-namespace nor POD_NAMESPACE says otherwise.
const DefaultClusterResourceNamespace = "defender-tenant-operator-system"

// appFacts is the app a tenant's tokens are requested with, as observed: the inline
// pair of the DefenderTenant, or the DefenderApp or ClusterDefenderApp of its appRef.
type appFacts struct {
	// kind is "" for the inline form.
	kind v1alpha1.AppKind
	name string
	// object is the app read; nil for the inline form and when it does not exist.
	object v1alpha1.App
	// unserved: the tenant names a ClusterDefenderApp, and this operator may not
	// read those (a namespaced install).
	unserved bool
	// allowed: the app may serve this tenant. Always true for the inline form and a
	// DefenderApp (which serves its own namespace only); for a ClusterDefenderApp,
	// one of its tenantGrants matches the tenant's namespace and tenantID.
	allowed bool

	clientID string
	cloud    v1alpha1.Cloud
	// redirectURI is added to the consent link; empty: none.
	redirectURI string
	// credentialNamespace is where the app's Secret or ServiceAccount must be.
	credentialNamespace string
}

// inline: the tenant carries its own clientID and clientSecretRef.
func (a *appFacts) inline() bool { return a.kind == "" }

// missing: the tenant names an app that does not exist.
func (a *appFacts) missing() bool { return !a.inline() && !a.unserved && a.object == nil }

// describe names the app in messages: "ClusterDefenderApp partner".
func (a *appFacts) describe() string {
	if a.inline() {
		return "the inline app"
	}
	return string(a.kind) + " " + a.name
}

// identity digests which app this is, so that a token minted with another app
// (same client ID, another object, say after delete and re-create) is not reused.
func (a *appFacts) identity() string {
	if a.inline() {
		return "inline"
	}
	uid := ""
	if a.object != nil {
		uid = string(a.object.GetUID())
	}
	return string(a.kind) + "/" + a.name + "/" + uid
}

// credentialKind is what the app authenticates with.
func (a *appFacts) credentialKind() v1alpha1.CredentialKind {
	if a.inline() || a.object == nil {
		return v1alpha1.CredentialClientSecret
	}
	return a.object.AppSpec().Credential.Kind()
}

// observeApp resolves the tenant's app. A ClusterDefenderApp's grants are evaluated
// against the namespace's current labels, so relabelling a namespace grants or
// withdraws at once.
func (r *DefenderTenantReconciler) observeApp(ctx context.Context, tenant *v1alpha1.DefenderTenant) (appFacts, error) {
	ref := tenant.Spec.AppRef
	if ref == nil {
		return appFacts{
			allowed:             true,
			clientID:            tenant.Spec.ClientID,
			cloud:               tenant.CloudOrDefault(),
			redirectURI:         r.AdminConsentRedirectURI,
			credentialNamespace: tenant.Namespace,
		}, nil
	}
	facts := appFacts{kind: appKindOrDefault(ref.Kind), name: ref.Name}
	var app v1alpha1.App
	var key types.NamespacedName
	switch facts.kind {
	case v1alpha1.AppKindClusterDefenderApp:
		if !r.ClusterApps {
			// Reading one would start a watch this operator is forbidden.
			facts.unserved = true
			return facts, nil
		}
		app, key = &v1alpha1.ClusterDefenderApp{}, types.NamespacedName{Name: ref.Name}
		facts.credentialNamespace = r.clusterResourceNamespace()
	default:
		app, key = &v1alpha1.DefenderApp{}, keyOf(tenant.Namespace, ref.Name)
		facts.credentialNamespace = tenant.Namespace
	}
	if err := r.Get(ctx, key, app); err != nil {
		if apierrors.IsNotFound(err) {
			return facts, nil
		}
		return facts, fmt.Errorf("reading %s %s: %w", facts.kind, ref.Name, err)
	}
	facts.object = app
	spec := app.AppSpec()
	facts.clientID, facts.cloud, facts.redirectURI = spec.ClientID, spec.CloudOrDefault(), spec.AdminConsentRedirectURI
	facts.allowed = true
	if cluster, ok := app.(*v1alpha1.ClusterDefenderApp); ok {
		// Metadata only: the labels are all a grant looks at.
		ns := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}}
		if err := r.Get(ctx, types.NamespacedName{Name: tenant.Namespace}, ns); err != nil {
			return facts, fmt.Errorf("reading namespace %s for the grants of ClusterDefenderApp %s: %w", tenant.Namespace, ref.Name, err)
		}
		facts.allowed = r.ClusterApps && grantsAllow(cluster.Spec.TenantGrants, ns.Name, ns.Labels, tenant.Spec.TenantID)
	}
	return facts, nil
}

func appKindOrDefault(kind v1alpha1.AppKind) v1alpha1.AppKind {
	if kind == "" {
		return v1alpha1.AppKindDefenderApp
	}
	return kind
}

func (r *DefenderTenantReconciler) clusterResourceNamespace() string {
	if r.ClusterResourceNamespace != "" {
		return r.ClusterResourceNamespace
	}
	return DefaultClusterResourceNamespace
}

// grantsAllow: one grant matches both the namespace and the tenant. A grant with
// neither namespaces nor a selector matches nothing (admission refuses it), and a
// selector that does not parse matches nothing: a grant never widens by mistake.
// An empty selector ({}) matches every namespace, as in a NetworkPolicy.
func grantsAllow(grants []v1alpha1.TenantGrant, namespace string, namespaceLabels map[string]string, tenantID string) bool {
	return slices.ContainsFunc(grants, func(g v1alpha1.TenantGrant) bool {
		return grantCoversNamespace(g, namespace, namespaceLabels) && grantCoversTenant(g, tenantID)
	})
}

func grantCoversNamespace(g v1alpha1.TenantGrant, namespace string, namespaceLabels map[string]string) bool {
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

// grantCoversTenant compares GUIDs case-insensitively, as Entra ID does.
func grantCoversTenant(g v1alpha1.TenantGrant, tenantID string) bool {
	return slices.ContainsFunc(g.TenantIDs, func(id string) bool {
		return id == "*" || strings.EqualFold(id, tenantID)
	})
}
