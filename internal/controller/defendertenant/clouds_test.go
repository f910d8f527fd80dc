package defendertenant

import (
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

const (
	govTenantID    = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
	govDefenderAPI = "https://api-gov.security.microsoft.us"
	govTenantName  = "gov"
)

// startTwoClouds serves the harness's emulator as two clouds, each on its own
// listener as the real sign-in hosts are: the Public tenant of the harness and a
// GCC High tenant consented to the same app.
func (h *harness) startTwoClouds() (publicURL, govURL string) {
	h.t.Helper()
	h.entra.AddTenant(govTenantID)
	h.entra.SetCloud(govTenantID, v1alpha1.CloudUSGovHigh)
	h.entra.Grant(govTenantID, testClientID, govDefenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	public := httptest.NewServer(h.entra)
	gov := httptest.NewServer(h.entra.Cloud(v1alpha1.CloudUSGovHigh))
	h.t.Cleanup(public.Close)
	h.t.Cleanup(gov.Close)
	h.createCredential(testClientSecret)
	h.createTenant()
	if err := k8s.Create(h.ctx, newTenant(h.ns, govTenantName, func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.TenantID = govTenantID
		dt.Spec.Cloud = v1alpha1.CloudUSGovHigh
	})); err != nil {
		h.t.Fatal(err)
	}
	return public.URL, gov.URL
}

func (h *harness) reconcileNamed(name string) {
	h.t.Helper()
	if _, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: keyOf(h.ns, name)}); err != nil {
		h.t.Fatalf("Reconcile %s: %v", name, err)
	}
}

func (h *harness) tenantNamed(name string) *v1alpha1.DefenderTenant {
	h.t.Helper()
	dt := &v1alpha1.DefenderTenant{}
	if err := k8s.Get(h.ctx, keyOf(h.ns, name), dt); err != nil {
		h.t.Fatal(err)
	}
	return dt
}

func TestPerCloudAuthoritiesKeepEachTenantOnItsCloud(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	publicURL, govURL := h.startTwoClouds()
	authorities, err := entra.ParseAuthorities("Public=" + publicURL + ",USGovHigh=" + govURL)
	if err != nil {
		t.Fatal(err)
	}
	h.r.Authorities = authorities

	h.reconcileNamed(tenantName)
	h.reconcileNamed(govTenantName)

	for _, name := range []string{tenantName, govTenantName} {
		expectCondition(t, h.tenantNamed(name), v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	}
	if n := h.entra.Requests(govTenantID); n != 1 {
		t.Errorf("the GCC High tenant's token requests = %d, want 1", n)
	}
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("the Public tenant's token requests = %d, want 1", n)
	}
	gov := h.tenantNamed(govTenantName)
	if !strings.HasPrefix(gov.Status.AdminConsentURL, "https://login.microsoftonline.us/"+govTenantID+"/") {
		t.Errorf("the GCC High consent link %q is not on the real Azure Government sign-in host", gov.Status.AdminConsentURL)
	}
}

func TestOneAuthorityForEveryCloudSendsGovTenantsAcrossClouds(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	publicURL, _ := h.startTwoClouds()
	h.r.Authorities = entra.EveryCloud(publicURL)

	h.reconcileNamed(tenantName)
	h.reconcileNamed(govTenantName)

	expectCondition(t, h.tenantNamed(tenantName), v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	gov := h.tenantNamed(govTenantName)
	expectCondition(t, gov, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonTenantNotFound)
	if f := gov.Status.LastFailure; f == nil || f.Code != "AADSTS900382" {
		t.Fatalf("lastFailure = %+v, want code AADSTS900382", f)
	}
	msg := condition(gov, v1alpha1.ConditionReady).Message
	for _, want := range []string{"Azure Government", "spec.cloud", "--authority-host"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
}
