package controllers

import (
	"context"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// CacheOptions scopes the manager's cache to the watched namespaces (all when empty)
// and keeps it small: managed fields are dropped from everything, and Secrets, watched
// as metadata only, also lose their annotations, which may carry kubectl's
// last-applied copy of the whole Secret.
func CacheOptions(namespaces []string, clusterResourceNamespace string) cache.Options {
	opts := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Transform: StripSecretMetadata},
			// Only workload identities are read, and they live in one namespace: the
			// operator may not list ServiceAccounts anywhere else.
			&corev1.ServiceAccount{}: {Namespaces: map[string]cache.Config{clusterResourceNamespace: {}}},
		},
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// ClientOptions makes the manager's client read Secrets from the API server instead
// of starting an informer that would cache every Secret's contents.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}}
}

// StripSecretMetadata is the cache transform for Secrets. The controller only needs
// to learn that a Secret changed, so identity, labels and owner references stay and
// the rest goes, keeping thousands of unrelated Secrets cheap.
func StripSecretMetadata(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.ManagedFields = nil
		m.Annotations = nil
	}
	return obj, nil
}

// MayServeClusterApps asks the API server whether the operator may list and watch
// ClusterDefenderApps and namespaces cluster-wide, which serving ClusterDefenderApps
// takes. A namespaced install may not; it then serves DefenderApps and the inline
// form only, instead of failing to start on a watch it is forbidden.
func MayServeClusterApps(ctx context.Context, cfg *rest.Config) (bool, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, err
	}
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Group: v1alpha1.GroupVersion.Group, Resource: "clusterdefenderapps", Verb: "watch"},
		{Resource: "namespaces", Verb: "watch"},
	} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}
		got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		if !got.Status.Allowed {
			return false, nil
		}
	}
	return true, nil
}
