package defendertenant

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// Withdrawing a grant withdraws every token minted under it, whatever the tenant
// did since: each test below is one way a namespace editor could try to keep a token.

// setClusterAppGrants replaces the grants of the ClusterDefenderApp named.
func setClusterAppGrants(t *testing.T, name string, grants ...v1alpha1.TenantGrant) {
	t.Helper()
	app := &v1alpha1.ClusterDefenderApp{}
	if err := k8s.Get(context.Background(), keyOf("", name), app); err != nil {
		t.Fatal(err)
	}
	app.Spec.TenantGrants = grants
	if err := k8s.Update(context.Background(), app); err != nil {
		t.Fatal(err)
	}
}

// withdrawGrant leaves the harness's app granting another tenant only.
func (h *harness) withdrawGrant() {
	h.t.Helper()
	setClusterAppGrants(h.t, h.clusterAppName(), v1alpha1.TenantGrant{Namespaces: []string{h.ns}, TenantIDs: []string{otherTenantID}})
}

// startReadyCertificateTenant is the common start: a tenant of a certificate
// ClusterDefenderApp with its token published.
func (h *harness) startReadyCertificateTenant() {
	h.t.Helper()
	h.startCertificateApp()
	h.reconcile()
	h.expectReady()
}

// withdrawAndExpectRevoked withdraws the grant and expects the next reconcile to
// leave the tenant AppNotAllowed and without any token Secret.
func (h *harness) withdrawAndExpectRevoked() {
	h.t.Helper()
	h.withdrawGrant()
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonAppNotAllowed)
	h.expectNoTokenSecrets()
}

// expectNoTokenSecrets fails if any Secret of the namespace carries the operator's
// labels for the tenant: what revocation must leave.
func (h *harness) expectNoTokenSecrets() {
	h.t.Helper()
	var secrets corev1.SecretList
	if err := k8s.List(h.ctx, &secrets, client.InNamespace(h.ns), client.MatchingLabels{v1alpha1.LabelTenant: tenantName}); err != nil {
		h.t.Fatal(err)
	}
	for _, s := range secrets.Items {
		h.t.Errorf("token Secret %s (minted under %q) outlived the grant", s.Name, s.Annotations[v1alpha1.AnnotationApp])
	}
}

func TestWithdrawalAfterARenamedTokenSecretDeletesTheFormerOne(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	// The new name is taken, so the token stays under the old one: SecretConflict.
	taken := createCredentialIn(t, h.ns, "taken", map[string][]byte{"note": []byte("someone else's")})
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.TokenSecretName = taken.Name })
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonSecretConflict)
	if h.tokenSecret(tenantName+"-token") == nil {
		t.Fatal("the token Secret under the former name is gone before the withdrawal; the test proves nothing")
	}

	h.withdrawAndExpectRevoked()
	if s := h.tokenSecret(taken.Name); s == nil || s.ResourceVersion != taken.ResourceVersion {
		t.Error("the Secret that held the new name was changed or deleted; it is not the tenant's")
	}
}

func TestSwitchedAppRefWithdrawsTheTokenOfTheFormerApp(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	if app := h.tokenSecret(tenantName + "-token").Annotations[v1alpha1.AnnotationApp]; app != "ClusterDefenderApp/"+h.clusterAppName() {
		t.Fatalf("token Secret annotation %s = %q, want the app it was minted under", v1alpha1.AnnotationApp, app)
	}

	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.AppRef.Name = "does-not-exist" })
	h.reconcile()
	h.expectNoTokenSecrets()
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonAppNotFound)

	h.withdrawGrant()
	h.reconcile()
	h.expectNoTokenSecrets()
	h.expectRequests(1)
}

func TestSwitchingToAnotherClusterAppMintsWithIt(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	second := &v1alpha1.ClusterDefenderApp{}
	if err := k8s.Get(h.ctx, keyOf("", h.clusterAppName()), second); err != nil {
		t.Fatal(err)
	}
	second.ObjectMeta = metav1.ObjectMeta{Name: h.clusterAppName() + "-second"}
	if err := k8s.Create(h.ctx, second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), second) })

	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.AppRef.Name = second.Name })
	h.reconcile()
	h.reconcile()

	h.expectReady()
	if app := h.tokenSecret(tenantName + "-token").Annotations[v1alpha1.AnnotationApp]; app != "ClusterDefenderApp/"+second.Name {
		t.Errorf("token Secret minted under %q, want the app the tenant switched to", app)
	}
	h.expectRequests(2)
}

func TestWithdrawalReachesASuspendedTenant(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	h.setSuspend(true)

	h.withdrawAndExpectRevoked()
}

// The token Secret the cache has not seen recorded in the tenant's status (the
// status write of the mint is still on its way) is withdrawn all the same.
func TestWithdrawalDeletesATokenSecretTheStatusHasNotRecorded(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	dt := h.tenant()
	dt.Status.TokenSecretUID, dt.Status.TokenSecretName = "", ""
	if err := k8s.Status().Update(h.ctx, dt); err != nil {
		t.Fatal(err)
	}

	h.withdrawAndExpectRevoked()
}

// A grant withdrawn while the first token request is in flight: the emulator holds
// its answer until the withdrawal is stored, so the run is the same every time.
func TestWithdrawalDuringTheFirstMintDeletesTheToken(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	const runs = 20
	for run := range runs {
		w := prepareWatchedApp(newWatchedIn(t), grantThisNamespace)
		release := make(chan struct{})
		managerEntra.InjectFailures(w.tenantID, entraemu.Held(release))
		w.createAppTenant()
		arrived, cancel := context.WithTimeout(t.Context(), watchTimeout)
		err := managerEntra.WaitForRequests(arrived, w.tenantID, 1)
		cancel()
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}

		setClusterAppGrants(t, w.app, v1alpha1.TenantGrant{Namespaces: []string{"someone-else"}, TenantIDs: []string{"*"}})
		withdrawn := time.Now()
		close(release)

		w.waitFor(fmt.Sprintf("run %d: grant withdrawn", run), notAllowedWithoutToken)
		// A figure for the reader, not a verdict: promptness belongs to make bench.
		t.Logf("run %d: AppNotAllowed without a token Secret %s after the withdrawal", run, time.Since(withdrawn).Round(time.Millisecond))
		var left corev1.SecretList
		if err := k8s.List(t.Context(), &left, client.InNamespace(w.ns), client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue}); err != nil {
			t.Fatal(err)
		}
		if n := len(left.Items); n != 0 {
			t.Errorf("run %d: %d token Secrets left after the withdrawal", run, n)
		}
		if n := managerEntra.Requests(w.tenantID); n != 1 {
			t.Errorf("run %d: token requests = %d, want the one held", run, n)
		}
	}
}

func TestGrantLimitedToOtherResourcesIsAppNotAllowed(t *testing.T) {
	requireControlPlane(t)
	const graph = "https://graph.microsoft.com"
	h := newHarness(t)
	c := h.validCertificate()
	h.entra.AddCertificate(testClientID, c.cert)
	h.entra.AddResource(graph)
	h.entra.Grant(testTenantID, testClientID, graph, "SecurityIncident.Read.All")
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential(), v1alpha1.TenantGrant{Namespaces: []string{h.ns}, TenantIDs: []string{testTenantID}, Resources: []string{graph}})
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectStalled(v1alpha1.ReasonAppNotAllowed, defenderAPI, graph)
	h.expectRequests(0)

	h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.Resource, dt.Spec.RequiredRoles = graph+"/", []string{"SecurityIncident.Read.All"}
	})
	h.reconcile()
	h.expectReady()
	h.expectRequests(1)
}

// A Secret the editor made, naming the tenant as its controller and a former app in
// the annotation but without the operator's labels, is not a token to revoke:
// revocation would not find it, and the tenant would be revoked every second.
func TestForgedAppAnnotationStartsNoRevocationLoop(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	forged := h.forgeFormerAppsToken(nil)

	res := h.reconcile()

	h.expectForgedSecretUntouched(forged, 0)
	if res.RequeueAfter < time.Minute {
		t.Errorf("RequeueAfter = %s: the tenant is looked at again at once, for a Secret it cannot revoke", res.RequeueAfter)
	}
}

// Suspended and renamed, the tenant publishes nothing and its status no longer
// names the Secret; then it switches apps. The token of the former app is found all
// the same, by the labels and controller reference the operator wrote.
func TestTokenStashedUnderAFormerNameIsWithdrawnOnAnAppSwitch(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Suspend, dt.Spec.TokenSecretName = true, "stash" })
	h.reconcile()
	if h.tokenSecret(tenantName+"-token") == nil {
		t.Fatal("the token Secret under the former name is gone before the switch; the test proves nothing")
	}

	h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindDefenderApp, Name: "local"}
	})
	h.reconcile()
	h.expectNoTokenSecrets()

	h.withdrawGrant()
	h.reconcile()
	h.expectNoTokenSecrets()
}

// Deleting a ClusterDefenderApp withdraws every grant it had.
func TestDeletedClusterAppWithdrawsItsTokens(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	if err := k8s.Delete(h.ctx, &v1alpha1.ClusterDefenderApp{ObjectMeta: metav1.ObjectMeta{Name: h.clusterAppName()}}); err != nil {
		t.Fatal(err)
	}

	h.reconcile()
	h.expectNoTokenSecrets()
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonAppNotFound)
	h.expectRequests(1)
}

// A token Secret held by a finalizer cannot be made to go; revoking it again every
// second would only load the operator.
func TestTokenSecretHeldByAFinalizerStartsNoRevocationLoop(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	forged := h.forgeFormerAppsToken(func(s *corev1.Secret) {
		s.Labels = map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: tenantName}
		s.Finalizers = []string{"example.com/hold"}
	})
	t.Cleanup(func() {
		s := &corev1.Secret{}
		if k8s.Get(context.Background(), client.ObjectKeyFromObject(forged), s) == nil {
			s.Finalizers = nil
			_ = k8s.Update(context.Background(), s)
		}
	})

	h.reconcile()
	if s := h.tokenSecret(forged.Name); s == nil || s.DeletionTimestamp == nil {
		t.Fatal("the first reconcile did not revoke the Secret; the test proves nothing")
	}
	res := h.reconcile()

	if res.RequeueAfter < time.Minute {
		t.Errorf("RequeueAfter = %s: the tenant is revoked again at once, for a Secret that cannot go", res.RequeueAfter)
	}
}

// forgeFormerAppsToken: an inline tenant, and a Secret under its token Secret's name
// that names it as controller and a ClusterDefenderApp it never used as the app.
func (h *harness) forgeFormerAppsToken(mutate func(*corev1.Secret)) *corev1.Secret {
	h.t.Helper()
	h.createCredential(testClientSecret)
	return h.forgeTokenSecret(h.createTenant(), func(s *corev1.Secret) {
		s.Annotations[v1alpha1.AnnotationApp] = "ClusterDefenderApp/elsewhere"
		if mutate != nil {
			mutate(s)
		}
	})
}
