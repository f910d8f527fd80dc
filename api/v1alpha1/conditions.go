package v1alpha1

// Condition types follow kstatus, so kstatus, Flux and Argo CD read health without custom code.
const (
	// ConditionReady is True while a valid token that carries every required role is
	// published in the token Secret and has not expired. On a DefenderApp or
	// ClusterDefenderApp it is True while the app's credential can be used.
	ConditionReady = "Ready"
	// ConditionReconciling is True while a transient failure (throttling, an unreachable
	// token endpoint) is being retried with backoff.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True while a failure needs a human: a credential, consent or
	// role fix in Entra ID, or a spec or Secret fix in the cluster. The operator keeps
	// retrying slowly because most of these fixes happen outside the cluster.
	ConditionStalled = "Stalled"
)

// Reasons used on the conditions above. They are part of the user-facing contract:
// alerts, health checks and runbooks match on these exact strings.
const (
	// ReasonTokenReady: a valid token is published.
	ReasonTokenReady = "TokenReady"
	// ReasonCredentialsNotFound: the credential Secret, or its key, is missing or empty:
	// the inline clientSecretRef's, or the client secret or certificate Secret of the
	// tenant's app (on the app, and on every tenant that uses it).
	ReasonCredentialsNotFound = "CredentialsNotFound"
	// ReasonInvalidClientSecret: Entra rejected the client secret (AADSTS7000215, 7000218).
	ReasonInvalidClientSecret = "InvalidClientSecret"
	// ReasonClientSecretExpired: the client secret has expired and must be rotated (AADSTS7000222).
	ReasonClientSecretExpired = "ClientSecretExpired"
	// ReasonConsentRequired: the application is not consented, or the resource is not
	// set up, in the customer tenant (AADSTS700016, 7000229, 65001, 500011).
	ReasonConsentRequired = "ConsentRequired"
	// ReasonTenantNotFound: Entra does not know the tenant in this cloud (AADSTS90002, 900023),
	// or the tenant lives in another cloud than the one asked (AADSTS900382, 900432, 90038).
	ReasonTenantNotFound = "TenantNotFound"
	// ReasonMissingRoles: the token lacks roles listed in spec.requiredRoles; see status.missingRoles.
	ReasonMissingRoles = "MissingRoles"
	// ReasonInvalidToken: the token endpoint returned something that is not a JWT for this
	// tenant and client, or one that has already expired.
	ReasonInvalidToken = "InvalidToken"
	// ReasonSecretConflict: a Secret with the token Secret's name exists and is not owned by
	// this DefenderTenant; the operator never modifies or adopts it.
	ReasonSecretConflict = "SecretConflict"
	// ReasonResourceNotAllowed: spec.resource is not in the operator's --allowed-resources list.
	ReasonResourceNotAllowed = "ResourceNotAllowed"
	// ReasonThrottled: Entra answered HTTP 429; the next attempt waits for Retry-After.
	ReasonThrottled = "Throttled"
	// ReasonTokenEndpointUnavailable: a network error, timeout, 408 or 5xx from the token
	// endpoint, or a 2xx answer that is not a token response.
	ReasonTokenEndpointUnavailable = "TokenEndpointUnavailable"
	// ReasonTokenExpired: the published token has expired and has not been replaced yet.
	ReasonTokenExpired = "TokenExpired"
	// ReasonSuspended: spec.suspend is true; no token is requested.
	ReasonSuspended = "Suspended"
	// ReasonProgressing: the first token is being requested.
	ReasonProgressing = "Progressing"
	// ReasonSecretWriteFailed: the token Secret could not be written. Forbidden (RBAC,
	// an exceeded ResourceQuota, an admission policy) and Invalid stall, because a retry
	// cannot help; any other API error is retried as Reconciling.
	ReasonSecretWriteFailed = "SecretWriteFailed"
	// ReasonAccessBlocked: a policy blocks the application: Conditional Access
	// (AADSTS53003), tenant restrictions (500021, 500022), a blocked tenant (5000224) or
	// a disabled application (7000112). Consent cannot fix it; whoever owns the policy can.
	ReasonAccessBlocked = "AccessBlocked"
	// ReasonTokenRequestRejected: Entra answered with a 4xx (not 408 or 429) that the
	// operator does not recognise; the message quotes the AADSTS code and description.
	ReasonTokenRequestRejected = "TokenRequestRejected"
	// ReasonInvalidClientAssertion: Entra rejected the app's certificate or federated
	// client assertion (AADSTS700027, 700024, 70021, 700211, 700212, 700213, 7002138):
	// the certificate is not registered on the app registration, or the issuer,
	// subject or audience matches no federated credential of it.
	ReasonInvalidClientAssertion = "InvalidClientAssertion"
	// ReasonAppNotFound: spec.appRef names no existing DefenderApp in the tenant's
	// namespace, or no existing ClusterDefenderApp.
	ReasonAppNotFound = "AppNotFound"
	// ReasonAppNotAllowed: no tenantGrants entry of the referenced ClusterDefenderApp
	// matches the tenant's namespace and tenantID. No token is requested, and a token
	// Secret the tenant already published is deleted.
	ReasonAppNotAllowed = "AppNotAllowed"
	// ReasonInvalidCertificate: the app's certificate Secret does not hold a parsable
	// PEM certificate and RSA private key that belong together.
	ReasonInvalidCertificate = "InvalidCertificate"
	// ReasonCertificateExpired: the app's certificate is past its notAfter and must be
	// renewed, and the new one registered on the app registration.
	ReasonCertificateExpired = "CertificateExpired"
	// ReasonServiceAccountNotFound: the ServiceAccount of the app's workloadIdentity
	// credential does not exist in the operator's cluster resource namespace.
	ReasonServiceAccountNotFound = "ServiceAccountNotFound"
	// ReasonServiceAccountNotAllowed: the app's workloadIdentity names what the
	// operator will not request ServiceAccount tokens for: an audience outside
	// --workload-identity-audiences, the operator's own ServiceAccount, or a
	// ServiceAccount without the label LabelWorkloadIdentity: "true". No
	// ServiceAccount token and no Entra ID token is requested.
	ReasonServiceAccountNotAllowed = "ServiceAccountNotAllowed"
	// ReasonCredentialReady: the app's credential can be used. It appears only on the
	// Ready condition of a DefenderApp or ClusterDefenderApp, never on a DefenderTenant.
	ReasonCredentialReady = "CredentialReady"
	// ReasonInvalidSecretTemplate: a template of spec.secretTemplate.data is not plain
	// interpolation of the five values, or an annotation key of spec.secretTemplate
	// has no prefix the operator allows; no token is requested, nothing is published,
	// and a token published before stays as it was.
	ReasonInvalidSecretTemplate = "InvalidSecretTemplate"
	// ReasonCertificateNotRegistered: apps with managed rotation only: the
	// certificate the operator generated (status.certificate.pem) is not yet
	// accepted by Entra ID in the home tenant; the message gives the command that
	// uploads it. Checked at most once a minute.
	ReasonCertificateNotRegistered = "CertificateNotRegistered"
	// ReasonRotationFailed: apps with managed rotation only, on Stalled or
	// Reconciling while Ready stays True: a step of the certificate rotation
	// failed and the current certificate stays in use. Stalled when a person must
	// act (Graph refused the call, does not know the object, rejected the proof),
	// Reconciling while it is retried with the slow backoff.
	ReasonRotationFailed = "RotationFailed"
)

// ReasonKind is how a reason shows on the conditions, and so how it is retried.
type ReasonKind string

const (
	// KindReady reasons set Ready=True.
	KindReady ReasonKind = "Ready=True"
	// KindStalled reasons set Stalled=True: a human must act. The operator still
	// retries with the slow backoff, because most fixes happen in Entra ID.
	KindStalled ReasonKind = "Stalled"
	// KindReconciling reasons set Reconciling=True: transient, retried with backoff.
	KindReconciling ReasonKind = "Reconciling"
	// KindNotReady reasons appear on Ready=False only: a state, not a failure.
	KindNotReady ReasonKind = "Ready=False"
	// KindStalledOrReconciling reasons stall when a retry cannot help and reconcile
	// otherwise; whoever reports one says which.
	KindStalledOrReconciling ReasonKind = "Stalled or Reconciling"
)

// ReasonKinds gives every reason its kind. It is the one table that the controller
// and the Entra client consult, and the README's reasons table must agree with it
// (a test checks both).
var ReasonKinds = map[string]ReasonKind{
	ReasonTokenReady:               KindReady,
	ReasonCredentialsNotFound:      KindStalled,
	ReasonInvalidClientSecret:      KindStalled,
	ReasonClientSecretExpired:      KindStalled,
	ReasonConsentRequired:          KindStalled,
	ReasonTenantNotFound:           KindStalled,
	ReasonMissingRoles:             KindStalled,
	ReasonInvalidToken:             KindStalled,
	ReasonSecretConflict:           KindStalled,
	ReasonResourceNotAllowed:       KindStalled,
	ReasonThrottled:                KindReconciling,
	ReasonTokenEndpointUnavailable: KindReconciling,
	ReasonTokenExpired:             KindNotReady,
	ReasonSuspended:                KindNotReady,
	ReasonProgressing:              KindNotReady,
	ReasonSecretWriteFailed:        KindStalledOrReconciling,
	ReasonAccessBlocked:            KindStalled,
	ReasonTokenRequestRejected:     KindStalled,
	ReasonInvalidClientAssertion:   KindStalled,
	ReasonAppNotFound:              KindStalled,
	ReasonAppNotAllowed:            KindStalled,
	ReasonInvalidCertificate:       KindStalled,
	ReasonCertificateExpired:       KindStalled,
	ReasonServiceAccountNotFound:   KindStalled,
	ReasonServiceAccountNotAllowed: KindStalled,
	ReasonCredentialReady:          KindReady,
	ReasonInvalidSecretTemplate:    KindStalled,
	ReasonCertificateNotRegistered: KindStalled,
	ReasonRotationFailed:           KindStalledOrReconciling,
}

// AppReasons are the reasons of a DefenderApp's or ClusterDefenderApp's Ready
// condition: CredentialReady when True, else why the credential cannot be used. A
// DefenderTenant whose app is not Ready shows the app's reason (as its kind in
// ReasonKinds says). CredentialReady is the one reason only apps use.
var AppReasons = map[string]bool{
	ReasonCredentialReady:          true,
	ReasonCredentialsNotFound:      true,
	ReasonInvalidCertificate:       true,
	ReasonCertificateExpired:       true,
	ReasonServiceAccountNotFound:   true,
	ReasonServiceAccountNotAllowed: true,
	ReasonCertificateNotRegistered: true,
}

// Stalls reports whether a failure with this reason needs a human. Only reasons of
// KindReconciling do not; a KindStalledOrReconciling reason stalls unless its
// reporter says otherwise.
func Stalls(reason string) bool {
	return ReasonKinds[reason] != KindReconciling
}

// Token Secret keys, labels and annotations that workloads and tooling rely on.
const (
	// TokenSecretKeyAccessToken holds the raw JWT.
	TokenSecretKeyAccessToken = "access_token"
	// TokenSecretKeyTokenType holds "Bearer".
	TokenSecretKeyTokenType = "token_type"
	// TokenSecretKeyExpiresAt holds the token's expiry, RFC 3339 in UTC.
	TokenSecretKeyExpiresAt = "expires_at"
	// TokenSecretKeyTenantID holds the customer tenant GUID.
	TokenSecretKeyTenantID = "tenant_id"

	// LabelManagedBy marks token Secrets; its value is ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on every token Secret.
	ManagedByValue = "defender-tenant-operator"
	// LabelTenant carries the name of the DefenderTenant a token Secret belongs to.
	LabelTenant = "defender.tenantcreds.io/tenant"
	// LabelManagedCertificate: "true" marks the kubernetes.io/tls Secret of an app
	// with managed certificate rotation, which the operator creates and updates
	// (and never deletes), besides LabelManagedBy.
	LabelManagedCertificate = "defender.tenantcreds.io/managed-certificate"

	// AnnotationMintedAt records when the published token was minted (RFC 3339), so a
	// restarted operator knows the token's lifetime without asking Entra again.
	AnnotationMintedAt = "defender.tenantcreds.io/minted-at"
	// AnnotationInputsHash is a one-way digest of everything the token was minted from
	// (tenant, client, resource, authority and credential). A published token whose
	// digest differs was minted for other inputs and is replaced.
	AnnotationInputsHash = "defender.tenantcreds.io/inputs-hash"
	// AnnotationApp names the app a token was minted with, as kind/name
	// ("ClusterDefenderApp/partner"); absent for the inline form. A token minted under
	// a ClusterDefenderApp is withdrawn when the tenant stops using that app, so a
	// tenant cannot keep it out of its grant's reach by switching spec.appRef.
	AnnotationApp = "defender.tenantcreds.io/app"
	// AnnotationRequestedAt on a DefenderTenant (any value; `kubectl defender
	// refresh` writes the current time), when it differs from
	// status.lastHandledRequestedAt, asks for a token at once, fresh token or
	// backoff notwithstanding, as Flux's reconcile.fluxcd.io/requestedAt does.
	AnnotationRequestedAt = "defender.tenantcreds.io/requested-at"
)

// DefaultClientSecretKey is the key read from the credential Secret when clientSecretRef.key is empty.
const DefaultClientSecretKey = "client-secret"
