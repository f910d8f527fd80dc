package defendertenant

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// graphThrough records the bearer token and the proof of every Graph call.
func (m *secretMaterial) graphThrough(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		m.add("Graph bearer token", strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		var call struct {
			Proof string `json:"proof"`
		}
		if json.Unmarshal(body, &call) == nil {
			m.add("proof of possession", call.Proof)
		}
		next.ServeHTTP(w, r)
	})
}

// TestNothingSecretReachesStatusEventsLogsOrMetricsDuringRotation extends the
// leak property to managed rotation: the private keys the operator generates
// (tls.key, next.key), the proofs it signs, the Graph tokens and the access
// tokens it is issued reach neither the app's status, its Events, the log at the
// highest verbosity, nor the metrics, on the paths of a first key, a refused
// addKey, a rejected proof, a key not yet replicated, a promotion and a removal.
func TestNothingSecretReachesStatusEventsLogsOrMetricsDuringRotation(t *testing.T) {
	t.Parallel()
	m := &secretMaterial{}
	h := newRotationHarnessWith(newHarnessServedThrough(t, m.through))
	graph := httptest.NewServer(m.graphThrough(h.entra.Graph(v1alpha1.CloudPublic)))
	t.Cleanup(graph.Close)
	h.apps.GraphHosts = entra.GraphHosts{v1alpha1.CloudPublic: graph.URL}
	var logs bytes.Buffer
	var logsMu sync.Mutex
	h.ctx = ctrl.LoggerInto(h.ctx, zap.New(zap.WriteTo(lockedWriter{&logs, &logsMu}), zap.Level(manager.CapLogLevel(zapcore.Level(-10)))))
	keys := func() {
		s := h.managedSecret()
		m.add("private key generated", privateHalf(s.Data[corev1.TLSPrivateKeyKey]))
		m.add("next private key generated", privateHalf(s.Data[defenderapp.SecretKeyNextKey]))
	}
	h.entra.SetReplicationDelay(90 * time.Second)
	// Every status the app passes through is scanned, not only the last: a
	// field a later step overwrites (pendingKeyID, pendingThumbprint) could
	// have held anything meanwhile.
	var statuses []string
	reconcile := func() {
		h.reconcile()
		s, _ := json.Marshal(h.status())
		statuses = append(statuses, string(s))
	}

	h.createApp(managedCertificateCredential())
	reconcile() // the first key
	keys()
	h.clock.Step(time.Minute)
	reconcile() // not registered yet
	h.expectReady(v1alpha1.ReasonCertificateNotRegistered)
	h.entra.AddCertificate(testClientID, parsePEMCertificate(t, []byte(h.status().Certificate.PEM)))
	h.clock.Step(2 * time.Minute)
	reconcile()
	h.expectReady(v1alpha1.ReasonCredentialReady)

	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	reconcile() // the next key
	keys()
	for _, f := range []entraemu.GraphFailure{entraemu.GraphForbidden(), entraemu.GraphBadProof()} {
		h.entra.SetGraphFailure(appObjectID, f)
		reconcile()
		h.clock.Step(time.Hour)
	}
	h.entra.ClearGraphFailure(appObjectID)
	reconcile() // addKey
	reconcile() // not replicated yet
	h.clock.Step(2 * time.Minute)
	reconcile() // promoted
	reconcile() // idle; the uploaded key stays
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	reconcile()
	keys()
	reconcile()
	h.clock.Step(2 * time.Minute)
	reconcile()
	h.clock.Step(25 * time.Hour)
	reconcile() // removeKey
	if s := h.status(); s.Rotation.Phase != v1alpha1.RotationIdle || s.Rotation.LastRotationTime == nil {
		t.Fatalf("the rotation did not complete: %+v", s.Rotation)
	}

	m.mu.Lock()
	kinds := map[string]bool{}
	for _, what := range m.values {
		kinds[what] = true
	}
	m.mu.Unlock()
	for _, want := range []string{"private key generated", "next private key generated", "proof of possession", "Graph bearer token", "access token issued", "client assertion sent"} {
		if !kinds[want] {
			t.Fatalf("no %s was seen; the scan would prove nothing", want)
		}
	}
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var exposition bytes.Buffer
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&exposition, mf); err != nil {
			t.Fatal(err)
		}
	}
	logsMu.Lock()
	places := map[string]string{"app status": strings.Join(statuses, "\n"), "Events": strings.Join(h.drainEvents(), "\n"), "log": logs.String(), "metrics": exposition.String()}
	logsMu.Unlock()
	for place, text := range places {
		for _, leak := range m.leaks(text) {
			t.Errorf("%s holds part of a %s", place, leak)
		}
	}
}

// privateHalf is the part of a PEM RSA key past its modulus: the private
// exponent and the primes. The start of the key encodes the algorithm and the
// modulus, which the public certificate in status.certificate.pem shares.
func privateHalf(keyPEM []byte) string {
	const pastModulus = 600 // base64 characters: a 2048-bit PKCS#8 key's modulus ends before 400
	body := strings.Join(strings.Split(strings.TrimSpace(string(keyPEM)), "\n"), "")
	if len(body) <= pastModulus {
		return ""
	}
	return body[pastModulus:]
}
