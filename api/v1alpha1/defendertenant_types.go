package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Cloud names the Microsoft cloud a customer tenant lives in. It picks the sign-in
// (authority) host and the default Defender XDR API resource.
// +kubebuilder:validation:Enum=Public;USGov;USGovHigh;DoD
type Cloud string

const (
	// CloudPublic is the commercial cloud (login.microsoftonline.com, api.security.microsoft.com).
	CloudPublic Cloud = "Public"
	// CloudUSGov is GCC (login.microsoftonline.com, api-gcc.security.microsoft.us).
	CloudUSGov Cloud = "USGov"
	// CloudUSGovHigh is GCC High (login.microsoftonline.us, api-gov.security.microsoft.us).
	CloudUSGovHigh Cloud = "USGovHigh"
	// CloudDoD is DoD (login.microsoftonline.us, api-gov.security.microsoft.us).
	CloudDoD Cloud = "DoD"
)

// ClientSecretReference points at the key of a Secret, in the DefenderTenant's own
// namespace, that holds the multi-tenant application's client secret.
type ClientSecretReference struct {
	// name of the Secret in the DefenderTenant's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key of the Secret's data that holds the client secret value.
	// +optional
	// +kubebuilder:default=client-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// DefenderTenantSpec describes one customer tenant whose Defender API token the
// operator mints with the client-credentials grant and publishes in a Secret.
// +kubebuilder:validation:XValidation:rule="!has(self.resource) || size(self.resource) == 0 || (isURL(self.resource) && url(self.resource).getScheme() == 'https' && size(url(self.resource).getHostname()) > 0)",message="resource must be an https URL"
// +kubebuilder:validation:XValidation:rule="!has(self.refreshBefore) || duration(self.refreshBefore) > duration('0s')",message="refreshBefore must be a positive duration such as 20m or 1h"
// +kubebuilder:validation:XValidation:rule="has(self.appRef) || has(self.clientID) || has(self.clientSecretRef)",message="the tenant needs an app: set appRef, or the inline clientID and clientSecretRef"
// +kubebuilder:validation:XValidation:rule="!has(self.appRef) || !(has(self.clientID) || has(self.clientSecretRef))",message="set either appRef or the inline clientID and clientSecretRef, not both: with appRef the app's clientID and credential are used"
// +kubebuilder:validation:XValidation:rule="has(self.appRef) || !has(self.clientID) || has(self.clientSecretRef)",message="clientSecretRef is required with clientID (the inline form); or remove both and set appRef",fieldPath=".clientSecretRef"
// +kubebuilder:validation:XValidation:rule="has(self.appRef) || !has(self.clientSecretRef) || has(self.clientID)",message="clientID is required with clientSecretRef (the inline form); or remove both and set appRef",fieldPath=".clientID"
// +kubebuilder:validation:XValidation:rule="!has(self.appRef) || !has(self.cloud)",message="cloud is only for the inline form: with appRef the cloud is the app's spec.cloud; remove spec.cloud",fieldPath=".cloud"
type DefenderTenantSpec struct {
	// tenantID is the customer tenant's directory (tenant) ID, a GUID.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`
	TenantID string `json:"tenantID"`

	// appRef names the app whose clientID, cloud and credential the token is requested
	// with: a DefenderApp in this namespace, or a ClusterDefenderApp whose tenantGrants
	// cover this namespace and tenantID. Set either appRef or the inline form
	// (clientID and clientSecretRef), not both.
	// +optional
	AppRef *AppReference `json:"appRef,omitempty"`

	// clientID is the application (client) ID of the partner's multi-tenant Entra ID
	// app, a GUID. Inline form: set it with clientSecretRef, or use appRef instead.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`
	ClientID string `json:"clientID,omitempty"`

	// clientSecretRef selects the Secret key, in this namespace, holding the app's client secret.
	// Rotating the value there makes the operator mint a new token promptly.
	// Inline form: set it with clientID, or use appRef instead.
	// +optional
	ClientSecretRef ClientSecretReference `json:"clientSecretRef,omitzero"`

	// cloud is the Microsoft cloud of the tenant: Public (the default when unset),
	// USGov (GCC), USGovHigh (GCC High) or DoD. It selects the sign-in host and the
	// default resource. Inline form only: with appRef the cloud is the app's.
	// +optional
	Cloud Cloud `json:"cloud,omitempty"`

	// resource is the API the token is for, requested as scope "<resource>/.default".
	// Empty means the Defender XDR API of the cloud. It must be an https URL in the
	// operator's --allowed-resources list.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Resource string `json:"resource,omitempty"`

	// requiredRoles lists application permissions (for example Incident.Read.All) that
	// the token's roles claim must contain. Entra issues tokens without roles when
	// consent lacks them; such a token is never published.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^\S+$`
	RequiredRoles []string `json:"requiredRoles,omitempty"`

	// tokenSecretName is the name of the Secret the token is published in.
	// Default "<metadata.name>-token".
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	TokenSecretName string `json:"tokenSecretName,omitempty"`

	// refreshBefore is how long before expiry a new token is minted, as a Go duration
	// (for example 20m). Default: one third of the token's actual lifetime. A value not
	// shorter than the lifetime falls back to the default.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	RefreshBefore *metav1.Duration `json:"refreshBefore,omitempty"`

	// suspend stops token requests for this tenant. The published Secret is left alone.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// secretTemplate adds data keys, labels and annotations to the token Secret, for
	// workloads that want the token in another shape (an HTTP header line, a config
	// file) or tools that watch the Secret (Stakater Reloader).
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// LabelValue is a Kubernetes label value: at most 63 characters, letters, digits,
// '-', '_' and '.', beginning and ending with a letter or digit, or empty.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue string

// SecretTemplate is what the token Secret carries beside its four fixed keys. The
// operator owns the Secret's data: a key removed here is removed from the Secret at
// the next publish. Labels and annotations are added; the operator's own win.
type SecretTemplate struct {
	// labels are added to the token Secret. They may not set
	// app.kubernetes.io/managed-by or defender.tenantcreds.io/tenant, which the
	// operator sets. Keys and values follow the Kubernetes label syntax.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="!('app.kubernetes.io/managed-by' in self) && !('defender.tenantcreds.io/tenant' in self)",message="labels may not set app.kubernetes.io/managed-by or defender.tenantcreds.io/tenant: the operator sets them"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="label keys must be a name of at most 63 characters (letters, digits, '-', '_', '.'), optionally prefixed by a DNS subdomain and '/'"
	Labels map[string]LabelValue `json:"labels,omitempty"`

	// annotations are added to the token Secret, for example
	// reloader.stakater.com/match: "true". The operator's own annotations
	// (defender.tenantcreds.io/minted-at, defender.tenantcreds.io/inputs-hash) win.
	// Each value is at most 4096 characters. Each key must start with a prefix the
	// operator allows (its --secret-template-annotation-prefixes, by default
	// reloader.stakater.com/), so that no annotation asks another controller to copy
	// the token elsewhere; another key is reported as InvalidSecretTemplate and
	// nothing is published.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="annotation keys must be a name of at most 63 characters (letters, digits, '-', '_', '.'), optionally prefixed by a DNS subdomain and '/'"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 4096)",message="annotation values are at most 4096 characters"
	Annotations map[string]string `json:"annotations,omitempty"`

	// data maps extra Secret keys to templates, rendered at every publish, so they
	// follow each refresh. A template is plain interpolation: literal text with
	// {{ .AccessToken }}, {{ .TokenType }}, {{ .ExpiresAt }} (RFC 3339, UTC),
	// {{ .TenantID }} and {{ .Resource }} references ({{- and -}} trim the spaces
	// beside them), at most 5 in one template, and nothing else: no functions, pipelines,
	// variables, conditionals or comments. For example
	// authorization: "Bearer {{ .AccessToken }}". A key renders to at most its
	// template's length plus five values. Keys are valid Secret keys other than
	// access_token, token_type, expires_at and tenant_id; at most 32 keys, each
	// template at most 4096 characters. A template stored before these rules is
	// reported as InvalidSecretTemplate, and then no token is requested and nothing
	// is published.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))",message="data keys must be valid Secret keys: letters, digits, '-', '_' and '.', at most 253 characters"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['access_token', 'token_type', 'expires_at', 'tenant_id']))",message="data keys may not be access_token, token_type, expires_at or tenant_id: the operator writes them"
	Data map[string]DataTemplate `json:"data,omitempty"`
}

// The first rule accepts exactly what internal/secrettemplate does, following
// text/template's lexer: {{- needs a space, tab, CR or LF after it and -}} one before
// it, and no other character is a space inside {{ }}. Every {{ of an accepted
// template opens a reference, which the second rule counts.

// DataTemplate is one template of spec.secretTemplate.data: literal text with
// references to the five values, as data describes.
// +kubebuilder:validation:MaxLength=4096
// +kubebuilder:validation:XValidation:rule=`self.matches(r'^(?:[^{]|[{][^{]|[{]$|[{][{](?:-[ \t\r\n])?[ \t\r\n]*[.](?:AccessToken|TokenType|ExpiresAt|TenantID|Resource)[ \t\r\n]*(?:[ \t\r\n]-)?[}][}])*$')`,message="a data template is literal text with {{ .AccessToken }}, {{ .TokenType }}, {{ .ExpiresAt }}, {{ .TenantID }} and {{ .Resource }} references only ({{- and -}} may trim spaces): functions (printf, slice, index, len and the others), pipelines, variables, conditionals and comments are not allowed"
// +kubebuilder:validation:XValidation:rule="self.split('{{').size() <= 6",message="a data template has at most 5 references"
type DataTemplate string

// AppKind is the kind of app an appRef names.
// +kubebuilder:validation:Enum=DefenderApp;ClusterDefenderApp
type AppKind string

const (
	// AppKindDefenderApp is a namespaced DefenderApp, in the DefenderTenant's namespace.
	AppKindDefenderApp AppKind = "DefenderApp"
	// AppKindClusterDefenderApp is a cluster-scoped ClusterDefenderApp.
	AppKindClusterDefenderApp AppKind = "ClusterDefenderApp"
)

// AppReference names the DefenderApp or ClusterDefenderApp a DefenderTenant uses.
type AppReference struct {
	// kind is DefenderApp (default), in this namespace, or ClusterDefenderApp.
	// +optional
	// +kubebuilder:default=DefenderApp
	Kind AppKind `json:"kind,omitempty"`

	// name of the app. A DefenderApp must be in the DefenderTenant's namespace; a
	// ClusterDefenderApp serves the tenant only if one of its tenantGrants matches
	// this namespace and spec.tenantID (else AppNotAllowed).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// KindOrDefault is the kind of app referenced, DefenderApp when unset.
func (r *AppReference) KindOrDefault() AppKind {
	if r.Kind != "" {
		return r.Kind
	}
	return AppKindDefenderApp
}

// DefenderTenantStatus is what the operator observed and did, for kubectl, alerts and GitOps health.
type DefenderTenantStatus struct {
	// observedGeneration is the metadata.generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling and Stalled, in kstatus form.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// tokenSecretName is the Secret the token is published in.
	// +optional
	TokenSecretName string `json:"tokenSecretName,omitempty"`

	// tokenSecretUID is the UID of the token Secret the operator created. Only the
	// Secret with this UID is written: an ownerReference alone can be forged by
	// anyone who may create Secrets.
	// +optional
	TokenSecretUID types.UID `json:"tokenSecretUID,omitempty"`

	// expiresAt is the expiry of the published token.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// lastRefreshTime is when the published token was minted.
	// +optional
	LastRefreshTime *metav1.Time `json:"lastRefreshTime,omitempty"`

	// nextRefreshTime is when the operator next asks Entra ID for a token.
	// +optional
	NextRefreshTime *metav1.Time `json:"nextRefreshTime,omitempty"`

	// lastHandledRequestedAt is the value of the annotation
	// defender.tenantcreds.io/requested-at whose token request was made: each
	// request is handled once.
	// +optional
	LastHandledRequestedAt string `json:"lastHandledRequestedAt,omitempty"`

	// resourceRetiresAt is when the tenant's effective resource (spec.resource, or
	// the cloud's default) stops working: set for the Defender XDR and Defender for
	// Endpoint APIs, which Microsoft retires on 2027-02-01 in favour of Microsoft
	// Graph (docs/migrating-to-graph.md). Absent for a resource with no announced end.
	// +optional
	ResourceRetiresAt *metav1.Time `json:"resourceRetiresAt,omitempty"`

	// grantedRoles are the roles of the last minted token, sorted.
	// +optional
	// +listType=atomic
	GrantedRoles []string `json:"grantedRoles,omitempty"`

	// missingRoles are requiredRoles absent from the last minted token, sorted.
	// +optional
	// +listType=atomic
	MissingRoles []string `json:"missingRoles,omitempty"`

	// adminConsentURL is the link a customer tenant's admin opens to consent to the app.
	// +optional
	AdminConsentURL string `json:"adminConsentURL,omitempty"`

	// failedAttempts counts consecutive failed refreshes (a token request that failed,
	// or a minted token that could not be written); zero after a success.
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// lastFailure is the last failed refresh; absent after a success. The backoff
	// before the next token request is derived from it and failedAttempts, so a
	// restarted operator keeps it.
	// +optional
	LastFailure *LastFailure `json:"lastFailure,omitempty"`
}

// LastFailure describes the last failed refresh: what Microsoft support and the
// customer's sign-in logs are keyed on, and what the backoff is computed from.
type LastFailure struct {
	// time is when the failed request was made.
	// +required
	Time metav1.Time `json:"time"`

	// reason is the condition reason the failure was reported with.
	// +required
	Reason string `json:"reason"`

	// message is the condition message the failure was reported with.
	// +optional
	Message string `json:"message,omitempty"`

	// code is the AADSTS code (AADSTS7000215), "HTTP <status>" when Entra ID sent
	// none, or "network" when no answer arrived.
	// +optional
	Code string `json:"code,omitempty"`

	// traceID is Entra ID's trace_id, when it sent one.
	// +optional
	TraceID string `json:"traceID,omitempty"`

	// correlationID is Entra ID's correlation_id, when it sent one.
	// +optional
	CorrelationID string `json:"correlationID,omitempty"`

	// clientRequestID is the client-request-id the operator sent.
	// +optional
	ClientRequestID string `json:"clientRequestID,omitempty"`

	// retryAfter is the wait Entra ID asked for with Retry-After.
	// +optional
	RetryAfter *metav1.Duration `json:"retryAfter,omitempty"`

	// inputsHash is a digest of what the request was made with: the spec's
	// generation, authority, app, resource and the credential's version, never the
	// credential itself. When it no longer matches, the next request goes out at
	// once instead of waiting out the backoff.
	// +optional
	InputsHash string `json:"inputsHash,omitempty"`
}

// DefenderTenant keeps a fresh Microsoft Defender XDR API token for one customer
// tenant in a Secret that workloads mount.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dtn,categories=defender
// +kubebuilder:printcolumn:name="Tenant",type=string,JSONPath=`.spec.tenantID`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="App",type=string,JSONPath=`.spec.appRef.name`,priority=1
// +kubebuilder:printcolumn:name="Granted roles",type=string,JSONPath=`.status.grantedRoles`,priority=1
// +kubebuilder:printcolumn:name="Next refresh",type=string,JSONPath=`.status.nextRefreshTime`,priority=1
type DefenderTenant struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which tenant, app, credential and resource the token is for.
	// +required
	Spec DefenderTenantSpec `json:"spec"`

	// status reports the published token and any failure, with the reason and what to do.
	// +optional
	Status DefenderTenantStatus `json:"status,omitempty"`
}

// DefenderTenantList is a list of DefenderTenants.
// +kubebuilder:object:root=true
type DefenderTenantList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DefenderTenant `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DefenderTenant{}, &DefenderTenantList{})
}

// TokenSecretNameOrDefault is the Secret name the token is published under.
func (t *DefenderTenant) TokenSecretNameOrDefault() string {
	if t.Spec.TokenSecretName != "" {
		return t.Spec.TokenSecretName
	}
	return t.Name + "-token"
}

// ClientSecretKeyOrDefault is the credential Secret key the client secret is read from.
func (t *DefenderTenant) ClientSecretKeyOrDefault() string {
	if t.Spec.ClientSecretRef.Key != "" {
		return t.Spec.ClientSecretRef.Key
	}
	return DefaultClientSecretKey
}

// UsesApp reports whether the tenant names its app with spec.appRef rather than the
// inline clientID and clientSecretRef.
func (t *DefenderTenant) UsesApp() bool {
	return t.Spec.AppRef != nil
}

// CloudOrDefault is the inline form's cloud, Public when unset. With spec.appRef the
// cloud is the app's (AppSpec.CloudOrDefault).
func (t *DefenderTenant) CloudOrDefault() Cloud {
	if t.Spec.Cloud != "" {
		return t.Spec.Cloud
	}
	return CloudPublic
}
