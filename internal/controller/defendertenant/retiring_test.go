package defendertenant

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// defenderAPIsEnd is the end MC1220762 announces for the Defender for Endpoint and
// Defender XDR APIs: after 2027-02-01 they no longer function.
var defenderAPIsEnd = time.Date(2027, time.February, 1, 0, 0, 0, 0, time.UTC)

const graphResource = "https://graph.microsoft.com"

func TestRetiringResourceIsShownOnceAndClearedOnAMoveToGraph(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken() // spec.resource empty: the Defender XDR API, Public's default

	dt := h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	expectRetiresAt(t, dt, defenderAPIsEnd)
	expectRetirementGauge(t, h.ns, tenantName, float64(defenderAPIsEnd.Unix()))
	warnings := retiringEvents(h.drainEvents())
	if len(warnings) != 1 {
		t.Fatalf("ResourceRetiring Events = %q, want one", warnings)
	}
	for _, want := range []string{"2027-02-01", defenderAPI, "spec.resource " + graphResource} {
		if !strings.Contains(warnings[0], want) {
			t.Errorf("ResourceRetiring Event %q does not name %q", warnings[0], want)
		}
	}

	// A refresh writes the status again: no second warning.
	h.refreshNow()
	if got := retiringEvents(h.drainEvents()); len(got) != 0 {
		t.Errorf("ResourceRetiring Events on a refresh = %q, want none", got)
	}
	// A restarted operator remembers nothing but the stored status: no warning either.
	h.r = h.newReconciler(h.r.Authorities)
	h.refreshNow()
	if got := retiringEvents(h.drainEvents()); len(got) != 0 {
		t.Errorf("ResourceRetiring Events after a restart = %q, want none", got)
	}
	expectRetirementGauge(t, h.ns, tenantName, float64(defenderAPIsEnd.Unix()))

	h.entra.Grant(testTenantID, testClientID, graphResource, "SecurityIncident.Read.All", "ThreatHunting.Read.All")
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.Resource = graphResource
		dt.Spec.RequiredRoles = []string{"SecurityIncident.Read.All", "ThreatHunting.Read.All"}
	})
	h.reconcile()
	dt = h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	if dt.Status.ResourceRetiresAt != nil {
		t.Errorf("resourceRetiresAt = %s on Microsoft Graph, want none", dt.Status.ResourceRetiresAt)
	}
	if v, ok := retirementGauge(h.ns, tenantName); ok {
		t.Errorf("the retirement gauge stays at %v on Microsoft Graph", v)
	}

	// Back on a retiring API, the field appears again, and so does the warning.
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.Resource = "https://api.securitycenter.microsoft.com"
		dt.Spec.RequiredRoles = nil
	})
	h.entra.Grant(testTenantID, testClientID, "https://api.securitycenter.microsoft.com")
	h.reconcile()
	expectRetiresAt(t, h.tenant(), defenderAPIsEnd)
	if got := retiringEvents(h.drainEvents()); len(got) != 1 || !strings.Contains(got[0], "https://api.securitycenter.microsoft.com") {
		t.Errorf("ResourceRetiring Events on the way back = %q, want one naming the resource", got)
	}

	if err := k8s.Delete(h.ctx, h.tenant()); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if v, ok := retirementGauge(h.ns, tenantName); ok {
		t.Errorf("the retirement gauge of a deleted tenant stays at %v", v)
	}
}

func TestRetiringResourceIsShownWithoutAToken(t *testing.T) {
	requireControlPlane(t)
	t.Run("the token request fails", func(t *testing.T) {
		h := newHarness(t)
		h.startFailing(entraemu.ConditionalAccess())
		dt := h.tenant()
		expectCondition(t, dt, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonAccessBlocked)
		expectRetiresAt(t, dt, defenderAPIsEnd)
		if got := retiringEvents(h.drainEvents()); len(got) != 1 {
			t.Errorf("ResourceRetiring Events = %q, want one", got)
		}
	})
	t.Run("a check blocks the request: the app is missing, spec.resource names a retiring API", func(t *testing.T) {
		h := newHarness(t)
		h.createTenant(func(dt *v1alpha1.DefenderTenant) {
			dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
			dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindDefenderApp, Name: appName}
			dt.Spec.Resource = "https://api-gov.security.microsoft.us"
		})
		h.reconcile()
		dt := h.tenant()
		expectCondition(t, dt, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonAppNotFound)
		expectRetiresAt(t, dt, defenderAPIsEnd)
		got := retiringEvents(h.drainEvents())
		// The app's cloud is not known, so every Graph host is named.
		if len(got) != 1 || !strings.Contains(got[0], "https://graph.microsoft.us") || !strings.Contains(got[0], "https://dod-graph.microsoft.us") {
			t.Errorf("ResourceRetiring Events = %q, want one naming the Graph hosts", got)
		}
	})
	t.Run("the app is missing and spec.resource is empty: unknown until the app exists", func(t *testing.T) {
		h := newHarness(t)
		h.createAppTenant(v1alpha1.AppKindDefenderApp, appName)
		h.reconcile()
		dt := h.tenant()
		expectCondition(t, dt, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonAppNotFound)
		if dt.Status.ResourceRetiresAt != nil {
			t.Errorf("resourceRetiresAt = %s without an app to pick the default, want none", dt.Status.ResourceRetiresAt)
		}
		if got := retiringEvents(h.drainEvents()); len(got) != 0 {
			t.Errorf("ResourceRetiring Events = %q, want none", got)
		}

		h.createCredential(testClientSecret)
		app := &v1alpha1.DefenderApp{
			ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: appName},
			Spec: v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{ClientID: testClientID, Cloud: v1alpha1.CloudUSGovHigh,
				Credential: appClientSecretCredential()}},
		}
		if err := k8s.Create(h.ctx, app); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		expectRetiresAt(t, h.tenant(), defenderAPIsEnd)
		got := retiringEvents(h.drainEvents())
		if len(got) != 1 || !strings.Contains(got[0], "https://api-gov.security.microsoft.us") || !strings.Contains(got[0], "spec.resource https://graph.microsoft.us ") {
			t.Errorf("ResourceRetiring Events = %q, want one naming GCC High's default and Graph", got)
		}
	})
}

// refreshNow moves the clock to the tenant's refresh time and reconciles, and fails
// unless that requested a token and wrote the status: the positive control for
// "nothing else happened".
func (h *harness) refreshNow() {
	h.t.Helper()
	before := h.tenant().Status
	requests := h.entra.Requests(testTenantID)
	h.clock.SetTime(before.NextRefreshTime.Time)
	h.reconcile()
	after := h.tenant().Status
	if h.entra.Requests(testTenantID) != requests+1 || after.LastRefreshTime.Equal(before.LastRefreshTime) {
		h.t.Fatalf("the refresh requested %d tokens and moved lastRefreshTime from %s to %s; want a token and a status write",
			h.entra.Requests(testTenantID)-requests, before.LastRefreshTime, after.LastRefreshTime)
	}
}

func expectRetiresAt(t *testing.T, dt *v1alpha1.DefenderTenant, want time.Time) {
	t.Helper()
	if got := dt.Status.ResourceRetiresAt; got == nil || !got.Time.Equal(want) {
		t.Errorf("resourceRetiresAt = %v, want %s", got, want.Format(time.RFC3339))
	}
}

func retiringEvents(evs []string) []string {
	var retiring []string
	for _, e := range evs {
		if strings.HasPrefix(e, "Warning "+ReasonResourceRetiring+" ") {
			retiring = append(retiring, e)
		}
	}
	return retiring
}

// retirementGauge reads the tenant's series without creating it, as
// testutil.ToFloat64(WithLabelValues(…)) would.
func retirementGauge(namespace, name string) (float64, bool) {
	ch := make(chan prometheus.Metric, 1024)
	go func() { metrics.ResourceRetirement.Collect(ch); close(ch) }()
	value, found := 0.0, false
	for m := range ch {
		var out dto.Metric
		if err := m.Write(&out); err != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range out.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["namespace"] == namespace && labels["name"] == name {
			value, found = out.GetGauge().GetValue(), true
		}
	}
	return value, found
}

func expectRetirementGauge(t *testing.T, namespace, name string, want float64) {
	t.Helper()
	if got, ok := retirementGauge(namespace, name); !ok || got != want {
		t.Errorf("defender_tenant_resource_retirement_timestamp_seconds = %v (present %t), want %v", got, ok, want)
	}
}
