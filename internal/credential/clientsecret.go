package credential

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// ClientSecret is a client secret under Key of an Opaque Secret.
type ClientSecret struct {
	Secret types.NamespacedName
	Key    string
	// KeyField is the spec field that chooses Key, for messages.
	KeyField string
}

// Kind is the spec.credential field this Source stands for.
func (s ClientSecret) Kind() v1alpha1.CredentialKind { return v1alpha1.CredentialClientSecret }

// Object is what the credential is read from.
func (s ClientSecret) Object() types.NamespacedName { return s.Secret }

// IndexKey is what the apps' credential index holds for this Source.
func (s ClientSecret) IndexKey() string { return "Secret/" + s.Secret.Name }

func (s ClientSecret) read(ctx context.Context, r *Reader) (Credential, error) {
	return r.readSecret(ctx, s, s.Key, s.parse)
}

func (s ClientSecret) parse(secret *corev1.Secret) Credential {
	c := Credential{Source: s, Version: versionOf(secret)}
	// A trailing newline from `kubectl create secret --from-file` is not part of the secret.
	value := strings.TrimSpace(string(secret.Data[s.Key]))
	switch {
	case value == "":
		c.State = KeyEmpty
	case !plausibleClientSecret(value):
		c.State = Implausible
	default:
		c.State, c.clientSecret = Usable, value
	}
	return c
}

//nolint:unparam // Source: a workload identity's TokenRequest can fail, a secret cannot.
func (s ClientSecret) entraCredential(_ context.Context, _ *Reader, c Credential) (entra.Credential, error) {
	return entra.ClientSecret(c.clientSecret), nil
}

func (s ClientSecret) material(c Credential) string { return c.clientSecret }

func (s ClientSecret) problem(c Credential, app string, _ time.Time) *Problem {
	switch c.State {
	case SecretMissing:
		return &Problem{v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
			"Secret %q with the client secret of %s was not found in namespace %q. Create it with the secret's value under key %q.",
			s.Secret.Name, app, s.Secret.Namespace, s.Key)}
	case KeyEmpty:
		return &Problem{v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
			"Secret %q in namespace %q has no non-empty key %q. Put the client secret of %s under that key, or set %s.",
			s.Secret.Name, s.Secret.Namespace, s.Key, app, s.KeyField)}
	case Implausible:
		// As Entra ID would say of it, without a sign-in in the customer's logs.
		return &Problem{v1alpha1.ReasonInvalidClientSecret, fmt.Sprintf(
			"Key %q of Secret %q in namespace %q does not hold a client secret: Entra ID client secrets are at most %d printable ASCII characters. Put the secret's value there.",
			s.Key, s.Secret.Name, s.Secret.Namespace, MaxClientSecretLength)}
	}
	return nil
}

// MaxClientSecretLength is far above the 40 characters Entra generates, and far
// below what would make a form body worth sending.
const MaxClientSecretLength = 1024

// plausibleClientSecret rejects values that cannot be an Entra client secret (binary
// data, a certificate, a whole file) before they cost a token request.
func plausibleClientSecret(s string) bool {
	if len(s) > MaxClientSecretLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
