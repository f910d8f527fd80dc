package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

// requestFailure is a token request that produced nothing to publish.
type requestFailure struct {
	problem *problem
	// code is what lastFailure.code shows: the AADSTS code, "HTTP <status>", or
	// "network"; empty when Entra ID answered with a token that was refused.
	code       string
	retryAfter time.Duration
	// roles are those of a refused token that lacks required roles; nil otherwise.
	roles *roleFacts
	// traceID and correlationID are Entra ID's, when it sent them; clientRequestID
	// is the request's client-request-id. Support and the customer tenant's
	// sign-in logs know the request by them. They go into lastFailure, never into
	// the condition message, which must stay the same from one attempt to the next.
	traceID, correlationID, clientRequestID string
}

// requestToken asks Entra ID for a token once and checks it: a token comes back
// only when it may be published.
func (r *DefenderTenantReconciler) requestToken(ctx context.Context, obs *observation) (*token, *requestFailure) {
	start := r.Clock.Now()
	t, failure := r.requestAndCheck(ctx, obs)
	reason := v1alpha1.ReasonTokenReady
	if failure != nil {
		reason = failure.problem.Reason
	}
	recordTokenRequest(reason, r.Clock.Since(start))
	return t, failure
}

func (r *DefenderTenantReconciler) requestAndCheck(ctx context.Context, obs *observation) (*token, *requestFailure) {
	spec := obs.tenant.Spec
	cred, failure := r.entraCredential(ctx, obs)
	if failure != nil {
		ctrl.LoggerFrom(ctx).Info("Token request failed", "tenantID", spec.TenantID, "reason", failure.problem.Reason, "code", failure.code)
		return nil, failure
	}
	answer, err := r.Entra.RequestToken(ctx, entra.Request{
		AuthorityHost: obs.authority,
		TenantID:      spec.TenantID,
		ClientID:      obs.app.clientID,
		Credential:    cred,
		Resource:      obs.resource,
	})
	if err != nil {
		var f *entra.Failure
		if !errors.As(err, &f) {
			f = entra.Classify(err, obs.now)
		}
		failure := &requestFailure{problem: newProblem(f.Reason, f.Message), code: failureCode(f), retryAfter: f.RetryAfter,
			traceID: f.TraceID, correlationID: f.CorrelationID, clientRequestID: f.ClientRequestID}
		// Never the credential or the token: the Failure holds neither.
		ctrl.LoggerFrom(ctx).Info("Token request failed", "tenantID", spec.TenantID, "reason", f.Reason, "code", failure.code,
			"traceID", f.TraceID, "correlationID", f.CorrelationID, "clientRequestID", f.ClientRequestID)
		return nil, failure
	}

	claims, err := tokencheck.Check(answer.AccessToken, expectation(obs.tenant, obs.app.clientID), obs.now)
	if err != nil {
		return nil, &requestFailure{problem: newProblem(v1alpha1.ReasonInvalidToken,
			fmt.Sprintf("Entra ID returned a token that was not published: %v. Check spec.tenantID, spec.clientID and --authority-host.", err)),
			clientRequestID: answer.ClientRequestID}
	}
	if len(claims.MissingRoles) > 0 {
		return nil, &requestFailure{
			problem: newProblem(v1alpha1.ReasonMissingRoles,
				fmt.Sprintf("The token lacks required roles %s (see status.missingRoles). Grant these application permissions to the app, then have the customer tenant's admin consent again (status.adminConsentURL).",
					strings.Join(claims.MissingRoles, ", "))),
			roles:           rolesOf(claims),
			clientRequestID: answer.ClientRequestID,
		}
	}
	return &token{raw: answer.AccessToken, claims: claims, mintedAt: obs.now.UTC().Truncate(time.Second), inputsHash: obs.inputsHash}, nil
}

// failureCode is the code Microsoft support and sign-in logs know a failure by.
func failureCode(f *entra.Failure) string {
	switch {
	case len(f.AADSTS) > 0:
		return fmt.Sprintf("AADSTS%d", f.AADSTS[0])
	case f.StatusCode != 0:
		return fmt.Sprintf("HTTP %d", f.StatusCode)
	default:
		return "network"
	}
}

func rolesOf(claims tokencheck.Verdict) *roleFacts {
	return &roleFacts{Granted: claims.GrantedRoles, Missing: claims.MissingRoles}
}

// serviceAccountTokenLifetime is how long a workload identity assertion is valid:
// ten minutes, what MSAL uses for its own assertions, and the shortest lifetime the
// TokenRequest API grants without an apiserver flag.
const serviceAccountTokenLifetime = 10 * 60

// entraCredential is the credential this request authenticates with. A workload
// identity gets a fresh ServiceAccount token for each request, from the TokenRequest
// API, so no long-lived token of it exists anywhere.
func (r *DefenderTenantReconciler) entraCredential(ctx context.Context, obs *observation) (entra.Credential, *requestFailure) {
	cred := obs.credential
	switch {
	case cred.certificate != nil:
		return cred.certificate, nil
	case cred.serviceAccount.Name != "":
		token, err := r.serviceAccountToken(ctx, cred.serviceAccount, cred.audience)
		if err != nil {
			return nil, serviceAccountTokenFailed(obs, cred.serviceAccount, err)
		}
		return entra.ClientAssertion(token), nil
	default:
		return entra.ClientSecret(cred.value), nil
	}
}

func (r *DefenderTenantReconciler) serviceAccountToken(ctx context.Context, sa types.NamespacedName, audience string) (string, error) {
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: ptr.To[int64](serviceAccountTokenLifetime),
	}}
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.Namespace, Name: sa.Name}}
	if err := r.SubResource("token").Create(ctx, account, request); err != nil {
		return "", err
	}
	return request.Status.Token, nil
}

// tokenRequestForbidden says what a Forbidden TokenRequest means and how to fix it,
// quoting the API server's error, which names the user and never holds a token.
func tokenRequestForbidden(sa types.NamespacedName, err error) string {
	return fmt.Sprintf("The operator may not create tokens of ServiceAccount %q in namespace %q: %v. Bind the Role of config/rbac/cluster_resources_role.yaml to the operator's ServiceAccount in that namespace, or check --cluster-resource-namespace.", sa.Name, sa.Namespace, err)
}

// serviceAccountTokenFailed reports a TokenRequest that failed. The error of the API
// server holds no token; it is quoted so that RBAC problems show as such.
func serviceAccountTokenFailed(obs *observation, sa types.NamespacedName, err error) *requestFailure {
	code := "TokenRequest"
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code = fmt.Sprintf("TokenRequest HTTP %d", status.Status().Code)
	}
	switch {
	case apierrors.IsNotFound(err):
		return &requestFailure{code: code, problem: newProblem(v1alpha1.ReasonServiceAccountNotFound,
			fmt.Sprintf("ServiceAccount %q of %s was not found in namespace %q. Create it there; its tokens are the app's federated credential.", sa.Name, obs.app.describe(), sa.Namespace))}
	case apierrors.IsForbidden(err):
		// The API server authorizes before it looks the ServiceAccount up, so to the
		// operator a ServiceAccount it may not use is one it cannot find; and like a
		// missing one, only a person can fix it, so it stalls rather than retries fast.
		return &requestFailure{code: code, problem: newProblem(v1alpha1.ReasonServiceAccountNotFound,
			tokenRequestForbidden(sa, err)+" (for "+obs.app.describe()+")")}
	}
	return &requestFailure{code: code, problem: newProblem(v1alpha1.ReasonTokenEndpointUnavailable,
		fmt.Sprintf("Could not get a token of ServiceAccount %s/%s for %s from the Kubernetes TokenRequest API: %v", sa.Namespace, sa.Name, obs.app.describe(), err))}
}
