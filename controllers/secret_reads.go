package controllers

import (
	"context"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Secret contents are never cached, so every reconcile would read both of its Secrets
// from the API server: thousands of reads of one shared credential and of token Secrets
// that do not exist yet. The Secret metadata the watch already caches answers most of
// them. The cache may lag the API server; each use below is safe when it does:
//   - a token Secret the cache has not seen is created, and Create fails rather than
//     overwrite one that exists (publish then reads it and decides again);
//   - a credential read at an older resourceVersion than the cache's is read again, and
//     a newer one is announced by the watch, which queues the tenant.

var secretTypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}

// cachedSecretVersion reports the resourceVersion the watch cache holds for a Secret:
// exists=false when the cache knows it does not exist, known=false when the cache
// cannot tell (no cache configured, or the namespace is not watched).
func (r *DefenderTenantReconciler) cachedSecretVersion(ctx context.Context, key types.NamespacedName) (resourceVersion string, exists, known bool) {
	if r.SecretMetadata == nil {
		return "", false, false
	}
	meta := &metav1.PartialObjectMetadata{TypeMeta: secretTypeMeta}
	switch err := r.SecretMetadata.Get(ctx, key, meta); {
	case err == nil:
		return meta.ResourceVersion, true, true
	case apierrors.IsNotFound(err):
		return "", false, true
	default:
		return "", false, false
	}
}

// credentialState is what a credential Secret holds under the tenant's key.
type credentialState int

const (
	credentialUsable credentialState = iota
	credentialSecretMissing
	credentialKeyEmpty
	credentialImplausible
	// credentialCertificateInvalid: the certificate Secret does not hold an RSA
	// certificate and its matching key; problem says which.
	credentialCertificateInvalid
	// credentialServiceAccountMissing: the workload identity's ServiceAccount does
	// not exist.
	credentialServiceAccountMissing
	// credentialServiceAccountNotAllowed: the operator will not request tokens of
	// the workload identity's ServiceAccount for its audience; problem says why.
	credentialServiceAccountNotAllowed
	// credentialNotRead: nothing was read, because the app is missing or may not
	// serve the tenant.
	credentialNotRead
)

type credential struct {
	state credentialState
	// value is the client secret, set only when state is credentialUsable.
	value string
	// certificate is the parsed certificate and key of a certificate credential.
	certificate *entra.Certificate
	// serviceAccount and audience name the workload identity.
	serviceAccount types.NamespacedName
	audience       string
	// problem says why a certificate cannot be used, without any key material, or
	// why the operator may not, or will not, use a workload identity's
	// ServiceAccount.
	problem string
	// version names the Secret or ServiceAccount read (UID and resourceVersion),
	// empty when it is missing: any change of it is new input for a failed request.
	version string
}

// material is what a token minted with this credential depends on, for the inputs
// digest: the client secret, or the public identity of a certificate or
// ServiceAccount, so that a rotation re-mints and a restart with the same
// credential reuses the published token.
func (c credential) material() string {
	switch {
	case c.certificate != nil:
		return "certificate:" + c.certificate.SHA256Thumbprint()
	case c.serviceAccount.Name != "":
		return "serviceaccount:" + c.version + ":" + c.audience
	default:
		return c.value
	}
}

func readCredential(secret *corev1.Secret, key string) credential {
	version := string(secret.UID) + "/" + secret.ResourceVersion
	// A trailing newline from `kubectl create secret --from-file` is not part of the secret.
	value := strings.TrimSpace(string(secret.Data[key]))
	switch {
	case value == "":
		return credential{state: credentialKeyEmpty, version: version}
	case !plausibleClientSecret(value):
		return credential{state: credentialImplausible, version: version}
	}
	return credential{state: credentialUsable, value: value, version: version}
}

// maxClientSecretLength is far above the 40 characters Entra generates, and far
// below what would make a form body worth sending.
const maxClientSecretLength = 1024

// plausibleClientSecret rejects values that cannot be an Entra client secret (binary
// data, a certificate, a whole file) before they cost a token request.
func plausibleClientSecret(s string) bool {
	if len(s) > maxClientSecretLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// credential returns what the tenant's credential Secret holds under key, reading the
// Secret from the API server only when the watch cache shows a version not read yet.
func (r *DefenderTenantReconciler) credential(ctx context.Context, secretKey types.NamespacedName, key string) (credential, error) {
	return r.readCredentialSecret(ctx, secretKey, key, func(secret *corev1.Secret) credential { return readCredential(secret, key) })
}

// certificateCacheKey stands for the two keys of a kubernetes.io/tls Secret in the
// credential cache; it cannot clash with a data key, which may not hold a NUL.
const certificateCacheKey = "\x00tls"

// certificateCredential parses the certificate and key of a kubernetes.io/tls
// Secret, once per version of the Secret.
func (r *DefenderTenantReconciler) certificateCredential(ctx context.Context, secretKey types.NamespacedName) (credential, error) {
	return r.readCredentialSecret(ctx, secretKey, certificateCacheKey, readCertificate)
}

func readCertificate(secret *corev1.Secret) credential {
	version := string(secret.UID) + "/" + secret.ResourceVersion
	crt, key := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return credential{state: credentialKeyEmpty, version: version}
	}
	cert, err := entra.ParseCertificate(crt, key)
	if err != nil {
		return credential{state: credentialCertificateInvalid, problem: err.Error(), version: version}
	}
	return credential{state: credentialUsable, certificate: cert, version: version}
}

func (r *DefenderTenantReconciler) readCredentialSecret(ctx context.Context, secretKey types.NamespacedName, cacheKey string, read func(*corev1.Secret) credential) (credential, error) {
	if rv, exists, known := r.cachedSecretVersion(ctx, secretKey); known && exists {
		if c, ok := r.credentials.get(secretKey, cacheKey, rv); ok {
			return c, nil
		}
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, secretKey, secret); err != nil {
		if apierrors.IsNotFound(err) {
			r.credentials.forget(secretKey)
			return credential{state: credentialSecretMissing}, nil
		}
		return credential{}, err
	}
	c := read(secret)
	r.credentials.put(secretKey, cacheKey, secret.ResourceVersion, c)
	return c, nil
}

// serviceAccountCredential checks that the operator may request tokens of the
// workload identity's ServiceAccount; they are requested only when a token
// request is due.
func (r *DefenderTenantReconciler) serviceAccountCredential(ctx context.Context, key types.NamespacedName, audience string) (credential, error) {
	return readWorkloadIdentity(ctx, r.Client, key, audience, r.WorkloadIdentityAudiences, r.OperatorServiceAccount)
}

// credentialCache holds, per credential Secret and key, what was read and at which
// resourceVersion. Only what readCredential and readCertificate keep is stored: a
// client secret of at most maxClientSecretLength bytes, or one parsed certificate
// and key per app, never the rest of the Secret.
type credentialCache struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]map[string]cachedCredential
}

type cachedCredential struct {
	resourceVersion string
	credential
}

func (c *credentialCache) get(secret types.NamespacedName, key, resourceVersion string) (credential, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[secret][key]
	if !ok || e.resourceVersion != resourceVersion {
		return credential{}, false
	}
	return e.credential, true
}

func (c *credentialCache) put(secret types.NamespacedName, key, resourceVersion string, cred credential) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[types.NamespacedName]map[string]cachedCredential{}
	}
	byKey := c.entries[secret]
	if byKey == nil || heldAtOtherVersion(byKey, resourceVersion) {
		// Values read at another version of the Secret are stale; drop them with it.
		byKey = map[string]cachedCredential{}
		c.entries[secret] = byKey
	}
	byKey[key] = cachedCredential{resourceVersion: resourceVersion, credential: cred}
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
func (c *credentialCache) forget(secret types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, secret)
}

func (c *credentialCache) holds(secret types.NamespacedName) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[secret]
	return ok
}

// forgetDeletedCredential is called for every Secret event: a deleted credential
// leaves memory even when no tenant refers to it any more.
func (r *DefenderTenantReconciler) forgetDeletedCredential(ctx context.Context, secret types.NamespacedName) {
	if !r.credentials.holds(secret) {
		return
	}
	if _, exists, known := r.cachedSecretVersion(ctx, secret); known && !exists {
		r.credentials.forget(secret)
	}
}
