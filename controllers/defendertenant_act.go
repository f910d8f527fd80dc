package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// outcome is what carrying out a plan did; the status and the requeue follow from it.
type outcome struct {
	// published is the token in the token Secret now; nil: none of ours.
	published *token
	// secretUID is the UID of the tenant's own token Secret, when known.
	secretUID types.UID
	problem   *problem
	// failure is a failed refresh to record in status.lastFailure; nil: none happened.
	failure *v1alpha1.LastFailure
	// roles are those of the token minted or kept; nil: unchanged.
	roles       *roleFacts
	nextRefresh time.Time
	recheck     time.Time
	// err is an API error that the next reconcile may not see; it is returned, so
	// that controller-runtime retries with its backoff, and the spec counts as not
	// fully handled.
	err error
}

// held is the outcome of doing nothing: the observed token stays, the plan's problem
// is reported. It is also what the status shows if acting is cut short.
func held(obs *observation, p plan) outcome {
	return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: p.problem, nextRefresh: p.nextRefresh, recheck: p.recheck}
}

func ownedSecretUID(obs *observation) types.UID {
	if obs.tokenSecret == nil || !obs.tokenSecretOwned {
		return ""
	}
	return obs.tokenSecret.UID
}

func (r *DefenderTenantReconciler) act(ctx context.Context, obs *observation, p plan) outcome {
	switch p.action {
	case actionKeep:
		return outcome{published: p.token, secretUID: ownedSecretUID(obs), roles: rolesOf(p.token.claims), nextRefresh: p.nextRefresh, recheck: p.recheck}
	case actionRestore, actionPublishLeftover:
		return r.publish(ctx, obs, p.token)
	case actionMint:
		t, failure := r.requestToken(ctx, obs)
		if failure != nil {
			return r.requestFailed(obs, failure)
		}
		return r.publish(ctx, obs, t)
	case actionRevoke:
		return r.revoke(ctx, obs, p)
	default:
		return held(obs, p)
	}
}

// revoke deletes the tenant's own token Secret, preconditioned on its UID so that a
// Secret someone created in its place since it was read is never touched. The
// token leaves memory with it: nothing of the tenant's would be published again.
func (r *DefenderTenantReconciler) revoke(ctx context.Context, obs *observation, p plan) outcome {
	r.leftovers.forget(keyOf(obs.tenant.Namespace, obs.tenant.Name))
	secret := obs.tokenSecret
	err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		// Still published: report it so, and let controller-runtime retry at once.
		out := held(obs, p)
		out.err = fmt.Errorf("deleting token Secret %s of a tenant its app no longer grants: %w", secret.Name, err)
		return out
	}
	ctrl.LoggerFrom(ctx).Info("Deleted the token Secret of a tenant its app no longer grants", "secret", secret.Name, "app", obs.app.describe())
	return outcome{problem: p.problem, recheck: p.recheck}
}

// publish writes t to the token Secret. When the write fails, t stays in memory, so
// that the retry publishes it instead of asking Entra ID again.
func (r *DefenderTenantReconciler) publish(ctx context.Context, obs *observation, t *token) outcome {
	key := keyOf(obs.tenant.Namespace, obs.tenant.Name)
	uid, err := r.writeTokenSecret(ctx, obs, t)
	if errors.Is(err, errTokenSecretTaken) {
		r.leftovers.forget(key)
		return outcome{problem: secretConflictProblem(obs.secretName), recheck: safetyRecheck(obs)}
	}
	if err != nil {
		r.leftovers.set(key, leftover{raw: t.raw, mintedAt: t.mintedAt, inputsHash: t.inputsHash, generation: obs.tenant.Generation})
		return r.writeFailed(obs, err)
	}
	r.leftovers.forget(key)
	ctrl.LoggerFrom(ctx).V(1).Info("Published token", "expiresAt", rfc3339(t.expiresAt()))
	due := refreshAt(obs.tenant, t)
	out := outcome{published: t, secretUID: uid, roles: rolesOf(t.claims), nextRefresh: due, recheck: due}
	out.err = r.deleteStaleTokenSecret(ctx, obs.tenant, obs.secretName)
	return out
}

// requestFailed schedules the retry of a failed token request. The published token,
// if any, stays: a failed refresh never removes a token that still works.
func (r *DefenderTenantReconciler) requestFailed(obs *observation, f *requestFailure) outcome {
	last := newLastFailure(obs, f)
	at := retryAt(obs, last, obs.tenant.Status.FailedAttempts+1)
	return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: f.problem, failure: last, roles: f.roles, nextRefresh: at, recheck: at}
}

// writeFailed reports a token Secret that could not be written. Forbidden (RBAC, a
// quota, an admission policy) and Invalid do not go away by retrying: they stall and
// are recorded, so the slow backoff applies and survives a restart. Anything else is
// returned for controller-runtime's retry.
func (r *DefenderTenantReconciler) writeFailed(obs *observation, err error) outcome {
	message := fmt.Sprintf("The token Secret %q could not be written: %s", obs.secretName, truncate(err.Error(), 400))
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: &problem{Reason: v1alpha1.ReasonSecretWriteFailed, Message: message}, err: err}
	}
	p := &problem{Reason: v1alpha1.ReasonSecretWriteFailed, Stalled: true,
		Message: message + ". Grant the operator's ServiceAccount the right to write it, or lift the quota or policy that refuses it."}
	code := http.StatusForbidden
	if apierrors.IsInvalid(err) {
		code = http.StatusUnprocessableEntity
	}
	last := newLastFailure(obs, &requestFailure{problem: p, code: fmt.Sprintf("HTTP %d", code)})
	at := retryAt(obs, last, obs.tenant.Status.FailedAttempts+1)
	return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: p, failure: last, nextRefresh: at, recheck: at}
}

// newLastFailure records a failure as status.lastFailure. Its time is rounded up to
// the second the API server stores, so that a backoff computed now and one computed
// from the stored status after a restart end at the same instant. It carries the
// IDs Microsoft support and the customer tenant's sign-in logs know the request by.
func newLastFailure(obs *observation, f *requestFailure) *v1alpha1.LastFailure {
	at := obs.now.Truncate(time.Second)
	if at.Before(obs.now) {
		at = at.Add(time.Second)
	}
	last := &v1alpha1.LastFailure{
		Time:            metav1.NewTime(at.UTC()),
		Reason:          f.problem.Reason,
		Message:         f.problem.Message,
		Code:            f.code,
		TraceID:         f.traceID,
		CorrelationID:   f.correlationID,
		ClientRequestID: f.clientRequestID,
		InputsHash:      obs.failureInputs,
	}
	if f.retryAfter > 0 {
		last.RetryAfter = &metav1.Duration{Duration: f.retryAfter}
	}
	return last
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary: the message goes into a condition, which must be UTF-8.
	return strings.ToValidUTF8(s[:n], "") + "…"
}
