package defendertenant

import (
	"cmp"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
)

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
	Problem         *conditions.Problem   // nil: nothing is wrong
	Failure         *v1alpha1.LastFailure // a refresh failed in this reconcile
	Suspended       bool
	Roles           *roleFacts // nil: unchanged since the last minted token
	NextRefresh     time.Time  // zero: no token request is scheduled
	// HandledRequest is the AnnotationRequestedAt value a token request served in
	// this reconcile; empty: the recorded one stays.
	HandledRequest string
	// ResourceKnown: the tenant's effective resource is known, and ResourceRetiresAt
	// is when it stops working (zero: no announced end). While it is not known (an
	// app that cannot be read picks the default), the recorded date stays, so that a
	// missing app does not clear it and raise ResourceRetiring again on its return.
	ResourceKnown     bool
	ResourceRetiresAt time.Time
}

// computeStatus derives the whole status from the previous one and this reconcile's
// outcome. It is pure so that every combination can be table-tested.
func computeStatus(prev v1alpha1.DefenderTenantStatus, obs statusInput) v1alpha1.DefenderTenantStatus {
	next := v1alpha1.DefenderTenantStatus{
		ObservedGeneration:     obs.Generation,
		Conditions:             append([]metav1.Condition(nil), prev.Conditions...),
		TokenSecretUID:         prev.TokenSecretUID,
		AdminConsentURL:        obs.AdminConsentURL,
		GrantedRoles:           prev.GrantedRoles,
		MissingRoles:           prev.MissingRoles,
		NextRefreshTime:        conditions.TimeOrNil(obs.NextRefresh),
		LastHandledRequestedAt: cmp.Or(obs.HandledRequest, prev.LastHandledRequestedAt),
		ResourceRetiresAt:      prev.ResourceRetiresAt,
	}
	if obs.ResourceKnown {
		next.ResourceRetiresAt = conditions.TimeOrNil(obs.ResourceRetiresAt)
	}
	if obs.SecretUID != "" {
		next.TokenSecretUID = obs.SecretUID
	}
	if obs.Roles != nil {
		next.GrantedRoles, next.MissingRoles = obs.Roles.Granted, obs.Roles.Missing
	}
	if pub := obs.Published; pub != nil {
		next.TokenSecretName = obs.SecretName
		next.ExpiresAt = conditions.TimeOrNil(pub.expiresAt())
		next.LastRefreshTime = conditions.TimeOrNil(pub.mintedAt)
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
	conditions.Set(&next.Conditions, readyCondition(obs), obs.Generation, now)
	stalled, reconciling := conditions.Progress(obs.Problem)
	for _, c := range []*metav1.Condition{stalled, reconciling} {
		if c != nil {
			conditions.Set(&next.Conditions, *c, obs.Generation, now)
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
		msg := fmt.Sprintf("The token in Secret %q expired at %s and has not been replaced.", obs.SecretName, conditions.RFC3339(pub.expiresAt()))
		if obs.Problem != nil {
			msg += " " + obs.Problem.Message
		}
		return conditions.NotReady(v1alpha1.ReasonTokenExpired, msg)
	case pub != nil && pub.usable(obs.Now):
		msg := fmt.Sprintf("A valid token is published in Secret %q until %s.", obs.SecretName, conditions.RFC3339(pub.expiresAt()))
		if obs.Problem != nil {
			msg += fmt.Sprintf(" Refreshing it fails (%s); it stays published until it expires.", obs.Problem.Reason)
		}
		return metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonTokenReady, Message: msg}
	case obs.Problem != nil:
		return conditions.NotReady(obs.Problem.Reason, obs.Problem.Message)
	case obs.Suspended:
		return conditions.NotReady(v1alpha1.ReasonSuspended, "spec.suspend is true: no token is requested.")
	default:
		return conditions.NotReady(v1alpha1.ReasonProgressing, "No token has been published yet.")
	}
}
