package controllers

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// action is what a reconcile does about the token.
type action int

const (
	// actionHold requests nothing and writes nothing; the published token, if any,
	// stays as it is.
	actionHold action = iota
	// actionKeep leaves a fresh published token and its Secret as they are.
	actionKeep
	// actionRestore writes a fresh published token back into its Secret, which
	// someone edited.
	actionRestore
	// actionPublishLeftover publishes the token a failed write left in memory,
	// without a token request.
	actionPublishLeftover
	// actionMint requests a token, checks it and publishes it.
	actionMint
	// actionRevoke deletes the tenant's own token Secret: the app no longer grants
	// the tenant, so the token it was given goes too.
	actionRevoke
)

var actionNames = [...]string{"Hold", "Keep", "Restore", "PublishLeftover", "Mint", "Revoke"}

func (a action) String() string { return actionNames[a] }

// plan is what decide chose: which check matched, what to do, what to report and
// when to look again.
type plan struct {
	check  string
	action action
	// problem is what keeps a fresh token from being published; nil when nothing is wrong.
	problem *problem
	// token is what keep, restore and publishLeftover publish.
	token *token
	// nextRefresh is when the next token request is due; zero when none is scheduled.
	nextRefresh time.Time
	// recheck is when to reconcile again without an event; zero: on events only
	// (and when the published token expires, which requeueAfter adds).
	recheck time.Time
}

// check is one named step of the decision. It matches or passes to the next one.
type check struct {
	name   string
	decide func(obs *observation) (plan, bool)
}

// decisionChain answers "should this tenant ask Entra ID for a token now, and if not,
// what does it report?". The order is the precedence: each check assumes that none
// before it matched. What the cluster can fix comes first, so that it is reported
// rather than hidden behind a backoff; a fresh token is kept before a backoff is
// consulted, because a fresh token means the last failure no longer matters. A
// withdrawn grant comes before everything, suspension included: it is a revocation,
// and the token it withdraws must not outlive it; so does a token minted under a
// ClusterDefenderApp the tenant no longer uses, which that app's grants no longer
// reach.
var decisionChain = []check{
	{"AppNotAllowed", appNotAllowed},
	{"MintedUnderAnotherApp", mintedUnderAnotherApp},
	{"Suspended", suspended},
	{"ResourceNotAllowed", resourceNotAllowed},
	{"InvalidSecretTemplate", invalidSecretTemplate},
	{"AppNotFound", appNotFound},
	{"SecretConflict", secretConflict},
	{"CredentialsNotFound", credentialsNotFound},
	{"ClientSecretImplausible", clientSecretImplausible},
	{"CertificateUnusable", certificateUnusable},
	{"ServiceAccountNotFound", serviceAccountNotFound},
	{"ServiceAccountNotAllowed", serviceAccountNotAllowed},
	{"FreshAndCurrent", freshAndCurrent},
	{"BackingOff", backingOff},
	{"LeftoverToken", leftoverToken},
}

// mintCheck names the decision when no check matched.
const mintCheck = "Mint"

// decide is a pure function of the observation: the first check that matches decides.
func decide(obs *observation) plan {
	for _, c := range decisionChain {
		if p, matched := c.decide(obs); matched {
			p.check = c.name
			return p
		}
	}
	return plan{check: mintCheck, action: actionMint}
}

// suspended: no token request, and the published Secret is left as it is.
func suspended(obs *observation) (plan, bool) {
	return plan{action: actionHold}, obs.tenant.Spec.Suspend
}

func resourceNotAllowed(obs *observation) (plan, bool) {
	if obs.resourceAllowed {
		return plan{}, false
	}
	return stalledOn(obs, v1alpha1.ReasonResourceNotAllowed,
		fmt.Sprintf("Resource %q is not in the operator's --allowed-resources list (%s). Use an allowed resource, or ask the operator's administrator to allow this one.",
			obs.resource, obs.allowedResources)), true
}

// invalidSecretTemplate: a template that cannot be published is refused before a
// token is requested for it. The message comes from the spec and the operator's
// flags alone, never from a token.
func invalidSecretTemplate(obs *observation) (plan, bool) {
	if obs.secretTemplateRefused == nil {
		return plan{}, false
	}
	return stalledOn(obs, v1alpha1.ReasonInvalidSecretTemplate,
		fmt.Sprintf("spec.secretTemplate cannot be published: %s. No token is requested and nothing is published; a token published before stays as it was.",
			truncate(obs.secretTemplateRefused.Error(), 1000))), true
}

func secretConflict(obs *observation) (plan, bool) {
	if obs.tokenSecret == nil || obs.tokenSecretOwned {
		return plan{}, false
	}
	return plan{action: actionHold, problem: secretConflictProblem(obs.secretName), recheck: safetyRecheck(obs)}, true
}

func secretConflictProblem(name string) *problem {
	return newProblem(v1alpha1.ReasonSecretConflict,
		fmt.Sprintf("Secret %q already exists and is not owned by this DefenderTenant, so it is left untouched. Delete or rename that Secret, or set spec.tokenSecretName to a free name.", name))
}

// appNotAllowed: a ClusterDefenderApp serves a tenant only under one of its grants.
func appNotAllowed(obs *observation) (plan, bool) {
	app := obs.app
	if app.inline() || app.missing() || app.allowed {
		return plan{}, false
	}
	message := fmt.Sprintf("%s has no tenantGrants entry matching namespace %q and tenant %s, so no token is requested and this tenant's token Secret is deleted. Ask the cluster administrator to grant it, or use another app.",
		app.describe(), obs.tenant.Namespace, obs.tenant.Spec.TenantID)
	if app.resourceRefused {
		message = fmt.Sprintf("The tenantGrants of %s that match namespace %q and tenant %s allow only the resources %s, not %q, so no token is requested and this tenant's token Secret is deleted. Use one of those resources, or ask the cluster administrator to grant this one.",
			app.describe(), obs.tenant.Namespace, obs.tenant.Spec.TenantID, strings.Join(app.grantedResources, ", "), obs.resource)
	}
	if app.unserved {
		message = fmt.Sprintf("This operator does not serve ClusterDefenderApps: it may not watch them and namespaces cluster-wide (a namespaced install), so %s cannot be checked for a grant. Use a DefenderApp in this namespace, or an operator installed cluster-wide.", app.describe())
	}
	// Every token Secret the tenant controls goes, whatever its name and whatever
	// the cache says of the tenant's status: revoke finds them live.
	p := stalledOn(obs, v1alpha1.ReasonAppNotAllowed, message)
	p.action = actionRevoke
	return p, true
}

// mintedUnderAnotherApp: a token Secret of the tenant was minted under a
// ClusterDefenderApp the tenant no longer uses, or that no longer exists. That
// app's grants reach only its own tenants, and a deleted app grants nothing, so the
// token goes now; the next reconcile, at once, mints with the current app or
// reports why it cannot.
func mintedUnderAnotherApp(obs *observation) (plan, bool) {
	if len(obs.otherAppTokens) == 0 {
		return plan{}, false
	}
	return plan{action: actionRevoke, recheck: obs.now}, true
}

func appNotFound(obs *observation) (plan, bool) {
	app := obs.app
	if !app.missing() {
		return plan{}, false
	}
	where := fmt.Sprintf("in namespace %q", obs.tenant.Namespace)
	if app.kind == v1alpha1.AppKindClusterDefenderApp {
		where = "in the cluster"
	}
	return stalledOn(obs, v1alpha1.ReasonAppNotFound,
		fmt.Sprintf("spec.appRef names %s, which does not exist %s. Create it, or correct spec.appRef.", app.describe(), where)), true
}

func credentialsNotFound(obs *observation) (plan, bool) {
	secret, key, app := obs.credentialSecret, obs.credentialKey, obs.app
	owner := "the application's client secret"
	if !app.inline() {
		owner = "the credential of " + app.describe()
	}
	switch obs.credential.state {
	case credentialSecretMissing:
		what := fmt.Sprintf("Create it with the secret's value under key %q.", key)
		if app.credentialKind() == v1alpha1.CredentialCertificate {
			what = "Create it as a kubernetes.io/tls Secret (tls.crt, tls.key)."
		}
		return stalledOn(obs, v1alpha1.ReasonCredentialsNotFound,
			fmt.Sprintf("Secret %q with %s was not found in namespace %q. %s", secret.Name, owner, secret.Namespace, what)), true
	case credentialKeyEmpty:
		if app.credentialKind() == v1alpha1.CredentialCertificate {
			return stalledOn(obs, v1alpha1.ReasonCredentialsNotFound,
				fmt.Sprintf("Secret %s/%s with %s lacks tls.crt or tls.key. Store the certificate (PEM, leaf first) and its RSA key there.", secret.Namespace, secret.Name, owner)), true
		}
		fix := "or set spec.clientSecretRef.key"
		if !app.inline() {
			fix = "or set the app's credential.clientSecret.secretRef.key"
		}
		return stalledOn(obs, v1alpha1.ReasonCredentialsNotFound,
			fmt.Sprintf("Secret %q has no non-empty key %q. Put %s value under that key, %s.", secret.Name, key, owner, fix)), true
	}
	return plan{}, false
}

// certificateUnusable: a certificate that does not parse, does not match its key or
// has expired would only cost a failed sign-in in the customer's logs.
func certificateUnusable(obs *observation) (plan, bool) {
	cred, app := obs.credential, obs.app
	switch {
	case cred.state == credentialCertificateInvalid:
		return stalledOn(obs, v1alpha1.ReasonInvalidCertificate,
			fmt.Sprintf("The certificate of %s in Secret %s/%s cannot be used: %s. Store an RSA certificate (PEM, leaf first) and its matching key.", app.describe(), obs.credentialSecret.Namespace, obs.credentialSecret.Name, cred.problem)), true
	case cred.certificate != nil && !obs.now.Before(cred.certificate.NotAfter()):
		return stalledOn(obs, v1alpha1.ReasonCertificateExpired,
			fmt.Sprintf("The certificate of %s (SHA-1 thumbprint %s) expired at %s. Put a renewed certificate in Secret %s/%s and register it on the app registration.",
				app.describe(), cred.certificate.SHA1Thumbprint(), cred.certificate.NotAfter().UTC().Format(time.RFC3339), obs.credentialSecret.Namespace, obs.credentialSecret.Name)), true
	}
	return plan{}, false
}

func serviceAccountNotFound(obs *observation) (plan, bool) {
	if obs.credential.state != credentialServiceAccountMissing {
		return plan{}, false
	}
	sa := obs.credential.serviceAccount
	return stalledOn(obs, v1alpha1.ReasonServiceAccountNotFound,
		fmt.Sprintf("ServiceAccount %q of %s was not found in namespace %q. Create it there; its tokens are the app's federated credential.", sa.Name, obs.app.describe(), sa.Namespace)), true
}

// serviceAccountNotAllowed: the operator will not request a token of the workload
// identity's ServiceAccount for its audience, so no Entra ID token can be
// requested either.
func serviceAccountNotAllowed(obs *observation) (plan, bool) {
	if obs.credential.state != credentialServiceAccountNotAllowed {
		return plan{}, false
	}
	return stalledOn(obs, v1alpha1.ReasonServiceAccountNotAllowed,
		fmt.Sprintf("%s may not use its workload identity: %s", obs.app.describe(), obs.credential.problem)), true
}

// clientSecretImplausible: a value that cannot be an Entra client secret would only
// cost a failed sign-in in the customer's logs.
func clientSecretImplausible(obs *observation) (plan, bool) {
	if obs.credential.state != credentialImplausible {
		return plan{}, false
	}
	return stalledOn(obs, v1alpha1.ReasonInvalidClientSecret,
		fmt.Sprintf("Key %q of Secret %q does not hold a client secret: Entra ID client secrets are at most %d printable ASCII characters. Put the secret's value there.", obs.credentialKey, obs.credentialSecret.Name, maxClientSecretLength)), true
}

// freshAndCurrent: the published token is usable, was minted from the current
// inputs and is not due; its Secret is restored if someone edited it.
func freshAndCurrent(obs *observation) (plan, bool) {
	pub := obs.published
	if pub == nil || !pub.usable(obs.now) || pub.inputsHash != obs.inputsHash {
		return plan{}, false
	}
	due := refreshAt(obs.tenant, pub)
	if !obs.now.Before(due) {
		return plan{}, false
	}
	p := plan{action: actionKeep, token: pub, nextRefresh: due, recheck: due}
	if tokenSecretDrifted(obs, pub) {
		p.action = actionRestore
	}
	return p, true
}

// backingOff: a request with the same inputs failed and its backoff has not ended.
// Whatever event wakes the tenant, it waits; new inputs (a rotated credential, a
// changed spec) are tried at once.
func backingOff(obs *observation) (plan, bool) {
	status := obs.tenant.Status
	last := status.LastFailure
	if last == nil || last.InputsHash != obs.failureInputs {
		return plan{}, false
	}
	at := retryAt(obs, last, status.FailedAttempts)
	if !obs.now.Before(at) {
		return plan{}, false
	}
	reported := &problem{Reason: last.Reason, Message: last.Message, Stalled: v1alpha1.Stalls(last.Reason)}
	return plan{action: actionHold, problem: reported, nextRefresh: at, recheck: at}, true
}

// leftoverToken: a token minted from the current inputs is still in memory because
// its write failed; publishing it costs no token request.
func leftoverToken(obs *observation) (plan, bool) {
	if obs.leftover == nil {
		return plan{}, false
	}
	return plan{action: actionPublishLeftover, token: obs.leftover}, true
}

// stalledOn holds for a problem that a fix in the cluster resolves.
func stalledOn(obs *observation, reason, message string) plan {
	return plan{action: actionHold, problem: newProblem(reason, message), recheck: safetyRecheck(obs)}
}

// safetyRecheck: watches see fixes made in the cluster, so this is only a safety net.
func safetyRecheck(obs *observation) time.Time {
	return obs.now.Add(stalledBackoffCap)
}

// retryAt is when a failed refresh may be tried again: the backoff for `attempts`
// consecutive failures, counted from the last one and never before its Retry-After.
// While a usable token is published, never sooner than a minute: refreshing stays
// at most once a minute, and only a tenant without a usable token retries faster.
func retryAt(obs *observation, last *v1alpha1.LastFailure, attempts int32) time.Time {
	var retryAfter time.Duration
	if last.RetryAfter != nil {
		retryAfter = last.RetryAfter.Duration
	}
	delay := retryDelay(attempts, v1alpha1.Stalls(last.Reason), retryAfter, jitterFraction(string(obs.tenant.UID)))
	if pub := obs.published; pub != nil && pub.usable(obs.now) {
		delay = max(delay, minRefreshInterval)
	}
	return last.Time.Add(delay)
}

func refreshAt(tenant *v1alpha1.DefenderTenant, t *token) time.Time {
	var before time.Duration
	if rb := tenant.Spec.RefreshBefore; rb != nil {
		before = rb.Duration
	}
	return refreshTime(t.mintedAt, t.expiresAt(), before, jitterFraction(string(tenant.UID)))
}

// tokenSecretDrifted: writing t would change the token Secret.
func tokenSecretDrifted(obs *observation, t *token) bool {
	return obs.tokenSecret == nil || !equality.Semantic.DeepEqual(obs.tokenSecret, desiredTokenSecret(obs, t))
}

// requeueAfter turns the time to look again into a wait, looking again no later than
// when the published token expires, so that Ready turns to TokenExpired on time.
func requeueAfter(now time.Time, recheck time.Time, published *token) time.Duration {
	at := recheck
	if published != nil && now.Before(published.expiresAt()) && (at.IsZero() || published.expiresAt().Before(at)) {
		at = published.expiresAt()
	}
	if at.IsZero() {
		return 0
	}
	return max(at.Sub(now), time.Second)
}
