package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// CredentialKind names how an app authenticates to Entra ID. It is what
// status.credential and the Credential printer column show.
type CredentialKind string

const (
	// CredentialClientSecret is a client secret, sent as client_secret.
	CredentialClientSecret CredentialKind = "ClientSecret"
	// CredentialCertificate is a certificate whose key signs a client assertion.
	CredentialCertificate CredentialKind = "Certificate"
	// CredentialWorkloadIdentity is a Kubernetes ServiceAccount token, sent as a
	// federated client assertion.
	CredentialWorkloadIdentity CredentialKind = "WorkloadIdentity"
)

// DefaultWorkloadIdentityAudience is the audience of the ServiceAccount token when
// credential.workloadIdentity.audience is empty: the one Entra ID suggests for
// federated credentials.
const DefaultWorkloadIdentityAudience = "api://AzureADTokenExchange"

// LabelWorkloadIdentity marks a ServiceAccount whose tokens the operator may send to
// Entra ID as a workload identity; its value must be "true". Whoever may create
// ClusterDefenderApps could otherwise name any ServiceAccount of the cluster
// resource namespace, and have its tokens sent to whatever token endpoint the
// operator talks to. Labelling is the ServiceAccount owner's consent.
const LabelWorkloadIdentity = "defender.tenantcreds.io/workload-identity"

// WorkloadIdentityValue is the value of LabelWorkloadIdentity that marks a
// ServiceAccount for workload identity; any other value does not.
const WorkloadIdentityValue = "true"

// AppSecretKeyReference points at a key of a Secret in the app's credential
// namespace: a DefenderApp's own namespace, or, for a ClusterDefenderApp, the
// operator's cluster resource namespace (flag --cluster-resource-namespace).
type AppSecretKeyReference struct {
	// name of the Secret. For a DefenderApp it is in the app's own namespace; for a
	// ClusterDefenderApp it is in the operator's cluster resource namespace
	// (--cluster-resource-namespace, default the namespace the operator runs in).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key of the Secret's data that holds the client secret value (the secret's
	// value, not its ID). Default "client-secret".
	// +optional
	// +kubebuilder:default=client-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// KeyOrDefault is the Secret key the client secret is read from.
func (r AppSecretKeyReference) KeyOrDefault() string {
	if r.Key != "" {
		return r.Key
	}
	return DefaultClientSecretKey
}

// AppSecretReference points at a whole Secret in the app's credential namespace: a
// DefenderApp's own namespace, or, for a ClusterDefenderApp, the operator's cluster
// resource namespace (flag --cluster-resource-namespace).
type AppSecretReference struct {
	// name of the Secret. For a DefenderApp it is in the app's own namespace; for a
	// ClusterDefenderApp it is in the operator's cluster resource namespace
	// (--cluster-resource-namespace, default the namespace the operator runs in).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// ClientSecretCredential authenticates with a client secret of the app registration.
type ClientSecretCredential struct {
	// secretRef selects the Secret key holding the client secret. Rotating the value
	// there gives every tenant that uses the app a new token promptly.
	// +required
	SecretRef AppSecretKeyReference `json:"secretRef"`
}

// CertificateCredential authenticates with a certificate registered on the app
// registration: the operator signs a client assertion (PS256) with its key.
type CertificateCredential struct {
	// secretRef names a kubernetes.io/tls Secret: tls.crt holds the certificate in
	// PEM, leaf first; tls.key holds its RSA private key in PEM. Register the
	// certificate (not the key) on the app registration; status.certificate shows
	// its thumbprints to check it against. Replacing the Secret's contents (a
	// rotation, for example by cert-manager) gives every tenant a new token promptly.
	// +required
	SecretRef AppSecretReference `json:"secretRef"`

	// rotation lets the operator own the certificate: it generates the key pair in
	// the cluster (the private key never leaves it), creates the Secret when it is
	// missing, and replaces each certificate before it expires through Microsoft
	// Graph's addKey and removeKey on the app registration. Without it, the Secret
	// is read as it is and rotated by whoever writes it.
	// +optional
	Rotation *CertificateRotation `json:"rotation,omitempty"`
}

// CertificateRotation says which app registration the operator rolls keys on, and
// how long each certificate lives.
// Each certificate is in use from its promotion until notAfter - renewBefore, so
// that span is held to at least 12h: a typo in renewBefore must not make the
// operator rotate (and call Graph, and re-mint every tenant) all day long.
// +kubebuilder:validation:XValidation:rule="!has(self.renewBefore) || duration(self.renewBefore) + duration('12h') <= (has(self.validity) ? duration(self.validity) : duration('2160h'))",message="renewBefore must be at least 12h shorter than validity (default 2160h)"
type CertificateRotation struct {
	// applicationObjectID is the Object ID of the app registration (not its client
	// ID): the {id} of Graph's /applications/{id}/addKey.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`
	ApplicationObjectID string `json:"applicationObjectID"`

	// homeTenantID is the partner's tenant, where the app is registered: Graph
	// tokens for addKey and removeKey, and the checks of a new key, are asked there.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`
	HomeTenantID string `json:"homeTenantID"`

	// validity is the lifetime of each certificate the operator generates; default
	// 2160h (90 days). At least 24h, so that a certificate outlives a rotation's
	// retries and retireAfter; at most 87600h (10 years).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('24h') && duration(self) <= duration('87600h')",message="validity must be between 24h and 87600h"
	Validity *metav1.Duration `json:"validity,omitempty"`

	// renewBefore is how long before a certificate's notAfter its replacement
	// starts; default a third of validity. At least 1h, the time a new key may take
	// to reach every Entra ID replica, with retries; a new key is waited for
	// without a failure for 30 minutes, or a quarter of renewBefore if shorter.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="renewBefore must be at least 1h"
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// retireAfter is how long a replaced key stays registered on the app
	// registration, for workloads still holding tokens minted with it; default 24h.
	// Between 1h (a token lives about an hour) and 720h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('720h')",message="retireAfter must be between 1h and 720h"
	RetireAfter *metav1.Duration `json:"retireAfter,omitempty"`
}

// WorkloadIdentityCredential authenticates with workload identity federation: a
// Kubernetes ServiceAccount token, requested from the TokenRequest API for each
// token request, is the client assertion. Only a ClusterDefenderApp may use it.
type WorkloadIdentityCredential struct {
	// serviceAccountName is the ServiceAccount, in the operator's cluster resource
	// namespace (--cluster-resource-namespace), whose tokens the operator requests.
	// It must carry the label defender.tenantcreds.io/workload-identity: "true" and
	// must not be the operator's own. Add a federated credential to the app
	// registration with the issuer, subject and audience that
	// status.federatedCredential shows.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName"`

	// audience of the ServiceAccount token; it must equal the audience of the app's
	// federated credential, and be one of the operator's
	// --workload-identity-audiences. Default "api://AzureADTokenExchange".
	// +optional
	// +kubebuilder:default="api://AzureADTokenExchange"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Audience string `json:"audience,omitempty"`
}

// AudienceOrDefault is the audience the ServiceAccount token is requested for.
func (w *WorkloadIdentityCredential) AudienceOrDefault() string {
	if w.Audience != "" {
		return w.Audience
	}
	return DefaultWorkloadIdentityAudience
}

// AppCredential is how the app authenticates to Entra ID: exactly one of its fields.
// +kubebuilder:validation:XValidation:rule="[has(self.clientSecret), has(self.certificate), has(self.workloadIdentity)].filter(x, x).size() == 1",message="credential must set exactly one of clientSecret, certificate or workloadIdentity"
type AppCredential struct {
	// clientSecret: a client secret of the app registration, in a Secret.
	// +optional
	ClientSecret *ClientSecretCredential `json:"clientSecret,omitempty"`

	// certificate: a certificate registered on the app registration, with its RSA
	// key, in a kubernetes.io/tls Secret. No shared secret leaves the cluster.
	// +optional
	Certificate *CertificateCredential `json:"certificate,omitempty"`

	// workloadIdentity: workload identity federation with a ServiceAccount of the
	// operator's cluster resource namespace. No secret is stored at all. Only a
	// ClusterDefenderApp may use it, because the operator may mint ServiceAccount
	// tokens only in its cluster resource namespace.
	// +optional
	WorkloadIdentity *WorkloadIdentityCredential `json:"workloadIdentity,omitempty"`
}

// Kind names the credential that is set: ClientSecret, Certificate,
// WorkloadIdentity, or "" when none is (admission forbids that).
func (c *AppCredential) Kind() CredentialKind {
	switch {
	case c.ClientSecret != nil:
		return CredentialClientSecret
	case c.Certificate != nil:
		return CredentialCertificate
	case c.WorkloadIdentity != nil:
		return CredentialWorkloadIdentity
	}
	return ""
}

// AppSpec is what a DefenderApp and a ClusterDefenderApp have in common: the
// partner's multi-tenant Entra ID app registration and its credential.
type AppSpec struct {
	// clientID is the application (client) ID of the partner's multi-tenant Entra ID app, a GUID.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`
	ClientID string `json:"clientID"`

	// cloud is the Microsoft cloud the app is registered in: Public (default), USGov
	// (GCC), USGovHigh (GCC High) or DoD. It selects the sign-in host and the default
	// resource of every DefenderTenant that uses the app. GCC High and DoD tenants
	// need an app registered in Azure Government.
	// +optional
	// +kubebuilder:default=Public
	Cloud Cloud `json:"cloud,omitempty"`

	// credential is how the app authenticates: exactly one of clientSecret,
	// certificate or workloadIdentity (ClusterDefenderApp only). A DefenderApp's
	// Secret is in its own namespace; a ClusterDefenderApp's Secret or ServiceAccount
	// is in the operator's cluster resource namespace (--cluster-resource-namespace),
	// so no customer namespace holds a copy of the partner's credential.
	// +required
	Credential AppCredential `json:"credential"`

	// adminConsentRedirectURI is added as redirect_uri to the status.adminConsentURL
	// of every DefenderTenant that uses the app: where the customer admin lands after
	// consenting. It must be a Web redirect URI registered on the app registration,
	// https (plain http only for a loopback host); without one, the admin sees
	// AADSTS500113 after consenting.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && size(url(self).getHostname()) > 0 && !self.contains('#') && !self.matches('^[^/]*//[^/?#]*@') && (url(self).getScheme() == 'https' || self.matches('^(?i)http://(localhost|127[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}|[[]::1])(:[0-9]*)?([/?].*)?$'))",message="adminConsentRedirectURI must be an absolute https URL such as https://portal.azure.com (plain http only for a loopback host), without user info or a fragment"
	AdminConsentRedirectURI string `json:"adminConsentRedirectURI,omitempty"`
}

// CloudOrDefault is the cloud, Public when unset.
func (s *AppSpec) CloudOrDefault() Cloud {
	if s.Cloud != "" {
		return s.Cloud
	}
	return CloudPublic
}

// DefenderAppSpec defines a partner app for the DefenderTenants of its namespace.
// +kubebuilder:validation:XValidation:rule="!has(self.credential.workloadIdentity)",message="credential.workloadIdentity is only allowed on a ClusterDefenderApp (the operator mints ServiceAccount tokens only in its cluster resource namespace); use clientSecret or certificate on a DefenderApp",fieldPath=".credential"
type DefenderAppSpec struct {
	AppSpec `json:",inline"`
}

// TenantGrant lets the DefenderTenants of some namespaces use a ClusterDefenderApp
// for some customer tenants. It matches a DefenderTenant whose namespace is listed in
// namespaces or has labels matching namespaceSelector, and whose tenantID is listed
// in tenantIDs.
// +kubebuilder:validation:XValidation:rule="(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)",message="a tenant grant must set namespaces, namespaceSelector, or both"
type TenantGrant struct {
	// namespaces lists namespaces, by name, whose DefenderTenants the grant covers.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// namespaceSelector covers the DefenderTenants of every namespace whose labels it
	// matches; a change of a namespace's labels re-evaluates its tenants. An empty
	// selector ({}) matches every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// tenantIDs lists the customer tenant IDs (GUIDs) the covered namespaces may
	// request tokens for; "*" matches any tenant.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:Pattern=`^(\*|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$`
	TenantIDs []string `json:"tenantIDs"`

	// resources, when set, limits what the covered tenants may request tokens for
	// to these resources (https URLs; a trailing slash is ignored). A tenant matched
	// only by grants with resources gets AppNotAllowed for any other resource. Unset,
	// the grant allows every resource of the operator's --allowed-resources.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:items:Pattern=`^https://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[^\s?#]*)?$`
	Resources []string `json:"resources,omitempty"`
}

// ClusterDefenderAppSpec defines a partner app for DefenderTenants of any namespace
// that one of its tenantGrants matches.
type ClusterDefenderAppSpec struct {
	AppSpec `json:",inline"`

	// tenantGrants say which namespaces may use the app, for which customer tenants.
	// A DefenderTenant is served only when one grant matches both its namespace and
	// its tenantID; any other gets AppNotAllowed, and a token Secret it already
	// published is deleted, so withdrawing a grant withdraws the token.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	TenantGrants []TenantGrant `json:"tenantGrants"`
}

// CertificateStatus describes the certificate of a certificate credential.
type CertificateStatus struct {
	// sha1Thumbprint is the certificate's SHA-1 thumbprint in upper-case hex, as the
	// Entra portal shows it under Certificates & secrets: compare it there to check
	// that this is the certificate registered on the app registration.
	// +optional
	SHA1Thumbprint string `json:"sha1Thumbprint,omitempty"`

	// sha256Thumbprint is the certificate's SHA-256 thumbprint, base64url-encoded: the
	// x5t#S256 header of the client assertions the operator signs, by which Entra ID
	// finds the registered certificate.
	// +optional
	SHA256Thumbprint string `json:"sha256Thumbprint,omitempty"`

	// notAfter is the end of the certificate's validity. A Warning Event is raised
	// within 30 days of it; past it the app is CertificateExpired.
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`

	// expiring is true while the certificate is usable and within 30 days of
	// notAfter. The CertificateExpiring Event is recorded when it turns true for a
	// certificate, once, also across restarts of the operator.
	// +optional
	Expiring bool `json:"expiring,omitempty"`

	// pem is the public certificate in use, in PEM (never a key): with managed
	// rotation, what to upload to the app registration for the first key.
	// +optional
	PEM string `json:"pem,omitempty"`

	// keyID is the certificate's keyCredential keyId on the app registration, when
	// known (managed rotation records it from addKey).
	// +optional
	KeyID string `json:"keyID,omitempty"`
}

// RotationPhase is the step a managed certificate rotation has reached; each is
// persisted before the next starts, so that a restarted operator resumes there.
// +kubebuilder:validation:Enum=Idle;KeyGenerated;KeyAdded;Promoted
type RotationPhase string

const (
	// RotationIdle means no rotation runs; the next starts at nextRotationTime.
	RotationIdle RotationPhase = "Idle"
	// RotationKeyGenerated means the next key and certificate are in the Secret
	// (next.crt, next.key), not yet registered.
	RotationKeyGenerated RotationPhase = "KeyGenerated"
	// RotationKeyAdded means addKey registered the next certificate; the operator waits
	// until Entra ID accepts it.
	RotationKeyAdded RotationPhase = "KeyAdded"
	// RotationPromoted means the next certificate is in use; the previous key is removed
	// after retireAfter.
	RotationPromoted RotationPhase = "Promoted"
)

// RotationStatus is the persisted state of managed certificate rotation.
type RotationStatus struct {
	// phase is the step reached: Idle, KeyGenerated, KeyAdded or Promoted.
	// +optional
	Phase RotationPhase `json:"phase,omitempty"`

	// nextRotationTime is when the next rotation starts (notAfter - renewBefore).
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`

	// lastRotationTime is when a certificate was last promoted.
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`

	// pendingThumbprint is the SHA-1 thumbprint of the next certificate while a
	// rotation runs.
	// +optional
	PendingThumbprint string `json:"pendingThumbprint,omitempty"`

	// pendingKeyID is the keyId addKey returned for the next certificate, until it
	// is promoted.
	// +optional
	PendingKeyID string `json:"pendingKeyID,omitempty"`

	// previousKeyID is the keyId of the replaced certificate, until removeKey
	// removed it.
	// +optional
	PreviousKeyID string `json:"previousKeyID,omitempty"`
}

// TenantsSummary counts the DefenderTenants that use an app, by state: the fleet
// at a glance, and who needs attention.
type TenantsSummary struct {
	// total is the number of DefenderTenants whose spec.appRef names this app.
	Total int32 `json:"total"`

	// ready counts those with Ready=True.
	Ready int32 `json:"ready"`

	// stalled counts those with Stalled=True.
	Stalled int32 `json:"stalled"`

	// reasons counts the tenants needing attention by the reason of their Stalled
	// condition or, for those neither Ready nor Stalled, of their Ready condition.
	// Only the contract's reasons are counted.
	// +optional
	Reasons map[string]int32 `json:"reasons,omitempty"`

	// retiringResource counts the tenants whose effective resource is a retiring
	// Defender API (status.resourceRetiresAt is set).
	// +optional
	RetiringResource int32 `json:"retiringResource,omitempty"`
}

// FederatedCredentialStatus is what the app registration's federated credential must
// hold, exactly, for a workloadIdentity credential.
type FederatedCredentialStatus struct {
	// issuer is the cluster's ServiceAccount token issuer URL.
	// +optional
	Issuer string `json:"issuer,omitempty"`

	// subject is system:serviceaccount:<cluster resource namespace>:<serviceAccountName>.
	// +optional
	Subject string `json:"subject,omitempty"`

	// audience is the audience the ServiceAccount token is requested for.
	// +optional
	Audience string `json:"audience,omitempty"`

	// serviceAccountUID is the ServiceAccount object the issuer, subject and
	// audience were read from: a re-created ServiceAccount has them read again,
	// from a new ServiceAccount token.
	// +optional
	ServiceAccountUID types.UID `json:"serviceAccountUID,omitempty"`

	// observedGeneration is the app's generation they were read for: a changed
	// spec has them read again.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// AppStatus is what the operator observed of an app's credential.
type AppStatus struct {
	// observedGeneration is the metadata.generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, True with reason CredentialReady when the credential can be
	// used, else False with CredentialsNotFound, InvalidCertificate,
	// CertificateExpired or ServiceAccountNotFound.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// credential is the kind of credential in use: ClientSecret, Certificate or
	// WorkloadIdentity.
	// +optional
	// +kubebuilder:validation:Enum=ClientSecret;Certificate;WorkloadIdentity
	Credential CredentialKind `json:"credential,omitempty"`

	// certificate describes the certificate of a certificate credential: its
	// thumbprints, to check against the certificate registered on the app
	// registration, and its expiry.
	// +optional
	Certificate *CertificateStatus `json:"certificate,omitempty"`

	// federatedCredential shows, for a workloadIdentity credential, the issuer,
	// subject and audience to enter, exactly so, as a federated credential of the app
	// registration.
	// +optional
	FederatedCredential *FederatedCredentialStatus `json:"federatedCredential,omitempty"`

	// rotation is the state of managed certificate rotation
	// (spec.credential.certificate.rotation).
	// +optional
	Rotation *RotationStatus `json:"rotation,omitempty"`

	// tenants summarises the DefenderTenants that use this app. It is written at
	// most once every 10 seconds, and only when it changed.
	// +optional
	Tenants *TenantsSummary `json:"tenants,omitempty"`
}

// DefenderApp is a partner's multi-tenant Entra ID app and its credential, for the
// DefenderTenants of its own namespace (spec.appRef). Its credential Secret is in
// the same namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dapp,categories=defender
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.clientID`
// +kubebuilder:printcolumn:name="Cloud",type=string,JSONPath=`.spec.cloud`
// +kubebuilder:printcolumn:name="Credential",type=string,JSONPath=`.status.credential`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Tenants",type=integer,JSONPath=`.status.tenants.total`
// +kubebuilder:printcolumn:name="Ready Tenants",type=integer,JSONPath=`.status.tenants.ready`
// +kubebuilder:printcolumn:name="Stalled",type=integer,JSONPath=`.status.tenants.stalled`
// +kubebuilder:printcolumn:name="Next Rotation",type=string,JSONPath=`.status.rotation.nextRotationTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DefenderApp struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which app registration, in which cloud, and with which credential.
	// +required
	Spec DefenderAppSpec `json:"spec"`

	// status reports whether the credential can be used, and what to register on the
	// app registration.
	// +optional
	Status AppStatus `json:"status,omitempty"`
}

// DefenderAppList is a list of DefenderApps.
// +kubebuilder:object:root=true
type DefenderAppList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DefenderApp `json:"items"`
}

// ClusterDefenderApp is a partner's multi-tenant Entra ID app and its credential,
// defined once for the cluster. Its credential lives only in the operator's cluster
// resource namespace (--cluster-resource-namespace), and its tenantGrants say which
// namespaces may use it for which customer tenants.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cdapp,categories=defender
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.clientID`
// +kubebuilder:printcolumn:name="Cloud",type=string,JSONPath=`.spec.cloud`
// +kubebuilder:printcolumn:name="Credential",type=string,JSONPath=`.status.credential`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Tenants",type=integer,JSONPath=`.status.tenants.total`
// +kubebuilder:printcolumn:name="Ready Tenants",type=integer,JSONPath=`.status.tenants.ready`
// +kubebuilder:printcolumn:name="Stalled",type=integer,JSONPath=`.status.tenants.stalled`
// +kubebuilder:printcolumn:name="Next Rotation",type=string,JSONPath=`.status.rotation.nextRotationTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterDefenderApp struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which app registration, in which cloud, with which credential, and
	// which namespaces may use it for which tenants.
	// +required
	Spec ClusterDefenderAppSpec `json:"spec"`

	// status reports whether the credential can be used, and what to register on the
	// app registration.
	// +optional
	Status AppStatus `json:"status,omitempty"`
}

// ClusterDefenderAppList is a list of ClusterDefenderApps.
// +kubebuilder:object:root=true
type ClusterDefenderAppList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterDefenderApp `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DefenderApp{}, &DefenderAppList{}, &ClusterDefenderApp{}, &ClusterDefenderAppList{})
}

// App is what DefenderApp and ClusterDefenderApp have in common, so that code
// serving DefenderTenants can treat both kinds alike.
// +kubebuilder:object:generate=false
type App interface {
	metav1.Object
	runtime.Object
	// AppSpec is the app's spec without the kind-specific fields.
	AppSpec() *AppSpec
	// AppStatus is the app's status, to read or to fill in.
	AppStatus() *AppStatus
}

var (
	_ App = &DefenderApp{}
	_ App = &ClusterDefenderApp{}
)

// AppSpec is the spec shared with ClusterDefenderApp.
func (a *DefenderApp) AppSpec() *AppSpec { return &a.Spec.AppSpec }

// AppStatus is the app's status.
func (a *DefenderApp) AppStatus() *AppStatus { return &a.Status }

// AppSpec is the spec shared with DefenderApp.
func (a *ClusterDefenderApp) AppSpec() *AppSpec { return &a.Spec.AppSpec }

// AppStatus is the app's status.
func (a *ClusterDefenderApp) AppStatus() *AppStatus { return &a.Status }
