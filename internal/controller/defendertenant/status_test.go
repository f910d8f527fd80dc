package defendertenant

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

func TestComputeStatus(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	fresh := &token{mintedAt: now.Add(-10 * time.Minute), claims: tokencheck.Verdict{ExpiresAt: now.Add(50 * time.Minute)}}
	expired := &token{mintedAt: now.Add(-2 * time.Hour), claims: tokencheck.Verdict{ExpiresAt: now.Add(-time.Minute)}}
	transient := conditions.NewProblem(v1alpha1.ReasonTokenEndpointUnavailable, "down")
	human := conditions.NewProblem(v1alpha1.ReasonInvalidClientSecret, "wrong secret")
	failed := &v1alpha1.LastFailure{Time: metav1.NewTime(now), Reason: "any"}
	type want struct {
		ready, readyReason   string
		stalled, reconciling string // reasons; "" = condition absent
		failedAttempts       int32
	}
	tests := []struct {
		name     string
		prevFail int32
		obs      statusInput
		want     want
	}{
		{"fresh token, no problem", 3, statusInput{Published: fresh}, want{"True", "TokenReady", "", "", 0}},
		{"fresh token, refresh fails transiently", 1, statusInput{Published: fresh, Problem: transient, Failure: failed}, want{"True", "TokenReady", "", "TokenEndpointUnavailable", 2}},
		{"fresh token, refresh needs a human", 0, statusInput{Published: fresh, Problem: human, Failure: failed}, want{"True", "TokenReady", "InvalidClientSecret", "", 1}},
		{"expired token and failing refresh", 4, statusInput{Published: expired, Problem: transient, Failure: failed}, want{"False", "TokenExpired", "", "TokenEndpointUnavailable", 5}},
		{"expired token while suspended", 0, statusInput{Published: expired, Suspended: true}, want{"False", "TokenExpired", "", "", 0}},
		{"no token, needs a human", 0, statusInput{Problem: human, Failure: failed}, want{"False", "InvalidClientSecret", "InvalidClientSecret", "", 1}},
		{"no token, waiting out a backoff keeps the count", 2, statusInput{Problem: human}, want{"False", "InvalidClientSecret", "InvalidClientSecret", "", 2}},
		{"no token, suspended", 0, statusInput{Suspended: true}, want{"False", "Suspended", "", "", 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.obs.Now, tt.obs.Generation, tt.obs.SecretName = now, 7, "contoso-token"
			got := computeStatus(v1alpha1.DefenderTenantStatus{FailedAttempts: tt.prevFail}, tt.obs)
			ready := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionReady)
			if ready == nil || string(ready.Status) != tt.want.ready || ready.Reason != tt.want.readyReason {
				t.Errorf("Ready = %+v, want %s/%s", ready, tt.want.ready, tt.want.readyReason)
			}
			for typ, reason := range map[string]string{v1alpha1.ConditionStalled: tt.want.stalled, v1alpha1.ConditionReconciling: tt.want.reconciling} {
				c := meta.FindStatusCondition(got.Conditions, typ)
				if (reason == "") != (c == nil) || (c != nil && (c.Reason != reason || c.Status != metav1.ConditionTrue)) {
					t.Errorf("%s = %+v, want reason %q", typ, c, reason)
				}
			}
			if got.FailedAttempts != tt.want.failedAttempts {
				t.Errorf("failedAttempts = %d, want %d", got.FailedAttempts, tt.want.failedAttempts)
			}
			if got.ObservedGeneration != 7 || ready.ObservedGeneration != 7 {
				t.Errorf("observedGeneration = %d / %d, want 7", got.ObservedGeneration, ready.ObservedGeneration)
			}
		})
	}
}

func TestComputeStatusIsStableAndKeepsTransitionTimes(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	obs := statusInput{Generation: 1, Now: now.Add(123 * time.Millisecond), NextRefresh: now.Add(40*time.Minute + 500*time.Millisecond),
		SecretName: "s", Published: &token{mintedAt: now, claims: tokencheck.Verdict{ExpiresAt: now.Add(time.Hour)}}}
	first := computeStatus(v1alpha1.DefenderTenantStatus{}, obs)
	obs.Now = now.Add(10 * time.Minute)
	second := computeStatus(first, obs)
	if !equality.Semantic.DeepEqual(first, second) {
		t.Errorf("recomputing an unchanged status changed it:\n%+v\n%+v", first, second)
	}
	if first.NextRefreshTime.Nanosecond() != 0 {
		t.Error("times keep sub-second precision, which the API server drops; every reconcile would write")
	}
}

func TestTransitionEvents(t *testing.T) {
	ready := func(status metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: v1alpha1.ConditionReady, Status: status, Reason: reason}
	}
	stalled := func(reason string) metav1.Condition {
		return metav1.Condition{Type: v1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: reason}
	}
	st := func(cs ...metav1.Condition) v1alpha1.DefenderTenantStatus {
		return v1alpha1.DefenderTenantStatus{Conditions: cs}
	}
	tests := []struct {
		name          string
		before, after v1alpha1.DefenderTenantStatus
		want          []string
	}{
		{"first token", st(), st(ready("True", "TokenReady")), nil},
		{"routine refresh", st(ready("True", "TokenReady")), st(ready("True", "TokenReady")), nil},
		{"first failure", st(), st(ready("False", "InvalidClientSecret"), stalled("InvalidClientSecret")), []string{"Warning InvalidClientSecret"}},
		{"same failure again", st(ready("False", "InvalidClientSecret"), stalled("InvalidClientSecret")), st(ready("False", "InvalidClientSecret"), stalled("InvalidClientSecret")), nil},
		{"failure reason changed", st(ready("False", "InvalidClientSecret"), stalled("InvalidClientSecret")), st(ready("False", "ConsentRequired"), stalled("ConsentRequired")), []string{"Warning ConsentRequired"}},
		{"minted after failure", st(ready("False", "ConsentRequired"), stalled("ConsentRequired")), st(ready("True", "TokenReady")), []string{"Normal TokenReady"}},
		{"token expired", st(ready("True", "TokenReady")), st(ready("False", "TokenExpired")), []string{"Warning TokenExpired"}},
		{"new token after expiry", st(ready("False", "TokenExpired")), st(ready("True", "TokenReady")), []string{"Normal TokenReady"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range transitionEvents(tt.before, tt.after) {
				got = append(got, e.Type+" "+e.Reason)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("events = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("events = %v, want %v", got, tt.want)
				}
			}
		})
	}
}
