package defendertenant

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const dodTenantID = "3b2a1f0e-9d8c-4b7a-8f6e-5d4c3b2a1f0e"

// TestTenantNotFoundNamesTheCloudDiscoveryFinds: a GCC High tenant whose spec
// leaves the cloud at Public is asked at the commercial sign-in host, which refuses
// it (AADSTS900382); OpenID discovery there says where it lives, once for all the
// failures that follow.
func TestTenantNotFoundNamesTheCloudDiscoveryFinds(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.entra.SetCloud(govTenantID, v1alpha1.CloudUSGovHigh)
	h.entra.Grant(govTenantID, testClientID, govDefenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = govTenantID })

	res := h.reconcile()
	got := h.tenant()
	expectCondition(t, got, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonTenantNotFound)
	msg := condition(got, v1alpha1.ConditionReady).Message
	if want := "Tenant " + govTenantID + " is in the USGovHigh cloud (per OpenID discovery), not Public: set spec.cloud to USGovHigh"; !strings.Contains(msg, want) {
		t.Errorf("message %q does not contain %q", msg, want)
	}
	if !strings.HasPrefix(msg, "AADSTS900382") {
		t.Errorf("message %q does not start with Entra's code", msg)
	}

	// More failures of the same episode: each a token request, no more discovery.
	for range 3 {
		h.clock.Step(res.RequeueAfter)
		res = h.reconcile()
	}
	if n := h.entra.Requests(govTenantID); n != 4 {
		t.Fatalf("token requests = %d, want 4: the retries did not happen", n)
	}
	if n := h.entra.DiscoveryRequests(govTenantID); n != 1 {
		t.Errorf("discovery requests across 4 failures = %d, want 1", n)
	}
	if after := condition(h.tenant(), v1alpha1.ConditionReady).Message; after != msg {
		t.Errorf("message changed between attempts:\n%q\n%q", msg, after)
	}

	// Another tenant ID is another question: asked again, and the answer is DoD.
	h.entra.SetCloud(dodTenantID, v1alpha1.CloudDoD)
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = dodTenantID })
	h.reconcile()
	if n := h.entra.DiscoveryRequests(dodTenantID); n != 1 {
		t.Errorf("discovery requests for the new tenant ID = %d, want 1", n)
	}
	if msg := condition(h.tenant(), v1alpha1.ConditionReady).Message; !strings.Contains(msg, "is in the DoD cloud (per OpenID discovery)") {
		t.Errorf("message %q does not name DoD", msg)
	}

	// Deleting the tenant drops what discovery said.
	key := keyOf(h.ns, tenantName)
	if _, ok := h.r.discovered.get(key); !ok {
		t.Fatal("nothing remembered of the discovery before the deletion")
	}
	if err := k8s.Delete(h.ctx, h.tenant()); err != nil {
		t.Fatal(err)
	}
	h.reconcile() // the tenant is gone: its Get answers NotFound
	if _, ok := h.r.discovered.get(key); ok {
		t.Error("discovery's answer is still remembered after the tenant was deleted")
	}
}

// TestDiscoveryEpisodeEndsWithAnotherAnswer: once a token request ends otherwise
// than TenantNotFound, the next TenantNotFound asks discovery again.
func TestDiscoveryEpisodeEndsWithAnotherAnswer(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.entra.SetCloud(govTenantID, v1alpha1.CloudUSGovHigh)
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = govTenantID })
	res := h.reconcile()
	if n := h.entra.DiscoveryRequests(govTenantID); n != 1 {
		t.Fatalf("discovery requests = %d, want 1", n)
	}
	// An outage in between ends the episode.
	h.entra.InjectFailures(govTenantID, entraemu.ServerError())
	h.clock.Step(res.RequeueAfter)
	res = h.reconcile()
	expectCondition(t, h.tenant(), v1alpha1.ConditionReconciling, metav1.ConditionTrue, v1alpha1.ReasonTokenEndpointUnavailable)
	h.clock.Step(res.RequeueAfter)
	h.reconcile()
	expectCondition(t, h.tenant(), v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonTenantNotFound)
	if n := h.entra.DiscoveryRequests(govTenantID); n != 2 {
		t.Errorf("discovery requests after a new episode = %d, want 2", n)
	}
}

// TestUnknownTenantKeepsThePlainMessage: discovery does not know the tenant either,
// so the message names no cloud.
func TestUnknownTenantKeepsThePlainMessage(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	const unknown = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = unknown })
	h.reconcile()
	got := h.tenant()
	expectCondition(t, got, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonTenantNotFound)
	if n := h.entra.DiscoveryRequests(unknown); n != 1 {
		t.Fatalf("discovery requests = %d, want 1: discovery was not asked", n)
	}
	msg := condition(got, v1alpha1.ConditionReady).Message
	if strings.Contains(msg, "OpenID discovery") || strings.Contains(msg, "is in the") {
		t.Errorf("message %q names a cloud for a tenant discovery does not know", msg)
	}
	if !strings.HasPrefix(msg, "AADSTS90002") || !strings.Contains(msg, "Check spec.tenantID") {
		t.Errorf("message %q is not the plain TenantNotFound advice", msg)
	}
}
