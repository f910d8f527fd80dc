package manager

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
)

// The field indexes let an event find the objects it concerns without listing
// every DefenderTenant or app.
const (
	// SecretNameIndex indexes DefenderTenants by the names of the Secrets they read
	// (the inline credential) and write (the token).
	SecretNameIndex = "defender.tenantcreds.io/secret-names"
	// AppIndex indexes DefenderTenants by the app they use (AppKey).
	AppIndex = "defender.tenantcreds.io/app"
	// AppCredentialIndex indexes apps by the Secret or ServiceAccount their
	// credential names (credential.Source.IndexKey), so that a rotation finds its apps.
	AppCredentialIndex = "defender.tenantcreds.io/credential"
)

// RegisterIndexes registers every index the controllers query. An index is an
// informer, so the ClusterDefenderApp one only where the operator may watch them.
func RegisterIndexes(ctx context.Context, indexer client.FieldIndexer, clusterApps bool) error {
	if err := indexer.IndexField(ctx, &v1alpha1.DefenderTenant{}, SecretNameIndex, secretNames); err != nil {
		return err
	}
	if err := indexer.IndexField(ctx, &v1alpha1.DefenderTenant{}, AppIndex, tenantAppKey); err != nil {
		return err
	}
	if err := indexer.IndexField(ctx, &v1alpha1.DefenderApp{}, AppCredentialIndex, appCredentialKeys); err != nil {
		return err
	}
	if !clusterApps {
		return nil
	}
	return indexer.IndexField(ctx, &v1alpha1.ClusterDefenderApp{}, AppCredentialIndex, appCredentialKeys)
}

// AppKey is what AppIndex holds: a ClusterDefenderApp by name, a DefenderApp by
// namespace and name.
func AppKey(kind v1alpha1.AppKind, namespace, name string) string {
	if kind == v1alpha1.AppKindClusterDefenderApp {
		return string(kind) + "/" + name
	}
	return string(kind) + "/" + namespace + "/" + name
}

func secretNames(obj client.Object) []string {
	tenant := obj.(*v1alpha1.DefenderTenant)
	return []string{tenant.Spec.ClientSecretRef.Name, tenant.TokenSecretNameOrDefault()}
}

func tenantAppKey(obj client.Object) []string {
	tenant := obj.(*v1alpha1.DefenderTenant)
	ref := tenant.Spec.AppRef
	if ref == nil {
		return nil
	}
	return []string{AppKey(ref.KindOrDefault(), tenant.Namespace, ref.Name)}
}

func appCredentialKeys(obj client.Object) []string {
	app, ok := obj.(v1alpha1.App)
	if !ok {
		return nil
	}
	return credential.IndexKeys(app.AppSpec().Credential)
}

// TenantKind is the kind of the owner reference a token Secret carries.
const TenantKind = "DefenderTenant"

// TenantControllerOf returns the reference to the DefenderTenant controlling obj,
// if any: what the Secret cache keeps, and the first sign of a token Secret.
func TenantControllerOf(obj metav1.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.Kind != TenantKind || ref.APIVersion != v1alpha1.GroupVersion.String() {
		return nil
	}
	return ref
}
