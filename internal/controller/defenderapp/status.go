package defenderapp

import (
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
)

// ReasonCertificateExpiring is the reason of the Warning Event an app gets when its
// certificate enters the last CertificateExpiryWarning before its notAfter. It is an
// Event reason only: the app stays Ready until the certificate expires.
const ReasonCertificateExpiring = "CertificateExpiring"

// CertificateExpiryWarning is how long before its notAfter a certificate is
// reported as expiring (API.md: within 30 days).
const CertificateExpiryWarning = 30 * 24 * time.Hour

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
	// Credential is what was read and where from (its Source): its state, and for
	// a certificate the parsed certificate (never shown but by its thumbprints) or
	// why it does not parse.
	Credential credential.Credential
	// Federated is what status.federatedCredential shows for a workload identity;
	// nil when no token was issued for it. FederatedErr is why the TokenRequest
	// that was to read it failed.
	Federated    *v1alpha1.FederatedCredentialStatus
	FederatedErr error
	// Rotation is what managed certificate rotation leaves for the status; nil
	// without rotation.
	Rotation *rotationOutcome
}

// appProblem is why the credential cannot be used, as a tenant of the app would
// be told it; nil when it can.
func appProblem(in appStatusInput) *conditions.Problem {
	if apierrors.IsForbidden(in.FederatedErr) {
		// As for a tenant: the API server authorizes before it looks the
		// ServiceAccount up, so one the operator may not use is, to it, one it
		// cannot find; it is asked again on the next reconcile.
		sa := in.Credential.Source.Object()
		return conditions.NewProblem(v1alpha1.ReasonServiceAccountNotFound, credential.TokenRequestForbidden(sa, in.FederatedErr))
	}
	p := in.Credential.Problem("the app", in.Now)
	if p == nil {
		return nil
	}
	return conditions.NewProblem(p.Reason, p.Message)
}

// certificateExpiring: the certificate is usable and within CertificateExpiryWarning
// of its notAfter.
func certificateExpiring(in appStatusInput) bool {
	c := in.Credential.Certificate
	return in.Kind == v1alpha1.CredentialCertificate && c != nil &&
		in.Now.Before(c.NotAfter()) && !in.Now.Before(c.NotAfter().Add(-CertificateExpiryWarning))
}

// appReadyMessage says what makes the credential usable, and for a certificate
// within the warning window, that it must be renewed: the message changing is
// what tells the expiring Event's transition (see appTransitionEvents).
func appReadyMessage(in appStatusInput) string {
	switch source := in.Credential.Source.(type) {
	case credential.Certificate:
		c := in.Credential.Certificate
		msg := fmt.Sprintf("The certificate (SHA-1 thumbprint %s) in Secret %q in namespace %q can be used until %s.",
			c.SHA1Thumbprint(), source.Secret.Name, source.Secret.Namespace, conditions.RFC3339(c.NotAfter()))
		if certificateExpiring(in) {
			msg += fmt.Sprintf(" It expires within %d days: renew it, put the new one in the Secret and register it on the app registration.", int(CertificateExpiryWarning/(24*time.Hour)))
		}
		return msg
	case credential.WorkloadIdentity:
		// The UID tells a re-created ServiceAccount, whose federated credential
		// federatedCredentialCurrent then reads again from a new token.
		return fmt.Sprintf("ServiceAccount %q (UID %s) in namespace %q exists. The app registration needs a federated credential with the issuer, subject and audience of status.federatedCredential.",
			source.ServiceAccount.Name, in.Credential.Version, source.ServiceAccount.Namespace)
	case credential.ClientSecret:
		return fmt.Sprintf("Secret %q in namespace %q holds a client secret under key %q.", source.Secret.Name, source.Secret.Namespace, source.Key)
	}
	return ""
}

// computeAppStatus derives the whole app status from the previous one and what was
// observed. It is pure so that every combination can be table-tested.
func computeAppStatus(prev v1alpha1.AppStatus, in appStatusInput) v1alpha1.AppStatus {
	generation := in.Generation
	if in.FederatedErr != nil && !apierrors.IsForbidden(in.FederatedErr) {
		// Not fully handled: the next reconcile asks for the token again.
		generation = prev.ObservedGeneration
	}
	next := v1alpha1.AppStatus{
		ObservedGeneration: generation,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
		Credential:         in.Kind,
		// The summary controller writes status.tenants; carried over as it is, it
		// is left out of this controller's patch, whatever the cache held.
		Tenants: prev.Tenants,
	}
	if c := in.Credential.Certificate; in.Kind == v1alpha1.CredentialCertificate && c != nil {
		next.Certificate = &v1alpha1.CertificateStatus{
			SHA1Thumbprint:   c.SHA1Thumbprint(),
			SHA256Thumbprint: c.SHA256Thumbprint(),
			NotAfter:         conditions.TimeOrNil(c.NotAfter()),
			Expiring:         certificateExpiring(in),
		}
	}
	p := appProblem(in)
	var rotationFailure *conditions.Problem
	if rot := in.Rotation; rot != nil {
		next.Rotation = rot.Status
		if next.Certificate != nil {
			next.Certificate.PEM = in.Credential.Certificate.CertificatePEM()
			next.Certificate.KeyID = rot.KeyID
		}
		if p == nil && rot.NotRegistered != "" {
			p = conditions.NewProblem(v1alpha1.ReasonCertificateNotRegistered, rot.NotRegistered)
		}
		rotationFailure = rot.Failure
	}
	if in.Kind == v1alpha1.CredentialWorkloadIdentity && p == nil && in.Federated != nil {
		f := *in.Federated
		f.ServiceAccountUID, f.ObservedGeneration = types.UID(in.Credential.Version), in.Generation
		next.FederatedCredential = &f
	}

	now := metav1.NewTime(in.Now.Truncate(time.Second))
	var ready metav1.Condition
	if p != nil {
		ready = conditions.NotReady(p.Reason, p.Message)
	} else {
		ready = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCredentialReady, Message: appReadyMessage(in)}
	}
	conditions.Set(&next.Conditions, ready, generation, now)
	// Every Ready reason of an app stalls: a human fixes the Secret, the
	// certificate or the ServiceAccount. Only a failed rotation step, while the
	// current certificate stays Ready, may be Reconciling.
	progress := p
	if progress == nil {
		progress = rotationFailure
	}
	stalled, reconciling := conditions.Progress(progress)
	for _, c := range []struct {
		kind string
		cond *metav1.Condition
	}{{v1alpha1.ConditionStalled, stalled}, {v1alpha1.ConditionReconciling, reconciling}} {
		if c.cond != nil {
			conditions.Set(&next.Conditions, *c.cond, generation, now)
		} else {
			meta.RemoveStatusCondition(&next.Conditions, c.kind)
		}
	}
	return next
}

// appTransitionEvents are the Events a status change deserves: a new failure
// reason (Warning), recovery from one (Normal), and a certificate entering the
// expiry window (Warning CertificateExpiring). The last is told from the persisted
// status.certificate.expiring turning true for a certificate, so that neither a
// restart nor a routine reconcile repeats it.
func appTransitionEvents(before, after v1alpha1.AppStatus) []conditions.Event {
	var evs []conditions.Event
	oldReady := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady)
	newReady := meta.FindStatusCondition(after.Conditions, v1alpha1.ConditionReady)
	if newReady == nil {
		return nil
	}
	changed := oldReady == nil || oldReady.Status != newReady.Status || oldReady.Reason != newReady.Reason
	switch {
	case changed && newReady.Status != metav1.ConditionTrue:
		evs = append(evs, conditions.Event{Type: corev1.EventTypeWarning, Reason: newReady.Reason, Action: appCheckAction, Note: newReady.Message})
	case changed && oldReady != nil:
		evs = append(evs, conditions.Event{Type: corev1.EventTypeNormal, Reason: newReady.Reason, Action: appCheckAction, Note: newReady.Message})
	}
	evs = append(evs, rotationEvents(before, after)...)
	if c := after.Certificate; c != nil && c.Expiring && c.NotAfter != nil && newReady.Status == metav1.ConditionTrue &&
		!alreadyExpiring(before.Certificate, c) {
		evs = append(evs, conditions.Event{Type: corev1.EventTypeWarning, Reason: ReasonCertificateExpiring, Action: appCheckAction,
			Note: fmt.Sprintf("The app's certificate (SHA-1 thumbprint %s) expires at %s. Renew it, put the new one in the credential Secret and register it on the app registration before then.",
				c.SHA1Thumbprint, conditions.RFC3339(c.NotAfter.Time))})
	}
	return evs
}

// appRequeueAfter is when the app must be looked at again without any event: when
// its certificate enters the expiry window, and when it expires. Zero: on events
// only.
func appRequeueAfter(now time.Time, in appStatusInput) time.Duration {
	c := in.Credential.Certificate
	if in.Kind != v1alpha1.CredentialCertificate || c == nil {
		return 0
	}
	for _, at := range []time.Time{c.NotAfter().Add(-CertificateExpiryWarning), c.NotAfter()} {
		if now.Before(at) {
			return at.Sub(now)
		}
	}
	return 0
}

// alreadyExpiring: before shows the same certificate already in its expiry window.
func alreadyExpiring(before, after *v1alpha1.CertificateStatus) bool {
	return before != nil && before.Expiring && before.SHA256Thumbprint == after.SHA256Thumbprint
}

// ReasonCertificateRotated is the reason of the Normal Event of a promotion: the
// app's managed certificate was replaced by a new one, registered through Graph.
const ReasonCertificateRotated = "CertificateRotated"

// rotationEvents: a Warning RotationFailed per new failure (a new message on the
// Stalled or Reconciling condition), and a Normal CertificateRotated per
// promotion, told by a new status.rotation.lastRotationTime, so that neither a
// restart nor a routine reconcile repeats them.
func rotationEvents(before, after v1alpha1.AppStatus) []conditions.Event {
	var evs []conditions.Event
	if failed, ok := rotationFailedCondition(after); ok {
		if old, had := rotationFailedCondition(before); !had || old.Message != failed.Message {
			evs = append(evs, conditions.Event{Type: corev1.EventTypeWarning, Reason: v1alpha1.ReasonRotationFailed, Action: rotateAction, Note: failed.Message})
		}
	}
	if a := after.Rotation; a != nil && a.LastRotationTime != nil {
		if b := before.Rotation; b == nil || b.LastRotationTime == nil || !b.LastRotationTime.Equal(a.LastRotationTime) {
			thumbprint := ""
			if after.Certificate != nil {
				thumbprint = after.Certificate.SHA1Thumbprint
			}
			evs = append(evs, conditions.Event{Type: corev1.EventTypeNormal, Reason: ReasonCertificateRotated, Action: rotateAction,
				Note: fmt.Sprintf("The app's certificate was replaced by a new one (SHA-1 thumbprint %s), registered on the app registration through Microsoft Graph; its tenants re-mint their tokens with it.", thumbprint)})
		}
	}
	return evs
}

// rotateAction is the action of the rotation Events.
const rotateAction = "RotateCertificate"

func rotationFailedCondition(s v1alpha1.AppStatus) (metav1.Condition, bool) {
	for _, t := range []string{v1alpha1.ConditionStalled, v1alpha1.ConditionReconciling} {
		if c := meta.FindStatusCondition(s.Conditions, t); c != nil && c.Reason == v1alpha1.ReasonRotationFailed {
			return *c, true
		}
	}
	return metav1.Condition{}, false
}
