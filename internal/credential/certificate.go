package credential

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Certificate is a certificate and its private key in a kubernetes.io/tls Secret.
type Certificate struct {
	Secret types.NamespacedName
}

// Kind is the spec.credential field this Source stands for.
func (s Certificate) Kind() v1alpha1.CredentialKind { return v1alpha1.CredentialCertificate }

// Object is what the credential is read from.
func (s Certificate) Object() types.NamespacedName { return s.Secret }

// IndexKey is what the apps' credential index holds for this Source.
func (s Certificate) IndexKey() string { return "Secret/" + s.Secret.Name }

// certificateCacheKey stands for the two keys of a kubernetes.io/tls Secret in the
// Reader's cache; it cannot clash with a data key, which may not hold a NUL.
const certificateCacheKey = "\x00tls"

// read parses the certificate and key once per version of the Secret.
func (s Certificate) read(ctx context.Context, r *Reader) (Credential, error) {
	return r.readSecret(ctx, s, certificateCacheKey, s.parse)
}

func (s Certificate) parse(secret *corev1.Secret) Credential {
	c := Credential{Source: s, Version: versionOf(secret)}
	crt, key := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		c.State = KeyEmpty
		return c
	}
	cert, err := entra.ParseCertificate(crt, key)
	if err != nil {
		c.State, c.Detail = CertificateInvalid, err.Error()
		return c
	}
	c.State, c.Certificate = Usable, cert
	return c
}

//nolint:unparam // Source: a workload identity's TokenRequest can fail, a certificate cannot.
func (s Certificate) entraCredential(_ context.Context, _ *Reader, c Credential) (entra.Credential, error) {
	return c.Certificate, nil
}

func (s Certificate) material(c Credential) string {
	if c.Certificate == nil {
		return ""
	}
	return "certificate:" + c.Certificate.SHA256Thumbprint()
}

func (s Certificate) problem(c Credential, app string, now time.Time) *Problem {
	switch {
	case c.State == SecretMissing:
		return &Problem{v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
			"Secret %q with the certificate of %s was not found in namespace %q. Create it as a kubernetes.io/tls Secret (tls.crt, tls.key).",
			s.Secret.Name, app, s.Secret.Namespace)}
	case c.State == KeyEmpty:
		return &Problem{v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
			"Secret %q in namespace %q with the certificate of %s lacks tls.crt or tls.key. Store the certificate (PEM, leaf first) and its RSA key there.",
			s.Secret.Name, s.Secret.Namespace, app)}
	case c.State == CertificateInvalid:
		return &Problem{v1alpha1.ReasonInvalidCertificate, fmt.Sprintf(
			"The certificate of %s in Secret %q in namespace %q cannot be used: %s. Store an RSA certificate (PEM, leaf first) and its matching key.",
			app, s.Secret.Name, s.Secret.Namespace, c.Detail)}
	case c.Certificate != nil && !now.Before(c.Certificate.NotAfter()):
		// A sign-in with it would only fail in the customer's logs.
		return &Problem{v1alpha1.ReasonCertificateExpired, fmt.Sprintf(
			"The certificate of %s (SHA-1 thumbprint %s) in Secret %q in namespace %q expired at %s. Put a renewed certificate there and register it on the app registration.",
			app, c.Certificate.SHA1Thumbprint(), s.Secret.Name, s.Secret.Namespace, c.Certificate.NotAfter().UTC().Format(time.RFC3339))}
	}
	return nil
}
