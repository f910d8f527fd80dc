package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// Metrics live in controller-runtime's registry, served on the manager's /metrics.
// Labels carry object names and contract reasons only, never a secret or a token.
var (
	tokenExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_tenant_token_expiry_timestamp_seconds",
		Help: "Expiry of the token published for a DefenderTenant, as a Unix timestamp.",
	}, []string{"namespace", "name"})

	tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "defender_tenant_token_requests_total",
		Help: "Token requests to Entra ID by result (success, failure) and contract reason.",
	}, []string{"result", "reason"})

	tokenRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "defender_tenant_token_request_duration_seconds",
		Help:    "Duration of token requests to Entra ID, by result.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"result"})

	tenantsByReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_tenant_tenants",
		Help: "DefenderTenants by the status (True, False, Unknown) and reason of their Ready condition.",
	}, []string{"ready", "reason"})

	appCertificateExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "defender_app_certificate_expiry_timestamp_seconds",
		Help: "notAfter of the certificate of a DefenderApp or ClusterDefenderApp (namespace \"\"), as a Unix timestamp.",
	}, []string{"kind", "namespace", "name"})
)

func init() {
	metrics.Registry.MustRegister(tokenExpiry, tokenRequests, tokenRequestDuration, tenantsByReady, appCertificateExpiry)
}

// recordTokenRequest counts one token request; reason is TokenReady for a published
// token, else the contract reason that kept it from being published.
func recordTokenRequest(reason string, took time.Duration) {
	result := "failure"
	if reason == v1alpha1.ReasonTokenReady {
		result = "success"
	}
	tokenRequests.WithLabelValues(result, reason).Inc()
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

var tenantsTally = &readyTally{status: map[types.NamespacedName]readyBucket{}}

func (t *readyTally) set(key types.NamespacedName, status v1alpha1.DefenderTenantStatus) {
	if status.ExpiresAt != nil {
		tokenExpiry.WithLabelValues(key.Namespace, key.Name).Set(float64(status.ExpiresAt.Unix()))
	} else {
		tokenExpiry.DeleteLabelValues(key.Namespace, key.Name)
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
		tenantsByReady.WithLabelValues(old.ready, old.reason).Dec()
	}
	t.status[key] = bucket
	tenantsByReady.WithLabelValues(bucket.ready, bucket.reason).Inc()
}

func (t *readyTally) forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.status[key]; ok {
		tenantsByReady.WithLabelValues(old.ready, old.reason).Dec()
		delete(t.status, key)
	}
	tokenExpiry.DeleteLabelValues(key.Namespace, key.Name)
}

// recordAppCertificateExpiry shows the notAfter of an app's certificate while its
// status describes one, and drops the series otherwise (another credential, or a
// certificate that does not parse).
func recordAppCertificateExpiry(kind v1alpha1.AppKind, key types.NamespacedName, status v1alpha1.AppStatus) {
	if c := status.Certificate; c != nil && c.NotAfter != nil {
		appCertificateExpiry.WithLabelValues(string(kind), key.Namespace, key.Name).Set(float64(c.NotAfter.Unix()))
		return
	}
	forgetAppCertificateExpiry(kind, key)
}

// forgetAppCertificateExpiry drops the series of a deleted app.
func forgetAppCertificateExpiry(kind v1alpha1.AppKind, key types.NamespacedName) {
	appCertificateExpiry.DeleteLabelValues(string(kind), key.Namespace, key.Name)
}
