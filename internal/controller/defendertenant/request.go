package defendertenant

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

// requestFailure is a token request that produced nothing to publish.
type requestFailure struct {
	problem *conditions.Problem
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

// requestToken asks Entra ID for a token once, authenticating with the app's
// credential (for a workload identity, after a fresh TokenRequest). It returns
// what came back, unjudged: settle says what it means.
func (r *Reconciler) requestToken(ctx context.Context, obs *observation, res *result) {
	res.requested = true
	start := r.Clock.Now()
	defer func() { res.took = r.Clock.Since(start) }()
	cred, err := r.Credentials.Entra(ctx, obs.credential)
	if err != nil {
		res.credentialErr = err
		return
	}
	answer, err := r.Entra.RequestToken(ctx, entra.Request{
		AuthorityHost: obs.authority,
		TenantID:      obs.tenant.Spec.TenantID,
		ClientID:      obs.app.clientID,
		Credential:    cred,
		Resource:      obs.resource,
	})
	if err != nil {
		res.requestErr = err
		if entraRequestFailed(obs, err).problem.Reason == v1alpha1.ReasonTenantNotFound {
			res.discoveredCloud = r.discoverCloud(ctx, obs)
			return
		}
		r.endDiscoveryEpisode(obs)
		return
	}
	r.endDiscoveryEpisode(obs)
	res.answer = &answer
}

// tokenVerdict checks the token Entra ID answered with against the tenant: a
// token comes back only when it may be published, else why not.
func tokenVerdict(obs *observation, answer *entra.Token) (*token, *requestFailure) {
	claims, err := tokencheck.Check(answer.AccessToken, expectation(obs.tenant, obs.app.clientID), obs.now)
	if err != nil {
		return nil, &requestFailure{problem: conditions.NewProblem(v1alpha1.ReasonInvalidToken,
			fmt.Sprintf("Entra ID returned a token that was not published: %v. Check spec.tenantID, spec.clientID and --authority-host.", err)),
			clientRequestID: answer.ClientRequestID}
	}
	if len(claims.MissingRoles) > 0 {
		return nil, &requestFailure{
			problem: conditions.NewProblem(v1alpha1.ReasonMissingRoles,
				fmt.Sprintf("The token lacks required roles %s (see status.missingRoles). Grant these application permissions to the app, then have the customer tenant's admin consent again (status.adminConsentURL).",
					strings.Join(claims.MissingRoles, ", "))),
			roles:           rolesOf(claims),
			clientRequestID: answer.ClientRequestID,
		}
	}
	return &token{raw: answer.AccessToken, claims: claims, mintedAt: obs.now.UTC().Truncate(time.Second), inputsHash: obs.inputsHash}, nil
}

// entraRequestFailed says what a failed token request means, from Entra ID's
// answer (or the lack of one). The Failure holds neither the credential nor a
// token.
func entraRequestFailed(obs *observation, err error) *requestFailure {
	var f *entra.Failure
	if !errors.As(err, &f) {
		f = entra.Classify(err, obs.now)
	}
	return &requestFailure{problem: conditions.NewProblem(f.Reason, f.Message), code: failureCode(f), retryAfter: f.RetryAfter,
		traceID: f.TraceID, correlationID: f.CorrelationID, clientRequestID: f.ClientRequestID}
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
		return &requestFailure{code: code, problem: conditions.NewProblem(v1alpha1.ReasonServiceAccountNotFound,
			fmt.Sprintf("ServiceAccount %q of %s was not found in namespace %q. Create it there; its tokens are the app's federated credential.", sa.Name, obs.app.describe(), sa.Namespace))}
	case apierrors.IsForbidden(err):
		// The API server authorizes before it looks the ServiceAccount up, so to the
		// operator a ServiceAccount it may not use is one it cannot find; and like a
		// missing one, only a person can fix it, so it stalls rather than retries fast.
		return &requestFailure{code: code, problem: conditions.NewProblem(v1alpha1.ReasonServiceAccountNotFound,
			credential.TokenRequestForbidden(sa, err)+" (for "+obs.app.describe()+")")}
	}
	return &requestFailure{code: code, problem: conditions.NewProblem(v1alpha1.ReasonTokenEndpointUnavailable,
		fmt.Sprintf("Could not get a token of ServiceAccount %s/%s for %s from the Kubernetes TokenRequest API: %v", sa.Namespace, sa.Name, obs.app.describe(), err))}
}
