//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// TestWorkloadIdentityAsTheOperatorsServiceAccount runs the operator as its own
// ServiceAccount, with the rendered RBAC, serving a ClusterDefenderApp whose
// credential is workload identity federation: the operator asks the API server for a
// token of the app's ServiceAccount in its own namespace, and the emulated Entra ID
// accepts it because it verifies against the API server's signing key and matches
// the app's federated credential. No secret exists anywhere.
func TestWorkloadIdentityAsTheOperatorsServiceAccount(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, "default")
	ctx := context.Background()
	const appSA, customerNS = "partner-app", "customer-contoso"
	if err := s.admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: s.operatorNamespace, Name: appSA}}); err != nil {
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
	s.addConsentedTenant(tenantID(0))

	app := &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: "partner"},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec: v1alpha1.AppSpec{ClientID: sandboxClientID, Credential: v1alpha1.AppCredential{
				WorkloadIdentity: &v1alpha1.WorkloadIdentityCredential{ServiceAccountName: appSA},
			}},
			TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{customerNS}, TenantIDs: []string{tenantID(0)}}},
		},
	}
	if err := s.admin.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	s.createNamespace(t, customerNS)
	dt := &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Namespace: customerNS, Name: "contoso"},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:      tenantID(0),
			AppRef:        &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"},
			RequiredRoles: grantedRoles,
		},
	}
	if err := s.admin.Create(ctx, dt); err != nil {
		t.Fatal(err)
	}
	op := s.startOperator(t, "operator", "--cluster-resource-namespace", s.operatorNamespace)

	waitFor(t, 30*time.Second, "contoso is Ready", func() error { return readyError(s.admin, customerNS, "contoso") }, op)
	secret := tokenSecrets(t, s.admin, customerNS)["contoso-token"]
	if secret == nil {
		t.Fatal("contoso-token was not published")
	}
	if err := checkTokenSecret(secret, s.signingKeys(t), tenantID(0)); err != nil {
		t.Error(err)
	}
	if got := s.emu.Requests(tenantID(0)); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if leaked := tokenSecrets(t, s.admin, s.operatorNamespace); len(leaked) > 0 {
		t.Errorf("token Secrets in the operator's namespace: %d", len(leaked))
	}
	// The ServiceAccount tokens the operator sent are JWTs: none may show anywhere.
	logs, err := os.ReadFile(op.log)
	if err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.DefenderTenant{}
	if err := s.admin.Get(ctx, client.ObjectKeyFromObject(dt), got); err != nil {
		t.Fatal(err)
	}
	for source, text := range map[string]string{"the operator log": string(logs), "the status": mustJSON(got.Status)} {
		if jwtPattern.MatchString(text) {
			t.Errorf("%s contains a JWT", source)
		}
	}
	if denials := op.logLines("forbidden"); len(denials) > 0 {
		t.Errorf("the operator was denied something it tried:\n%s", strings.Join(denials, "\n"))
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
