package defendertenant

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
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
	problem *conditions.Problem
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
	{"CredentialUnusable", credentialUnusable},
	{"RefreshRequested", refreshRequested},
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

func secretConflictProblem(name string) *conditions.Problem {
	return conditions.NewProblem(v1alpha1.ReasonSecretConflict,
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

// credentialUnusable: a credential that is missing, cannot be one Entra ID
// issued, has expired, or that the operator will not use would only cost a failed
// sign-in in the customer's logs; the credential says which and what to fix.
func credentialUnusable(obs *observation) (plan, bool) {
	p := obs.credential.Problem(obs.app.describe(), obs.now)
	if p == nil {
		return plan{}, false
	}
	return stalledOn(obs, p.Reason, p.Message), true
}

// refreshRequested: someone asked for a token now (AnnotationRequestedAt), say
// after a customer consented or granted a missing role. Neither a fresh token nor
// a backoff makes the request wait; the once-a-minute rule does, and the request
// is served when the minute is over.
func refreshRequested(obs *observation) (plan, bool) {
	if obs.refreshRequest == "" {
		return plan{}, false
	}
	if earliest := lastTokenRequest(obs.tenant).Add(minRefreshInterval); obs.now.Before(earliest) {
		p := plan{action: actionHold, nextRefresh: earliest, recheck: earliest}
		if last := obs.tenant.Status.LastFailure; last != nil && last.InputsHash == obs.failureInputs {
			p.problem = &conditions.Problem{Reason: last.Reason, Message: last.Message, Stalled: v1alpha1.Stalls(last.Reason)}
		}
		return p, true
	}
	return plan{action: actionMint}, true
}

// lastTokenRequest is when the tenant last asked Entra ID for a token, as its
// status records: the published token's minting or the last failure, whichever
// is later; zero when neither is recorded.
func lastTokenRequest(tenant *v1alpha1.DefenderTenant) time.Time {
	var last time.Time
	if t := tenant.Status.LastRefreshTime; t != nil {
		last = t.Time
	}
	if f := tenant.Status.LastFailure; f != nil && f.Time.After(last) {
		last = f.Time.Time
	}
	return last
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
	reported := &conditions.Problem{Reason: last.Reason, Message: last.Message, Stalled: v1alpha1.Stalls(last.Reason)}
	return plan{action: actionHold, problem: reported, nextRefresh: at, recheck: at}, true
}

// leftoverToken: a token minted from the current inputs is still in memory because
// its write failed; publishing it costs no token request.
func leftoverToken(obs *observation) (plan, bool) {
	t := obs.leftover
	if t == nil || obs.inputsHash == "" || t.inputsHash != obs.inputsHash || obs.leftoverGeneration != obs.tenant.Generation ||
		!t.usable(obs.now) || !obs.now.Before(refreshAt(obs.tenant, t)) {
		return plan{}, false
	}
	return plan{action: actionPublishLeftover, token: t}, true
}

// stalledOn holds for a problem that a fix in the cluster resolves.
func stalledOn(obs *observation, reason, message string) plan {
	return plan{action: actionHold, problem: conditions.NewProblem(reason, message), recheck: safetyRecheck(obs)}
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
