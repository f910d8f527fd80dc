package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// transitionEvent is the Event a status change deserves, if any. A new failure
// reason, recovery and expiry record one. Routine refreshes change only times, and a
// tenant's first token is what everyone expects (its status says so): neither
// records anything, so applying thousands of tenants does not write thousands of
// Events, a quarter of the operator's API writes for a new tenant.
type transitionEvent struct {
	Type, Reason, Action, Note string
}

func transitionEvents(before, after v1alpha1.DefenderTenantStatus) []transitionEvent {
	var evs []transitionEvent
	oldProblem, newProblem := reportedProblem(before.Conditions), reportedProblem(after.Conditions)
	if newProblem != nil && (oldProblem == nil || oldProblem.Reason != newProblem.Reason) {
		evs = append(evs, transitionEvent{corev1.EventTypeWarning, newProblem.Reason, "RefreshToken", newProblem.Message})
	}
	oldReady, newReady := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady), meta.FindStatusCondition(after.Conditions, v1alpha1.ConditionReady)
	if newReady == nil || (oldReady != nil && oldReady.Reason == newReady.Reason && oldReady.Status == newReady.Status) {
		return evs
	}
	switch {
	case newReady.Status == metav1.ConditionTrue && oldReady != nil:
		evs = append(evs, transitionEvent{corev1.EventTypeNormal, newReady.Reason, "PublishToken", newReady.Message})
	case newReady.Reason == v1alpha1.ReasonTokenExpired:
		evs = append(evs, transitionEvent{corev1.EventTypeWarning, newReady.Reason, "PublishToken", newReady.Message})
	}
	return evs
}

func (r *DefenderTenantReconciler) recordTransition(tenant *v1alpha1.DefenderTenant, before, after v1alpha1.DefenderTenantStatus) {
	if r.Recorder == nil {
		return
	}
	for _, ev := range transitionEvents(before, after) {
		r.Recorder.Eventf(tenant, nil, ev.Type, ev.Reason, ev.Action, "%s", ev.Note)
	}
}
