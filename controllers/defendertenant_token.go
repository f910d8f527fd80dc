package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

// observation is what one reconcile knows before it decides anything.
type observation struct {
	now             time.Time
	tenant          *v1alpha1.DefenderTenant
	authority       string
	resource        string
	adminConsentURL string
	secretName      string
	// tokenSecret is the live Secret named secretName, whoever owns it; nil if absent.
	tokenSecret *corev1.Secret
	// published is the token in tokenSecret when the tenant owns it and it parses.
	published    *publishedToken
	clientSecret string
	// inputsHash digests everything a token is minted from; see AnnotationInputsHash.
	inputsHash string
	// blocker is a problem found in the cluster that rules out a token request.
	blocker *problem
}

// publishedToken is a token found in the tenant's own token Secret.
type publishedToken struct {
	raw        string
	verdict    tokencheck.Verdict
	mintedAt   time.Time
	inputsHash string
	// valid: for the current tenant and client, with every required role, unexpired.
	valid bool
}

// outcome is what the refresh step did and what the status and requeue follow from.
type outcome struct {
	Published    *tokenFacts
	Problem      *problem
	Attempted    bool
	Roles        *roleFacts
	NextRefresh  time.Time
	RequeueAfter time.Duration
}

func (r *DefenderTenantReconciler) observe(ctx context.Context, tenant *v1alpha1.DefenderTenant) (*observation, error) {
	cloud := tenant.CloudOrDefault()
	obs := &observation{
		now:        r.Clock.Now(),
		tenant:     tenant,
		authority:  r.AuthorityHost,
		resource:   strings.TrimSuffix(tenant.Spec.Resource, "/"),
		secretName: tenant.TokenSecretNameOrDefault(),
	}
	if obs.authority == "" {
		obs.authority = entra.AuthorityHost(cloud)
	}
	if obs.resource == "" {
		obs.resource = entra.DefaultResource(cloud)
	}
	// Admins consent in a browser against the real cloud, never through an override.
	obs.adminConsentURL = entra.AdminConsentURL(entra.AuthorityHost(cloud), tenant.Spec.TenantID, tenant.Spec.ClientID, obs.resource)

	if err := r.observeTokenSecret(ctx, obs); err != nil {
		return nil, err
	}
	if err := r.observeCredential(ctx, obs); err != nil {
		return nil, err
	}
	if !r.AllowedResources.Allows(obs.resource) {
		obs.blocker = &problem{
			Reason: v1alpha1.ReasonResourceNotAllowed, NeedsHuman: true,
			Message: fmt.Sprintf("Resource %q is not in the operator's --allowed-resources list (%s). Use an allowed resource, or ask the operator's administrator to allow this one.",
				obs.resource, r.AllowedResources.String()),
		}
	}
	return obs, nil
}

func (r *DefenderTenantReconciler) observeTokenSecret(ctx context.Context, obs *observation) error {
	key := keyOf(obs.tenant.Namespace, obs.secretName)
	if _, exists, known := r.cachedSecretVersion(ctx, key); known && !exists {
		return nil
	}
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading token Secret %s: %w", obs.secretName, err)
	}
	obs.tokenSecret = secret
	if !metav1.IsControlledBy(secret, obs.tenant) {
		obs.blocker = secretConflict(obs.secretName)
		return nil
	}
	raw := string(secret.Data[v1alpha1.TokenSecretKeyAccessToken])
	if raw == "" {
		return nil
	}
	want := expectation(obs.tenant)
	verdict, err := tokencheck.Check(raw, want, obs.now)
	expired := false
	if err != nil {
		// An expired token of ours is still reported, as TokenExpired. Anything else is
		// not a token of this tenant any more (hand-edited, or the spec changed): replace it.
		if verdict, err = tokencheck.Check(raw, want, time.Time{}); err != nil {
			return nil
		}
		expired = true
	}
	obs.published = &publishedToken{
		raw:        raw,
		verdict:    verdict,
		mintedAt:   mintedAt(secret, verdict),
		inputsHash: secret.Annotations[v1alpha1.AnnotationInputsHash],
		valid:      !expired && len(verdict.MissingRoles) == 0,
	}
	return nil
}

func secretConflict(name string) *problem {
	return &problem{
		Reason: v1alpha1.ReasonSecretConflict, NeedsHuman: true,
		Message: fmt.Sprintf("Secret %q already exists and is not owned by this DefenderTenant, so it is left untouched. Delete or rename that Secret, or set spec.tokenSecretName to a free name.", name),
	}
}

// expectation is what every token of this tenant must match, whether just minted or
// found published: one definition, so the two checks cannot drift apart.
func expectation(tenant *v1alpha1.DefenderTenant) tokencheck.Expectation {
	return tokencheck.Expectation{TenantID: tenant.Spec.TenantID, ClientID: tenant.Spec.ClientID, RequiredRoles: tenant.Spec.RequiredRoles}
}

// mintedAt reads when the published token was minted. The annotation is authoritative;
// iat is the fallback (Entra backdates it by about five minutes).
func mintedAt(secret *corev1.Secret, verdict tokencheck.Verdict) time.Time {
	if t, err := time.Parse(time.RFC3339, secret.Annotations[v1alpha1.AnnotationMintedAt]); err == nil {
		return t
	}
	if !verdict.IssuedAt.IsZero() {
		return verdict.IssuedAt
	}
	return verdict.ExpiresAt.Add(-time.Hour)
}

func (r *DefenderTenantReconciler) observeCredential(ctx context.Context, obs *observation) error {
	ref := obs.tenant.Spec.ClientSecretRef
	key := obs.tenant.ClientSecretKeyOrDefault()
	cred, err := r.credential(ctx, keyOf(obs.tenant.Namespace, ref.Name), key)
	if err != nil {
		return fmt.Errorf("reading credential Secret %s: %w", ref.Name, err)
	}
	switch cred.state {
	case credentialSecretMissing:
		obs.blockIfClear(v1alpha1.ReasonCredentialsNotFound,
			fmt.Sprintf("Secret %q with the application's client secret was not found in namespace %q. Create it with the secret's value under key %q.", ref.Name, obs.tenant.Namespace, key))
	case credentialKeyEmpty:
		obs.blockIfClear(v1alpha1.ReasonCredentialsNotFound,
			fmt.Sprintf("Secret %q has no non-empty key %q. Put the application's client secret value under that key, or set spec.clientSecretRef.key.", ref.Name, key))
	case credentialImplausible:
		obs.blockIfClear(v1alpha1.ReasonInvalidClientSecret,
			fmt.Sprintf("Key %q of Secret %q does not hold a client secret: Entra ID client secrets are at most %d printable ASCII characters. Put the secret's value there.", key, ref.Name, maxClientSecretLength))
	case credentialUsable:
		obs.clientSecret = cred.value
		obs.inputsHash = inputsHash(obs.authority, obs.tenant.Spec.TenantID, obs.tenant.Spec.ClientID, obs.resource, obs.clientSecret)
	}
	return nil
}

// maxClientSecretLength is far above the 40 characters Entra generates, and far
// below what would make a form body worth sending.
const maxClientSecretLength = 1024

// plausibleClientSecret rejects values that cannot be an Entra client secret (binary
// data, a certificate, a whole file) before they cost a token request.
func plausibleClientSecret(s string) bool {
	if len(s) > maxClientSecretLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (obs *observation) blockIfClear(reason, message string) {
	if obs.blocker == nil {
		obs.blocker = &problem{Reason: reason, Message: message, NeedsHuman: true}
	}
}

// inputsHash is a one-way digest: it tells whether a published token was minted from
// the current inputs without storing the client secret anywhere.
func inputsHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// refresh decides whether a token request is due, makes it, and publishes the result.
func (r *DefenderTenantReconciler) refresh(ctx context.Context, obs *observation) (outcome, error) {
	pub := obs.published
	switch {
	case obs.tenant.Spec.Suspend:
		return r.hold(obs, nil), nil
	case obs.blocker != nil:
		return r.hold(obs, obs.blocker), nil
	case pub != nil && pub.valid && pub.inputsHash == obs.inputsHash:
		if due := r.refreshAt(obs, pub.mintedAt, pub.verdict.ExpiresAt); obs.now.Before(due) {
			return r.keep(ctx, obs, due)
		}
	}
	key := keyOf(obs.tenant.Namespace, obs.tenant.Name)
	if until, wait := r.retries.blocked(key, obs.inputsHash, obs.tenant.Generation, obs.now); wait {
		out := r.hold(obs, problemFromConditions(obs.tenant.Status.Conditions))
		out.NextRefresh = until
		out.RequeueAfter = untilEarliest(obs, until)
		return out, nil
	}
	return r.mint(ctx, obs)
}

// hold reports the published token as it is, without asking Entra ID for a new one.
func (r *DefenderTenantReconciler) hold(obs *observation, p *problem) outcome {
	out := outcome{Published: obs.publishedFacts(), Problem: p}
	if p != nil {
		// Watches see fixes made in the cluster; this recheck is only a safety net.
		out.RequeueAfter = untilEarliest(obs, obs.now.Add(stalledBackoffCap))
	} else if out.Published != nil && obs.now.Before(out.Published.ExpiresAt) {
		out.RequeueAfter = out.Published.ExpiresAt.Sub(obs.now)
	}
	return out
}

// keep leaves a fresh token published, restoring its Secret if it was edited by hand.
func (r *DefenderTenantReconciler) keep(ctx context.Context, obs *observation, due time.Time) (outcome, error) {
	pub := obs.published
	if err := r.publish(ctx, obs, pub.raw, pub.verdict.ExpiresAt, pub.mintedAt); err != nil {
		return outcome{}, err
	}
	return outcome{
		Published:    obs.publishedFacts(),
		Roles:        &roleFacts{Granted: pub.verdict.GrantedRoles, Missing: pub.verdict.MissingRoles},
		NextRefresh:  due,
		RequeueAfter: due.Sub(obs.now),
	}, nil
}

func (r *DefenderTenantReconciler) mint(ctx context.Context, obs *observation) (outcome, error) {
	if pending, verdict, ok := r.takeUnpublished(obs); ok {
		return r.publishMinted(ctx, obs, pending.raw, verdict, pending.minted)
	}
	raw, verdict, failure := r.requestToken(ctx, obs)
	if failure != nil {
		return *failure, nil
	}
	return r.publishMinted(ctx, obs, raw, verdict, obs.now.UTC().Truncate(time.Second))
}

// requestToken asks Entra ID for a token and checks it. A token that must not be
// published comes back as the failure outcome instead.
func (r *DefenderTenantReconciler) requestToken(ctx context.Context, obs *observation) (string, tokencheck.Verdict, *outcome) {
	start := r.Clock.Now()
	raw, verdict, failure := r.requestAndCheck(ctx, obs)
	reason := v1alpha1.ReasonTokenReady
	if failure != nil {
		reason = failure.Problem.Reason
	}
	recordTokenRequest(reason, r.Clock.Since(start))
	return raw, verdict, failure
}

func (r *DefenderTenantReconciler) requestAndCheck(ctx context.Context, obs *observation) (string, tokencheck.Verdict, *outcome) {
	spec := obs.tenant.Spec
	token, err := r.Entra.RequestToken(ctx, entra.Request{
		AuthorityHost: obs.authority,
		TenantID:      spec.TenantID,
		ClientID:      spec.ClientID,
		ClientSecret:  obs.clientSecret,
		Resource:      obs.resource,
	})
	if err != nil {
		var f *entra.Failure
		if !errors.As(err, &f) {
			f = entra.Classify(err, obs.now)
		}
		out := r.failed(obs, &problem{Reason: f.Reason, Message: f.Message, NeedsHuman: f.Kind == entra.NeedsHuman}, f.RetryAfter, nil)
		return "", tokencheck.Verdict{}, &out
	}

	verdict, err := tokencheck.Check(token.AccessToken, expectation(obs.tenant), obs.now)
	if err != nil {
		out := r.failed(obs, &problem{
			Reason: v1alpha1.ReasonInvalidToken, NeedsHuman: true,
			Message: fmt.Sprintf("Entra ID returned a token that was not published: %v. Check spec.tenantID, spec.clientID and --authority-host.", err),
		}, 0, nil)
		return "", tokencheck.Verdict{}, &out
	}
	if len(verdict.MissingRoles) > 0 {
		out := r.failed(obs, &problem{
			Reason: v1alpha1.ReasonMissingRoles, NeedsHuman: true,
			Message: fmt.Sprintf("The token lacks required roles %s (see status.missingRoles). Grant these application permissions to the app, then have the customer tenant's admin consent again (status.adminConsentURL).",
				strings.Join(verdict.MissingRoles, ", ")),
		}, 0, &roleFacts{Granted: verdict.GrantedRoles, Missing: verdict.MissingRoles})
		return "", tokencheck.Verdict{}, &out
	}
	return token.AccessToken, verdict, nil
}

// publishMinted writes a checked token to the tenant's Secret. When the write fails,
// the token is kept in memory, so that the retry publishes it instead of asking
// Entra ID again: an API server outage costs no token requests.
func (r *DefenderTenantReconciler) publishMinted(ctx context.Context, obs *observation, raw string, verdict tokencheck.Verdict, minted time.Time) (outcome, error) {
	key := keyOf(obs.tenant.Namespace, obs.tenant.Name)
	if err := r.publish(ctx, obs, raw, verdict.ExpiresAt, minted); err != nil {
		if errors.Is(err, errTokenSecretTaken) {
			obs.blocker = secretConflict(obs.secretName)
			return r.hold(obs, obs.blocker), nil
		}
		r.unpublished.set(key, unpublishedToken{raw: raw, minted: minted, inputsHash: obs.inputsHash, generation: obs.tenant.Generation})
		return outcome{}, err
	}
	r.retries.forget(key)
	ctrl.FromContext(ctx).V(1).Info("Published token", "expiresAt", rfc3339(verdict.ExpiresAt))
	due := r.refreshAt(obs, minted, verdict.ExpiresAt)
	return outcome{
		Published:    &tokenFacts{SecretName: obs.secretName, ExpiresAt: verdict.ExpiresAt, MintedAt: minted, Valid: true},
		Attempted:    true,
		Roles:        &roleFacts{Granted: verdict.GrantedRoles, Missing: verdict.MissingRoles},
		NextRefresh:  due,
		RequeueAfter: due.Sub(obs.now),
	}, nil
}

// takeUnpublished returns the token a failed write left behind, if it was minted from
// the current inputs and is still good to publish.
func (r *DefenderTenantReconciler) takeUnpublished(obs *observation) (unpublishedToken, tokencheck.Verdict, bool) {
	pending, ok := r.unpublished.take(keyOf(obs.tenant.Namespace, obs.tenant.Name))
	if !ok || pending.inputsHash != obs.inputsHash || pending.generation != obs.tenant.Generation {
		return unpublishedToken{}, tokencheck.Verdict{}, false
	}
	verdict, err := tokencheck.Check(pending.raw, expectation(obs.tenant), obs.now)
	if err != nil || len(verdict.MissingRoles) > 0 || !obs.now.Before(r.refreshAt(obs, pending.minted, verdict.ExpiresAt)) {
		return unpublishedToken{}, tokencheck.Verdict{}, false
	}
	return pending, verdict, true
}

// failed schedules the retry of a failed token request. The published token, if any,
// stays: a failed refresh never removes a token that still works.
func (r *DefenderTenantReconciler) failed(obs *observation, p *problem, retryAfter time.Duration, roles *roleFacts) outcome {
	attempts := obs.tenant.Status.FailedAttempts + 1
	delay := retryDelay(attempts, p.NeedsHuman, retryAfter, jitterFraction(string(obs.tenant.UID)))
	if obs.published != nil && obs.published.valid {
		// Workloads still have a working token: refreshing stays at most once a minute.
		delay = max(delay, minRefreshInterval)
	}
	until := obs.now.Add(delay)
	r.retries.block(keyOf(obs.tenant.Namespace, obs.tenant.Name), retryEntry{
		inputsHash: obs.inputsHash, generation: obs.tenant.Generation, until: until,
	})
	return outcome{
		Published:    obs.publishedFacts(),
		Problem:      p,
		Attempted:    true,
		Roles:        roles,
		NextRefresh:  until,
		RequeueAfter: untilEarliest(obs, until),
	}
}

func (r *DefenderTenantReconciler) refreshAt(obs *observation, minted, expires time.Time) time.Time {
	var before time.Duration
	if rb := obs.tenant.Spec.RefreshBefore; rb != nil {
		before = rb.Duration
	}
	return refreshTime(minted, expires, before, jitterFraction(string(obs.tenant.UID)))
}

// untilEarliest is the wait until `at`, or until the published token expires if that
// comes first, so that Ready turns to TokenExpired on time.
func untilEarliest(obs *observation, at time.Time) time.Duration {
	if pub := obs.published; pub != nil && obs.now.Before(pub.verdict.ExpiresAt) && pub.verdict.ExpiresAt.Before(at) {
		at = pub.verdict.ExpiresAt
	}
	return max(at.Sub(obs.now), time.Second)
}

func (obs *observation) publishedFacts() *tokenFacts {
	if obs.published == nil {
		return nil
	}
	return &tokenFacts{
		SecretName: obs.secretName,
		ExpiresAt:  obs.published.verdict.ExpiresAt,
		MintedAt:   obs.published.mintedAt,
		Valid:      obs.published.valid,
	}
}
