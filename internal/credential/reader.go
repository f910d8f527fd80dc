package credential

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Secret contents are never cached by the manager, so every reconcile would read
// its credential Secret from the API server: thousands of reads of one shared
// credential. The Secret metadata the watch already caches answers most of them: a
// credential is read again only when the cache shows a resourceVersion not read
// yet. The cache may lag the API server, which is safe here: a credential read at
// an older resourceVersion than the cache's is read again, and a newer one is
// announced by the watch, which queues its tenants and apps.

// Reader reads credentials for both controllers, sharing one cache of what was
// read. Only what a Source keeps is cached: a client secret of at most
// MaxClientSecretLength bytes, or one parsed certificate and key per Secret, never
// the rest of the Secret.
type Reader struct {
	// APIReader reads Secrets from the API server.
	APIReader client.Reader
	// SecretMetadata reads Secret metadata from the watch cache; nil sends every
	// read to the API server.
	SecretMetadata client.Reader
	// Client reads ServiceAccounts (from the watch cache) and creates their tokens.
	Client client.Client
	// WorkloadIdentityAudiences are the audiences a workload identity may request
	// ServiceAccount tokens for (--workload-identity-audiences); empty means
	// DefaultWorkloadIdentityAudiences.
	WorkloadIdentityAudiences []string
	// OperatorServiceAccount is the operator's own ServiceAccount, whose tokens it
	// never requests for an app; empty when it runs as another kind of user.
	OperatorServiceAccount types.NamespacedName

	mu      sync.Mutex
	entries map[types.NamespacedName]map[string]cachedCredential
}

// maxKeysPerSecret bounds what one Secret version costs in memory: each spec that
// names another key of it adds one entry, and whoever edits specs chooses keys.
const maxKeysPerSecret = 8

type cachedCredential struct {
	resourceVersion string
	Credential
}

// Read reads the credential source names.
func (r *Reader) Read(ctx context.Context, source Source) (Credential, error) {
	return source.read(ctx, r)
}

// Entra is the credential a token request authenticates with; a workload
// identity's costs one TokenRequest, whose error (the API server's, never holding
// a token) it returns.
func (r *Reader) Entra(ctx context.Context, c Credential) (entra.Credential, error) {
	return c.Source.entraCredential(ctx, r, c)
}

func (r *Reader) workloadIdentityAudiences() []string {
	if len(r.WorkloadIdentityAudiences) == 0 {
		return DefaultWorkloadIdentityAudiences
	}
	return r.WorkloadIdentityAudiences
}

// SecretTypeMeta is what a metadata-only read of a Secret names.
var SecretTypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}

// CachedSecretVersion reports the resourceVersion a watch cache of Secret
// metadata holds for a Secret: exists=false when the cache knows it does not
// exist, known=false when it cannot tell (no cache, or the namespace is not
// watched).
func CachedSecretVersion(ctx context.Context, cache client.Reader, key types.NamespacedName) (resourceVersion string, exists, known bool) {
	if cache == nil {
		return "", false, false
	}
	meta := &metav1.PartialObjectMetadata{TypeMeta: SecretTypeMeta}
	switch err := cache.Get(ctx, key, meta); {
	case err == nil:
		return meta.ResourceVersion, true, true
	case apierrors.IsNotFound(err):
		return "", false, true
	default:
		return "", false, false
	}
}

// readSecret returns what parse makes of the Secret, reading it from the API
// server only when the watch cache shows a version not read yet.
func (r *Reader) readSecret(ctx context.Context, source Source, cacheKey string, parse func(*corev1.Secret) Credential) (Credential, error) {
	key := source.Object()
	if rv, exists, known := CachedSecretVersion(ctx, r.SecretMetadata, key); known && exists {
		if c, ok := r.get(key, cacheKey, rv); ok {
			// The value is the Secret's; where to fix it is the caller's (an inline
			// tenant and an app may share a Secret but name its key differently).
			c.Source = source
			return c, nil
		}
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(key)
			return Credential{State: SecretMissing, Source: source}, nil
		}
		return Credential{}, fmt.Errorf("reading the credential Secret: %w", err)
	}
	c := parse(secret)
	r.put(key, cacheKey, secret.ResourceVersion, c)
	return c, nil
}

func versionOf(secret *corev1.Secret) string {
	return string(secret.UID) + "/" + secret.ResourceVersion
}

func (r *Reader) get(secret types.NamespacedName, key, resourceVersion string) (Credential, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[secret][key]
	if !ok || e.resourceVersion != resourceVersion {
		return Credential{}, false
	}
	return e.Credential, true
}

func (r *Reader) put(secret types.NamespacedName, key, resourceVersion string, cred Credential) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = map[types.NamespacedName]map[string]cachedCredential{}
	}
	byKey := r.entries[secret]
	if byKey == nil || heldAtOtherVersion(byKey, resourceVersion) || len(byKey) >= maxKeysPerSecret {
		// Values read at another version of the Secret are stale; drop them with it.
		byKey = map[string]cachedCredential{}
		r.entries[secret] = byKey
	}
	byKey[key] = cachedCredential{resourceVersion: resourceVersion, Credential: cred}
}

func heldAtOtherVersion(byKey map[string]cachedCredential, resourceVersion string) bool {
	for _, e := range byKey {
		if e.resourceVersion != resourceVersion {
			return true
		}
	}
	return false
}

// forget drops a Secret that no longer exists, so its client secret leaves memory.
func (r *Reader) forget(secret types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, secret)
}

// Holds tells whether a credential read from the Secret is in memory.
func (r *Reader) Holds(secret types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.entries[secret]
	return ok
}

// ForgetDeleted is called for every Secret event: a deleted credential leaves
// memory even when no tenant or app refers to it any more.
func (r *Reader) ForgetDeleted(ctx context.Context, secret types.NamespacedName) {
	if !r.Holds(secret) {
		return
	}
	if _, exists, known := CachedSecretVersion(ctx, r.SecretMetadata, secret); known && !exists {
		r.forget(secret)
	}
}
