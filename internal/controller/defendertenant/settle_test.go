package defendertenant

import (
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// TestSettle: what each result of act comes to. The rows name, like
// TestDecisionChain's, the fact that decides, and the outcome's reason, whether it
// stalls, whether it is recorded as lastFailure (and so backs off), whether the
// reconcile returns an error for controller-runtime's retry, and which token stays
// published.
func TestSettle(t *testing.T) {
	secrets := schema.GroupResource{Resource: "secrets"}
	minted := tokenMinted(0, "current-inputs")
	published := tokenMinted(50*time.Minute, "current-inputs")
	refusal := &requestFailure{problem: problemOf(v1alpha1.ReasonMissingRoles), roles: &roleFacts{Missing: []string{"Incident.Read.All"}}}
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, "contoso-token", field.ErrorList{field.Invalid(field.NewPath("data"), "x", "too long")})

	mint := plan{action: actionMint}
	restore := plan{action: actionRestore, token: published}
	revoke := plan{action: actionRevoke, problem: problemOf(v1alpha1.ReasonAppNotAllowed), recheck: decideNow.Add(time.Minute)}
	tests := []struct {
		name string
		// withPublished: a token of ours is published when the reconcile starts.
		withPublished bool
		plan          plan
		res           result
		reason        string // "" : no problem
		stalled       bool
		recorded      bool // lastFailure is written
		retried       bool // an error goes back to controller-runtime
		// stays is the token published afterwards; nil: none.
		stays *token
	}{
		{name: "minted and published", plan: mint, res: result{requested: true, minted: minted, secretUID: "uid-1"}, stays: minted},
		{name: "Entra ID refused the credential: stalls, recorded, the old token stays", withPublished: true, plan: mint,
			res:    result{requested: true, requestErr: &entra.Failure{Reason: v1alpha1.ReasonInvalidClientSecret, AADSTS: []int{7000215}, Message: "m"}},
			reason: v1alpha1.ReasonInvalidClientSecret, stalled: true, recorded: true, stays: published},
		{name: "Entra ID unreachable: retried with the tenant's backoff, recorded", plan: mint,
			res:    result{requested: true, requestErr: errors.New("dial tcp: connection refused")},
			reason: v1alpha1.ReasonTokenEndpointUnavailable, recorded: true},
		{name: "refused token: its reason, recorded, not published", withPublished: true, plan: mint,
			res:    result{requested: true, refused: refusal},
			reason: v1alpha1.ReasonMissingRoles, stalled: true, recorded: true, stays: published},
		{name: "TokenRequest forbidden: ServiceAccountNotFound, stalls", plan: mint,
			res:    result{requested: true, credentialErr: apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "partner-app", errors.New("no"))},
			reason: v1alpha1.ReasonServiceAccountNotFound, stalled: true, recorded: true},
		{name: "grant unreadable: nothing changes, retried", withPublished: true, plan: restore,
			res: result{grantErr: errors.New("timeout")}, retried: true, stays: published},
		{name: "grant withdrawn in flight: AppNotAllowed, nothing published", withPublished: true, plan: mint,
			res:    result{requested: true, minted: minted, grantWithdrawn: true},
			reason: v1alpha1.ReasonAppNotAllowed, stalled: true},
		{name: "grant withdrawn, revocation failed: still published, retried", withPublished: true, plan: mint,
			res:    result{requested: true, minted: minted, grantWithdrawn: true, revokeErr: errors.New("timeout")},
			reason: v1alpha1.ReasonAppNotAllowed, stalled: true, retried: true, stays: published},
		{name: "name taken: SecretConflict", plan: mint,
			res:    result{requested: true, minted: minted, writeErr: errTokenSecretTaken},
			reason: v1alpha1.ReasonSecretConflict, stalled: true},
		{name: "write forbidden: stalls and backs off", withPublished: true, plan: mint,
			res:    result{requested: true, minted: minted, writeErr: apierrors.NewForbidden(secrets, "contoso-token", errors.New("quota"))},
			reason: v1alpha1.ReasonSecretWriteFailed, stalled: true, recorded: true, stays: published},
		{name: "write invalid: stalls and backs off", plan: mint,
			res:    result{requested: true, minted: minted, writeErr: invalid},
			reason: v1alpha1.ReasonSecretWriteFailed, stalled: true, recorded: true},
		{name: "write timed out: reconciling, retried by controller-runtime", plan: mint,
			res:    result{requested: true, minted: minted, writeErr: apierrors.NewTimeoutError("slow", 1)},
			reason: v1alpha1.ReasonSecretWriteFailed, retried: true},
		{name: "published, former Secret not deleted: retried", plan: mint,
			res: result{requested: true, minted: minted, secretUID: "uid-1", staleErr: errors.New("timeout")}, retried: true, stays: minted},
		{name: "revoked", withPublished: true, plan: revoke, reason: v1alpha1.ReasonAppNotAllowed, stalled: true},
		{name: "revocation failed: still published, retried", withPublished: true, plan: revoke, res: result{revokeErr: errors.New("timeout")},
			reason: v1alpha1.ReasonAppNotAllowed, stalled: true, retried: true, stays: published},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := healthyObservation()
			if tt.withPublished {
				publishedIntact(published)(obs)
			}
			out := settle(obs, tt.plan, tt.res)
			switch {
			case tt.reason == "" && out.problem != nil:
				t.Errorf("problem %s (%s), want none", out.problem.Reason, out.problem.Message)
			case tt.reason != "" && out.problem == nil:
				t.Errorf("no problem, want %s", tt.reason)
			case tt.reason != "" && (out.problem.Reason != tt.reason || out.problem.Stalled != tt.stalled):
				t.Errorf("problem %s (stalled %v), want %s (stalled %v)", out.problem.Reason, out.problem.Stalled, tt.reason, tt.stalled)
			}
			if recorded := out.failure != nil; recorded != tt.recorded {
				t.Errorf("lastFailure recorded = %v, want %v", recorded, tt.recorded)
			}
			if tt.recorded && !out.recheck.After(obs.now) {
				t.Errorf("a recorded failure rechecks at %s, not after now: no backoff", out.recheck)
			}
			if retried := out.err != nil; retried != tt.retried {
				t.Errorf("returned error = %v, want one: %v", out.err, tt.retried)
			}
			if out.published != tt.stays {
				t.Errorf("published token = %v, want %v", out.published, tt.stays)
			}
		})
	}
}

// TestSettledRequestsCountOnce: the metrics count what a request came to, and
// nothing when none was made.
func TestSettledRequestsCountOnce(t *testing.T) {
	obs := healthyObservation()
	for _, tt := range []struct {
		res  result
		want string
	}{
		{result{}, ""},
		{result{requested: true, minted: tokenMinted(0, "current-inputs")}, v1alpha1.ReasonTokenReady},
		{result{requested: true, requestErr: errors.New("dial tcp: connection refused")}, v1alpha1.ReasonTokenEndpointUnavailable},
		{result{requested: true, refused: &requestFailure{problem: problemOf(v1alpha1.ReasonInvalidToken)}}, v1alpha1.ReasonInvalidToken},
	} {
		if got := requestReason(obs, tt.res); got != tt.want {
			t.Errorf("requestReason(%+v) = %q, want %q", tt.res, got, tt.want)
		}
	}
}

func problemOf(reason string) *conditions.Problem {
	return conditions.NewProblem(reason, "what to do")
}
