package defendertenant

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
)

// settle is the fourth step of a reconcile, after observe, decide and act: a pure
// function of the observation, the plan and what act's I/O returned. Every
// judgement of a result is here: what a failed token request or a refused token
// means and when it is retried, which write failures stall, and what the status
// reports. It is table-tested like decide (TestSettle).
func settle(obs *observation, p plan, res result) outcome {
	out := settleResult(obs, p, res)
	if res.requested {
		// A request for a token is handled by any token request, whatever it
		// came to: each is served once.
		out.handledRequest = obs.refreshRequest
	}
	return out
}

func settleResult(obs *observation, p plan, res result) outcome {
	switch {
	case p.action == actionKeep:
		return outcome{published: p.token, secretUID: ownedSecretUID(obs), roles: rolesOf(p.token.claims), nextRefresh: p.nextRefresh, recheck: p.recheck}
	case p.action == actionRevoke:
		return revoked(obs, p, res.revokeErr)
	case p.action == actionHold:
		return held(obs, p)
	case res.credentialErr != nil:
		return requestFailed(obs, serviceAccountTokenFailed(obs, obs.credential.Source.Object(), res.credentialErr))
	case res.requestErr != nil:
		return requestFailed(obs, namingDiscoveredCloud(obs, entraRequestFailed(obs, res.requestErr), res.discoveredCloud))
	case res.refused != nil:
		return requestFailed(obs, res.refused)
	case res.grantErr != nil:
		out := held(obs, p)
		out.err = res.grantErr
		return out
	case res.grantWithdrawn:
		withdrawn := plan{problem: conditions.NewProblem(v1alpha1.ReasonAppNotAllowed,
			fmt.Sprintf("%s withdrew the grant of namespace %q and tenant %s while a token was being requested; the token was not published and this tenant's token Secret is deleted.",
				obs.app.describe(), obs.tenant.Namespace, obs.tenant.Spec.TenantID)), recheck: safetyRecheck(obs)}
		return revoked(obs, withdrawn, res.revokeErr)
	case errors.Is(res.writeErr, errTokenSecretTaken):
		return outcome{problem: secretConflictProblem(obs.secretName), recheck: safetyRecheck(obs)}
	case res.writeErr != nil:
		return writeFailed(obs, res.writeErr)
	}
	t := p.token
	if p.action == actionMint {
		t = res.minted
	}
	due := refreshAt(obs.tenant, t)
	return outcome{published: t, secretUID: res.secretUID, roles: rolesOf(t.claims), nextRefresh: due, recheck: due, err: res.staleErr}
}

// requestReason is what the token request of res counts as in the metrics:
// TokenReady for a token that may be published, else the reason it produced
// nothing; empty when no request was made.
func requestReason(obs *observation, res result) string {
	switch {
	case !res.requested:
		return ""
	case res.credentialErr != nil:
		return serviceAccountTokenFailed(obs, obs.credential.Source.Object(), res.credentialErr).problem.Reason
	case res.requestErr != nil:
		return entraRequestFailed(obs, res.requestErr).problem.Reason
	case res.refused != nil:
		return res.refused.problem.Reason
	}
	return v1alpha1.ReasonTokenReady
}

// revoked: the tenant's token Secrets were deleted, or, when that failed, are still
// published, and controller-runtime retries at once.
func revoked(obs *observation, p plan, err error) outcome {
	if err != nil {
		out := held(obs, p)
		out.err = err
		return out
	}
	return outcome{problem: p.problem, recheck: p.recheck}
}

// requestFailed schedules the retry of a failed token request. The published token,
// if any, stays: a failed refresh never removes a token that still works.
func requestFailed(obs *observation, f *requestFailure) outcome {
	last := newLastFailure(obs, f)
	at := retryAt(obs, last, obs.tenant.Status.FailedAttempts+1)
	return outcome{published: obs.published, secretUID: ownedSecretUID(obs), problem: f.problem, failure: last, roles: f.roles, nextRefresh: at, recheck: at}
}

// writeFailed reports a token Secret that could not be written. Forbidden (RBAC, a
// quota, an admission policy) and Invalid do not go away by retrying: they stall and
// are recorded, so the slow backoff applies and survives a restart. Anything else is
// returned for controller-runtime's retry.
func writeFailed(obs *observation, err error) outcome {
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
	// handledRequest is the AnnotationRequestedAt value this reconcile's token
	// request served; empty: none.
	handledRequest string
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
