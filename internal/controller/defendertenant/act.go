package defendertenant

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
)

// outcome is what carrying out a plan did; the status and the requeue follow from it.
type outcome struct {
	// published is the token in the token Secret now; nil: none of ours.
	published *token
	// secretUID is the UID of the tenant's own token Secret, when known.
	secretUID types.UID
	problem   *conditions.Problem
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

func (r *Reconciler) act(ctx context.Context, obs *observation, p plan) outcome {
	switch p.action {
	case actionKeep:
		return outcome{published: p.token, secretUID: ownedSecretUID(obs), roles: rolesOf(p.token.claims), nextRefresh: p.nextRefresh, recheck: p.recheck}
	case actionRestore, actionPublishLeftover:
		return r.publishUnderGrant(ctx, obs, p, p.token)
	case actionMint:
		t, failure := r.requestToken(ctx, obs)
		if failure != nil {
			return r.requestFailed(obs, failure)
		}
		return r.publishUnderGrant(ctx, obs, p, t)
	case actionRevoke:
		return r.revoke(ctx, obs, p)
	default:
		return held(obs, p)
	}
}

// revoke deletes every token Secret the tenant controls: those the API server
// lists, right now, with the operator's labels for this tenant and a controller
// reference to it, whatever their names (a renamed spec.tokenSecretName leaves one
// behind) and whatever the cache says of the tenant's status (a mint that finished
// just before the grant was withdrawn left one it has not recorded yet). Each is
// deleted with its UID as a precondition, so a Secret that took the name since it
// was listed is never touched. The token leaves memory too.
func (r *Reconciler) revoke(ctx context.Context, obs *observation, p plan) outcome {
	r.leftovers.forget(keyOf(obs.tenant.Namespace, obs.tenant.Name))
	deleted, err := r.deleteTokenSecrets(ctx, obs.tenant)
	if err != nil {
		// Still published: report it so, and let controller-runtime retry at once.
		out := held(obs, p)
		out.err = fmt.Errorf("withdrawing the token Secrets of the tenant: %w", err)
		return out
	}
	if len(deleted) > 0 {
		ctrl.LoggerFrom(ctx).Info("Deleted token Secrets minted under a grant the tenant no longer has", "secrets", deleted, "app", obs.app.describe())
	}
	return outcome{problem: p.problem, recheck: p.recheck}
}

// deleteTokenSecrets deletes the token Secrets the tenant controls, found live by
// the labels and controller reference the operator writes, and names those it
// deleted.
func (r *Reconciler) deleteTokenSecrets(ctx context.Context, tenant *v1alpha1.DefenderTenant) ([]string, error) {
	var secrets metav1.PartialObjectMetadataList
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := r.APIReader.List(ctx, &secrets, client.InNamespace(tenant.Namespace), tokenSecretLabels(tenant)); err != nil {
		return nil, fmt.Errorf("listing them: %w", err)
	}
	var deleted []string
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		if !labelledTokenSecretOf(secret, tenant) || secret.DeletionTimestamp != nil {
			continue
		}
		err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID})
		switch {
		case err == nil:
			deleted = append(deleted, secret.Name)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// Gone already, or another Secret under that name now: not ours to delete.
		default:
			return deleted, fmt.Errorf("deleting %s: %w", secret.Name, err)
		}
	}
	return deleted, nil
}

// publishUnderGrant publishes a token, after checking, past the cache,
// that a ClusterDefenderApp still grants the tenant: a grant withdrawn while the
// request was in flight withdraws the token before anyone can mount it. If the
// grant was withdrawn after this check, the event of the withdrawal queues the
// tenant again, and that reconcile revokes what this one published.
func (r *Reconciler) publishUnderGrant(ctx context.Context, obs *observation, p plan, t *token) outcome {
	if obs.app.kind != v1alpha1.AppKindClusterDefenderApp {
		return r.publish(ctx, obs, t)
	}
	allowed, err := r.grantStillAllows(ctx, obs)
	if err != nil {
		// Not published: the token stays in memory for the retry, like a failed write.
		r.leftovers.set(keyOf(obs.tenant.Namespace, obs.tenant.Name), leftover{raw: t.raw, mintedAt: t.mintedAt, inputsHash: t.inputsHash, generation: obs.tenant.Generation})
		out := held(obs, p)
		out.err = err
		return out
	}
	if !allowed {
		withdrawn := plan{problem: conditions.NewProblem(v1alpha1.ReasonAppNotAllowed,
			fmt.Sprintf("%s withdrew the grant of namespace %q and tenant %s while a token was being requested; the token was not published and this tenant's token Secret is deleted.",
				obs.app.describe(), obs.tenant.Namespace, obs.tenant.Spec.TenantID)), recheck: safetyRecheck(obs)}
		return r.revoke(ctx, obs, withdrawn)
	}
	return r.publish(ctx, obs, t)
}

// publish writes t to the token Secret. When the write fails, t stays in memory, so
// that the retry publishes it instead of asking Entra ID again.
func (r *Reconciler) publish(ctx context.Context, obs *observation, t *token) outcome {
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
	ctrl.LoggerFrom(ctx).V(1).Info("Published token", "expiresAt", conditions.RFC3339(t.expiresAt()))
	due := refreshAt(obs.tenant, t)
	out := outcome{published: t, secretUID: uid, roles: rolesOf(t.claims), nextRefresh: due, recheck: due}
	out.err = r.deleteStaleTokenSecret(ctx, obs.tenant, obs.secretName)
	return out
}

// requestFailed schedules the retry of a failed token request. The published token,
// if any, stays: a failed refresh never removes a token that still works.
func (r *Reconciler) requestFailed(obs *observation, f *requestFailure) outcome {
	last := newLastFailure(obs, f)
	at := retryAt(obs, last, obs.tenant.Status.FailedAttempts+1)
	return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: f.problem, failure: last, roles: f.roles, nextRefresh: at, recheck: at}
}

// writeFailed reports a token Secret that could not be written. Forbidden (RBAC, a
// quota, an admission policy) and Invalid do not go away by retrying: they stall and
// are recorded, so the slow backoff applies and survives a restart. Anything else is
// returned for controller-runtime's retry.
func (r *Reconciler) writeFailed(obs *observation, err error) outcome {
	message := fmt.Sprintf("The token Secret %q could not be written: %s", obs.secretName, truncate(writeRefusal(err), 400))
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: &conditions.Problem{Reason: v1alpha1.ReasonSecretWriteFailed, Message: message}, err: err}
	}
	p := &conditions.Problem{Reason: v1alpha1.ReasonSecretWriteFailed, Stalled: true,
		Message: message + ". Grant the operator's ServiceAccount the right to write it, or lift the quota or policy that refuses it."}
	code := http.StatusForbidden
	if apierrors.IsInvalid(err) {
		code = http.StatusUnprocessableEntity
	}
	last := newLastFailure(obs, &requestFailure{problem: p, code: fmt.Sprintf("HTTP %d", code)})
	at := retryAt(obs, last, obs.tenant.Status.FailedAttempts+1)
	return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: p, failure: last, nextRefresh: at, recheck: at}
}

// writeRefusal says why a write of the token Secret failed without quoting what
// was written: an Invalid answer of the API server may quote the values it
// refused, which come from the token, so only its fields and their faults are
// named. Other answers (Forbidden by RBAC, a quota or a policy; conflicts,
// timeouts) name the object and the rule, never its data.
func writeRefusal(err error) string {
	var status apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) {
		return err.Error()
	}
	var faults []string
	if details := status.Status().Details; details != nil {
		for _, c := range details.Causes {
			faults = append(faults, fmt.Sprintf("%s (%s)", c.Field, c.Type))
		}
	}
	if len(faults) == 0 {
		return "the API server refused it as invalid"
	}
	return "the API server refused it as invalid: " + strings.Join(faults, ", ")
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
