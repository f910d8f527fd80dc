//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/selfsigned"
)

// TestPartnerAppsAsTheOperatorsServiceAccount runs the operator as its own
// ServiceAccount, with the rendered RBAC, serving two ClusterDefenderApps:
//   - one whose credential is workload identity federation: the operator asks the
//     API server for a token of the app's ServiceAccount in its own namespace, and
//     the emulated Entra ID accepts it because it verifies against the API server's
//     signing key and matches the app's federated credential. No secret exists
//     anywhere;
//   - one whose credential is a certificate in the operator's namespace, from which
//     the operator signs a client assertion per request.
//
// A third names the operator's own ServiceAccount, labelled for workload identity
// as an app's would be: the operator, which learns who it is from the API server,
// requests no token for it and reports ServiceAccountNotAllowed.
//
// Then neither the private key, nor an assertion, nor a ServiceAccount token may
// show in the operator's metrics, log, Events or any status.
func TestPartnerAppsAsTheOperatorsServiceAccount(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, "default")
	ctx := context.Background()
	const appSA, contosoNS, fabrikamNS, selfNS = "partner-app", "customer-contoso", "customer-fabrikam", "customer-self"
	workloadIdentityLabel := map[string]string{v1alpha1.LabelWorkloadIdentity: v1alpha1.WorkloadIdentityValue}
	if err := s.admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: s.operatorNamespace, Name: appSA, Labels: workloadIdentityLabel}}); err != nil {
		t.Fatal(err)
	}
	operatorSA := &corev1.ServiceAccount{}
	if err := s.admin.Get(ctx, client.ObjectKey{Namespace: s.operatorNamespace, Name: s.serviceAccount}, operatorSA); err != nil {
		t.Fatal(err)
	}
	operatorSA.Labels = workloadIdentityLabel
	if err := s.admin.Update(ctx, operatorSA); err != nil {
		t.Fatal(err)
	}
	issuer := serviceAccountIssuer(t, s, appSA)
	keys, err := s.cluster.ServiceAccountKeys()
	if err != nil {
		t.Fatal(err)
	}
	s.emu.SetIssuerKeys(issuer, keys)
	subject := "system:serviceaccount:" + s.operatorNamespace + ":" + appSA
	s.emu.AddFederatedCredential(sandboxClientID, entraemu.FederatedCredential{Issuer: issuer, Subject: subject})
	cert, err := selfsigned.New("partner-app", time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	s.emu.AddCertificate(sandboxClientID, cert.Cert)
	if err := s.admin.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.operatorNamespace, Name: "partner-app-cert"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert.CertPEM, corev1.TLSPrivateKeyKey: cert.KeyPEM},
	}); err != nil {
		t.Fatal(err)
	}

	apps := []struct {
		name, namespace, tenant string
		credential              v1alpha1.AppCredential
	}{
		{"partner", contosoNS, tenantID(0), v1alpha1.AppCredential{
			WorkloadIdentity: &v1alpha1.WorkloadIdentityCredential{ServiceAccountName: appSA},
		}},
		{"partner-cert", fabrikamNS, tenantID(1), v1alpha1.AppCredential{
			Certificate: &v1alpha1.CertificateCredential{SecretRef: v1alpha1.AppSecretReference{Name: "partner-app-cert"}},
		}},
	}
	selfApp := struct {
		name, namespace, tenant string
		credential              v1alpha1.AppCredential
	}{"partner-self", selfNS, tenantID(2), v1alpha1.AppCredential{
		WorkloadIdentity: &v1alpha1.WorkloadIdentityCredential{ServiceAccountName: s.serviceAccount},
	}}
	// Entra would accept a token of the operator's own ServiceAccount: only the
	// operator's refusal keeps it in the cluster.
	s.emu.AddFederatedCredential(sandboxClientID, entraemu.FederatedCredential{Issuer: issuer, Subject: "system:serviceaccount:" + s.operatorNamespace + ":" + s.serviceAccount})
	for _, a := range append(slices.Clone(apps), selfApp) {
		s.addConsentedTenant(a.tenant)
		app := &v1alpha1.ClusterDefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: a.name},
			Spec: v1alpha1.ClusterDefenderAppSpec{
				AppSpec:      v1alpha1.AppSpec{ClientID: sandboxClientID, Credential: a.credential},
				TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{a.namespace}, TenantIDs: []string{a.tenant}}},
			},
		}
		if err := s.admin.Create(ctx, app); err != nil {
			t.Fatal(err)
		}
		s.createNamespace(t, a.namespace)
		dt := &v1alpha1.DefenderTenant{
			ObjectMeta: metav1.ObjectMeta{Namespace: a.namespace, Name: "customer"},
			Spec: v1alpha1.DefenderTenantSpec{
				TenantID:      a.tenant,
				AppRef:        &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: a.name},
				RequiredRoles: grantedRoles,
			},
		}
		if err := s.admin.Create(ctx, dt); err != nil {
			t.Fatal(err)
		}
	}
	op := s.startOperator(t, "operator", "--cluster-resource-namespace", s.operatorNamespace)

	for _, a := range apps {
		t.Run(string(a.credential.Kind()), func(t *testing.T) {
			waitFor(t, 30*time.Second, a.namespace+" is Ready", func() error { return readyError(s.admin, a.namespace, "customer") }, op)
			secret := tokenSecrets(t, s.admin, a.namespace)["customer-token"]
			if secret == nil {
				t.Fatal("customer-token was not published")
			}
			if err := checkTokenSecret(secret, s.signingKeys(t), a.tenant); err != nil {
				t.Error(err)
			}
			if got := s.emu.Requests(a.tenant); got != 1 {
				t.Errorf("token requests = %d, want 1", got)
			}
		})
	}
	t.Run("the operator's own ServiceAccount", func(t *testing.T) {
		waitFor(t, 30*time.Second, selfApp.namespace+" is ServiceAccountNotAllowed", func() error {
			return conditionError(s.admin, selfApp.namespace, "customer", metav1.ConditionFalse, v1alpha1.ReasonServiceAccountNotAllowed)
		}, op)
		app := &v1alpha1.ClusterDefenderApp{}
		if err := s.admin.Get(ctx, client.ObjectKey{Name: selfApp.name}, app); err != nil {
			t.Fatal(err)
		}
		ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
		if ready == nil || ready.Reason != v1alpha1.ReasonServiceAccountNotAllowed || !strings.Contains(ready.Message, "the operator's own") {
			t.Errorf("ClusterDefenderApp %s Ready = %+v, want %s naming the operator's own ServiceAccount", selfApp.name, ready, v1alpha1.ReasonServiceAccountNotAllowed)
		}
		if app.Status.FederatedCredential != nil {
			t.Errorf("federatedCredential %+v: a token of the operator's own ServiceAccount was requested", app.Status.FederatedCredential)
		}
		if got := s.emu.Requests(selfApp.tenant); got != 0 {
			t.Errorf("token requests = %d, want 0", got)
		}
		if secrets := tokenSecrets(t, s.admin, selfApp.namespace); len(secrets) > 0 {
			t.Errorf("%d token Secrets published in %s", len(secrets), selfApp.namespace)
		}
	})
	if leaked := tokenSecrets(t, s.admin, s.operatorNamespace); len(leaked) > 0 {
		t.Errorf("token Secrets in the operator's namespace: %d", len(leaked))
	}
	if denials := op.logLines("forbidden"); len(denials) > 0 {
		t.Errorf("the operator was denied something it tried:\n%s", strings.Join(denials, "\n"))
	}

	t.Run("no private key, assertion or ServiceAccount token in metrics, log, Events or status", func(t *testing.T) {
		for source, text := range s.everythingTheOperatorShows(t, op) {
			// The assertions and the ServiceAccount tokens the operator sent are JWTs.
			if jwtPattern.MatchString(text) {
				t.Errorf("%s contains a JWT", source)
			}
			if strings.Contains(text, "PRIVATE KEY") {
				t.Errorf("%s contains a PEM private key", source)
			}
			for line := range strings.Lines(string(cert.KeyPEM)) {
				if line = strings.TrimSpace(line); !strings.HasPrefix(line, "-----") && strings.Contains(text, line) {
					t.Errorf("%s contains a line of the certificate's private key", source)
					break
				}
			}
		}
	})
}

// everythingTheOperatorShows is what anyone but the operator may read of what it
// did: its metrics, its log, the Events and the status of every tenant and app.
func (s *sandbox) everythingTheOperatorShows(t *testing.T, op *operator) map[string]string {
	t.Helper()
	ctx := context.Background()
	resp, err := http.Get(op.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	metrics, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(op.log)
	if err != nil {
		t.Fatal(err)
	}
	events := &eventsv1.EventList{}
	tenants := &v1alpha1.DefenderTenantList{}
	apps := &v1alpha1.ClusterDefenderAppList{}
	for _, list := range []client.ObjectList{events, tenants, apps} {
		if err := s.admin.List(ctx, list); err != nil {
			t.Fatal(err)
		}
	}
	if len(metrics) == 0 || len(logs) == 0 || len(events.Items) == 0 {
		t.Fatalf("nothing to check: %d bytes of metrics, %d of log, %d Events", len(metrics), len(logs), len(events.Items))
	}
	return map[string]string{
		"/metrics":                string(metrics),
		"the operator log":        string(logs),
		"the Events":              mustJSON(events.Items),
		"the DefenderTenants":     mustJSON(tenants.Items),
		"the ClusterDefenderApps": mustJSON(apps.Items),
	}
}

// serviceAccountIssuer is the iss of the tokens the control plane issues.
func serviceAccountIssuer(t *testing.T, s *sandbox, sa string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.cluster.Admin)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(s.operatorNamespace).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"probe"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tr.Status.Token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || claims.Iss == "" {
		t.Fatalf("no iss in the control plane's ServiceAccount token: %v", err)
	}
	return claims.Iss
}
