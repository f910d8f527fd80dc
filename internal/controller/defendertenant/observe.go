package defendertenant

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/secrettemplate"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

// observation is what one reconcile knows before it decides anything: facts only.
// observe builds it and nothing writes to it afterwards, so that decide is a pure
// function of it.
type observation struct {
	now    time.Time
	tenant *v1alpha1.DefenderTenant
	// app is what the tokens are requested with: the inline pair or the appRef's app.
	app appFacts

	authority string
	resource  string
	// resourceKnown: resource is what the tokens are for. It is not when spec.resource
	// is empty and the app, whose cloud picks the default, cannot be read.
	resourceKnown   bool
	adminConsentURL string
	// resourceAllowed: resource is in the operator's --allowed-resources, which
	// allowedResources lists for the message.
	resourceAllowed  bool
	allowedResources string

	// secretTemplate is spec.secretTemplate.data, checked; nil when there is none,
	// or when secretTemplateRefused says why spec.secretTemplate is not published.
	secretTemplate *secrettemplate.Template
	// secretTemplateRefused is why spec.secretTemplate cannot be published, told
	// from the spec alone; nil when it can.
	secretTemplateRefused error

	secretName string
	// tokenSecret is the live Secret named secretName, whoever owns it; nil if absent.
	tokenSecret *corev1.Secret
	// tokenSecretOwned: tokenSecret exists and is the tenant's (ownsTokenSecret).
	tokenSecretOwned bool
	// recordedSecretUID is status.tokenSecretUID, read live when the cached tenant
	// had none (recordedTokenSecretUID); empty when no Secret was recorded.
	recordedSecretUID types.UID
	// published is the token in the tenant's own token Secret, checked against the
	// current spec; nil when there is none or it is not a token of this tenant.
	published *token
	// otherAppTokens names the ClusterDefenderApps under which token Secrets of the
	// tenant, under any name, were minted (AnnotationApp), when the tenant no longer
	// uses them or they no longer exist: tokens to revoke.
	otherAppTokens []string

	// credential is the app's credential as read; its Source says where from.
	// Nothing is read (credential.NotRead) for an app that is missing or may not
	// serve the tenant.
	credential credential.Credential
	// inputsHash digests everything a token is minted from (see
	// AnnotationInputsHash); empty unless the credential is usable.
	inputsHash string
	// failureInputs digests what a failed request is retried with (see
	// LastFailure.InputsHash); it holds no secret material.
	failureInputs string

	// refreshRequest is the value of AnnotationRequestedAt when it asks for a token
	// that was not requested yet (it differs from status.lastHandledRequestedAt);
	// empty otherwise.
	refreshRequest string

	// leftover is the token a failed write left in memory, checked to be a token
	// of this tenant (expired or not), and leftoverGeneration the spec generation
	// it was minted for; nil when there is none. Whether it is still good to
	// publish is decide's (leftoverToken).
	leftover           *token
	leftoverGeneration int64
}

// token is a checked token, wherever it was found: in the token Secret, left over
// from a failed write, or just minted. It is the one shape a token has from
// observation to status.
type token struct {
	raw        string
	claims     tokencheck.Verdict
	mintedAt   time.Time
	inputsHash string
}

func (t *token) expiresAt() time.Time { return t.claims.ExpiresAt }

// usable: unexpired and carrying every required role, so workloads can use it.
func (t *token) usable(now time.Time) bool {
	return now.Before(t.claims.ExpiresAt) && len(t.claims.MissingRoles) == 0
}

func (r *Reconciler) observe(ctx context.Context, tenant *v1alpha1.DefenderTenant) (*observation, error) {
	r.observeOwnStatusWrite(tenant)
	app, err := r.observeApp(ctx, tenant)
	if err != nil {
		return nil, err
	}
	cloud := app.cloud
	obs := &observation{
		now:              r.Clock.Now(),
		tenant:           tenant,
		app:              app,
		authority:        r.Authorities.Host(cloud),
		resource:         effectiveResource(tenant, cloud),
		resourceKnown:    tenant.Spec.Resource != "" || app.inline() || app.object != nil,
		secretName:       tenant.TokenSecretNameOrDefault(),
		allowedResources: r.AllowedResources.String(),
	}
	obs.resourceAllowed = r.AllowedResources.Allows(obs.resource)
	if requested := tenant.Annotations[v1alpha1.AnnotationRequestedAt]; requested != tenant.Status.LastHandledRequestedAt {
		obs.refreshRequest = requested
	}
	obs.secretTemplate, obs.secretTemplateRefused = checkSecretTemplate(tenant.Spec.SecretTemplate, r.SecretTemplateAnnotationPrefixes)
	// Admins consent in a browser against the real cloud, never through an override.
	if app.clientID != "" {
		obs.adminConsentURL = entra.AdminConsentURL(entra.AuthorityHost(cloud), tenant.Spec.TenantID, app.clientID, obs.resource, app.redirectURI)
	}

	// The credential comes first: its digest is what proves a token Secret from
	// before UIDs were recorded to be ours.
	if err := r.observeCredential(ctx, obs); err != nil {
		return nil, err
	}
	if err := r.observeTokenSecret(ctx, obs); err != nil {
		return nil, err
	}
	if err := r.observeOtherTokenSecrets(ctx, obs); err != nil {
		return nil, err
	}
	obs.leftover, obs.leftoverGeneration = r.leftoverToken(obs)
	return obs, nil
}

// observeOwnStatusWrite puts into tenant the status this process last wrote, when
// the watch cache handed over a version of the tenant that write replaced: the
// status in the API server is then the one written, not the one cached. Without
// it, a lagging cache would hide a backoff, or a token published a moment ago,
// and cost a second token request. Once the cache shows any other version, the
// written status is in it (or was overwritten since), and memory lets it go.
func (r *Reconciler) observeOwnStatusWrite(tenant *v1alpha1.DefenderTenant) {
	key := client.ObjectKeyFromObject(tenant)
	w, ok := r.written.get(key)
	switch {
	case !ok:
	case slices.Contains(w.replaced, tenant.ResourceVersion):
		tenant.Status = *w.status.DeepCopy()
	default:
		r.written.forget(key)
	}
}

// observeOtherTokenSecrets notes the app every other token Secret of the tenant
// was minted under: one left under a former spec.tokenSecretName, whatever the
// status says of it now, must not carry a token out of its grant's reach. The
// watch cache keeps the labels and controller reference of every Secret, so it
// finds them without a request; each one found is then read live, metadata only,
// for its annotations, which the cache does not keep. Usually there is none.
func (r *Reconciler) observeOtherTokenSecrets(ctx context.Context, obs *observation) error {
	reader := r.SecretMetadata
	if reader == nil {
		reader = r.APIReader
	}
	var secrets metav1.PartialObjectMetadataList
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := reader.List(ctx, &secrets, client.InNamespace(obs.tenant.Namespace), tokenSecretLabels(obs.tenant)); err != nil {
		return fmt.Errorf("listing the token Secrets of the tenant: %w", err)
	}
	for i := range secrets.Items {
		cached := &secrets.Items[i]
		if cached.Name == obs.secretName || !labelledTokenSecretOf(cached, obs.tenant) {
			continue
		}
		live := &metav1.PartialObjectMetadata{TypeMeta: credential.SecretTypeMeta}
		err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cached), live)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading token Secret %s: %w", cached.Name, err)
		}
		obs.noteAppOf(live)
	}
	return nil
}

// tokenSecretLabels select the token Secrets the operator wrote for the tenant.
func tokenSecretLabels(tenant *v1alpha1.DefenderTenant) client.MatchingLabels {
	return client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: tenant.Name}
}

// noteAppOf records the app a Secret the tenant controls was minted under, when it
// is a ClusterDefenderApp other than the current app.
func (obs *observation) noteAppOf(secret metav1.Object) {
	if !labelledTokenSecretOf(secret, obs.tenant) || secret.GetDeletionTimestamp() != nil {
		// revoke would not find it, or could not make it go (a finalizer holds it),
		// and the tenant would be revoked again and again.
		return
	}
	app := secret.GetAnnotations()[v1alpha1.AnnotationApp]
	if !strings.HasPrefix(app, string(v1alpha1.AppKindClusterDefenderApp)+"/") || slices.Contains(obs.otherAppTokens, app) {
		return
	}
	// A deleted ClusterDefenderApp grants nothing any more: its tokens go as if its
	// grants had been withdrawn.
	if app != obs.app.reference() || obs.app.missing() {
		obs.otherAppTokens = append(obs.otherAppTokens, app)
	}
}

func (r *Reconciler) observeTokenSecret(ctx context.Context, obs *observation) error {
	key := keyOf(obs.tenant.Namespace, obs.secretName)
	if _, exists, known := credential.CachedSecretVersion(ctx, r.SecretMetadata, key); known && !exists && !statusShowsPublished(obs.tenant, obs.secretName) {
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
	obs.noteAppOf(secret)
	recorded, err := r.recordedTokenSecretUID(ctx, obs.tenant, secret)
	if err != nil {
		return err
	}
	obs.recordedSecretUID = recorded
	obs.tokenSecretOwned = ownsTokenSecret(secret, obs.tenant, recorded, obs.app.inline(), obs.inputsHash)
	if obs.tokenSecretOwned {
		obs.published = publishedToken(secret, expectation(obs.tenant, obs.app.clientID), obs.now)
	}
	return nil
}

// statusShowsPublished: the last status written says a token is published in the
// Secret of this name. When the watch cache does not know that Secret, either the
// cache has not yet seen the operator create it, or someone deleted it; only a live
// read tells which, and without it a fresh token would be minted again. Tenants
// whose status shows no token, such as those that never published one, still cost
// no read.
func statusShowsPublished(tenant *v1alpha1.DefenderTenant, secretName string) bool {
	return tenant.Status.TokenSecretUID != "" && tenant.Status.TokenSecretName == secretName
}

// labelledTokenSecretOf: the Secret carries the operator's labels for the tenant and
// names it as its controller. This is what revocation deletes: whoever could put
// both there could delete the Secret themselves.
func labelledTokenSecretOf(secret metav1.Object, tenant *v1alpha1.DefenderTenant) bool {
	labels := secret.GetLabels()
	return labels[v1alpha1.LabelManagedBy] == v1alpha1.ManagedByValue && labels[v1alpha1.LabelTenant] == tenant.Name && metav1.IsControlledBy(secret, tenant)
}

// recordedTokenSecretUID is status.tokenSecretUID. The watch cache may hand the
// reconcile a tenant from before the status write that recorded it; so when the
// cached tenant has none but a Secret names the tenant as its controller, the
// tenant is read again from the API server. That costs a read only in that case.
func (r *Reconciler) recordedTokenSecretUID(ctx context.Context, tenant *v1alpha1.DefenderTenant, secret *corev1.Secret) (types.UID, error) {
	if recorded := tenant.Status.TokenSecretUID; recorded != "" || !metav1.IsControlledBy(secret, tenant) {
		return recorded, nil
	}
	// This process created it, and the status write that was to record it failed:
	// without this, an app's tenant would find its own token Secret taken.
	if uid, ok := r.created.get(client.ObjectKeyFromObject(tenant)); ok && uid == secret.UID {
		return uid, nil
	}
	live := &v1alpha1.DefenderTenant{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(tenant), live); err != nil {
		return "", fmt.Errorf("reading DefenderTenant %s for the UID of its token Secret: %w", tenant.Name, err)
	}
	if live.UID != tenant.UID {
		return "", nil
	}
	return live.Status.TokenSecretUID, nil
}

// ownsTokenSecret tells whether the tenant may write secret. An ownerReference
// alone proves nothing: anyone who may create Secrets can name the tenant as
// controller. Ownership is the UID the operator recorded when it created the
// Secret. A Secret from before UIDs were recorded is the tenant's only for the
// inline form, and only if its inputs digest matches the current inputs, which
// takes the client secret to compute; an app's digest is computed from public data
// (a certificate's thumbprint, a ServiceAccount's UID) and proves nothing. Only an
// Opaque, mutable Secret is ever written.
func ownsTokenSecret(secret *corev1.Secret, tenant *v1alpha1.DefenderTenant, recorded types.UID, inline bool, inputsHash string) bool {
	if !metav1.IsControlledBy(secret, tenant) || secret.Type != corev1.SecretTypeOpaque || ptr.Deref(secret.Immutable, false) {
		return false
	}
	if recorded != "" {
		return secret.UID == recorded
	}
	return inline && inputsHash != "" && secret.Annotations[v1alpha1.AnnotationInputsHash] == inputsHash
}

// publishedToken reads the token in the tenant's own Secret. An expired token of
// ours is still returned (it is reported as TokenExpired); anything that is not a
// token of this tenant (hand-edited, or the spec changed), or that claims to be
// valid for more than tokencheck.MaxLifetime, is nil, and replaced.
func publishedToken(secret *corev1.Secret, expect tokencheck.Expectation, now time.Time) *token {
	raw := string(secret.Data[v1alpha1.TokenSecretKeyAccessToken])
	if raw == "" {
		return nil
	}
	// Checked without a time, so that an expired token is still recognised as ours.
	claims, err := tokencheck.Check(raw, expect, time.Time{})
	if err != nil || claims.ExpiresAt.After(now.Add(tokencheck.MaxLifetime)) {
		return nil
	}
	return &token{
		raw:        raw,
		claims:     claims,
		mintedAt:   mintedAt(secret, claims),
		inputsHash: secret.Annotations[v1alpha1.AnnotationInputsHash],
	}
}

// expectation is what every token of this tenant must match, whether just minted or
// found published: one definition, so the two checks cannot drift apart.
func expectation(tenant *v1alpha1.DefenderTenant, clientID string) tokencheck.Expectation {
	return tokencheck.Expectation{TenantID: tenant.Spec.TenantID, ClientID: clientID, RequiredRoles: tenant.Spec.RequiredRoles}
}

// mintedAt reads when the published token was minted. The annotation is authoritative;
// iat is the fallback (Entra backdates it by about five minutes).
func mintedAt(secret *corev1.Secret, claims tokencheck.Verdict) time.Time {
	if t, err := time.Parse(time.RFC3339, secret.Annotations[v1alpha1.AnnotationMintedAt]); err == nil {
		return t
	}
	if !claims.IssuedAt.IsZero() {
		return claims.IssuedAt
	}
	return claims.ExpiresAt.Add(-time.Hour)
}

func (r *Reconciler) observeCredential(ctx context.Context, obs *observation) error {
	cred, err := r.readAppCredential(ctx, obs)
	if err != nil {
		return err
	}
	obs.credential = cred
	spec, app := obs.tenant.Spec, obs.app
	if app.inline() {
		obs.failureInputs = inputsHash(strconv.FormatInt(obs.tenant.Generation, 10), obs.authority, spec.TenantID, spec.ClientID, obs.resource, cred.Version)
		if cred.State == credential.Usable {
			obs.inputsHash = inputsHash(obs.authority, spec.TenantID, spec.ClientID, obs.resource, cred.Material())
		}
		return nil
	}
	appGeneration := ""
	if app.object != nil {
		appGeneration = strconv.FormatInt(app.object.GetGeneration(), 10)
	}
	obs.failureInputs = inputsHash(strconv.FormatInt(obs.tenant.Generation, 10), obs.authority, spec.TenantID, app.clientID, obs.resource,
		app.identity(), appGeneration, cred.Version)
	if cred.State == credential.Usable {
		obs.inputsHash = inputsHash(obs.authority, spec.TenantID, app.clientID, obs.resource, app.identity(), cred.Material())
	}
	return nil
}

// readAppCredential reads the credential where the app's kind says it lives: the
// inline clientSecretRef in the tenant's namespace, a DefenderApp's in its own
// namespace, a ClusterDefenderApp's in the cluster resource namespace. Nothing is
// read for an app that is missing or may not serve the tenant.
func (r *Reconciler) readAppCredential(ctx context.Context, obs *observation) (credential.Credential, error) {
	app := obs.app
	var source credential.Source
	switch {
	case app.inline():
		source = credential.ForInlineTenant(obs.tenant)
	case app.missing() || !app.allowed:
		return credential.Credential{State: credential.NotRead}, nil
	default:
		source = credential.ForApp(app.object.AppSpec().Credential, app.credentialNamespace)
	}
	if source == nil {
		return credential.Credential{State: credential.NotRead}, nil
	}
	cred, err := r.Credentials.Read(ctx, source)
	if err != nil {
		return cred, fmt.Errorf("the credential of %s: %w", app.describe(), err)
	}
	return cred, nil
}

// inputsHash is a one-way digest: it tells whether a token was minted, or a request
// failed, with the current inputs without storing the inputs themselves.
func inputsHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// leftoverToken is the token a failed write left in memory, when it is a token
// of this tenant, and the generation it was minted for.
func (r *Reconciler) leftoverToken(obs *observation) (*token, int64) {
	t, ok := r.leftovers.get(keyOf(obs.tenant.Namespace, obs.tenant.Name))
	if !ok {
		return nil, 0
	}
	// Checked without a time, so that an expired token is still recognised; decide
	// tells whether it may be published.
	claims, err := tokencheck.Check(t.raw, expectation(obs.tenant, obs.app.clientID), time.Time{})
	if err != nil {
		return nil, 0
	}
	return &token{raw: t.raw, claims: claims, mintedAt: t.mintedAt, inputsHash: t.inputsHash}, t.generation
}
