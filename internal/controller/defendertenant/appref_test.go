package defendertenant

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
	"github.com/tenantcreds/defender-tenant-operator/internal/selfsigned"
)

const (
	appName        = "partner"
	certSecretName = "partner-cert"
	workloadSAName = "partner-app"
)

// testCertificate is a self-signed RSA certificate and its key, in PEM.
type testCertificate struct {
	cert            *x509.Certificate
	certPEM, keyPEM []byte
}

func newTestCertificate(t *testing.T, notBefore, notAfter time.Time) testCertificate {
	t.Helper()
	c, err := selfsigned.New("partner-app", notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return testCertificate{cert: c.Cert, certPEM: c.CertPEM, keyPEM: c.KeyPEM}
}

// validCertificate is valid for a year around the harness's clock.
func (h *harness) validCertificate() testCertificate {
	now := h.clock.Now()
	return newTestCertificate(h.t, now.Add(-time.Hour), now.AddDate(1, 0, 0))
}

func (h *harness) storeCertificate(ns string, c testCertificate) {
	h.t.Helper()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: certSecretName},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: c.certPEM, corev1.TLSPrivateKeyKey: c.keyPEM},
	}
	if err := k8s.Create(h.ctx, secret); err != nil {
		h.t.Fatal(err)
	}
}

// clusterAppName is unique per test: ClusterDefenderApps are cluster-scoped.
func (h *harness) clusterAppName() string { return h.ns }

func (h *harness) createClusterApp(cred v1alpha1.AppCredential, grants ...v1alpha1.TenantGrant) {
	h.t.Helper()
	if len(grants) == 0 {
		grants = []v1alpha1.TenantGrant{{Namespaces: []string{h.ns}, TenantIDs: []string{testTenantID}}}
	}
	app := &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: h.clusterAppName()},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec:      v1alpha1.AppSpec{ClientID: testClientID, Credential: cred},
			TenantGrants: grants,
		},
	}
	if err := k8s.Create(h.ctx, app); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = k8s.Delete(context.Background(), app) })
}

func certCredential() v1alpha1.AppCredential {
	return v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{SecretRef: v1alpha1.AppSecretReference{Name: certSecretName}}}
}

func federatedCredential() v1alpha1.AppCredential {
	return v1alpha1.AppCredential{WorkloadIdentity: &v1alpha1.WorkloadIdentityCredential{ServiceAccountName: workloadSAName}}
}

// createAppTenant creates the harness's tenant with an appRef instead of the inline form.
func (h *harness) createAppTenant(kind v1alpha1.AppKind, name string) {
	h.t.Helper()
	h.createTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
		dt.Spec.AppRef = &v1alpha1.AppReference{Kind: kind, Name: name}
	})
}

// startCertificateApp: a ClusterDefenderApp with a registered certificate, granting
// the harness's namespace and tenant, and the tenant using it.
func (h *harness) startCertificateApp() {
	h.t.Helper()
	c := h.validCertificate()
	h.entra.AddCertificate(testClientID, c.cert)
	h.storeCertificate(h.crn, c)
	h.createClusterApp(certCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
}

func (h *harness) expectRequests(want int) {
	h.t.Helper()
	if got := h.entra.Requests(testTenantID); got != want {
		h.t.Errorf("token requests = %d, want %d", got, want)
	}
}

func (h *harness) expectStalled(reason string, inMessage ...string) {
	h.t.Helper()
	dt := h.tenant()
	expectCondition(h.t, dt, v1alpha1.ConditionReady, metav1.ConditionFalse, reason)
	expectCondition(h.t, dt, v1alpha1.ConditionStalled, metav1.ConditionTrue, reason)
	if c := condition(dt, v1alpha1.ConditionReady); c != nil {
		for _, want := range inMessage {
			if !strings.Contains(c.Message, want) {
				h.t.Errorf("message %q does not mention %q", c.Message, want)
			}
		}
	}
}

func (h *harness) expectReady() {
	h.t.Helper()
	expectCondition(h.t, h.tenant(), v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
}

func TestDefenderAppWithAClientSecretServesItsNamespace(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	app := &v1alpha1.DefenderApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: appName},
		Spec: v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{
			ClientID:                testClientID,
			Credential:              v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: credentialName}}},
			AdminConsentRedirectURI: "https://portal.azure.com",
		}},
	}
	if err := k8s.Create(h.ctx, app); err != nil {
		t.Fatal(err)
	}
	h.createAppTenant(v1alpha1.AppKindDefenderApp, appName)
	h.reconcile()

	h.expectReady()
	h.expectRequests(1)
	if got := h.tenant().Status.AdminConsentURL; !strings.HasSuffix(got, "&redirect_uri=https%3A%2F%2Fportal.azure.com") {
		t.Errorf("adminConsentURL %q lacks the app's redirect_uri", got)
	}
	if h.tokenSecret(tenantName+"-token") == nil {
		t.Fatal("no token Secret published")
	}
}

func TestClusterDefenderAppWithACertificateSendsASignedAssertion(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startCertificateApp()
	h.reconcile()

	h.expectAssertionCredentialToken("a certificate credential")
}

// expectAssertionCredentialToken: one request, and a published token that Entra
// marks as minted with an assertion (appidacr "2"), not a secret.
func (h *harness) expectAssertionCredentialToken(assertion string) {
	h.t.Helper()
	h.expectReady()
	h.expectRequests(1)
	secret := h.tokenSecret(tenantName + "-token")
	if secret == nil {
		h.t.Fatal("no token Secret published")
	}
	claims := tokenClaims(h.t, string(secret.Data[v1alpha1.TokenSecretKeyAccessToken]))
	if claims["appidacr"] != "2" {
		h.t.Errorf("appidacr = %v, want \"2\" (%s)", claims["appidacr"], assertion)
	}
}

// tokenClaims decodes a JWT's payload without verifying it: the test only looks at
// what the emulator put there.
func tokenClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestClusterDefenderAppCredentialIsNeverReadFromTheTenantNamespace(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	c := h.validCertificate()
	h.entra.AddCertificate(testClientID, c.cert)
	h.storeCertificate(h.ns, c) // a copy where customers could put one: not where the app's lives
	h.createClusterApp(certCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectStalled(v1alpha1.ReasonCredentialsNotFound, h.crn, certSecretName)
	h.expectRequests(0)
}

func TestUngrantedTenantsMakeNoTokenRequest(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range []struct {
		name  string
		grant func(h *harness) v1alpha1.TenantGrant
	}{
		{"namespace not granted", func(h *harness) v1alpha1.TenantGrant {
			return v1alpha1.TenantGrant{Namespaces: []string{"someone-else"}, TenantIDs: []string{"*"}}
		}},
		{"tenant not granted", func(h *harness) v1alpha1.TenantGrant {
			return v1alpha1.TenantGrant{Namespaces: []string{h.ns}, TenantIDs: []string{otherTenantID}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.validCertificate()
			h.entra.AddCertificate(testClientID, c.cert)
			h.storeCertificate(h.crn, c)
			h.createClusterApp(certCredential(), tt.grant(h))
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
			h.reconcile()

			h.expectStalled(v1alpha1.ReasonAppNotAllowed, h.clusterAppName(), h.ns, testTenantID)
			h.expectRequests(0)
		})
	}
}

func TestWithdrawnGrantDeletesTheTokenSecret(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startReadyCertificateTenant()
	h.withdrawAndExpectRevoked()
	h.expectRequests(1)
}

func TestGrantBySelectorFollowsNamespaceLabels(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	c := h.validCertificate()
	h.entra.AddCertificate(testClientID, c.cert)
	h.storeCertificate(h.crn, c)
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{"defender.tenantcreds.io/customer": h.ns}}
	h.createClusterApp(certCredential(), v1alpha1.TenantGrant{NamespaceSelector: selector, TenantIDs: []string{testTenantID}})
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonAppNotAllowed)

	h.labelNamespace(map[string]string{"defender.tenantcreds.io/customer": h.ns})
	h.reconcile()
	h.expectReady()

	h.labelNamespace(nil)
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonAppNotAllowed)
	if h.tokenSecret(tenantName+"-token") != nil {
		t.Error("the token Secret outlived the label that granted it")
	}
}

func (h *harness) labelNamespace(labels map[string]string) {
	h.t.Helper()
	ns := &corev1.Namespace{}
	if err := k8s.Get(h.ctx, keyOf("", h.ns), ns); err != nil {
		h.t.Fatal(err)
	}
	ns.Labels = labels
	if err := k8s.Update(h.ctx, ns); err != nil {
		h.t.Fatal(err)
	}
}

func TestMissingAppIsReportedUntilItIsCreated(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	c := h.validCertificate()
	h.entra.AddCertificate(testClientID, c.cert)
	h.storeCertificate(h.crn, c)
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()
	h.expectStalled(v1alpha1.ReasonAppNotFound, "ClusterDefenderApp "+h.clusterAppName())
	h.expectRequests(0)

	h.createClusterApp(certCredential())
	h.reconcile()
	h.expectReady()
}

func TestUnregisteredCertificateIsAnInvalidClientAssertion(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	c := h.validCertificate()
	h.storeCertificate(h.crn, c) // never uploaded to the app registration
	h.createClusterApp(certCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectStalled(v1alpha1.ReasonInvalidClientAssertion)
	if f := h.tenant().Status.LastFailure; f == nil || f.Code != "AADSTS700027" {
		t.Errorf("lastFailure = %+v, want code AADSTS700027", f)
	}
}

func TestUnusableCertificatesMakeNoTokenRequest(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range []struct {
		name   string
		cert   func(h *harness) testCertificate
		reason string
	}{
		{"expired", func(h *harness) testCertificate {
			now := h.clock.Now()
			return newTestCertificate(h.t, now.AddDate(-1, 0, 0), now.Add(-time.Minute))
		}, v1alpha1.ReasonCertificateExpired},
		{"key of another certificate", func(h *harness) testCertificate {
			c, other := h.validCertificate(), h.validCertificate()
			c.keyPEM = other.keyPEM
			return c
		}, v1alpha1.ReasonInvalidCertificate},
		{"not PEM", func(h *harness) testCertificate {
			c := h.validCertificate()
			c.certPEM = []byte("not a certificate")
			return c
		}, v1alpha1.ReasonInvalidCertificate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := tt.cert(h)
			if c.cert != nil {
				h.entra.AddCertificate(testClientID, c.cert)
			}
			h.storeCertificate(h.crn, c)
			h.createClusterApp(certCredential())
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
			h.reconcile()

			h.expectStalled(tt.reason, h.clusterAppName())
			h.expectRequests(0)
			if msg := condition(h.tenant(), v1alpha1.ConditionReady).Message; strings.Contains(msg, "PRIVATE KEY") {
				t.Errorf("the message carries key material: %q", msg)
			}
		})
	}
}

// federate registers the API server as the issuer of federated credentials of the
// app, one per ServiceAccount subject, as an admin does in the app registration.
func (h *harness) federate(subjects ...string) {
	h.t.Helper()
	// The API server stamps its tokens with the real time, and Entra checks them
	// against its own: the emulator's clock must be real-time too.
	h.clock.SetTime(time.Now())
	issuer, keys := apiServerIssuer(h.t, h.crn)
	h.entra.SetIssuerKeySource(issuer, keys)
	for _, subject := range subjects {
		h.entra.AddFederatedCredential(testClientID, entraemu.FederatedCredential{Issuer: issuer, Subject: subject})
	}
}

// apiServerIssuer learns the test API server's service-account issuer from a token
// it issues, and returns its verification key as kube-apiserver publishes it in
// /openid/v1/jwks. envtest's API server serves no OIDC discovery, so the key is read
// from the file it signs with rather than from that endpoint.
func apiServerIssuer(t *testing.T, ns string) (string, entraemu.KeySource) {
	t.Helper()
	ctx := context.Background()
	probe := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "issuer-probe"}}
	if err := k8s.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	r := &credential.Reader{Client: k8s}
	token, err := r.ServiceAccountToken(ctx, credential.WorkloadIdentity{ServiceAccount: keyOf(ns, probe.Name), Audience: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || claims.Iss == "" {
		t.Fatalf("no issuer in the API server's token: %v", err)
	}
	keys, err := localcluster.ServiceAccountKeySet(serviceAccountSigner)
	if err != nil {
		t.Fatal(err)
	}
	return claims.Iss, func(context.Context) (jose.JSONWebKeySet, error) { return keys, nil }
}

// createWorkloadSA creates the ServiceAccount of federatedCredential, labelled for
// workload identity.
func (h *harness) createWorkloadSA() {
	h.t.Helper()
	h.createServiceAccount(workloadSAName, map[string]string{v1alpha1.LabelWorkloadIdentity: v1alpha1.WorkloadIdentityValue})
}

func (h *harness) createServiceAccount(name string, labels map[string]string) {
	h.t.Helper()
	if err := k8s.Create(h.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: h.crn, Name: name, Labels: labels}}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) workloadSubject() string {
	return serviceAccountSubject(h.crn, workloadSAName)
}

func serviceAccountSubject(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

func TestWorkloadIdentitySendsTheServiceAccountsToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.federate(h.workloadSubject())
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectAssertionCredentialToken("a federated credential")
}

func TestWorkloadIdentitySubjectMismatchIsAnInvalidClientAssertion(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.federate("system:serviceaccount:" + h.crn + ":someone-else")
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectStalled(v1alpha1.ReasonInvalidClientAssertion, "subject")
	h.expectRequests(1)
}

func TestMissingServiceAccountMakesNoTokenRequest(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.federate(h.workloadSubject())
	h.createClusterApp(federatedCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectStalled(v1alpha1.ReasonServiceAccountNotFound, workloadSAName, h.crn, h.clusterAppName())
	h.expectRequests(0)

	h.createWorkloadSA()
	h.reconcile()
	h.expectReady()
}

// withoutServiceAccountTokens is the operator's client, except that its
// TokenRequests are made as a user no RBAC rule lets create ServiceAccount tokens,
// as an operator without the cluster resource namespace's Role binding is.
type withoutServiceAccountTokens struct {
	client.Client
	unprivileged client.Client
}

func (c withoutServiceAccountTokens) SubResource(subResource string) client.SubResourceClient {
	return c.unprivileged.SubResource(subResource)
}

func newWithoutServiceAccountTokens(t *testing.T) withoutServiceAccountTokens {
	t.Helper()
	unprivileged := rest.CopyConfig(restConfig)
	unprivileged.Impersonate = rest.ImpersonationConfig{UserName: "operator-without-the-role"}
	c, err := client.New(unprivileged, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	return withoutServiceAccountTokens{Client: k8s, unprivileged: c}
}

func TestTokenRequestTheOperatorMayNotMakeStallsAsServiceAccountNotFound(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.r.Credentials.Client = newWithoutServiceAccountTokens(t)
	h.federate(h.workloadSubject())
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	// The API server's own words say what was refused; the rest says how to fix it.
	h.expectStalled(v1alpha1.ReasonServiceAccountNotFound, "may not create tokens", "forbidden", "cluster_resources_role.yaml", workloadSAName, h.crn)
	h.expectRequests(0)
}

func TestRestartReusesTokensOfEveryCredentialKind(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range []struct {
		name  string
		start func(h *harness)
	}{
		{"certificate", func(h *harness) { h.startCertificateApp() }},
		{"workload identity", func(h *harness) {
			h.federate(h.workloadSubject())
			h.createWorkloadSA()
			h.createClusterApp(federatedCredential())
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.start(h)
			h.reconcile()
			h.expectReady()

			h.r = h.newReconciler(h.r.Authorities)
			h.clock.Step(time.Minute)
			h.reconcile()
			h.expectReady()
			h.expectRequests(1)
		})
	}
}

func TestCertificateRotationMintsANewToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startCertificateApp()
	h.reconcile()
	h.expectReady()

	rotated := h.validCertificate()
	h.entra.SetCertificates(testClientID, rotated.cert)
	secret := &corev1.Secret{}
	if err := k8s.Get(h.ctx, keyOf(h.crn, certSecretName), secret); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{corev1.TLSCertKey: rotated.certPEM, corev1.TLSPrivateKeyKey: rotated.keyPEM}
	if err := k8s.Update(h.ctx, secret); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(time.Minute)
	h.reconcile()

	h.expectReady()
	h.expectRequests(2)
}

func TestOperatorThatMayNotWatchClusterAppsServesNoneOfThem(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startCertificateApp()
	h.r.ClusterApps = false
	h.reconcile()

	h.expectStalled(v1alpha1.ReasonAppNotAllowed, "does not serve ClusterDefenderApps")
	h.expectRequests(0)
}
