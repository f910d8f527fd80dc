package defendertenant

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// ReasonResourceRetiring is the reason of the Warning Event a tenant gets when
// status.resourceRetiresAt first appears: its resource is a Defender API that
// Microsoft retires (see docs/migrating-to-graph.md).
const ReasonResourceRetiring = "ResourceRetiring"

// retirement names, for the ResourceRetiring Event, the resource a tenant's tokens
// are for and the Microsoft Graph resource of its cloud ("" when the cloud is not
// known, because the app cannot be read).
type retirement struct {
	resource, graphResource string
}

func retirementOf(obs *observation) retirement {
	r := retirement{resource: obs.resource}
	if obs.app.inline() || obs.app.object != nil {
		r.graphResource = entra.GraphResource(obs.app.cloud)
	}
	return r
}

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

// retirementEvents warn once that the tenant's resource retires: when
// status.resourceRetiresAt appears in the stored status. The stored status decides,
// so neither the next reconcile nor a restarted operator warns again; a tenant
// that moved away and back warns anew.
func retirementEvents(before, after v1alpha1.DefenderTenantStatus, r retirement) []conditions.Event {
	if before.ResourceRetiresAt != nil || after.ResourceRetiresAt == nil {
		return nil
	}
	graph := r.graphResource
	if graph == "" {
		graph = "https://graph.microsoft.com (https://graph.microsoft.us in GCC High, https://dod-graph.microsoft.us in DoD)"
	}
	note := fmt.Sprintf("Resource %s is a Defender API that Microsoft retires on %s (message center MC1220762): it no longer works after that. "+
		"Move this tenant to Microsoft Graph: spec.resource %s with the Graph security roles (docs/migrating-to-graph.md, kubectl defender migrate --to graph).",
		r.resource, after.ResourceRetiresAt.UTC().Format(time.DateOnly), graph)
	return []conditions.Event{{Type: corev1.EventTypeWarning, Reason: ReasonResourceRetiring, Action: "CheckResource", Note: note}}
}

func (r *Reconciler) recordTransition(tenant *v1alpha1.DefenderTenant, before, after v1alpha1.DefenderTenantStatus, retiring retirement) {
	if r.Recorder == nil {
		return
	}
	for _, ev := range append(transitionEvents(before, after), retirementEvents(before, after, retiring)...) {
		r.Recorder.Eventf(tenant, nil, ev.Type, ev.Reason, ev.Action, "%s", ev.Note)
	}
}
