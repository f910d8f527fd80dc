package defendertenant

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func TestRestartKeepsTheBackoffOfAFailingTenant(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	first := h.startFailing(entraemu.ServerError(), entraemu.ServerError())

	// A new operator process: nothing of the first one's memory survives.
	h.r = h.newReconciler(h.r.Authorities)
	h.reconcile()
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Fatalf("token requests right after a restart = %d, want 1: the restart lost the backoff", n)
	}
	expectCondition(t, h.tenant(), "Reconciling", metav1.ConditionTrue, v1alpha1.ReasonTokenEndpointUnavailable)

	h.clock.Step(first.RequeueAfter)
	h.reconcile()
	if n := h.entra.Requests(testTenantID); n != 2 {
		t.Errorf("token requests once the backoff ended = %d, want 2", n)
	}
	if got := h.tenant().Status.FailedAttempts; got != 2 {
		t.Errorf("failedAttempts = %d, want 2: the count went on across the restart", got)
	}
}

func TestLastFailureIsRecordedAndClearedOnSuccess(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	res := h.startFailing(entraemu.ServerError())

	last := h.tenant().Status.LastFailure
	if last == nil {
		t.Fatal("status.lastFailure absent after a failed request")
	}
	if last.Reason != v1alpha1.ReasonTokenEndpointUnavailable || last.Code != "AADSTS50033" || !last.Time.Time.Equal(h.clock.Now()) || last.InputsHash == "" {
		t.Errorf("lastFailure = %+v, want TokenEndpointUnavailable, AADSTS50033 (the 503 carries it), at %s, with an inputs digest", last, h.clock.Now())
	}

	h.clock.Step(res.RequeueAfter)
	h.reconcile()
	got := h.tenant()
	expectCondition(t, got, "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	if got.Status.LastFailure != nil || got.Status.FailedAttempts != 0 {
		t.Errorf("after a success lastFailure = %+v, failedAttempts = %d; want both cleared", got.Status.LastFailure, got.Status.FailedAttempts)
	}
}

// refuseSecretCreates makes the namespace's ResourceQuota admission refuse every new
// Secret, as a full quota does: the API server answers 403 Forbidden.
func refuseSecretCreates(t *testing.T, h *harness) *corev1.ResourceQuota {
	t.Helper()
	secrets := corev1.ResourceName("count/secrets")
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "secrets", Namespace: h.ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{secrets: resource.MustParse("1")}},
	}
	if err := k8s.Create(h.ctx, quota); err != nil {
		t.Fatal(err)
	}
	// No quota controller runs here; the status it would write says the quota is used up.
	quota.Status = corev1.ResourceQuotaStatus{
		Hard: corev1.ResourceList{secrets: resource.MustParse("1")},
		Used: corev1.ResourceList{secrets: resource.MustParse("1")},
	}
	if err := k8s.Status().Update(h.ctx, quota); err != nil {
		t.Fatal(err)
	}
	return quota
}

func TestSecretWriteRefusedByAQuotaStallsAndRetriesSlowly(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	quota := refuseSecretCreates(t, h)
	h.createTenant()

	res := h.reconcile()
	got := h.tenant()
	expectCondition(t, got, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonSecretWriteFailed)
	expectCondition(t, got, "Ready", metav1.ConditionFalse, v1alpha1.ReasonSecretWriteFailed)
	if last := got.Status.LastFailure; last == nil || last.Reason != v1alpha1.ReasonSecretWriteFailed || last.Code != "HTTP 403" {
		t.Errorf("lastFailure = %+v, want SecretWriteFailed with HTTP 403", last)
	}
	if got.Status.ObservedGeneration != got.Generation {
		t.Errorf("observedGeneration = %d, want %d: a stalled tenant was fully handled", got.Status.ObservedGeneration, got.Generation)
	}
	if !withinBackoff(res.RequeueAfter, time.Minute) {
		t.Errorf("RequeueAfter = %s, want the slow backoff's first step, a minute plus jitter", res.RequeueAfter)
	}
	h.reconcile()
	if h.tokenSecret("contoso-token") != nil {
		t.Fatal("the token Secret exists although the quota refused it")
	}

	if err := k8s.Delete(h.ctx, quota); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(res.RequeueAfter)
	h.reconcile()
	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	expectCondition(t, h.tenant(), "Stalled", "", "")
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests = %d, want 1: the token minted before the refused write is published", n)
	}
}

func TestFailedReconcileStillWritesStatusButNotTheGeneration(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startWithFailingWrites(1)
	h.reconcileFails()
	got := h.tenant()
	expectCondition(t, got, "Reconciling", metav1.ConditionTrue, v1alpha1.ReasonSecretWriteFailed)
	expectCondition(t, got, "Stalled", "", "")
	if got.Status.ObservedGeneration == got.Generation {
		t.Errorf("observedGeneration = %d stamped although the spec was not fully handled", got.Status.ObservedGeneration)
	}
	if got.Status.LastFailure != nil {
		t.Errorf("lastFailure = %+v: a transient write failure is retried by controller-runtime, not backed off", got.Status.LastFailure)
	}

	h.reconcile()
	got = h.tenant()
	expectCondition(t, got, "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	expectCondition(t, got, "Reconciling", "", "")
	if got.Status.ObservedGeneration != got.Generation {
		t.Errorf("observedGeneration = %d after a full reconcile, want %d", got.Status.ObservedGeneration, got.Generation)
	}
}

// staleReads answers reads of objects of stale's type with a copy of stale, as
// a watch cache that has not seen the latest writes does.
type staleReads struct {
	client.Client
	stale client.Object
}

func (s *staleReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if reflect.TypeOf(obj) == reflect.TypeOf(s.stale) {
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(s.stale.DeepCopyObject()).Elem())
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

func TestLaggingCacheDoesNotHideTheBackoff(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	beforeFailure := h.createTenant()
	h.entra.InjectFailures(testTenantID, entraemu.ServerError(), entraemu.ServerError())
	h.reconcile()

	h.r.Client = &staleReads{Client: k8s, stale: beforeFailure}
	h.reconcile()
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests = %d, want 1: a tenant read from a lagging cache retried during its backoff", n)
	}
}
