package defendertenant

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

func TestTenantWithoutDefenderNeedsConsentWhileOthersOfTheAppSucceed(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	const unlicensed = "unlicensed"
	h.entra.Grant(otherTenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	h.entra.RemoveResource(otherTenantID, defenderAPI)
	h.publishToken()
	if err := k8s.Create(h.ctx, newTenant(h.ns, unlicensed, func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = otherTenantID })); err != nil {
		t.Fatal(err)
	}
	h.reconcileNamed(unlicensed)

	expectCondition(t, h.tenant(), v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	dt := h.tenantNamed(unlicensed)
	expectCondition(t, dt, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonConsentRequired)
	if f := dt.Status.LastFailure; f == nil || f.Code != "AADSTS500011" {
		t.Fatalf("lastFailure = %+v, want code AADSTS500011", f)
	}
	if !strings.Contains(dt.Status.AdminConsentURL, otherTenantID) {
		t.Errorf("adminConsentURL %q does not lead to the unlicensed tenant", dt.Status.AdminConsentURL)
	}
}
