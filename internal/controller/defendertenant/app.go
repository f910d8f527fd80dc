package defendertenant

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/tenantgrant"
)

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
	// resourceRefused: a grant covers the tenant's namespace and tenantID, but every
	// such grant limits resources (tenantGrants[].resources) and none lists the
	// tenant's; grantedResources are the resources those grants list.
	resourceRefused  bool
	grantedResources []string

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

// reference names the app as AnnotationApp records it: "ClusterDefenderApp/partner";
// empty for the inline form.
func (a *appFacts) reference() string {
	if a.inline() {
		return ""
	}
	return string(a.kind) + "/" + a.name
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

// observeApp resolves the tenant's app. A ClusterDefenderApp's grants are evaluated
// against the namespace's current labels, so relabelling a namespace grants or
// withdraws at once.
func (r *Reconciler) observeApp(ctx context.Context, tenant *v1alpha1.DefenderTenant) (appFacts, error) {
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
	facts := appFacts{kind: ref.KindOrDefault(), name: ref.Name}
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
		ns, err := namespaceMetadata(ctx, r.Client, tenant.Namespace)
		if err != nil {
			return facts, fmt.Errorf("reading namespace %s for the grants of ClusterDefenderApp %s: %w", tenant.Namespace, ref.Name, err)
		}
		verdict := tenantgrant.Evaluate(cluster.Spec.TenantGrants, ns.Name, ns.Labels, tenant.Spec.TenantID, effectiveResource(tenant, facts.cloud))
		facts.allowed = verdict.Allowed
		facts.resourceRefused, facts.grantedResources = verdict.ResourceRefused, verdict.Resources
	}
	return facts, nil
}

// namespaceMetadata reads a namespace's metadata only: the labels are all a grant
// looks at.
func namespaceMetadata(ctx context.Context, reader client.Reader, name string) (*metav1.PartialObjectMetadata, error) {
	ns := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}}
	err := reader.Get(ctx, types.NamespacedName{Name: name}, ns)
	return ns, err
}

// effectiveResource is what the tenant's tokens are for: spec.resource without a
// trailing slash, or the cloud's default.
func effectiveResource(tenant *v1alpha1.DefenderTenant, cloud v1alpha1.Cloud) string {
	if resource := strings.TrimSuffix(tenant.Spec.Resource, "/"); resource != "" {
		return resource
	}
	return entra.DefaultResource(cloud)
}

// grantStillAllows reads the ClusterDefenderApp and the namespace from the API
// server, past the watch cache, and tells whether a grant still covers the tenant:
// a token minted while its grant was being withdrawn is checked against the
// withdrawal before it is published. An app that is gone grants nothing.
func (r *Reconciler) grantStillAllows(ctx context.Context, obs *observation) (bool, error) {
	app := &v1alpha1.ClusterDefenderApp{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Name: obs.app.name}, app); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading ClusterDefenderApp %s to check its grants: %w", obs.app.name, err)
	}
	ns, err := namespaceMetadata(ctx, r.APIReader, obs.tenant.Namespace)
	if err != nil {
		return false, fmt.Errorf("reading namespace %s to check the grants of ClusterDefenderApp %s: %w", obs.tenant.Namespace, obs.app.name, err)
	}
	return tenantgrant.Evaluate(app.Spec.TenantGrants, ns.Name, ns.Labels, obs.tenant.Spec.TenantID, obs.resource).Allowed, nil
}

func (r *Reconciler) clusterResourceNamespace() string {
	if r.ClusterResourceNamespace != "" {
		return r.ClusterResourceNamespace
	}
	return credential.DefaultClusterResourceNamespace
}
