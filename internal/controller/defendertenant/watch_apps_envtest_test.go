package defendertenant

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
)

// watchedApp is a manager-driven tenant of a ClusterDefenderApp with a certificate.
type watchedApp struct {
	*watched
	name       string // the tenant's
	app        string
	certSecret string
}

func newWatchedApp(t *testing.T, grant func(w *watchedApp) v1alpha1.TenantGrant) *watchedApp {
	t.Helper()
	w := prepareWatchedApp(newWatched(t), grant)
	w.createAppTenant()
	return w
}

// prepareWatchedApp creates the app and its certificate, not yet the tenant.
func prepareWatchedApp(base *watched, grant func(w *watchedApp) v1alpha1.TenantGrant) *watchedApp {
	t := base.t
	t.Helper()
	w := &watchedApp{watched: base}
	// The app's only tenant: first in a rotation's spread, so re-minted at once.
	w.app, w.certSecret, w.name = w.ns, w.ns+"-cert", "contoso"
	c := newTestCertificate(t, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	managerEntra.AddCertificate(testClientID, c.cert)
	w.storeCertificate(c)
	app := &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: w.app},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec: v1alpha1.AppSpec{ClientID: testClientID, Credential: v1alpha1.AppCredential{
				Certificate: &v1alpha1.CertificateCredential{SecretRef: v1alpha1.AppSecretReference{Name: w.certSecret}},
			}},
			TenantGrants: []v1alpha1.TenantGrant{grant(w)},
		},
	}
	if err := k8s.Create(t.Context(), app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(t.Context(), app) })
	return w
}

func (w *watchedApp) createAppTenant() {
	t := w.t
	t.Helper()
	dt := newTenant(w.ns, w.name, func(dt *v1alpha1.DefenderTenant) {
		dt.Labels = map[string]string{managedLabel: "manager"}
		dt.Spec.TenantID = w.tenantID
		dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
		dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: w.app}
	})
	if err := k8s.Create(t.Context(), dt); err != nil {
		t.Fatal(err)
	}
}

func (w *watchedApp) storeCertificate(c testCertificate) {
	w.t.Helper()
	secret := &corev1.Secret{}
	err := k8s.Get(w.t.Context(), keyOf(credential.DefaultClusterResourceNamespace, w.certSecret), secret)
	secret.ObjectMeta = metav1.ObjectMeta{Namespace: credential.DefaultClusterResourceNamespace, Name: w.certSecret, ResourceVersion: secret.ResourceVersion}
	secret.Type = corev1.SecretTypeTLS
	secret.Data = map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM}
	if err == nil {
		err = k8s.Update(w.t.Context(), secret)
	} else {
		err = k8s.Create(w.t.Context(), secret)
	}
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *watchedApp) waitFor(what string, check func(dt *v1alpha1.DefenderTenant, token *corev1.Secret) error) {
	w.t.Helper()
	w.waitForWithin(watchTimeout, what, check)
}

func (w *watchedApp) waitForWithin(timeout time.Duration, what string, check func(dt *v1alpha1.DefenderTenant, token *corev1.Secret) error) {
	w.t.Helper()
	eventually(w.t, timeout, func() error {
		dt := &v1alpha1.DefenderTenant{}
		if err := k8s.Get(w.t.Context(), keyOf(w.ns, w.name), dt); err != nil {
			return err
		}
		if err := check(dt, getSecret(w.t, w.ns, w.name+"-token")); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

func readyWithToken(dt *v1alpha1.DefenderTenant, token *corev1.Secret) error {
	if c := condition(dt, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonTokenReady || token == nil {
		return fmt.Errorf("Ready = %+v, token Secret present: %v", c, token != nil)
	}
	return nil
}

func notAllowedWithoutToken(dt *v1alpha1.DefenderTenant, token *corev1.Secret) error {
	if c := condition(dt, v1alpha1.ConditionReady); c == nil || c.Reason != v1alpha1.ReasonAppNotAllowed || token != nil {
		return fmt.Errorf("Ready = %+v, token Secret present: %v", c, token != nil)
	}
	return nil
}

func grantThisNamespace(w *watchedApp) v1alpha1.TenantGrant {
	return v1alpha1.TenantGrant{Namespaces: []string{w.ns}, TenantIDs: []string{w.tenantID}}
}

func TestWatchWithdrawnGrantDeletesTheToken(t *testing.T) {
	requireControlPlane(t)
	w := newWatchedApp(t, grantThisNamespace)
	w.waitFor("Ready", readyWithToken)

	app := &v1alpha1.ClusterDefenderApp{}
	if err := k8s.Get(t.Context(), keyOf("", w.app), app); err != nil {
		t.Fatal(err)
	}
	app.Spec.TenantGrants = []v1alpha1.TenantGrant{{Namespaces: []string{"someone-else"}, TenantIDs: []string{"*"}}}
	withdrawn := time.Now()
	if err := k8s.Update(t.Context(), app); err != nil {
		t.Fatal(err)
	}
	w.waitFor("grant withdrawn", notAllowedWithoutToken)
	// A figure for the reader, not a verdict: promptness belongs to make bench.
	t.Logf("the token Secret went %s after the grant", time.Since(withdrawn).Round(time.Millisecond))
}

func TestWatchNamespaceLabelGrantsAndWithdraws(t *testing.T) {
	requireControlPlane(t)
	w := newWatchedApp(t, func(w *watchedApp) v1alpha1.TenantGrant {
		return v1alpha1.TenantGrant{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"defender.tenantcreds.io/customer": "contoso", "test": w.ns}}, TenantIDs: []string{"*"}}
	})
	w.waitFor("not granted", notAllowedWithoutToken)

	setLabels := func(labels map[string]string) {
		ns := &corev1.Namespace{}
		if err := k8s.Get(t.Context(), keyOf("", w.ns), ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = labels
		if err := k8s.Update(t.Context(), ns); err != nil {
			t.Fatal(err)
		}
	}
	setLabels(map[string]string{"defender.tenantcreds.io/customer": "contoso", "test": w.ns})
	w.waitFor("granted by the label", readyWithToken)
	setLabels(nil)
	w.waitFor("withdrawn with the label", notAllowedWithoutToken)
}

func TestWatchCertificateRotationMintsANewToken(t *testing.T) {
	requireControlPlane(t)
	w := newWatchedApp(t, grantThisNamespace)
	w.waitFor("Ready", readyWithToken)
	first := string(getSecret(t, w.ns, w.name+"-token").Data[v1alpha1.TokenSecretKeyAccessToken])

	rotated := newTestCertificate(t, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	managerEntra.AddCertificate(testClientID, rotated.cert)
	w.storeCertificate(rotated)
	// The only tenant is re-minted at once; the wait is slack for a loaded machine.
	w.waitForWithin(45*time.Second, "re-minted", func(dt *v1alpha1.DefenderTenant, token *corev1.Secret) error {
		if token == nil || string(token.Data[v1alpha1.TokenSecretKeyAccessToken]) == first {
			return fmt.Errorf("the token Secret still holds the first token; status %s", mustJSONStatus(dt))
		}
		return readyWithToken(dt, token)
	})
	if n := managerEntra.Requests(w.tenantID); n != 2 {
		t.Errorf("token requests = %d, want 2: one before and one after the rotation", n)
	}
}

func mustJSONStatus(dt *v1alpha1.DefenderTenant) string {
	b, _ := json.Marshal(dt.Status)
	return string(b)
}
