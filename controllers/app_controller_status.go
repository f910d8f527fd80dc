package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// ReasonCertificateExpiring is the reason of the Warning Event an app gets when its
// certificate enters the last certificateExpiryWarning before its notAfter. It is an
// Event reason only: the app stays Ready until the certificate expires.
const ReasonCertificateExpiring = "CertificateExpiring"

// certificateExpiryWarning is how long before its notAfter a certificate is
// reported as expiring (API.md: within 30 days).
const certificateExpiryWarning = 30 * 24 * time.Hour

// appCheckAction is the action of the Events the app controller records.
const appCheckAction = "CheckCredential"

// appStatusInput is everything an app's status is computed from: what the app
// controller observed of its credential.
type appStatusInput struct {
	// Generation is the generation fully handled; the previous observedGeneration
	// after a failed TokenRequest.
	Generation int64
	Now        time.Time
	Kind       v1alpha1.CredentialKind
	// Secret is the client secret or certificate Secret; ServiceAccount the
	// workload identity's. Both name the object with its namespace.
	Secret         types.NamespacedName
	Key            string // the client secret's key
	ServiceAccount types.NamespacedName
	// Credential is what was read: its state, and for a certificate the parsed
	// certificate (never shown but by its thumbprints) or why it does not parse.
	Credential credential
	// Federated is what status.federatedCredential shows for a workload identity;
	// nil when no token was issued for it.
	Federated *v1alpha1.FederatedCredentialStatus
}

// appProblem is why the credential cannot be used; nil when it can. The messages
// say what to do and name the Secret or ServiceAccount with its namespace; none
// quotes a credential.
func appProblem(in appStatusInput) *problem {
	cred := in.Credential
	switch in.Kind {
	case v1alpha1.CredentialClientSecret:
		switch cred.state {
		case credentialSecretMissing:
			return newProblem(v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
				"Secret %q with the app's client secret was not found in namespace %q. Create it with the secret's value under key %q.",
				in.Secret.Name, in.Secret.Namespace, in.Key))
		case credentialKeyEmpty:
			return newProblem(v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
				"Secret %q in namespace %q has no non-empty key %q. Put the client secret's value under that key, or set credential.clientSecret.secretRef.key.",
				in.Secret.Name, in.Secret.Namespace, in.Key))
		case credentialImplausible:
			// Not a client secret at all: for the app, no usable credential is there.
			return newProblem(v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
				"Key %q of Secret %q in namespace %q does not hold a client secret: Entra ID client secrets are at most %d printable ASCII characters. Put the secret's value there.",
				in.Key, in.Secret.Name, in.Secret.Namespace, maxClientSecretLength))
		}
	case v1alpha1.CredentialCertificate:
		switch {
		case cred.state == credentialSecretMissing:
			return newProblem(v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
				"Secret %q with the app's certificate was not found in namespace %q. Create it as a kubernetes.io/tls Secret (tls.crt, tls.key).",
				in.Secret.Name, in.Secret.Namespace))
		case cred.state == credentialKeyEmpty:
			return newProblem(v1alpha1.ReasonCredentialsNotFound, fmt.Sprintf(
				"Secret %q in namespace %q lacks tls.crt or tls.key. Store the certificate (PEM, leaf first) and its RSA key there.",
				in.Secret.Name, in.Secret.Namespace))
		case cred.state == credentialCertificateInvalid:
			return newProblem(v1alpha1.ReasonInvalidCertificate, fmt.Sprintf(
				"The certificate in Secret %q in namespace %q cannot be used: %s. Store an RSA certificate (PEM, leaf first) and its matching key.",
				in.Secret.Name, in.Secret.Namespace, cred.problem))
		case cred.certificate != nil && !in.Now.Before(cred.certificate.NotAfter()):
			return newProblem(v1alpha1.ReasonCertificateExpired, fmt.Sprintf(
				"The certificate (SHA-1 thumbprint %s) in Secret %q in namespace %q expired at %s. Put a renewed certificate there and register it on the app registration.",
				cred.certificate.SHA1Thumbprint(), in.Secret.Name, in.Secret.Namespace, rfc3339(cred.certificate.NotAfter())))
		}
	case v1alpha1.CredentialWorkloadIdentity:
		if cred.state == credentialServiceAccountNotAllowed {
			return newProblem(v1alpha1.ReasonServiceAccountNotAllowed, cred.problem)
		}
		if cred.state == credentialServiceAccountMissing && cred.problem != "" {
			return newProblem(v1alpha1.ReasonServiceAccountNotFound, cred.problem)
		}
		if cred.state == credentialServiceAccountMissing {
			return newProblem(v1alpha1.ReasonServiceAccountNotFound, fmt.Sprintf(
				"ServiceAccount %q was not found in namespace %q. Create it there; its tokens are the app's federated credential.",
				in.ServiceAccount.Name, in.ServiceAccount.Namespace))
		}
	}
	return nil
}

// certificateExpiring: the certificate is usable and within certificateExpiryWarning
// of its notAfter.
func certificateExpiring(in appStatusInput) bool {
	c := in.Credential.certificate
	return in.Kind == v1alpha1.CredentialCertificate && c != nil &&
		in.Now.Before(c.NotAfter()) && !in.Now.Before(c.NotAfter().Add(-certificateExpiryWarning))
}

// appReadyMessage says what makes the credential usable, and for a certificate
// within the warning window, that it must be renewed: the message changing is
// what tells the expiring Event's transition (see appTransitionEvents).
func appReadyMessage(in appStatusInput) string {
	switch c := in.Credential.certificate; {
	case in.Kind == v1alpha1.CredentialCertificate && c != nil:
		msg := fmt.Sprintf("The certificate (SHA-1 thumbprint %s) in Secret %q in namespace %q can be used until %s.",
			c.SHA1Thumbprint(), in.Secret.Name, in.Secret.Namespace, rfc3339(c.NotAfter()))
		if certificateExpiring(in) {
			msg += fmt.Sprintf(" It expires within %d days: renew it, put the new one in the Secret and register it on the app registration.", int(certificateExpiryWarning/(24*time.Hour)))
		}
		return msg
	case in.Kind == v1alpha1.CredentialWorkloadIdentity:
		// The UID tells a re-created ServiceAccount, whose federated credential
		// federatedCredentialCurrent then reads again from a new token.
		return fmt.Sprintf("ServiceAccount %q (UID %s) in namespace %q exists. The app registration needs a federated credential with the issuer, subject and audience of status.federatedCredential.",
			in.ServiceAccount.Name, in.Credential.version, in.ServiceAccount.Namespace)
	default:
		return fmt.Sprintf("Secret %q in namespace %q holds a client secret under key %q.", in.Secret.Name, in.Secret.Namespace, in.Key)
	}
}

// computeAppStatus derives the whole app status from the previous one and what was
// observed. It is pure so that every combination can be table-tested.
func computeAppStatus(prev v1alpha1.AppStatus, in appStatusInput) v1alpha1.AppStatus {
	next := v1alpha1.AppStatus{
		ObservedGeneration: in.Generation,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
		Credential:         in.Kind,
	}
	if c := in.Credential.certificate; in.Kind == v1alpha1.CredentialCertificate && c != nil {
		next.Certificate = &v1alpha1.CertificateStatus{
			SHA1Thumbprint:   c.SHA1Thumbprint(),
			SHA256Thumbprint: c.SHA256Thumbprint(),
			NotAfter:         timeOrNil(c.NotAfter()),
		}
	}
	p := appProblem(in)
	if in.Kind == v1alpha1.CredentialWorkloadIdentity && p == nil && in.Federated != nil {
		f := *in.Federated
		next.FederatedCredential = &f
	}

	now := metav1.NewTime(in.Now.Truncate(time.Second))
	var ready metav1.Condition
	if p != nil {
		ready = notReady(p.Reason, p.Message)
	} else {
		ready = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCredentialReady, Message: appReadyMessage(in)}
	}
	setCondition(&next.Conditions, ready, in.Generation, now)
	// Every app reason stalls: a human fixes the Secret, the certificate or the
	// ServiceAccount. Reconciling is never set on an app.
	stalled, _ := progressConditions(p)
	if stalled != nil {
		setCondition(&next.Conditions, *stalled, in.Generation, now)
	} else {
		meta.RemoveStatusCondition(&next.Conditions, v1alpha1.ConditionStalled)
	}
	meta.RemoveStatusCondition(&next.Conditions, v1alpha1.ConditionReconciling)
	return next
}

// appTransitionEvents are the Events a status change deserves: a new failure
// reason (Warning), recovery from one (Normal), and a certificate entering the
// expiry window (Warning CertificateExpiring). The last is told from the previous
// status, not from memory, so a restart does not repeat it: the Ready message of
// an expiring certificate names it and says it expires soon, so the Event is
// recorded when that message first appears (the window entered, or a new
// certificate already within it). Routine reconciles change nothing and record
// nothing. expiring: the certificate is within the window now (certificateExpiring).
func appTransitionEvents(before, after v1alpha1.AppStatus, expiring bool) []transitionEvent {
	var evs []transitionEvent
	oldReady := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady)
	newReady := meta.FindStatusCondition(after.Conditions, v1alpha1.ConditionReady)
	if newReady == nil {
		return nil
	}
	changed := oldReady == nil || oldReady.Status != newReady.Status || oldReady.Reason != newReady.Reason
	switch {
	case changed && newReady.Status != metav1.ConditionTrue:
		evs = append(evs, transitionEvent{corev1.EventTypeWarning, newReady.Reason, appCheckAction, newReady.Message})
	case changed && oldReady != nil:
		evs = append(evs, transitionEvent{corev1.EventTypeNormal, newReady.Reason, appCheckAction, newReady.Message})
	}
	if c := after.Certificate; expiring && c != nil && c.NotAfter != nil && newReady.Status == metav1.ConditionTrue &&
		(oldReady == nil || oldReady.Message != newReady.Message) {
		evs = append(evs, transitionEvent{corev1.EventTypeWarning, ReasonCertificateExpiring, appCheckAction,
			fmt.Sprintf("The app's certificate (SHA-1 thumbprint %s) expires at %s. Renew it, put the new one in the credential Secret and register it on the app registration before then.",
				c.SHA1Thumbprint, rfc3339(c.NotAfter.Time))})
	}
	return evs
}

// appRequeueAfter is when the app must be looked at again without any event: when
// its certificate enters the expiry window, and when it expires. Zero: on events
// only.
func appRequeueAfter(now time.Time, in appStatusInput) time.Duration {
	c := in.Credential.certificate
	if in.Kind != v1alpha1.CredentialCertificate || c == nil {
		return 0
	}
	for _, at := range []time.Time{c.NotAfter().Add(-certificateExpiryWarning), c.NotAfter()} {
		if now.Before(at) {
			return at.Sub(now)
		}
	}
	return 0
}
