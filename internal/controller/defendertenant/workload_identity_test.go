package defendertenant

import (
	"context"
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
)

func TestOperatorServiceAccountIsWhomTheAPIServerAuthenticates(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	asUser := func(user string) *rest.Config {
		cfg := rest.CopyConfig(restConfig)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
		return cfg
	}
	for _, tt := range []struct {
		config *rest.Config
		want   types.NamespacedName
	}{
		{asUser("system:serviceaccount:operator-ns:controller-manager"), keyOf("operator-ns", "controller-manager")},
		{asUser("jane"), types.NamespacedName{}},
		{restConfig, types.NamespacedName{}},
	} {
		got, err := credential.OperatorServiceAccount(t.Context(), tt.config)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("as %q: OperatorServiceAccount = %q, want %q", tt.config.Impersonate.UserName, got, tt.want)
		}
	}
}

// apiServerAudience is the audience the test API server accepts its own
// ServiceAccount tokens for (its --api-audiences): the one a TokenRequest that
// names none is given. The API server authenticates such a token, which is what
// makes it dangerous anywhere else.
func apiServerAudience(t *testing.T, ns string) string {
	t.Helper()
	ctx := context.Background()
	probe := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "audience-probe"}}
	if err := k8s.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	request := &authenticationv1.TokenRequest{}
	if err := k8s.SubResource("token").Create(ctx, probe, request); err != nil {
		t.Fatal(err)
	}
	review := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: request.Status.Token}}
	if err := k8s.Create(ctx, review); err != nil || !review.Status.Authenticated {
		t.Fatalf("the API server does not authenticate its own token without audiences: %v %+v", err, review.Status)
	}
	jws, err := jose.ParseSignedCompact(request.Status.Token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Audience jwt.Audience `json:"aud"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || len(claims.Audience) == 0 {
		t.Fatalf("no aud in the API server's token: %v", err)
	}
	return claims.Audience[0]
}

func (h *harness) updateClusterApp(mutate func(*v1alpha1.ClusterDefenderApp)) {
	h.t.Helper()
	app := h.app(v1alpha1.AppKindClusterDefenderApp).(*v1alpha1.ClusterDefenderApp)
	mutate(app)
	if err := k8s.Update(h.ctx, app); err != nil {
		h.t.Fatal(err)
	}
}

// otherWorkloadSAName is a second labelled ServiceAccount, the fix for an app
// that names the operator's own.
const otherWorkloadSAName = "partner-app-2"

// refusedWorkloadIdentity is a workload identity the operator must request no
// token of, and the fix its message asks for.
type refusedWorkloadIdentity struct {
	name string
	// start creates the ClusterDefenderApp and ServiceAccounts, and returns the
	// operator's own ServiceAccount, for the reconcilers.
	start func(h *harness) types.NamespacedName
	// inMessage is what the message must say: what is wrong and what to do.
	inMessage func(h *harness) []string
	fix       func(h *harness)
}

var refusedWorkloadIdentities = []refusedWorkloadIdentity{{
	name: "the API server's audience",
	start: func(h *harness) types.NamespacedName {
		h.createWorkloadSA()
		cred := federatedCredential()
		cred.WorkloadIdentity.Audience = apiServerAudience(h.t, h.ns)
		h.createClusterApp(cred)
		return types.NamespacedName{}
	},
	inMessage: func(h *harness) []string {
		audience := h.app(v1alpha1.AppKindClusterDefenderApp).AppSpec().Credential.WorkloadIdentity.Audience
		return []string{`"` + audience + `"`, "--workload-identity-audiences", "Use an allowed audience"}
	},
	fix: func(h *harness) {
		h.updateClusterApp(func(app *v1alpha1.ClusterDefenderApp) {
			app.Spec.Credential.WorkloadIdentity.Audience = v1alpha1.DefaultWorkloadIdentityAudience
		})
	},
}, {
	name: "the operator's own ServiceAccount",
	start: func(h *harness) types.NamespacedName {
		h.createWorkloadSA()
		h.createServiceAccount(otherWorkloadSAName, map[string]string{v1alpha1.LabelWorkloadIdentity: v1alpha1.WorkloadIdentityValue})
		h.createClusterApp(federatedCredential())
		return keyOf(h.crn, workloadSAName)
	},
	inMessage: func(h *harness) []string {
		return []string{`"` + workloadSAName + `"`, `namespace "` + h.crn + `"`, "the operator's own", "Use another ServiceAccount"}
	},
	fix: func(h *harness) {
		h.updateClusterApp(func(app *v1alpha1.ClusterDefenderApp) {
			app.Spec.Credential.WorkloadIdentity.ServiceAccountName = otherWorkloadSAName
		})
	},
}, {
	name: "an unlabelled ServiceAccount",
	start: func(h *harness) types.NamespacedName {
		h.createServiceAccount(workloadSAName, nil)
		h.createClusterApp(federatedCredential())
		return types.NamespacedName{}
	},
	inMessage: func(h *harness) []string {
		return []string{`"` + workloadSAName + `"`, `namespace "` + h.crn + `"`, v1alpha1.LabelWorkloadIdentity + `: "true"`, "label serviceaccount"}
	},
	fix: func(h *harness) {
		sa := &corev1.ServiceAccount{}
		if err := k8s.Get(h.ctx, keyOf(h.crn, workloadSAName), sa); err != nil {
			h.t.Fatal(err)
		}
		sa.Labels = map[string]string{v1alpha1.LabelWorkloadIdentity: v1alpha1.WorkloadIdentityValue}
		if err := k8s.Update(h.ctx, sa); err != nil {
			h.t.Fatal(err)
		}
	},
}}

// The app reports the refusal without asking the TokenRequest API for a token;
// once fixed as its message says, the same reconciler asks once and is Ready.
func TestAppWorkloadIdentityTheOperatorMayNotUseIsServiceAccountNotAllowed(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range refusedWorkloadIdentities {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			operator := tt.start(h)
			tokens := &issuedTokens{}
			r := h.appReconciler(v1alpha1.AppKindClusterDefenderApp, tokens)
			r.Credentials.OperatorServiceAccount = operator
			h.reconcileApp(r)

			app := h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonServiceAccountNotAllowed, tt.inMessage(h)...)
			if f := app.AppStatus().FederatedCredential; f != nil {
				t.Errorf("federatedCredential = %+v for a ServiceAccount the operator may not use", f)
			}
			if n := tokens.requests(); n != 0 {
				t.Fatalf("%d TokenRequests made for a ServiceAccount the operator may not use", n)
			}
			if evs := h.drainEvents(); countWithPrefix(evs, "Warning "+v1alpha1.ReasonServiceAccountNotAllowed) != 1 {
				t.Errorf("events = %v, want one Warning %s", evs, v1alpha1.ReasonServiceAccountNotAllowed)
			}

			tt.fix(h)
			h.reconcileApp(r)
			app = h.expectApp(v1alpha1.AppKindClusterDefenderApp, v1alpha1.ReasonCredentialReady)
			if app.AppStatus().FederatedCredential == nil {
				t.Error("no federatedCredential once fixed")
			}
			if n := tokens.requests(); n != 1 {
				t.Errorf("%d TokenRequests once fixed, want 1", n)
			}
		})
	}
}

// A tenant of such an app shows the app's reason, with the app's name and the
// fix, and neither a ServiceAccount token nor an Entra ID token is requested;
// once fixed, one of each is, and the token is published.
func TestWorkloadIdentityTheOperatorMayNotUseMakesNoTokenRequest(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range refusedWorkloadIdentities {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.federate(h.workloadSubject(), serviceAccountSubject(h.crn, otherWorkloadSAName))
			h.r.Credentials.OperatorServiceAccount = tt.start(h)
			tokens := &issuedTokens{}
			h.r.Credentials.Client = tokenRecordingClient{Client: k8s, tokens: tokens}
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
			h.reconcile()

			h.expectStalled(v1alpha1.ReasonServiceAccountNotAllowed, append(tt.inMessage(h), "ClusterDefenderApp "+h.clusterAppName())...)
			h.expectRequests(0)
			if n := tokens.requests(); n != 0 {
				t.Fatalf("%d TokenRequests made for a ServiceAccount the operator may not use", n)
			}
			if h.tokenSecret(tenantName+"-token") != nil {
				t.Error("a token Secret was published")
			}

			tt.fix(h)
			h.reconcile()
			h.expectAssertionCredentialToken("a federated credential")
			if n := tokens.requests(); n != 1 {
				t.Errorf("%d TokenRequests once fixed, want 1", n)
			}
		})
	}
}
