package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// problem is whatever keeps a fresh token from being published, as conditions show it.
type problem struct {
	Reason  string
	Message string
	// Stalled: a human must act (Stalled=True); otherwise it is retried (Reconciling=True).
	Stalled bool
}

// newProblem takes whether the reason stalls from the reasons table.
func newProblem(reason, message string) *problem {
	return &problem{Reason: reason, Message: message, Stalled: v1alpha1.Stalls(reason)}
}

// roleFacts are the roles of the last minted token.
type roleFacts struct {
	Granted []string
	Missing []string
}

// statusInput is everything the status is computed from.
type statusInput struct {
	Generation      int64 // the generation fully handled
	Now             time.Time
	AdminConsentURL string
	SecretName      string
	Published       *token                // nil: no token of ours is published
	SecretUID       types.UID             // the tenant's own token Secret; empty: unchanged
	Problem         *problem              // nil: nothing is wrong
	Failure         *v1alpha1.LastFailure // a refresh failed in this reconcile
	Suspended       bool
	Roles           *roleFacts // nil: unchanged since the last minted token
	NextRefresh     time.Time  // zero: no token request is scheduled
}

// computeStatus derives the whole status from the previous one and this reconcile's
// outcome. It is pure so that every combination can be table-tested.
func computeStatus(prev v1alpha1.DefenderTenantStatus, obs statusInput) v1alpha1.DefenderTenantStatus {
	next := v1alpha1.DefenderTenantStatus{
		ObservedGeneration: obs.Generation,
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
		TokenSecretUID:     prev.TokenSecretUID,
		AdminConsentURL:    obs.AdminConsentURL,
		GrantedRoles:       prev.GrantedRoles,
		MissingRoles:       prev.MissingRoles,
		NextRefreshTime:    timeOrNil(obs.NextRefresh),
	}
	if obs.SecretUID != "" {
		next.TokenSecretUID = obs.SecretUID
	}
	if obs.Roles != nil {
		next.GrantedRoles, next.MissingRoles = obs.Roles.Granted, obs.Roles.Missing
	}
	if pub := obs.Published; pub != nil {
		next.TokenSecretName = obs.SecretName
		next.ExpiresAt = timeOrNil(pub.expiresAt())
		next.LastRefreshTime = timeOrNil(pub.mintedAt)
	}
	// The backoff is derived from these two, so they change only with a new failure
	// (counted) or a reconcile without a problem (cleared); waiting one out keeps them.
	switch {
	case obs.Failure != nil:
		next.FailedAttempts, next.LastFailure = prev.FailedAttempts+1, obs.Failure
	case obs.Problem == nil:
		next.FailedAttempts, next.LastFailure = 0, nil
	default:
		next.FailedAttempts, next.LastFailure = prev.FailedAttempts, prev.LastFailure
	}

	now := metav1.NewTime(obs.Now.Truncate(time.Second))
	setCondition(&next.Conditions, readyCondition(obs), obs.Generation, now)
	stalled, reconciling := progressConditions(obs.Problem)
	for _, c := range []*metav1.Condition{stalled, reconciling} {
		if c != nil {
			setCondition(&next.Conditions, *c, obs.Generation, now)
		}
	}
	if stalled == nil {
		meta.RemoveStatusCondition(&next.Conditions, v1alpha1.ConditionStalled)
	}
	if reconciling == nil {
		meta.RemoveStatusCondition(&next.Conditions, v1alpha1.ConditionReconciling)
	}
	return next
}

// readyCondition says whether workloads have a usable token. A valid, unexpired token
// keeps Ready True even while refreshing it fails: the token still works, and the
// failure is reported on Stalled or Reconciling.
func readyCondition(obs statusInput) metav1.Condition {
	pub := obs.Published
	switch {
	case pub != nil && !obs.Now.Before(pub.expiresAt()):
		msg := fmt.Sprintf("The token in Secret %q expired at %s and has not been replaced.", obs.SecretName, rfc3339(pub.expiresAt()))
		if obs.Problem != nil {
			msg += " " + obs.Problem.Message
		}
		return notReady(v1alpha1.ReasonTokenExpired, msg)
	case pub != nil && pub.usable(obs.Now):
		msg := fmt.Sprintf("A valid token is published in Secret %q until %s.", obs.SecretName, rfc3339(pub.expiresAt()))
		if obs.Problem != nil {
			msg += fmt.Sprintf(" Refreshing it fails (%s); it stays published until it expires.", obs.Problem.Reason)
		}
		return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTokenReady, Message: msg}
	case obs.Problem != nil:
		return notReady(obs.Problem.Reason, obs.Problem.Message)
	case obs.Suspended:
		return notReady(v1alpha1.ReasonSuspended, "spec.suspend is true: no token is requested.")
	default:
		return notReady(v1alpha1.ReasonProgressing, "No token has been published yet.")
	}
}

// progressConditions maps a problem onto kstatus: needs-a-human problems stall,
// transient ones keep the object reconciling.
func progressConditions(p *problem) (stalled, reconciling *metav1.Condition) {
	if p == nil {
		return nil, nil
	}
	c := metav1.Condition{Status: metav1.ConditionTrue, Reason: p.Reason, Message: p.Message}
	if p.Stalled {
		c.Type = v1alpha1.ConditionStalled
		return &c, nil
	}
	c.Type = v1alpha1.ConditionReconciling
	return nil, &c
}

// reportedProblem is the problem a status reports on Stalled or Reconciling, for
// telling which transitions deserve an Event.
func reportedProblem(conditions []metav1.Condition) *problem {
	for _, t := range []string{v1alpha1.ConditionStalled, v1alpha1.ConditionReconciling} {
		if c := meta.FindStatusCondition(conditions, t); c != nil && c.Status == metav1.ConditionTrue {
			return &problem{Reason: c.Reason, Message: c.Message, Stalled: t == v1alpha1.ConditionStalled}
		}
	}
	return nil
}

func notReady(reason, message string) metav1.Condition {
	return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: message}
}

func setCondition(conditions *[]metav1.Condition, c metav1.Condition, generation int64, now metav1.Time) {
	c.ObservedGeneration = generation
	c.LastTransitionTime = now
	meta.SetStatusCondition(conditions, c)
}

// timeOrNil drops sub-second precision, which the API server does not store: keeping
// it would make every computed status differ from the stored one and cause a write.
func timeOrNil(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &mt
}

func rfc3339(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
