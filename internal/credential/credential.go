// Package credential reads an app's credential (a client secret, a certificate
// or a workload identity) and turns it into what Entra ID's token endpoint
// accepts. Each kind is one Source in a file of its own; both controllers and the
// apps' credential index go through it, so a fourth kind is one more file here.
package credential

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// DefaultClusterResourceNamespace is where ClusterDefenderApp credentials live when
// neither --cluster-resource-namespace nor POD_NAMESPACE says otherwise.
const DefaultClusterResourceNamespace = "defender-tenant-operator-system"

// State is what a credential's Secret or ServiceAccount holds, as read.
type State int

// The states of a credential. Each kind's problem method maps them to a reason.
// The zero State is NotRead, so that a Credential nobody filled in is never one a
// token is requested with.
const (
	// NotRead is nothing read, because the app is missing or may not serve the
	// tenant (or, were it ever to happen, because nothing said what to read).
	NotRead State = iota
	// Usable is a credential a token may be requested with.
	Usable
	// SecretMissing is a Secret that does not exist.
	SecretMissing
	// KeyEmpty is a Secret without the key, or tls.crt and tls.key, it should hold.
	KeyEmpty
	// Implausible is a client secret that cannot be one Entra ID issued.
	Implausible
	// CertificateInvalid is a certificate Secret that does not hold an RSA
	// certificate and its matching key; Detail says which.
	CertificateInvalid
	// ServiceAccountMissing is a workload identity's ServiceAccount that does not
	// exist, or whose tokens the operator may not request (Detail says so then).
	ServiceAccountMissing
	// ServiceAccountNotAllowed is a workload identity whose ServiceAccount tokens
	// the operator will not request for its audience; Detail says why.
	ServiceAccountNotAllowed
)

// Credential is one read of a Source. It never prints its secret: the client
// secret is unexported and reaches Entra ID only through Reader.Entra.
type Credential struct {
	State  State
	Source Source
	// Certificate is the parsed certificate and key of a usable certificate
	// credential; nil otherwise.
	Certificate *entra.Certificate
	// Detail says why a certificate cannot be used (without key material), or why
	// the operator may not, or will not, use a workload identity's ServiceAccount.
	Detail string
	// Version names the Secret or ServiceAccount read (UID and resourceVersion),
	// empty when it is missing: any change of it is new input for a failed request.
	Version string

	clientSecret string
}

// String and GoString print the credential without its client secret, for any
// %v that reaches a message or a log line.
func (c Credential) String() string {
	return fmt.Sprintf("credential.Credential{State: %d, Source: %+v, Version: %q}", c.State, c.Source, c.Version)
}

// GoString is String, for %#v.
func (c Credential) GoString() string { return c.String() }

// Material is what a token minted with this credential depends on, for the
// inputs digest: the client secret, or the public identity of a certificate or
// ServiceAccount, so that a rotation re-mints and a restart with the same
// credential reuses the published token. It is never shown.
func (c Credential) Material() string {
	if c.Source == nil {
		return ""
	}
	return c.Source.material(c)
}

// Problem says why the credential cannot be used, naming app ("DefenderApp
// partner", "the inline app") and the object to fix; nil when it can. No message
// quotes a credential.
func (c Credential) Problem(app string, now time.Time) *Problem {
	if c.State == NotRead || c.Source == nil {
		// Checks before this one (a missing or ungranted app) say why nothing was
		// read; should none have, no token is requested with nothing.
		return &Problem{v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf("No credential of %s was read: check that its spec names one.", app)}
	}
	return c.Source.problem(c, app, now)
}

// Problem is a reason of the api/v1alpha1 table and a message saying what to do.
type Problem struct {
	Reason, Message string
}

// Source is where one kind of credential lives and how it is used. Its methods
// are unexported: every kind is one of this package's, whose handling of secret
// material is known here.
type Source interface {
	Kind() v1alpha1.CredentialKind
	// Object is the Secret or ServiceAccount the credential is read from.
	Object() types.NamespacedName
	// IndexKey is what the apps' credential index holds: the object's kind and
	// name ("Secret/partner"), in the namespace the credential must live in.
	IndexKey() string

	read(ctx context.Context, r *Reader) (Credential, error)
	entraCredential(ctx context.Context, r *Reader, c Credential) (entra.Credential, error)
	material(c Credential) string
	problem(c Credential, app string, now time.Time) *Problem
}

// ForApp is the Source an app's spec.credential names, in namespace (the
// DefenderApp's own, or the cluster resource namespace); nil when it names none,
// which admission refuses.
func ForApp(c v1alpha1.AppCredential, namespace string) Source {
	switch {
	case c.ClientSecret != nil:
		return ClientSecret{
			Secret:   types.NamespacedName{Namespace: namespace, Name: c.ClientSecret.SecretRef.Name},
			Key:      c.ClientSecret.SecretRef.KeyOrDefault(),
			KeyField: "credential.clientSecret.secretRef.key",
		}
	case c.Certificate != nil:
		return Certificate{Secret: types.NamespacedName{Namespace: namespace, Name: c.Certificate.SecretRef.Name}}
	case c.WorkloadIdentity != nil:
		return WorkloadIdentity{
			ServiceAccount: types.NamespacedName{Namespace: namespace, Name: c.WorkloadIdentity.ServiceAccountName},
			Audience:       c.WorkloadIdentity.AudienceOrDefault(),
		}
	}
	return nil
}

// ForInlineTenant is the Source of a DefenderTenant that carries its own
// clientSecretRef.
func ForInlineTenant(tenant *v1alpha1.DefenderTenant) Source {
	return ClientSecret{
		Secret:   types.NamespacedName{Namespace: tenant.Namespace, Name: tenant.Spec.ClientSecretRef.Name},
		Key:      tenant.ClientSecretKeyOrDefault(),
		KeyField: "spec.clientSecretRef.key",
	}
}

// IndexKeys is what the apps' credential index holds for an app: the object its
// credential is read from.
func IndexKeys(c v1alpha1.AppCredential) []string {
	if s := ForApp(c, ""); s != nil {
		return []string{s.IndexKey()}
	}
	return nil
}
