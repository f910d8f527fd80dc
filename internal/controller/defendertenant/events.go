package defendertenant

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
)

// transitionEvents are the Events a status change deserves. A new failure
// reason, recovery and expiry record one. Routine refreshes change only times, and a
// tenant's first token is what everyone expects (its status says so): neither
// records anything, so applying thousands of tenants does not write thousands of
// Events, a quarter of the operator's API writes for a new tenant.
func transitionEvents(before, after v1alpha1.DefenderTenantStatus) []conditions.Event {
	var evs []conditions.Event
	oldProblem, newProblem := conditions.Reported(before.Conditions), conditions.Reported(after.Conditions)
	if newProblem != nil && (oldProblem == nil || oldProblem.Reason != newProblem.Reason) {
		evs = append(evs, conditions.Event{Type: corev1.EventTypeWarning, Reason: newProblem.Reason, Action: "RefreshToken", Note: newProblem.Message})
	}
	oldReady, newReady := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady), meta.FindStatusCondition(after.Conditions, v1alpha1.ConditionReady)
	if newReady == nil || (oldReady != nil && oldReady.Reason == newReady.Reason && oldReady.Status == newReady.Status) {
		return evs
	}
	switch {
	case newReady.Status == metav1.ConditionTrue && oldReady != nil:
		evs = append(evs, conditions.Event{Type: corev1.EventTypeNormal, Reason: newReady.Reason, Action: "PublishToken", Note: newReady.Message})
	case newReady.Reason == v1alpha1.ReasonTokenExpired:
		evs = append(evs, conditions.Event{Type: corev1.EventTypeWarning, Reason: newReady.Reason, Action: "PublishToken", Note: newReady.Message})
	}
	return evs
}

func (r *Reconciler) recordTransition(tenant *v1alpha1.DefenderTenant, before, after v1alpha1.DefenderTenantStatus) {
	if r.Recorder == nil {
		return
	}
	for _, ev := range transitionEvents(before, after) {
		r.Recorder.Eventf(tenant, nil, ev.Type, ev.Reason, ev.Action, "%s", ev.Note)
	}
}
