package defendertenant

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // the thumbprint Entra ID shows is SHA-1
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	homeTenantID   = "2f1b0c4d-7a6e-4b3c-9d8e-1f0a2b3c4d5e"
	appObjectID    = "7d3c5a9e-1b2c-4d3e-8f4a-5b6c7d8e9f01"
	managedCertKey = "partner-managed-cert"
	labelTrue      = "true"
)

// rotationHarness is the harness with the app registered in the emulator's
// Graph, and an app controller wired for managed rotation.
type rotationHarness struct {
	*harness
	apps *defenderapp.Reconciler
}

func newRotationHarness(t *testing.T) *rotationHarness {
	t.Helper()
	return newRotationHarnessWith(newHarness(t))
}

func newRotationHarnessWith(h *harness) *rotationHarness {
	h.entra.RegisterApplication(entraemu.Application{ObjectID: appObjectID, ClientID: testClientID, HomeTenantID: homeTenantID})
	return &rotationHarness{harness: h, apps: h.rotatingAppReconciler(v1alpha1.AppKindDefenderApp)}
}

// rotatingAppReconciler is the app controller of kind wired for managed
// rotation: the emulator's sign-in host and Graph, on the harness's clock.
func (h *harness) rotatingAppReconciler(kind v1alpha1.AppKind) *defenderapp.Reconciler {
	graph := httptest.NewServer(h.entra.Graph(v1alpha1.CloudPublic))
	h.t.Cleanup(graph.Close)
	apps := h.appReconciler(kind, nil)
	apps.APIReader = k8s
	apps.Entra = &entra.Client{Timeout: 5 * time.Second, Clock: h.clock}
	apps.Authorities = h.r.Authorities
	apps.Graph = &entra.GraphClient{Timeout: 5 * time.Second, Clock: h.clock}
	apps.GraphHosts = entra.GraphHosts{v1alpha1.CloudPublic: graph.URL}
	return apps
}

func managedCertificateCredential() v1alpha1.AppCredential {
	return v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{
		SecretRef: v1alpha1.AppSecretReference{Name: managedCertKey},
		Rotation:  &v1alpha1.CertificateRotation{ApplicationObjectID: appObjectID, HomeTenantID: homeTenantID},
	}}
}

func (h *rotationHarness) reconcile() ctrl.Result {
	h.t.Helper()
	return h.reconcileApp(h.apps)
}

func (h *rotationHarness) status() v1alpha1.AppStatus {
	h.t.Helper()
	return *h.app(v1alpha1.AppKindDefenderApp).AppStatus()
}

func (h *rotationHarness) managedSecret() *corev1.Secret {
	h.t.Helper()
	return getSecret(h.t, h.ns, managedCertKey)
}

func (h *rotationHarness) expectReady(reason string) v1alpha1.AppStatus {
	h.t.Helper()
	s := h.status()
	c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady)
	if c == nil || c.Reason != reason {
		h.t.Fatalf("Ready condition %+v, want reason %s", c, reason)
	}
	return s
}

func parsePEMCertificate(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %.40q", data)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestManagedCertificateBootstrap: an app with rotation and no Secret gets a
// generated key in a labelled kubernetes.io/tls Secret, shows the certificate and
// the upload command (CertificateNotRegistered), tries it in the home tenant at
// most once a minute, and turns CredentialReady once a person uploaded it.
func TestManagedCertificateBootstrap(t *testing.T) {
	h := newRotationHarness(t)
	h.createApp(managedCertificateCredential())

	res := h.reconcile()
	secret := h.managedSecret()
	if secret == nil {
		t.Fatal("no certificate Secret was created")
	}
	if secret.Type != corev1.SecretTypeTLS || secret.Labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue ||
		secret.Labels[v1alpha1.LabelManagedCertificate] != labelTrue || len(secret.OwnerReferences) != 0 {
		t.Fatalf("Secret type %s, labels %v, owners %v", secret.Type, secret.Labels, secret.OwnerReferences)
	}
	cert := parsePEMCertificate(t, secret.Data[corev1.TLSCertKey])
	if _, err := entra.ParseCertificate(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]); err != nil {
		t.Fatalf("the generated Secret is no usable credential: %v", err)
	}
	if want := h.clock.Now().Add(2160 * time.Hour); !cert.NotAfter.Equal(want) {
		t.Errorf("generated certificate notAfter %s, want %s (the default validity)", cert.NotAfter, want)
	}
	s := h.expectReady(v1alpha1.ReasonCertificateNotRegistered)
	if s.Certificate == nil || s.Certificate.PEM != string(secret.Data[corev1.TLSCertKey]) {
		t.Fatalf("status.certificate.pem does not show the Secret's certificate: %+v", s.Certificate)
	}
	ready := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady)
	for _, want := range []string{"az ad app credential reset --id " + testClientID + " --cert @cert.pem --append", s.Certificate.SHA1Thumbprint, homeTenantID} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("message %q lacks %q", ready.Message, want)
		}
	}
	if stalled := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled); stalled == nil || stalled.Reason != v1alpha1.ReasonCertificateNotRegistered {
		t.Errorf("Stalled condition %+v, want CertificateNotRegistered", stalled)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Errorf("requeue after %s, want within a minute", res.RequeueAfter)
	}
	// A certificate generated a moment ago cannot be registered: no sign-in is tried.
	if n := h.entra.Requests(homeTenantID); n != 0 {
		t.Fatalf("%d token requests in the home tenant for a certificate nobody could have uploaded", n)
	}

	h.clock.Step(time.Minute)
	h.reconcile()
	if n := h.entra.Requests(homeTenantID); n != 1 {
		t.Fatalf("%d token requests in the home tenant a minute later, want 1", n)
	}
	ready = meta.FindStatusCondition(h.expectReady(v1alpha1.ReasonCertificateNotRegistered).Conditions, v1alpha1.ConditionReady)
	if !strings.Contains(ready.Message, "AADSTS700027") {
		t.Errorf("message %q does not say what Entra ID answered", ready.Message)
	}

	// The upload, as `az ad app credential reset --append` makes it.
	h.entra.AddCertificate(testClientID, parsePEMCertificate(t, []byte(h.status().Certificate.PEM)))
	h.clock.Step(59 * time.Second)
	h.reconcile()
	if n := h.entra.Requests(homeTenantID); n != 1 {
		t.Fatalf("%d token requests within the minute, want still 1", n)
	}
	h.expectReady(v1alpha1.ReasonCertificateNotRegistered)

	h.clock.Step(time.Second)
	res = h.reconcile()
	if n := h.entra.Requests(homeTenantID); n != 2 {
		t.Fatalf("%d token requests after the minute, want 2", n)
	}
	s = h.expectReady(v1alpha1.ReasonCredentialReady)
	if meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled) != nil {
		t.Error("still Stalled after the upload")
	}
	wantStart := cert.NotAfter.Add(-720 * time.Hour)
	if s.Rotation == nil || s.Rotation.Phase != v1alpha1.RotationIdle || s.Rotation.NextRotationTime == nil || !s.Rotation.NextRotationTime.Time.Equal(wantStart) {
		t.Fatalf("status.rotation %+v, want Idle until %s (a third of the validity before notAfter)", s.Rotation, wantStart)
	}
	if want := wantStart.Sub(h.clock.Now()); res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s (the rotation's start)", res.RequeueAfter, want)
	}
	if strings.Contains(s.Certificate.PEM, "PRIVATE KEY") {
		t.Fatal("status.certificate.pem holds a private key")
	}
	if got := h.managedSecret(); got.ResourceVersion != secret.ResourceVersion {
		t.Error("the Secret was written again after its creation")
	}
}

// TestManagedCertificateAdoptsAnExistingSecret: a certificate the partner already
// registered is adopted as it is: checked once, never rewritten.
func TestManagedCertificateAdoptsAnExistingSecret(t *testing.T) {
	h := newRotationHarness(t)
	c := h.validCertificate()
	h.entra.AddCertificate(testClientID, c.cert)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: managedCertKey},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM},
	}
	if err := k8s.Create(h.ctx, secret); err != nil {
		t.Fatal(err)
	}
	h.createApp(managedCertificateCredential())
	h.reconcile()

	s := h.expectReady(v1alpha1.ReasonCredentialReady)
	if n := h.entra.Requests(homeTenantID); n != 1 {
		t.Fatalf("%d token requests in the home tenant, want 1", n)
	}
	if s.Rotation == nil || s.Rotation.Phase != v1alpha1.RotationIdle || s.Certificate.PEM != string(c.certPEM) {
		t.Fatalf("status.rotation %+v, certificate %+v", s.Rotation, s.Certificate)
	}
	if got := h.managedSecret(); got.ResourceVersion != secret.ResourceVersion {
		t.Error("the adopted Secret was rewritten")
	}
	h.clock.Step(time.Hour)
	h.reconcile()
	if n := h.entra.Requests(homeTenantID); n != 1 {
		t.Fatalf("a registered certificate was checked again: %d token requests", n)
	}
	h.expectReady(v1alpha1.ReasonCredentialReady)
}

// assertionLog records the certificate thumbprint (x5t#S256) of every client
// assertion the emulator is sent, per tenant, as the token endpoint reads it.
type assertionLog struct {
	mu       sync.Mutex
	byTenant map[string][]string
}

func (l *assertionLog) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		if a := form.Get("client_assertion"); a != "" {
			if jws, err := jose.ParseSignedCompact(a, []jose.SignatureAlgorithm{jose.PS256, jose.RS256}); err == nil && len(jws.Signatures) == 1 {
				x5t, _ := jws.Signatures[0].Header.ExtraHeaders["x5t#S256"].(string)
				tenant := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
				l.mu.Lock()
				l.byTenant[tenant] = append(l.byTenant[tenant], x5t)
				l.mu.Unlock()
			}
		}
		next.ServeHTTP(w, r)
	})
}

// last is the thumbprint of the harness tenant's last assertion.
func (l *assertionLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.byTenant[testTenantID]
	if len(got) == 0 {
		return ""
	}
	return got[len(got)-1]
}

func x5tS256(t *testing.T, certPEM []byte) string {
	t.Helper()
	sum := sha256.Sum256(parsePEMCertificate(t, certPEM).Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// newRotatingHarness: an app whose registered certificate (valid 90 days) is
// adopted, with a tenant using it that holds a token, and assertions logged.
func newRotatingHarness(t *testing.T) (*rotationHarness, *assertionLog) {
	t.Helper()
	t.Parallel()
	log := &assertionLog{byTenant: map[string][]string{}}
	h := newRotationHarnessWith(newHarnessServedThrough(t, log.middleware))
	now := h.clock.Now()
	c := newTestCertificate(t, now.Add(-time.Hour), now.Add(2160*time.Hour))
	h.entra.AddCertificate(testClientID, c.cert)
	if err := k8s.Create(h.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: managedCertKey, Labels: map[string]string{
			v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelManagedCertificate: labelTrue,
		}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM},
	}); err != nil {
		t.Fatal(err)
	}
	h.createApp(managedCertificateCredential())
	h.reconcile()
	h.expectReady(v1alpha1.ReasonCredentialReady)
	h.createAppTenant(v1alpha1.AppKindDefenderApp, appName)
	h.harness.reconcile()
	h.harness.expectReady()
	if got, want := log.last(), x5tS256(t, c.certPEM); got != want {
		t.Fatalf("the tenant's assertion names %q, want the adopted certificate %q", got, want)
	}
	return h, log
}

// restart replaces the app controller by a new one, as a restarted operator
// has it: nothing remembered but what the Secret and the status hold.
func (h *rotationHarness) restart() {
	h.apps = h.rotatingAppReconciler(h.apps.Kind)
}

func (h *rotationHarness) keyIDs() []string {
	keys := h.entra.KeyCredentials(testClientID)
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.KeyID)
	}
	return ids
}

// rotateToPromotion runs a rotation from its start to the promotion, restarting
// the controller after every persisted step, and returns the promoted
// certificate's PEM.
func (h *rotationHarness) rotateToPromotion() []byte {
	h.t.Helper()
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	keysBefore := len(h.keyIDs())

	h.reconcile() // 1: the next key, persisted in the Secret
	s := h.status()
	next := h.managedSecret().Data[defenderapp.SecretKeyNextCertificate]
	if s.Rotation.Phase != v1alpha1.RotationKeyGenerated || next == nil || s.Rotation.PendingThumbprint != strings.ToUpper(hexSHA1(h.t, next)) {
		h.t.Fatalf("after step 1: status.rotation %+v, next.crt present %v", s.Rotation, next != nil)
	}
	h.restart()
	h.reconcile() // 2: addKey
	s = h.status()
	keys := h.entra.KeyCredentials(testClientID)
	if s.Rotation.Phase != v1alpha1.RotationKeyAdded || len(keys) != keysBefore+1 || keys[len(keys)-1].KeyID != s.Rotation.PendingKeyID ||
		keys[len(keys)-1].SHA1Thumbprint != s.Rotation.PendingThumbprint {
		h.t.Fatalf("after step 2: status.rotation %+v, key credentials %+v", s.Rotation, keys)
	}
	h.restart()
	// 3: Entra ID does not accept the new key before it has replicated: the
	// rotation waits for it, which is no failure.
	current := h.managedSecret().Data[corev1.TLSCertKey]
	res := h.reconcile()
	s = h.expectReady(v1alpha1.ReasonCredentialReady)
	for _, c := range []string{v1alpha1.ConditionReconciling, v1alpha1.ConditionStalled} {
		if got := meta.FindStatusCondition(s.Conditions, c); got != nil {
			h.t.Fatalf("while the new key replicates: %s %+v, want none", c, got)
		}
	}
	if res.RequeueAfter != 10*time.Second {
		h.t.Fatalf("while the new key replicates: checked again after %s, want 10s", res.RequeueAfter)
	}
	if s.Rotation.Phase != v1alpha1.RotationKeyAdded || !bytes.Equal(h.managedSecret().Data[corev1.TLSCertKey], current) {
		h.t.Fatal("a key Entra ID does not accept yet was promoted")
	}
	if n := len(h.keyIDs()); n != keysBefore+1 {
		h.t.Fatalf("%d keys after a failed check, want %d: a second pending key", n, keysBefore+1)
	}
	h.clock.Step(2 * time.Minute)
	h.reconcile() // 3 and 4: accepted, promoted in one Secret update
	secret := h.managedSecret()
	if !bytes.Equal(secret.Data[corev1.TLSCertKey], next) || secret.Data[defenderapp.SecretKeyNextCertificate] != nil || secret.Data[defenderapp.SecretKeyNextKey] != nil {
		h.t.Fatal("the Secret does not hold the next certificate alone in tls.*")
	}
	s = h.expectReady(v1alpha1.ReasonCredentialReady)
	if meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReconciling) != nil {
		h.t.Error("still Reconciling after the promotion")
	}
	if s.Rotation.Phase != v1alpha1.RotationPromoted || s.Certificate.KeyID != keys[len(keys)-1].KeyID || s.Certificate.PEM != string(next) {
		h.t.Fatalf("after the promotion: status.rotation %+v, certificate keyID %q", s.Rotation, s.Certificate.KeyID)
	}
	return next
}

func hexSHA1(t *testing.T, certPEM []byte) string {
	t.Helper()
	sum := sha1.Sum(parsePEMCertificate(t, certPEM).Raw) //nolint:gosec // the thumbprint Entra ID shows
	return hex.EncodeToString(sum[:])
}

// TestManagedCertificateRotatesItself: two rotations in a row with the fake
// clock, the controller restarted after every step: addKey, the replication
// delay, the promotion, the tenant re-minted with the new certificate, and the
// replaced key removed after retireAfter, the key in use never.
func TestManagedCertificateRotatesItself(t *testing.T) {
	h, log := newRotatingHarness(t)
	h.entra.SetReplicationDelay(90 * time.Second)
	uploadedKeyID := h.keyIDs()[0]
	h.drainEvents()
	promotions := func() float64 {
		return testutil.ToFloat64(metrics.AppCertificateRotations.WithLabelValues(string(v1alpha1.AppKindDefenderApp), h.ns, appName, "success"))
	}

	first := h.rotateToPromotion()
	if got := promotions(); got != 1 {
		t.Errorf("rotations_total{result=success} = %v after the first promotion, want 1", got)
	}
	evs := h.drainEvents()
	if countWithPrefix(evs, "Normal "+defenderapp.ReasonCertificateRotated) != 1 || countWithPrefix(evs, "Warning "+v1alpha1.ReasonRotationFailed) != 0 {
		t.Errorf("Events of the first rotation: %q", evs)
	}
	h.harness.reconcile()
	h.harness.expectReady()
	if got, want := log.last(), x5tS256(t, first); got != want {
		t.Fatalf("after the promotion the tenant's assertion names %q, want the new certificate's %q", got, want)
	}
	// The uploaded key's keyId is unknown: it is left to expire, never removed.
	h.restart()
	h.reconcile()
	if s := h.status(); s.Rotation.Phase != v1alpha1.RotationIdle || s.Rotation.PreviousKeyID != "" {
		t.Fatalf("after a rotation from an uploaded key: status.rotation %+v", s.Rotation)
	}

	firstKeyID := h.status().Certificate.KeyID
	second := h.rotateToPromotion()
	s := h.status()
	if s.Rotation.PreviousKeyID != firstKeyID {
		t.Fatalf("previousKeyID %q, want the replaced key %q", s.Rotation.PreviousKeyID, firstKeyID)
	}
	h.harness.reconcile()
	if got, want := log.last(), x5tS256(t, second); got != want {
		t.Fatalf("after the second promotion the tenant's assertion names %q, want %q", got, want)
	}

	// retireAfter (24h) later, and not before, the replaced key goes.
	h.clock.Step(24*time.Hour - time.Second)
	h.restart()
	h.reconcile()
	if !slices.Contains(h.keyIDs(), firstKeyID) {
		t.Fatal("the replaced key was removed before retireAfter")
	}
	h.clock.Step(time.Second)
	h.reconcile()
	keys := h.keyIDs()
	if slices.Contains(keys, firstKeyID) || !slices.Contains(keys, s.Certificate.KeyID) || !slices.Contains(keys, uploadedKeyID) {
		t.Fatalf("after retireAfter the keys are %v: want %s removed, the key in use %s and the uploaded %s kept", keys, firstKeyID, s.Certificate.KeyID, uploadedKeyID)
	}
	if s := h.status(); s.Rotation.Phase != v1alpha1.RotationIdle || s.Rotation.PreviousKeyID != "" {
		t.Fatalf("after removeKey: status.rotation %+v", s.Rotation)
	}
	var adds, removes int
	for _, c := range h.entra.GraphCalls(appObjectID) {
		switch c.Action {
		case "addKey":
			adds++
		case "removeKey":
			removes++
		}
	}
	if adds != 2 || removes != 1 {
		t.Fatalf("Graph calls: %d addKey, %d removeKey; want 2 and 1", adds, removes)
	}
}

func (h *rotationHarness) graphCalls() int {
	return len(h.entra.GraphCalls(appObjectID))
}

func rotationFailures(kind v1alpha1.AppKind, ns string) float64 {
	return testutil.ToFloat64(metrics.AppCertificateRotations.WithLabelValues(string(kind), ns, appName, "failure"))
}

// TestManagedCertificateRotationFailuresKeepTheCurrentCertificate: Graph
// refusing addKey (403), not knowing the object (404) or rejecting the proof
// stalls the rotation with RotationFailed while the current certificate stays in
// use and Ready; the step is retried with the slow backoff, and succeeds once
// the cause is gone.
func TestManagedCertificateRotationFailuresKeepTheCurrentCertificate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failure entraemu.GraphFailure
		code    string
	}{
		{"forbidden", entraemu.GraphForbidden(), "Authorization_RequestDenied"},
		{"unknown object", entraemu.GraphNotFound(appObjectID), "Request_ResourceNotFound"},
		{"rejected proof", entraemu.GraphBadProof(), "Authentication_MissingOrMalformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, log := newRotatingHarness(t)
			current := h.managedSecret().Data[corev1.TLSCertKey]
			h.entra.SetGraphFailure(appObjectID, tc.failure)
			h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
			h.reconcile() // the next key
			h.drainEvents()
			failuresBefore := rotationFailures(v1alpha1.AppKindDefenderApp, h.ns)

			res := h.reconcile() // addKey, refused
			s := h.expectReady(v1alpha1.ReasonCredentialReady)
			stalled := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled)
			if stalled == nil || stalled.Reason != v1alpha1.ReasonRotationFailed || !strings.Contains(stalled.Message, tc.code) {
				t.Fatalf("Stalled %+v, want RotationFailed naming %s", stalled, tc.code)
			}
			if s.Rotation.Phase != v1alpha1.RotationKeyGenerated || len(h.keyIDs()) != 1 || !bytes.Equal(h.managedSecret().Data[corev1.TLSCertKey], current) {
				t.Fatalf("a refused addKey changed the rotation: %+v, keys %v", s.Rotation, h.keyIDs())
			}
			if evs := h.drainEvents(); countWithPrefix(evs, "Warning "+v1alpha1.ReasonRotationFailed) != 1 {
				t.Errorf("Events %q, want one Warning RotationFailed", evs)
			}
			if got := rotationFailures(v1alpha1.AppKindDefenderApp, h.ns) - failuresBefore; got != 1 {
				t.Errorf("rotations_total{result=failure} grew by %v, want 1", got)
			}
			if res.RequeueAfter != time.Minute {
				t.Errorf("requeue after %s, want the slow backoff's first minute", res.RequeueAfter)
			}
			// The tenant keeps its token, minted with the current certificate.
			h.harness.reconcile()
			h.harness.expectReady()
			if got, want := log.last(), x5tS256(t, current); got != want {
				t.Fatalf("the tenant's assertion names %q, want the current certificate's %q", got, want)
			}

			calls := h.graphCalls()
			h.reconcile() // within the backoff: no call
			if h.graphCalls() != calls {
				t.Fatal("Graph was called again within the backoff")
			}
			if s := h.status(); meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled) == nil {
				t.Fatal("RotationFailed vanished while its backoff runs")
			}
			if evs := h.drainEvents(); countWithPrefix(evs, "Warning "+v1alpha1.ReasonRotationFailed) != 0 {
				t.Errorf("the same failure was announced again: %q", evs)
			}

			h.entra.ClearGraphFailure(appObjectID)
			h.clock.Step(time.Minute)
			h.reconcile()
			s = h.status()
			if s.Rotation.Phase != v1alpha1.RotationKeyAdded || meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled) != nil {
				t.Fatalf("after the cause was removed: %+v, conditions %+v", s.Rotation, s.Conditions)
			}
		})
	}
}

// TestManagedCertificateThatNeverReplicatesIsNeverPromoted: the new key is
// waited for (10s, doubling to 5m, no failure) for 30 minutes after addKey; then
// each check reports RotationFailed (Reconciling, a Warning) and the slow
// backoff spaces them. The app stays Ready on the current certificate, and nothing is
// promoted.
func TestManagedCertificateThatNeverReplicatesIsNeverPromoted(t *testing.T) {
	h, _ := newRotatingHarness(t)
	current := h.managedSecret().Data[corev1.TLSCertKey]
	h.entra.SetReplicationDelay(10000 * time.Hour)
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	h.reconcile()
	h.reconcile()
	if h.status().Rotation.Phase != v1alpha1.RotationKeyAdded {
		t.Fatalf("status.rotation %+v, want KeyAdded", h.status().Rotation)
	}
	h.drainEvents()
	var waiting, failing []time.Duration
	for len(failing) < 2 {
		before := h.entra.Requests(homeTenantID)
		res := h.reconcile()
		if h.entra.Requests(homeTenantID) != before+1 {
			t.Fatal("the new key was not tried")
		}
		if c := meta.FindStatusCondition(h.status().Conditions, v1alpha1.ConditionReconciling); c != nil && c.Reason == v1alpha1.ReasonRotationFailed {
			failing = append(failing, res.RequeueAfter)
		} else if len(failing) > 0 {
			t.Fatalf("RotationFailed vanished while the key still is not accepted: %+v", c)
		} else {
			waiting = append(waiting, res.RequeueAfter)
		}
		if len(waiting) > 20 {
			t.Fatalf("still waiting after %v, want RotationFailed 30 minutes after addKey", waiting)
		}
		h.clock.Step(res.RequeueAfter)
	}
	m := time.Minute
	if want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * m, 5 * m, 5 * m, 5 * m, 5 * m}; !slices.Equal(waiting, want) {
		t.Errorf("checks while the key replicates waited %v, want %v", waiting, want)
	}
	if want := []time.Duration{m, 2 * m}; !slices.Equal(failing, want) {
		t.Errorf("after the grace the checks waited %v, want the slow backoff %v", failing, want)
	}
	if evs := h.drainEvents(); countWithPrefix(evs, "Warning "+v1alpha1.ReasonRotationFailed) != len(failing) {
		t.Errorf("Events %q, want a Warning RotationFailed per failed check after the grace, none before", evs)
	}
	s := h.expectReady(v1alpha1.ReasonCredentialReady)
	if s.Rotation.Phase != v1alpha1.RotationKeyAdded || !bytes.Equal(h.managedSecret().Data[corev1.TLSCertKey], current) {
		t.Fatal("a key Entra ID never accepted was promoted")
	}
}

// TestManagedCertificateLaggingCacheNeverAddsAKeyTwice: the controller's cache
// still shows the app before addKey was recorded; the step is decided from the
// API server's copy, and nothing is added again, also after a restart.
func TestManagedCertificateLaggingCacheNeverAddsAKeyTwice(t *testing.T) {
	h, _ := newRotatingHarness(t)
	h.entra.SetReplicationDelay(10000 * time.Hour) // the rotation stays at KeyAdded
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	h.reconcile() // the next key
	beforeAddKey := h.app(v1alpha1.AppKindDefenderApp).(*v1alpha1.DefenderApp)
	h.reconcile() // addKey, recorded
	keys := h.keyIDs()
	if len(keys) != 2 || h.status().Rotation.Phase != v1alpha1.RotationKeyAdded {
		t.Fatalf("after addKey: keys %v, status.rotation %+v", keys, h.status().Rotation)
	}
	for _, restarted := range []bool{false, true} {
		if restarted {
			h.restart()
		}
		h.apps.Client = &staleReads{Client: k8s, stale: beforeAddKey}
		h.reconcile()
		if got := h.keyIDs(); !slices.Equal(got, keys) {
			t.Fatalf("restarted %v: keys %v after a reconcile on a lagging cache, want %v", restarted, got, keys)
		}
	}
	if s := h.status(); s.Rotation.Phase != v1alpha1.RotationKeyAdded || s.Rotation.PendingKeyID != keys[1] {
		t.Fatalf("status.rotation %+v, want KeyAdded with keyId %s", s.Rotation, keys[1])
	}
}

// TestManagedCertificateAddedKeyIsRecordedAfterAFailedStatusWrite: addKey
// succeeded but the status write recording it failed; the retry records the
// keyId Graph returned and adds nothing.
func TestManagedCertificateAddedKeyIsRecordedAfterAFailedStatusWrite(t *testing.T) {
	h, _ := newRotatingHarness(t)
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	h.reconcile() // the next key
	live := h.apps.Client
	h.apps.Client = &statusWritesFailing{Client: live, failures: 1}
	if _, err := h.apps.Reconcile(h.ctx, ctrl.Request{NamespacedName: h.appKey(h.apps.Kind)}); !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("Reconcile = %v, want the failed status write", err)
	}
	if h.status().Rotation.Phase != v1alpha1.RotationKeyGenerated {
		t.Fatalf("status.rotation %+v: the failed write was written", h.status().Rotation)
	}
	keys := h.entra.KeyCredentials(testClientID)
	if len(keys) != 2 {
		t.Fatalf("key credentials %+v, want the uploaded one and the added one", keys)
	}
	h.apps.Client = live
	h.reconcile()
	s := h.status()
	if got := h.entra.KeyCredentials(testClientID); len(got) != 2 {
		t.Fatalf("key credentials %+v after the retry: the certificate was added again", got)
	}
	if s.Rotation.Phase != v1alpha1.RotationKeyAdded || s.Rotation.PendingKeyID != keys[1].KeyID {
		t.Fatalf("status.rotation %+v, want KeyAdded with keyId %s", s.Rotation, keys[1].KeyID)
	}
}

// TestManagedCertificateResumesAcrossLostStatusWrites: a restart between a
// step's Secret write and its status write resumes from the Secret: the key
// generated is the one added (no second one), and a promotion already made is
// recorded without any call.
func TestManagedCertificateResumesAcrossLostStatusWrites(t *testing.T) {
	h, _ := newRotatingHarness(t)
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)

	// Step 1's Secret write happened; its status write did not.
	now := h.clock.Now()
	_, certPEM, keyPEM, err := entra.GenerateCertificate("lost status write", now.Add(-time.Minute), now.Add(2160*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	secret := h.managedSecret()
	secret.Data[defenderapp.SecretKeyNextCertificate], secret.Data[defenderapp.SecretKeyNextKey] = certPEM, keyPEM
	if err := k8s.Update(h.ctx, secret); err != nil {
		t.Fatal(err)
	}
	h.restart()
	h.reconcile()
	keys := h.entra.KeyCredentials(testClientID)
	if len(keys) != 2 || keys[1].SHA1Thumbprint != strings.ToUpper(hexSHA1(t, certPEM)) {
		t.Fatalf("key credentials %+v: want the key already in the Secret added, and no other", keys)
	}
	if got := h.managedSecret().Data[defenderapp.SecretKeyNextCertificate]; !bytes.Equal(got, certPEM) {
		t.Fatal("next.crt was replaced by another key")
	}

	// The promotion's Secret write happened; its status write did not.
	secret = h.managedSecret()
	secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey] = certPEM, keyPEM
	delete(secret.Data, defenderapp.SecretKeyNextCertificate)
	delete(secret.Data, defenderapp.SecretKeyNextKey)
	if err := k8s.Update(h.ctx, secret); err != nil {
		t.Fatal(err)
	}
	calls, signIns := h.graphCalls(), h.entra.Requests(homeTenantID)
	h.restart()
	h.reconcile()
	s := h.expectReady(v1alpha1.ReasonCredentialReady)
	if s.Rotation.Phase != v1alpha1.RotationPromoted || s.Certificate.KeyID != keys[1].KeyID || s.Rotation.PendingKeyID != "" {
		t.Fatalf("status.rotation %+v, certificate keyID %q: want the promotion recorded", s.Rotation, s.Certificate.KeyID)
	}
	if h.graphCalls() != calls || h.entra.Requests(homeTenantID) != signIns {
		t.Fatal("recording a promotion made calls")
	}
}

// TestManagedCertificateOfAClusterDefenderApp: a ClusterDefenderApp's managed
// Secret is created in the cluster resource namespace, and its upload command
// names the cluster-scoped app.
func TestManagedCertificateOfAClusterDefenderApp(t *testing.T) {
	h := newRotationHarness(t)
	h.apps = h.rotatingAppReconciler(v1alpha1.AppKindClusterDefenderApp)
	h.createClusterApp(managedCertificateCredential())
	h.reconcile()

	if getSecret(t, h.crn, managedCertKey) == nil {
		t.Fatalf("no certificate Secret in the cluster resource namespace %s", h.crn)
	}
	if getSecret(t, h.ns, managedCertKey) != nil {
		t.Fatal("a certificate Secret in the tenant's namespace")
	}
	s := *h.app(v1alpha1.AppKindClusterDefenderApp).AppStatus()
	ready := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.Reason != v1alpha1.ReasonCertificateNotRegistered ||
		!strings.Contains(ready.Message, "kubectl get clusterdefenderapp "+h.clusterAppName()+" -o jsonpath") {
		t.Fatalf("Ready %+v, want CertificateNotRegistered with the ClusterDefenderApp's upload command", ready)
	}
}

// copyIntoNext puts certPEM and keyPEM into the managed Secret's next.*, as an
// editor of its namespace may.
func (h *rotationHarness) copyIntoNext(certPEM, keyPEM []byte) {
	h.t.Helper()
	secret := h.managedSecret()
	secret.Data[defenderapp.SecretKeyNextCertificate], secret.Data[defenderapp.SecretKeyNextKey] = certPEM, keyPEM
	if err := k8s.Update(h.ctx, secret); err != nil {
		h.t.Fatal(err)
	}
}

// TestManagedCertificateInUseCopiedIntoNextIsNeverTreatedAsTheNextKey: an
// editor copies tls.* into next.* after a rotation; when the next rotation is
// due, the operator generates a new key rather than adding, recording or later
// retiring the key in use.
func TestManagedCertificateInUseCopiedIntoNextIsNeverTreatedAsTheNextKey(t *testing.T) {
	h, _ := newRotatingHarness(t)
	h.entra.SetReplicationDelay(90 * time.Second)
	h.rotateToPromotion()
	h.reconcile() // idle
	inUse := h.managedSecret()
	h.copyIntoNext(inUse.Data[corev1.TLSCertKey], inUse.Data[corev1.TLSPrivateKeyKey])
	keysBefore := h.entra.KeyCredentials(testClientID)

	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	h.reconcile()
	s := h.status()
	next := h.managedSecret().Data[defenderapp.SecretKeyNextCertificate]
	if bytes.Equal(next, inUse.Data[corev1.TLSCertKey]) || s.Rotation.Phase != v1alpha1.RotationKeyGenerated ||
		strings.EqualFold(s.Rotation.PendingThumbprint, s.Certificate.SHA1Thumbprint) {
		t.Fatalf("status.rotation %+v: the copy of the key in use was taken for the next key", s.Rotation)
	}
	if got := h.entra.KeyCredentials(testClientID); len(got) != len(keysBefore) {
		t.Fatalf("key credentials %+v, want %d: the key in use was added again", got, len(keysBefore))
	}
}

// TestManagedCertificateNextChangedAfterAddKeyStalls: next.* replaced by
// another pair while the added key replicates is never promoted, and the
// rotation stalls at once rather than waiting out a grace for a key it did not
// add.
func TestManagedCertificateNextChangedAfterAddKeyStalls(t *testing.T) {
	h, _ := newRotatingHarness(t)
	h.entra.SetReplicationDelay(10000 * time.Hour)
	current := h.managedSecret().Data[corev1.TLSCertKey]
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	h.reconcile() // the next key
	h.reconcile() // addKey
	now := h.clock.Now()
	_, certPEM, keyPEM, err := entra.GenerateCertificate("swapped by hand", now.Add(-time.Minute), now.Add(2160*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	h.copyIntoNext(certPEM, keyPEM)
	h.reconcile()
	s := h.expectReady(v1alpha1.ReasonCredentialReady)
	stalled := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionStalled)
	if stalled == nil || stalled.Reason != v1alpha1.ReasonRotationFailed || !strings.Contains(stalled.Message, defenderapp.SecretKeyNextCertificate+" no longer holds the certificate that was added") {
		t.Fatalf("Stalled %+v, want RotationFailed about next.crt", stalled)
	}
	if !bytes.Equal(h.managedSecret().Data[corev1.TLSCertKey], current) {
		t.Fatal("a certificate that was not added was promoted")
	}
}

// TestManagedCertificateReplicationGraceSurvivesARestart: a restart does not
// start the replication grace again; after it, the grace counts from the
// pending certificate's generation, so a key that never replicates is reported
// as it would have been without the restart.
func TestManagedCertificateReplicationGraceSurvivesARestart(t *testing.T) {
	h, _ := newRotatingHarness(t)
	h.entra.SetReplicationDelay(10000 * time.Hour)
	h.clock.SetTime(h.status().Rotation.NextRotationTime.Time)
	h.reconcile() // the next key
	h.reconcile() // addKey
	h.reconcile() // not accepted: waiting
	if c := meta.FindStatusCondition(h.status().Conditions, v1alpha1.ConditionReconciling); c != nil {
		t.Fatalf("Reconciling %+v right after addKey, want none", c)
	}
	h.clock.Step(31 * time.Minute)
	h.restart()
	h.reconcile()
	if c := meta.FindStatusCondition(h.status().Conditions, v1alpha1.ConditionReconciling); c == nil || c.Reason != v1alpha1.ReasonRotationFailed {
		t.Fatalf("Reconciling %+v 31 minutes after addKey, after a restart: want RotationFailed", c)
	}
}
