package defendertenant

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// Not parallel: the metrics registry is process-wide, and parallel tests would move
// the counters this test reads.
func TestMetricsFollowTokenRequestsAndReadiness(t *testing.T) {
	requireControlPlane(t)
	h := newSerialHarness(t)
	successes := testutil.ToFloat64(metrics.TokenRequests.WithLabelValues("success", "TokenReady"))
	throttled := testutil.ToFloat64(metrics.TokenRequests.WithLabelValues("failure", "Throttled"))
	readyTrue := testutil.ToFloat64(metrics.TenantsByReady.WithLabelValues("True", "TokenReady"))
	readyFalse := testutil.ToFloat64(metrics.TenantsByReady.WithLabelValues("False", "Throttled"))

	h.startFailing(entraemu.Throttled(time.Minute))
	if d := testutil.ToFloat64(metrics.TokenRequests.WithLabelValues("failure", "Throttled")) - throttled; d != 1 {
		t.Errorf("throttled requests counted %v times, want 1", d)
	}
	if d := testutil.ToFloat64(metrics.TenantsByReady.WithLabelValues("False", "Throttled")) - readyFalse; d != 1 {
		t.Errorf("tenants Ready=False, reason Throttled moved by %v, want 1", d)
	}

	h.clock.Step(2 * time.Minute)
	h.reconcile()
	if d := testutil.ToFloat64(metrics.TokenRequests.WithLabelValues("success", "TokenReady")) - successes; d != 1 {
		t.Errorf("successful requests counted %v times, want 1", d)
	}
	if dt, df := testutil.ToFloat64(metrics.TenantsByReady.WithLabelValues("True", "TokenReady"))-readyTrue, testutil.ToFloat64(metrics.TenantsByReady.WithLabelValues("False", "Throttled"))-readyFalse; dt != 1 || df != 0 {
		t.Errorf("tenants by Ready and reason moved True/TokenReady %v, False/Throttled %v; want 1, 0", dt, df)
	}
	expiry := h.tenant().Status.ExpiresAt.Unix()
	if got := testutil.ToFloat64(metrics.TokenExpiry.WithLabelValues(h.ns, tenantName)); got != float64(expiry) {
		t.Errorf("expiry gauge = %v, want %d", got, expiry)
	}

	if err := k8s.Delete(h.ctx, h.tenant()); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if d := testutil.ToFloat64(metrics.TenantsByReady.WithLabelValues("True", "TokenReady")) - readyTrue; d != 0 {
		t.Errorf("a deleted tenant is still counted (delta %v)", d)
	}
	if metrics.TokenExpiry.DeleteLabelValues(h.ns, tenantName) {
		t.Error("the expiry series of a deleted tenant remains")
	}
}
