package defendertenant

import (
	"context"
	"crypto/sha1" //nolint:gosec // the thumbprint Entra ID shows is SHA-1
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
)

// appReconciler drives one kind's app controller with the harness's clock and
// recorder. tokens, when set, collects the ServiceAccount tokens it is issued.
func (h *harness) appReconciler(kind v1alpha1.AppKind, tokens *issuedTokens) *defenderapp.Reconciler {
	c := k8s
	if tokens != nil {
		c = tokenRecordingClient{Client: k8s, tokens: tokens}
	}
	credentials := &credential.Reader{APIReader: k8s, SecretMetadata: k8s, Client: c}
	return &defenderapp.Reconciler{Client: c, Credentials: credentials, Clock: h.clock, Recorder: h.recorder, Kind: kind, ClusterResourceNamespace: h.crn}
}

// issuedTokens records the TokenRequests made through a client, and the tokens
// the TokenRequest API issues.
type issuedTokens struct {
	mu     sync.Mutex
	tokens []string
	// made counts the TokenRequests sent, or failed by fail, whatever the answer.
	made int
	// fail, when set, is what every TokenRequest returns.
	fail error
}

type tokenRecordingClient struct {
	client.Client
	tokens *issuedTokens
}

func (c tokenRecordingClient) SubResource(name string) client.SubResourceClient {
	return tokenRecordingSubResource{SubResourceClient: c.Client.SubResource(name), name: name, tokens: c.tokens}
}

type tokenRecordingSubResource struct {
	client.SubResourceClient
	name   string
	tokens *issuedTokens
}

func (s tokenRecordingSubResource) Create(ctx context.Context, obj, subResource client.Object, opts ...client.SubResourceCreateOption) error {
	tokenRequest := s.name == "token"
	s.tokens.mu.Lock()
	fail := s.tokens.fail
	if tokenRequest {
		s.tokens.made++
	}
	s.tokens.mu.Unlock()
	if fail != nil && tokenRequest {
		return fail
	}
	err := s.SubResourceClient.Create(ctx, obj, subResource, opts...)
	if tr, ok := subResource.(*authenticationv1.TokenRequest); ok && err == nil && tokenRequest {
		s.tokens.mu.Lock()
		s.tokens.tokens = append(s.tokens.tokens, tr.Status.Token)
		s.tokens.mu.Unlock()
	}
	return err
}

func (it *issuedTokens) requests() int {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.made
}

func (it *issuedTokens) all() []string {
	it.mu.Lock()
	defer it.mu.Unlock()
	return slices.Clone(it.tokens)
}

func (h *harness) appKey(kind v1alpha1.AppKind) types.NamespacedName {
	if kind == v1alpha1.AppKindClusterDefenderApp {
		return keyOf("", h.clusterAppName())
	}
	return keyOf(h.ns, appName)
}

// createApp creates the DefenderApp appName in the harness's namespace.
func (h *harness) createApp(cred v1alpha1.AppCredential) {
	h.t.Helper()
	app := &v1alpha1.DefenderApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: appName},
		Spec:       v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{ClientID: testClientID, Credential: cred}},
	}
	if err := k8s.Create(h.ctx, app); err != nil {
		h.t.Fatal(err)
	}
}

func appClientSecretCredential() v1alpha1.AppCredential {
	return v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: credentialName}}}
}

func (h *harness) reconcileApp(r *defenderapp.Reconciler) ctrl.Result {
	h.t.Helper()
	res, err := r.Reconcile(h.ctx, ctrl.Request{NamespacedName: h.appKey(r.Kind)})
	if err != nil {
		h.t.Fatalf("Reconcile %s: %v", r.Kind, err)
	}
	return res
}

func (h *harness) app(kind v1alpha1.AppKind) v1alpha1.App {
	h.t.Helper()
	app := h.newAppObject(kind)
	if err := k8s.Get(h.ctx, h.appKey(kind), app); err != nil {
		h.t.Fatal(err)
	}
	return app
}

// expectApp checks Ready and Stalled (True with the same reason when not Ready,
// absent when Ready), and that the Ready message names what it must.
func (h *harness) expectApp(kind v1alpha1.AppKind, reason string, inMessage ...string) v1alpha1.App {
	h.t.Helper()
	app := h.app(kind)
	conds := app.AppStatus().Conditions
	ready, stalled := meta.FindStatusCondition(conds, v1alpha1.ConditionReady), meta.FindStatusCondition(conds, v1alpha1.ConditionStalled)
	wantReady := metav1.ConditionFalse
	if reason == v1alpha1.ReasonCredentialReady {
		wantReady = metav1.ConditionTrue
	}
	switch {
	case ready == nil:
		h.t.Fatalf("no Ready condition; status %+v", app.AppStatus())
	case ready.Status != wantReady || ready.Reason != reason:
		h.t.Errorf("Ready = %s/%s (%s), want %s/%s", ready.Status, ready.Reason, ready.Message, wantReady, reason)
	}
	switch {
	case wantReady == metav1.ConditionTrue && stalled != nil:
		h.t.Errorf("Stalled = %s/%s on a Ready app, want absent", stalled.Status, stalled.Reason)
	case wantReady == metav1.ConditionFalse && (stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != reason):
		h.t.Errorf("Stalled = %+v, want True/%s", stalled, reason)
	}
	for _, want := range inMessage {
		if ready != nil && !strings.Contains(ready.Message, want) {
			h.t.Errorf("Ready message %q does not mention %q", ready.Message, want)
		}
	}
	if got, want := app.AppStatus().ObservedGeneration, app.GetGeneration(); got != want {
		h.t.Errorf("observedGeneration = %d, want %d", got, want)
	}
	return app
}

func (h *harness) drainEvents() []string {
	var evs []string
	for len(h.recorder.Events) > 0 {
		evs = append(evs, <-h.recorder.Events)
	}
	return evs
}

func countWithPrefix(evs []string, prefix string) int {
	n := 0
	for _, e := range evs {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func TestAppCredentialReadyWithAClientSecret(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createApp(appClientSecretCredential())
	res := h.reconcileApp(h.appReconciler(v1alpha1.AppKindDefenderApp, nil))

	app := h.expectApp(v1alpha1.AppKindDefenderApp, v1alpha1.ReasonCredentialReady, credentialName, h.ns)
	st := app.AppStatus()
	if st.Credential != v1alpha1.CredentialClientSecret || st.Certificate != nil || st.FederatedCredential != nil {
		t.Errorf("status = %+v, want credential ClientSecret without certificate or federatedCredential", st)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("requeue after %s; a client secret has no expiry to wait for", res.RequeueAfter)
	}
}

func TestAppCredentialReadyWithACertificate(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	c := h.validCertificate()
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	res := h.reconcileApp(h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil))

	app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady, certSecretName, h.crn)
	st := app.AppStatus()
	sha1Sum, sha256Sum := sha1.Sum(c.cert.Raw), sha256.Sum256(c.cert.Raw) //nolint:gosec // see the import
	want := v1alpha1.CertificateStatus{
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(sha1Sum[:])),
		SHA256Thumbprint: base64.RawURLEncoding.EncodeToString(sha256Sum[:]),
	}
	switch {
	case st.Credential != v1alpha1.CredentialCertificate:
		t.Errorf("credential = %q, want Certificate", st.Credential)
	case st.Certificate == nil:
		t.Fatal("no status.certificate")
	case st.Certificate.SHA1Thumbprint != want.SHA1Thumbprint || st.Certificate.SHA256Thumbprint != want.SHA256Thumbprint:
		t.Errorf("thumbprints = %s, %s; want %s, %s", st.Certificate.SHA1Thumbprint, st.Certificate.SHA256Thumbprint, want.SHA1Thumbprint, want.SHA256Thumbprint)
	case st.Certificate.NotAfter == nil || !st.Certificate.NotAfter.Time.Equal(c.cert.NotAfter):
		t.Errorf("notAfter = %v, want %s", st.Certificate.NotAfter, c.cert.NotAfter)
	}
	if st.FederatedCredential != nil {
		t.Errorf("federatedCredential = %+v on a certificate app", st.FederatedCredential)
	}
	if want := c.cert.NotAfter.Add(-defenderapp.CertificateExpiryWarning).Sub(h.clock.Now()); res.RequeueAfter != want {
		t.Errorf("requeue after %s, want %s (when the expiry window opens)", res.RequeueAfter, want)
	}
}

func TestAppCredentialReadyWithWorkloadIdentity(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	issuer, _ := apiServerIssuer(t, h.crn)
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	h.reconcileApp(h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil))

	app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady, workloadSAName, h.crn)
	st := app.AppStatus()
	sa := &corev1.ServiceAccount{}
	if err := k8s.Get(h.ctx, keyOf(h.crn, workloadSAName), sa); err != nil {
		t.Fatal(err)
	}
	want := v1alpha1.FederatedCredentialStatus{Issuer: issuer, Subject: h.workloadSubject(), Audience: v1alpha1.DefaultWorkloadIdentityAudience,
		ServiceAccountUID: sa.UID, ObservedGeneration: app.GetGeneration()}
	if st.FederatedCredential == nil || *st.FederatedCredential != want {
		t.Errorf("federatedCredential = %+v, want %+v", st.FederatedCredential, want)
	}
	if st.Credential != v1alpha1.CredentialWorkloadIdentity || st.Certificate != nil {
		t.Errorf("status = %+v, want credential WorkloadIdentity without certificate", st)
	}
}

func TestAppCredentialsNotFound(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range []struct {
		name  string
		kind  v1alpha1.AppKind
		setup func(h *harness)
		// secretIn is the namespace the message must name.
		secretIn func(h *harness) string
		secret   string
	}{
		{"client secret Secret missing", v1alpha1.AppKindDefenderApp, func(h *harness) {
			h.createApp(appClientSecretCredential())
		}, func(h *harness) string { return h.ns }, credentialName},
		{"client secret key missing", v1alpha1.AppKindDefenderApp, func(h *harness) {
			createCredentialIn(h.t, h.ns, credentialName, map[string][]byte{"other-key": []byte(testClientSecret)})
			h.createApp(appClientSecretCredential())
		}, func(h *harness) string { return h.ns }, credentialName},
		{"certificate Secret missing", v1alpha1.AppKindDefenderApp, func(h *harness) {
			h.createApp(certCredential())
		}, func(h *harness) string { return h.ns }, certSecretName},
		{"tls.key empty", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			c := h.validCertificate()
			c.keyPEM = nil
			h.storeCertificate(h.crn, c)
			h.createClusterApp(certCredential())
		}, func(h *harness) string { return h.crn }, certSecretName},
		{"ClusterDefenderApp's Secret only in a customer namespace", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			h.storeCertificate(h.ns, h.validCertificate())
			h.createClusterApp(certCredential())
		}, func(h *harness) string { return h.crn }, certSecretName},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			h.reconcileApp(h.appReconciler(tt.kind, nil))

			app := h.expectApp(tt.kind, v1alpha1.ReasonCredentialsNotFound, `"`+tt.secret+`"`, `namespace "`+tt.secretIn(h)+`"`)
			if app.AppStatus().Certificate != nil {
				t.Errorf("certificate = %+v, want none", app.AppStatus().Certificate)
			}
		})
	}
}

func TestAppInvalidCertificate(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	c, other := h.validCertificate(), h.validCertificate()
	c.keyPEM = other.keyPEM
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	h.reconcileApp(h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil))

	app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonInvalidCertificate, "key does not match the certificate", certSecretName, h.crn)
	if app.AppStatus().Certificate != nil {
		t.Errorf("certificate = %+v for a certificate that cannot be used", app.AppStatus().Certificate)
	}
	expectNoKeyMaterial(t, app, h.drainEvents(), c, other)
}

func TestAppCertificateExpired(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	now := h.clock.Now()
	c := newTestCertificate(t, now.AddDate(-1, 0, 0), now.Add(-time.Minute))
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	res := h.reconcileApp(h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil))

	app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCertificateExpired, certSecretName, h.crn, conditions.RFC3339(c.cert.NotAfter))
	if cert := app.AppStatus().Certificate; cert == nil || !cert.NotAfter.Time.Equal(c.cert.NotAfter) {
		t.Errorf("certificate = %+v, want the expired certificate's", cert)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("requeue after %s for an expired certificate", res.RequeueAfter)
	}
}

// The expiry window and the expiry itself come from requeues alone: nothing in
// the cluster changes at notAfter.
func TestAppCertificateTurnsExpiredOnTimeWithoutAnEvent(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	now := h.clock.Now()
	c := newTestCertificate(t, now.Add(-time.Hour), now.Add(40*24*time.Hour))
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil)

	res := h.reconcileApp(r)
	if want := 10 * 24 * time.Hour; res.RequeueAfter != want {
		t.Fatalf("requeue after %s, want %s (when the expiry window opens)", res.RequeueAfter, want)
	}
	h.clock.Step(res.RequeueAfter)
	res = h.reconcileApp(r)
	h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady, "expires within 30 days")
	if res.RequeueAfter != defenderapp.CertificateExpiryWarning {
		t.Fatalf("requeue after %s, want %s (at notAfter)", res.RequeueAfter, defenderapp.CertificateExpiryWarning)
	}
	h.clock.Step(res.RequeueAfter)
	h.reconcileApp(r)
	h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCertificateExpired)
}

func TestAppServiceAccountNotFound(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createClusterApp(federatedCredential())
	r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil)
	h.reconcileApp(r)

	app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonServiceAccountNotFound, `"`+workloadSAName+`"`, `namespace "`+h.crn+`"`)
	if f := app.AppStatus().FederatedCredential; f != nil {
		t.Errorf("federatedCredential = %+v without a ServiceAccount", f)
	}

	h.createWorkloadSA()
	h.reconcileApp(r)
	app = h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady)
	if app.AppStatus().FederatedCredential == nil {
		t.Error("no federatedCredential once the ServiceAccount exists")
	}
}

func TestAppWhoseServiceAccountTheOperatorMayNotUseIsServiceAccountNotFound(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil)
	r.Credentials.Client = newWithoutServiceAccountTokens(t)
	// An error, so that controller-runtime retries with its backoff until the
	// Role is bound: no watch announces a RoleBinding.
	if _, err := r.Reconcile(h.ctx, ctrl.Request{NamespacedName: h.appKey(v1alpha1.AppKindClusterDefenderApp)}); err == nil {
		t.Error("Reconcile returned no error for a Forbidden TokenRequest")
	}
	app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonServiceAccountNotFound, "may not create tokens", "forbidden", "cluster_resources_role.yaml")
	if f := app.AppStatus().FederatedCredential; f != nil {
		t.Errorf("federatedCredential = %+v from a TokenRequest that was refused", f)
	}
}

func TestAppCertificateExpiringEventIsRecordedOnce(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	now := h.clock.Now()
	c := newTestCertificate(t, now.Add(-time.Hour), now.Add(31*24*time.Hour))
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil)
	h.reconcileApp(r)
	if evs := h.drainEvents(); countWithPrefix(evs, "Warning "+defenderapp.ReasonCertificateExpiring) != 0 {
		t.Fatalf("events 31 days before notAfter: %v", evs)
	}

	h.clock.Step(24 * time.Hour)
	h.reconcileApp(r)
	h.clock.Step(time.Hour)
	h.reconcileApp(r)
	// A restarted operator knows from the status that it warned already.
	h.clock.Step(time.Hour)
	h.reconcileApp(h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil))

	evs := h.drainEvents()
	if n := countWithPrefix(evs, "Warning "+defenderapp.ReasonCertificateExpiring); n != 1 {
		t.Fatalf("%d CertificateExpiring events, want 1: %v", n, evs)
	}
	thumbprint := h.app(v1alpha1.AppKindClusterDefenderApp).AppStatus().Certificate.SHA1Thumbprint
	for _, e := range evs {
		if strings.HasPrefix(e, "Warning "+defenderapp.ReasonCertificateExpiring) && (!strings.Contains(e, thumbprint) || !strings.Contains(e, conditions.RFC3339(c.cert.NotAfter))) {
			t.Errorf("event %q lacks the SHA-1 thumbprint %s or notAfter", e, thumbprint)
		}
	}
}

func TestAppCertificateExpiryMetric(t *testing.T) {
	requireControlPlane(t)
	t.Run("ClusterDefenderApp that stops using a certificate", func(t *testing.T) {
		h := newHarness(t)
		c := h.validCertificate()
		h.storeCertificate(h.crn, c)
		h.createClusterApp(certCredential())
		r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil)
		h.reconcileApp(r)
		series := []string{string(v1alpha1.AppKindClusterDefenderApp), "", h.clusterAppName()}
		if got := testutil.ToFloat64(metrics.AppCertificateExpiry.WithLabelValues(series...)); got != float64(c.cert.NotAfter.Unix()) {
			t.Errorf("expiry gauge = %v, want %d", got, c.cert.NotAfter.Unix())
		}

		createCredentialIn(t, h.crn, credentialName, map[string][]byte{v1alpha1.DefaultClientSecretKey: []byte(testClientSecret)})
		app := h.app(v1alpha1.AppKindClusterDefenderApp).(*v1alpha1.ClusterDefenderApp)
		app.Spec.Credential = appClientSecretCredential()
		if err := k8s.Update(h.ctx, app); err != nil {
			t.Fatal(err)
		}
		h.reconcileApp(r)
		h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady)
		if metrics.AppCertificateExpiry.DeleteLabelValues(series...) {
			t.Error("the expiry series remains after the app stopped using a certificate")
		}
	})
	t.Run("deleted DefenderApp", func(t *testing.T) {
		h := newHarness(t)
		c := h.validCertificate()
		h.storeCertificate(h.ns, c)
		h.createApp(certCredential())
		r := h.appReconciler(v1alpha1.AppKindDefenderApp, nil)
		h.reconcileApp(r)
		series := []string{string(v1alpha1.AppKindDefenderApp), h.ns, appName}
		if got := testutil.ToFloat64(metrics.AppCertificateExpiry.WithLabelValues(series...)); got != float64(c.cert.NotAfter.Unix()) {
			t.Errorf("expiry gauge = %v, want %d", got, c.cert.NotAfter.Unix())
		}

		if err := k8s.Delete(h.ctx, h.app(v1alpha1.AppKindDefenderApp)); err != nil {
			t.Fatal(err)
		}
		h.reconcileApp(r)
		if metrics.AppCertificateExpiry.DeleteLabelValues(series...) {
			t.Error("the expiry series of a deleted app remains")
		}
	})
}

func TestAppSecondReconcileWritesNothing(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range []struct {
		name  string
		kind  v1alpha1.AppKind
		setup func(h *harness)
	}{
		{"client secret", v1alpha1.AppKindDefenderApp, func(h *harness) {
			h.createCredential(testClientSecret)
			h.createApp(appClientSecretCredential())
		}},
		{"certificate", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			h.storeCertificate(h.crn, h.validCertificate())
			h.createClusterApp(certCredential())
		}},
		{"certificate in its expiry window", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			now := h.clock.Now()
			h.storeCertificate(h.crn, newTestCertificate(h.t, now.Add(-time.Hour), now.Add(7*24*time.Hour)))
			h.createClusterApp(certCredential())
		}},
		{"certificate that cannot be used", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			c := h.validCertificate()
			c.certPEM = []byte("not a certificate")
			h.storeCertificate(h.crn, c)
			h.createClusterApp(certCredential())
		}},
		{"workload identity", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			h.createWorkloadSA()
			h.createClusterApp(federatedCredential())
		}},
		{"missing ServiceAccount", v1alpha1.AppKindClusterDefenderApp, func(h *harness) {
			h.createClusterApp(federatedCredential())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			tokens := &issuedTokens{}
			h.reconcileApp(h.appReconciler(tt.kind, tokens))
			written := h.app(tt.kind)
			if len(written.AppStatus().Conditions) == 0 {
				t.Fatal("the first reconcile wrote no status")
			}

			h.clock.Step(time.Minute)
			h.reconcileApp(h.appReconciler(tt.kind, tokens))
			// A restarted operator: nothing but the status is remembered.
			h.clock.Step(time.Minute)
			h.reconcileApp(h.appReconciler(tt.kind, tokens))

			if again := h.app(tt.kind); again.GetResourceVersion() != written.GetResourceVersion() {
				t.Errorf("resourceVersion %s → %s: a reconcile with nothing changed wrote the status", written.GetResourceVersion(), again.GetResourceVersion())
			}
			want := 0
			if written.AppStatus().FederatedCredential != nil {
				want = 1
			}
			if got := len(tokens.all()); got != want {
				t.Errorf("%d ServiceAccount tokens requested, want %d", got, want)
			}
		})
	}
}

func TestAppWorkloadIdentityAsksForANewTokenWhenItsInputsChange(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	tokens := &issuedTokens{}
	r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, tokens)
	const otherAudience = "api://other"
	r.Credentials.WorkloadIdentityAudiences = []string{v1alpha1.DefaultWorkloadIdentityAudience, otherAudience}
	h.reconcileApp(r)

	app := h.app(v1alpha1.AppKindClusterDefenderApp).(*v1alpha1.ClusterDefenderApp)
	app.Spec.Credential.WorkloadIdentity.Audience = otherAudience
	if err := k8s.Update(h.ctx, app); err != nil {
		t.Fatal(err)
	}
	h.reconcileApp(r)
	if f := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady).AppStatus().FederatedCredential; f == nil || f.Audience != otherAudience {
		t.Errorf("federatedCredential = %+v, want audience api://other", f)
	}

	sa := &corev1.ServiceAccount{}
	if err := k8s.Get(h.ctx, keyOf(h.crn, workloadSAName), sa); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(h.ctx, sa); err != nil {
		t.Fatal(err)
	}
	h.createWorkloadSA()
	h.reconcileApp(r)
	if got := len(tokens.all()); got != 3 {
		t.Errorf("%d tokens requested, want 3: the first, a new audience, a re-created ServiceAccount", got)
	}
}

func TestAppFailedTokenRequestLeavesTheGenerationUnhandled(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	tokens := &issuedTokens{fail: errors.New("serviceaccounts \"partner-app\" is forbidden")}
	r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, tokens)
	if _, err := r.Reconcile(h.ctx, ctrl.Request{NamespacedName: h.appKey(r.Kind)}); err == nil {
		t.Fatal("Reconcile succeeded although the TokenRequest failed; it must be retried")
	}
	st := h.app(r.Kind).AppStatus()
	if st.ObservedGeneration != 0 || st.FederatedCredential != nil {
		t.Errorf("observedGeneration %d, federatedCredential %+v; want 0 and none after a failed TokenRequest", st.ObservedGeneration, st.FederatedCredential)
	}

	tokens.mu.Lock()
	tokens.fail = nil
	tokens.mu.Unlock()
	h.reconcileApp(r)
	if app := h.expectApp(r.Kind, v1alpha1.ReasonCredentialReady); app.AppStatus().FederatedCredential == nil {
		t.Error("no federatedCredential once the TokenRequest succeeds")
	}
}

func TestAppStatusAndEventsHoldNoTokenOrKeyMaterial(t *testing.T) {
	requireControlPlane(t)
	t.Run("certificate", func(t *testing.T) {
		h := newHarness(t)
		now := h.clock.Now()
		c := newTestCertificate(t, now.Add(-time.Hour), now.Add(7*24*time.Hour)) // expiring: an Event too
		h.storeCertificate(h.crn, c)
		h.createClusterApp(certCredential())
		h.reconcileApp(h.appReconciler(v1alpha1.AppKindClusterDefenderApp, nil))
		evs := h.drainEvents()
		if countWithPrefix(evs, "Warning "+defenderapp.ReasonCertificateExpiring) != 1 {
			t.Fatalf("events = %v, want a CertificateExpiring one to check", evs)
		}
		expectNoKeyMaterial(t, h.app(v1alpha1.AppKindClusterDefenderApp), evs, c)
	})
	t.Run("workload identity", func(t *testing.T) {
		h := newHarness(t)
		h.createClusterApp(federatedCredential())
		tokens := &issuedTokens{}
		r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, tokens)
		h.reconcileApp(r) // ServiceAccountNotFound: a Warning Event
		h.createWorkloadSA()
		h.reconcileApp(r) // recovered: a Normal Event
		evs := h.drainEvents()
		if len(evs) != 2 || len(tokens.all()) != 1 {
			t.Fatalf("events %v and %d tokens, want 2 and 1", evs, len(tokens.all()))
		}
		raw, err := json.Marshal(h.app(v1alpha1.AppKindClusterDefenderApp).AppStatus())
		if err != nil {
			t.Fatal(err)
		}
		for _, token := range tokens.all() {
			signature := token[strings.LastIndex(token, ".")+1:]
			payload := strings.Split(token, ".")[1]
			for _, where := range append([]string{string(raw)}, evs...) {
				if strings.Contains(where, signature) || strings.Contains(where, payload) {
					t.Errorf("a ServiceAccount token is in the status or an event: %.100s…", where)
				}
			}
		}
	})
}

func expectNoKeyMaterial(t *testing.T, app v1alpha1.App, evs []string, certs ...testCertificate) {
	t.Helper()
	raw, err := json.Marshal(app.AppStatus())
	if err != nil {
		t.Fatal(err)
	}
	for _, where := range append([]string{string(raw)}, evs...) {
		if strings.Contains(where, "PRIVATE KEY") || strings.Contains(where, "-----BEGIN") {
			t.Errorf("PEM in the status or an event: %.100s…", where)
		}
		for _, c := range certs {
			// A line of the key's base64 body: any quoted part of the key shows up.
			lines := strings.Split(string(c.keyPEM), "\n")
			if len(lines) > 2 && strings.Contains(where, lines[1]) {
				t.Errorf("key material in the status or an event: %.100s…", where)
			}
		}
	}
}

func TestAppControllersFollowTheirCredentialsThroughWatches(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	// Only this test's apps: the others' are driven by their tests alone.
	cacheOpts := manager.CacheOptions([]string{h.ns, h.crn}, h.crn)
	ownApps := labels.SelectorFromSet(labels.Set{managedLabel: h.ns})
	cacheOpts.ByObject[&v1alpha1.ClusterDefenderApp{}] = cache.ByObject{Label: ownApps}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:     testScheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cacheOpts,
		Client:     manager.ClientOptions(),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := manager.RegisterIndexes(ctx, mgr.GetFieldIndexer(), true); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp, v1alpha1.AppKindClusterDefenderApp} {
		credentials := &credential.Reader{APIReader: mgr.GetAPIReader(), SecretMetadata: mgr.GetCache(), Client: mgr.GetClient()}
		r := &defenderapp.Reconciler{Client: mgr.GetClient(), Credentials: credentials, Clock: clock.RealClock{}, Recorder: h.recorder, Kind: kind, ClusterResourceNamespace: h.crn}
		if err := r.SetupWithManager(mgr); err != nil {
			t.Fatal(err)
		}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })

	reason := func(kind v1alpha1.AppKind, want string) func() error {
		return func() error {
			app := h.newAppObject(kind)
			if err := k8s.Get(h.ctx, h.appKey(kind), app); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(app.AppStatus().Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != want {
				return fmt.Errorf("%s Ready = %+v, want reason %s", kind, c, want)
			}
			return nil
		}
	}
	h.createApp(appClientSecretCredential())
	h.createClusterApp(federatedCredential())
	cluster := h.app(v1alpha1.AppKindClusterDefenderApp)
	cluster.SetLabels(map[string]string{managedLabel: h.ns})
	if err := k8s.Update(h.ctx, cluster); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, reason(v1alpha1.AppKindDefenderApp, v1alpha1.ReasonCredentialsNotFound))
	eventually(t, 10*time.Second, reason(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonServiceAccountNotFound))

	h.createCredential(testClientSecret)
	h.createWorkloadSA()
	eventually(t, 10*time.Second, reason(v1alpha1.AppKindDefenderApp, v1alpha1.ReasonCredentialReady))
	eventually(t, 10*time.Second, reason(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady))

	secret := getSecret(t, h.ns, credentialName)
	secret.Data[v1alpha1.DefaultClientSecretKey] = nil
	if err := k8s.Update(h.ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, reason(v1alpha1.AppKindDefenderApp, v1alpha1.ReasonCredentialsNotFound))
}

func (h *harness) newAppObject(kind v1alpha1.AppKind) v1alpha1.App {
	if kind == v1alpha1.AppKindClusterDefenderApp {
		return &v1alpha1.ClusterDefenderApp{}
	}
	return &v1alpha1.DefenderApp{}
}
