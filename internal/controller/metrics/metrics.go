// Package metrics holds the operator's Prometheus metrics, in controller-runtime's
// registry.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Metrics live in controller-runtime's registry, served on the manager's /metrics;
// they are exported for the tests of the controllers that set them.
// Labels carry object names and contract reasons only, never a secret or a token.
var (
	TokenExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_tenant_token_expiry_timestamp_seconds",
		Help: "Expiry of the token published for a DefenderTenant, as a Unix timestamp.",
	}, []string{"namespace", "name"})

	TokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "defender_tenant_token_requests_total",
		Help: "Token requests to Entra ID by result (success, failure) and contract reason.",
	}, []string{"result", "reason"})

	tokenRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "defender_tenant_token_request_duration_seconds",
		Help:    "Duration of token requests to Entra ID, by result.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"result"})

	TenantsByReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_tenant_tenants",
		Help: "DefenderTenants by the status (True, False, Unknown) and reason of their Ready condition.",
	}, []string{"ready", "reason"})

	ResourceRetirement = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_tenant_resource_retirement_timestamp_seconds",
		Help: "When the resource of a DefenderTenant stops working (status.resourceRetiresAt), as a Unix timestamp; absent for a resource with no announced end.",
	}, []string{"namespace", "name"})
	AppCertificateExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_app_certificate_expiry_timestamp_seconds",
		Help: "notAfter of the certificate of a DefenderApp or ClusterDefenderApp (namespace \"\"), as a Unix timestamp.",
	}, []string{"kind", "namespace", "name"})

	AppCertificateRotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "defender_app_certificate_rotations_total",
		Help: "Managed certificate rotations of a DefenderApp or ClusterDefenderApp (namespace \"\"): result success for a promoted certificate, failure for a failed rotation step.",
	}, []string{"kind", "namespace", "name", "result"})
)

func init() {
	crmetrics.Registry.MustRegister(TokenExpiry, TokenRequests, tokenRequestDuration, TenantsByReady, ResourceRetirement, AppCertificateExpiry, AppCertificateRotations)
}

// StartAppCertificateRotations makes both series of an app with managed rotation
// exist at 0, so that its first promotion or failure is an increase to
// Prometheus (a series born at 1 shows none).
func StartAppCertificateRotations(kind v1alpha1.AppKind, key types.NamespacedName) {
	for _, result := range []string{"success", "failure"} {
		AppCertificateRotations.WithLabelValues(string(kind), key.Namespace, key.Name, result)
	}
}

// ForgetAppCertificateRotations drops the series of an app that is gone or no
// longer rotates its certificate.
func ForgetAppCertificateRotations(kind v1alpha1.AppKind, key types.NamespacedName) {
	AppCertificateRotations.DeletePartialMatch(map[string]string{"kind": string(kind), "namespace": key.Namespace, "name": key.Name})
}

// RecordAppCertificateRotation counts a promotion (success) or a failed rotation
// step (failure) of an app's managed certificate.
func RecordAppCertificateRotation(kind v1alpha1.AppKind, key types.NamespacedName, success bool) {
	result := "failure"
	if success {
		result = "success"
	}
	AppCertificateRotations.WithLabelValues(string(kind), key.Namespace, key.Name, result).Inc()
}

// RecordTokenRequest counts one token request; reason is TokenReady for a published
// token, else the contract reason that kept it from being published.
func RecordTokenRequest(reason string, took time.Duration) {
	result := "failure"
	if reason == v1alpha1.ReasonTokenReady {
		result = "success"
	}
	TokenRequests.WithLabelValues(result, reason).Inc()
	tokenRequestDuration.WithLabelValues(result).Observe(took.Seconds())
}

// readyTally counts DefenderTenants by Ready status and reason. It remembers each
// tenant's last bucket so that a reconcile moves one tenant between buckets instead
// of listing all. Reasons are the documented constants, so the series are few.
type readyTally struct {
	mu     sync.Mutex
	status map[types.NamespacedName]readyBucket
}

type readyBucket struct{ ready, reason string }

// Tenants is the tally of DefenderTenants by Ready status.
var Tenants = &readyTally{status: map[types.NamespacedName]readyBucket{}}

// Set moves the tenant to the bucket of its status.
func (t *readyTally) Set(key types.NamespacedName, status v1alpha1.DefenderTenantStatus) {
	if status.ExpiresAt != nil {
		TokenExpiry.WithLabelValues(key.Namespace, key.Name).Set(float64(status.ExpiresAt.Unix()))
	} else {
		TokenExpiry.DeleteLabelValues(key.Namespace, key.Name)
	}
	if status.ResourceRetiresAt != nil {
		ResourceRetirement.WithLabelValues(key.Namespace, key.Name).Set(float64(status.ResourceRetiresAt.Unix()))
	} else {
		ResourceRetirement.DeleteLabelValues(key.Namespace, key.Name)
	}
	bucket := readyBucket{ready: string(metav1.ConditionUnknown)}
	if c := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady); c != nil {
		bucket = readyBucket{ready: string(c.Status), reason: c.Reason}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old, known := t.status[key]
	if known && old == bucket {
		return
	}
	if known {
		TenantsByReady.WithLabelValues(old.ready, old.reason).Dec()
	}
	t.status[key] = bucket
	TenantsByReady.WithLabelValues(bucket.ready, bucket.reason).Inc()
}

// Forget drops a deleted tenant.
func (t *readyTally) Forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.status[key]; ok {
		TenantsByReady.WithLabelValues(old.ready, old.reason).Dec()
		delete(t.status, key)
	}
	TokenExpiry.DeleteLabelValues(key.Namespace, key.Name)
	ResourceRetirement.DeleteLabelValues(key.Namespace, key.Name)
}

// RecordAppCertificateExpiry shows the notAfter of an app's certificate while its
// status describes one, and drops the series otherwise (another credential, or a
// certificate that does not parse).
func RecordAppCertificateExpiry(kind v1alpha1.AppKind, key types.NamespacedName, status v1alpha1.AppStatus) {
	if c := status.Certificate; c != nil && c.NotAfter != nil {
		AppCertificateExpiry.WithLabelValues(string(kind), key.Namespace, key.Name).Set(float64(c.NotAfter.Unix()))
		return
	}
	ForgetAppCertificateExpiry(kind, key)
}

// ForgetAppCertificateExpiry drops the series of a deleted app.
func ForgetAppCertificateExpiry(kind v1alpha1.AppKind, key types.NamespacedName) {
	AppCertificateExpiry.DeleteLabelValues(string(kind), key.Namespace, key.Name)
}
