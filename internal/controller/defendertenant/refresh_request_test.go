package defendertenant

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// TestRefreshRequestMintsOnceOverAFreshToken: a Ready tenant with a fresh token is
// asked for a token (AnnotationRequestedAt); one token request follows, the request
// is recorded as handled, and the next reconcile asks nothing more. A request
// within a minute of the last token request waits for the minute to end.
func TestRefreshRequestMintsOnceOverAFreshToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	h.expectRequests(1)

	request := func(value string) {
		h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
			metav1.SetMetaDataAnnotation(&dt.ObjectMeta, v1alpha1.AnnotationRequestedAt, value)
		})
	}
	request("first")
	res := h.reconcile()
	h.expectRequests(1)
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Errorf("a request within a minute of the last token request rechecks after %s, want within the minute", res.RequeueAfter)
	}

	h.clock.Step(time.Minute + time.Second)
	h.reconcile()
	h.expectRequests(2)
	if got := h.tenant().Status.LastHandledRequestedAt; got != "first" {
		t.Errorf("status.lastHandledRequestedAt = %q, want %q", got, "first")
	}
	h.expectReady()

	h.clock.Step(2 * time.Minute)
	h.reconcile()
	h.expectRequests(2)

	request("second")
	h.reconcile()
	h.expectRequests(3)
}

// TestRefreshRequestEndsABackoff: after a customer consents, a request ends the
// 15-minute backoff of ConsentRequired at once (once a minute has passed).
func TestRefreshRequestEndsABackoff(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.entra.Revoke(testTenantID, testClientID)
	h.createCredential(testClientSecret)
	h.createTenant()
	h.reconcile()
	h.reconcile()
	h.expectRequests(1)

	h.entra.Grant(testTenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	h.clock.Step(2 * time.Minute)
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
		metav1.SetMetaDataAnnotation(&dt.ObjectMeta, v1alpha1.AnnotationRequestedAt, "consented")
	})
	h.reconcile()
	h.expectRequests(2)
	h.expectReady()
}

// TestRefreshRequestReachesTheController: the watch lets an update through when
// AnnotationRequestedAt changes, though the generation does not.
func TestRefreshRequestReachesTheController(t *testing.T) {
	tenant := func(annotations map[string]string) *v1alpha1.DefenderTenant {
		return &v1alpha1.DefenderTenant{ObjectMeta: metav1.ObjectMeta{Name: "contoso", Generation: 1, Annotations: annotations}}
	}
	for _, tt := range []struct {
		name     string
		old, new map[string]string
		want     bool
	}{
		{"a request", nil, map[string]string{v1alpha1.AnnotationRequestedAt: "now"}, true},
		{"another request", map[string]string{v1alpha1.AnnotationRequestedAt: "then"}, map[string]string{v1alpha1.AnnotationRequestedAt: "now"}, true},
		{"another annotation", nil, map[string]string{"team": "soc"}, false},
	} {
		if got := refreshRequestChanged.Update(event.UpdateEvent{ObjectOld: tenant(tt.old), ObjectNew: tenant(tt.new)}); got != tt.want {
			t.Errorf("%s: let through = %v, want %v", tt.name, got, tt.want)
		}
	}
}
