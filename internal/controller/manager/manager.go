// Package manager configures the controller-runtime manager the controllers share:
// what its cache holds, its client, its indexes and its log level.
package manager

import (
	"context"

	"go.uber.org/zap/zapcore"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// CacheOptions scopes the manager's cache to the watched namespaces (all when empty)
// and keeps it small: managed fields are dropped from everything, and Secrets,
// watched as metadata only, keep only what the operator reads of them (see
// StripSecretMetadata).
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

// StripSecretMetadata is the cache transform for Secrets. Anyone who may create a
// Secret anywhere decides how large its metadata is (about a megabyte of labels,
// annotations or owner references each), and the operator caches every Secret it
// watches. So a Secret keeps only what the operator reads of it: its identity and
// resourceVersion (whether it exists, and whether it changed), the managed-by and
// tenant labels, and a controller reference to a DefenderTenant (which tenant a
// token Secret belongs to). Everything else, annotations, other labels and owner
// references, finalizers and managed fields, goes, so its size is bounded
// whatever a Secret holds.
func StripSecretMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	var kept map[string]string
	for _, key := range []string{v1alpha1.LabelManagedBy, v1alpha1.LabelTenant} {
		if value, ok := m.Labels[key]; ok {
			if kept == nil {
				kept = map[string]string{}
			}
			kept[key] = value
		}
	}
	var owner []metav1.OwnerReference
	// The API server checks no length in an owner reference; a reference no
	// DefenderTenant could have (longer than an object name, or than the UUIDs
	// the API server assigns) is dropped with the rest.
	if ref := TenantControllerOf(m); ref != nil && len(ref.Name) <= validation.DNS1123SubdomainMaxLength && len(ref.UID) <= uuidLength {
		owner = []metav1.OwnerReference{*ref}
	}
	m.Labels, m.OwnerReferences = kept, owner
	m.Annotations, m.Finalizers, m.ManagedFields = nil, nil, nil
	return m, nil
}

// uuidLength is the length of the UIDs the API server assigns.
const uuidLength = 36

// MayServeClusterApps asks the API server whether the operator may watch what
// serving ClusterDefenderApps takes: ClusterDefenderApps and namespaces cluster-wide,
// and ServiceAccounts in the cluster resource namespace. A namespaced install, or one
// whose cluster resource namespace lacks the operator's Role, may not; it then serves
// DefenderApps and the inline form only, instead of hanging on a watch it is
// forbidden. The answer names what is missing.
func MayServeClusterApps(ctx context.Context, cfg *rest.Config, clusterResourceNamespace string) (missing string, err error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Group: v1alpha1.GroupVersion.Group, Resource: "clusterdefenderapps", Verb: "watch"},
		{Resource: "namespaces", Verb: "watch"},
		{Resource: "serviceaccounts", Verb: "watch", Namespace: clusterResourceNamespace},
	} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}
		got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		if !got.Status.Allowed {
			where := "cluster-wide"
			if attrs.Namespace != "" {
				where = "in namespace " + attrs.Namespace
			}
			return "watch " + attrs.Resource + " " + where, nil
		}
	}
	return "", nil
}

// MostVerboseLogLevel is the most detail the operator ever logs (--zap-log-level).
// From level 8 client-go logs the bodies of its requests and answers, which for
// Secrets are the client secrets, keys and tokens themselves; no level of the
// operator's own logging needs it.
const MostVerboseLogLevel = 7

// CapLogLevel keeps a logger at MostVerboseLogLevel or less verbose, whatever
// --zap-log-level asks; nil (the default level) stays nil.
func CapLogLevel(level zapcore.LevelEnabler) zapcore.LevelEnabler {
	if level == nil {
		return nil
	}
	return cappedLevel{level}
}

type cappedLevel struct{ zapcore.LevelEnabler }

func (c cappedLevel) Enabled(l zapcore.Level) bool {
	return l >= -MostVerboseLogLevel && c.LevelEnabler.Enabled(l)
}
