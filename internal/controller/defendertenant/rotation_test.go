package defendertenant

import (
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
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
	h := newHarness(t)
	h.entra.RegisterApplication(entraemu.Application{ObjectID: appObjectID, ClientID: testClientID, HomeTenantID: homeTenantID})
	graph := httptest.NewServer(h.entra.Graph(v1alpha1.CloudPublic))
	t.Cleanup(graph.Close)
	apps := h.appReconciler(v1alpha1.AppKindDefenderApp, nil)
	apps.APIReader = k8s
	apps.Entra = &entra.Client{Timeout: 5 * time.Second, Clock: h.clock}
	apps.Authorities = h.r.Authorities
	apps.Graph = &entra.GraphClient{Timeout: 5 * time.Second, Clock: h.clock}
	apps.GraphHosts = entra.GraphHosts{v1alpha1.CloudPublic: graph.URL}
	return &rotationHarness{harness: h, apps: apps}
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
