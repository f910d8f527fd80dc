package defendertenant

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/secrettemplate"
)

// tokenSecretData is exactly what workloads mount; keys outside it are removed.
func tokenSecretData(tenantID, token string, expiresAt time.Time) map[string][]byte {
	return map[string][]byte{
		v1alpha1.TokenSecretKeyAccessToken: []byte(token),
		v1alpha1.TokenSecretKeyTokenType:   []byte("Bearer"),
		v1alpha1.TokenSecretKeyExpiresAt:   []byte(conditions.RFC3339(expiresAt)),
		v1alpha1.TokenSecretKeyTenantID:    []byte(tenantID),
	}
}

// desiredTokenSecret is the token Secret as it must be to publish t: the live one
// with the operator's data, labels, annotations and ownerReference enforced, and
// everything other tools added kept. spec.secretTemplate's keys are rendered with
// t and join the data, which the operator owns whole; its labels and annotations
// are added, under the operator's own. It is pure, so decide can tell whether a
// write is needed without making one.
func desiredTokenSecret(obs *observation, t *token) *corev1.Secret {
	tenant := obs.tenant
	data := tokenSecretData(tenant.Spec.TenantID, t.raw, t.expiresAt())
	rendered := obs.secretTemplate.Render(secrettemplate.Values{
		AccessToken: t.raw,
		TokenType:   string(data[v1alpha1.TokenSecretKeyTokenType]),
		ExpiresAt:   string(data[v1alpha1.TokenSecretKeyExpiresAt]),
		TenantID:    tenant.Spec.TenantID,
		Resource:    obs.resource,
	})
	for k, v := range rendered {
		// Admission refuses the fixed keys already; the fixed ones win regardless.
		if _, fixed := data[k]; !fixed {
			data[k] = v
		}
	}
	extraLabels, extraAnnotations := map[string]string{}, map[string]string{}
	if tmpl := tenant.Spec.SecretTemplate; tmpl != nil {
		for k, v := range tmpl.Labels {
			extraLabels[k] = string(v)
		}
		extraAnnotations = tmpl.Annotations
	}
	var secret *corev1.Secret
	switch {
	case obs.tokenSecret == nil:
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: obs.secretName, Namespace: tenant.Namespace}, Type: corev1.SecretTypeOpaque}
	case obs.recordedSecretUID == "":
		// Adopted (a Secret from before UIDs were recorded): rebuilt, so that labels,
		// annotations and owner references someone else put there do not survive
		// into the Secret the operator now vouches for. The UID and version stay, as
		// preconditions of the update.
		live := obs.tokenSecret
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: live.Name, Namespace: live.Namespace, UID: live.UID, ResourceVersion: live.ResourceVersion}, Type: corev1.SecretTypeOpaque}
	default:
		secret = obs.tokenSecret.DeepCopy()
	}
	if secret.Labels == nil {
		secret.Labels = map[string]string{}
	}
	maps.Copy(secret.Labels, extraLabels)
	maps.Copy(secret.Labels, map[string]string{
		v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue,
		v1alpha1.LabelTenant:    tenant.Name,
	})
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	maps.Copy(secret.Annotations, extraAnnotations)
	maps.Copy(secret.Annotations, map[string]string{
		v1alpha1.AnnotationMintedAt:   conditions.RFC3339(t.mintedAt),
		v1alpha1.AnnotationInputsHash: t.inputsHash,
	})
	if app := obs.app.reference(); app != "" {
		secret.Annotations[v1alpha1.AnnotationApp] = app
	} else {
		delete(secret.Annotations, v1alpha1.AnnotationApp)
	}
	secret.Data = data
	secret.StringData = nil
	setControllerRef(secret, tenant)
	return secret
}

// setControllerRef makes tenant the Secret's controller. An earlier reference to it
// is replaced in place, so that an unchanged Secret compares equal, and references
// to other owners are kept.
func setControllerRef(secret *corev1.Secret, tenant *v1alpha1.DefenderTenant) {
	ref := *metav1.NewControllerRef(tenant, v1alpha1.GroupVersion.WithKind(manager.TenantKind))
	for i := range secret.OwnerReferences {
		if secret.OwnerReferences[i].UID == tenant.UID {
			secret.OwnerReferences[i] = ref
			return
		}
	}
	secret.OwnerReferences = append(secret.OwnerReferences, ref)
}

// errTokenSecretTaken: the token Secret's name belongs to a Secret the tenant does not own.
var errTokenSecretTaken = errors.New("token Secret name taken by a Secret the DefenderTenant does not own")

// writeTokenSecret creates or updates the token Secret so that it publishes t, and
// writes nothing when it already does. It returns the UID of the Secret written.
func (r *Reconciler) writeTokenSecret(ctx context.Context, obs *observation, t *token) (types.UID, error) {
	desired := desiredTokenSecret(obs, t)
	if obs.tokenSecret == nil {
		err := r.Create(ctx, desired)
		if apierrors.IsAlreadyExists(err) {
			return r.writeOverUnseen(ctx, obs, t)
		}
		if err != nil {
			return "", fmt.Errorf("creating token Secret %s: %w", desired.Name, err)
		}
		r.created.set(keyOf(obs.tenant.Namespace, obs.tenant.Name), desired.UID)
		return desired.UID, nil
	}
	if !tokenSecretDrifted(obs, t) {
		return obs.tokenSecret.UID, nil
	}
	// desired carries the read Secret's UID and resourceVersion, so the update fails
	// rather than land in another Secret that took the name since it was read.
	// Recorded before the update: its watch event may be handled before Update
	// returns. The version it moves the Secret from is the one read, which only
	// this update can move it from; if the update fails, nothing moved.
	key := client.ObjectKeyFromObject(desired)
	r.ownWrites.set(key, desired.ResourceVersion)
	if err := r.Update(ctx, desired); err != nil {
		r.ownWrites.forget(key)
		return "", fmt.Errorf("updating token Secret %s: %w", desired.Name, err)
	}
	return desired.UID, nil
}

// writeOverUnseen handles a token Secret that exists although the watch cache had
// not seen it: it is read, then written over if the tenant owns it and left alone
// if not. The observation stays as observed; the write works on a copy that knows
// the live Secret.
func (r *Reconciler) writeOverUnseen(ctx context.Context, obs *observation, t *token) (types.UID, error) {
	live := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, keyOf(obs.tenant.Namespace, obs.secretName), live); err != nil {
		return "", fmt.Errorf("reading token Secret %s: %w", obs.secretName, err)
	}
	recorded, err := r.recordedTokenSecretUID(ctx, obs.tenant, live)
	if err != nil {
		return "", err
	}
	if !ownsTokenSecret(live, obs.tenant, recorded, obs.app.inline(), obs.inputsHash) {
		return "", errTokenSecretTaken
	}
	seen := *obs
	seen.tokenSecret, seen.tokenSecretOwned, seen.recordedSecretUID = live, true, recorded
	return r.writeTokenSecret(ctx, &seen, t)
}

// deleteStaleTokenSecret removes the Secret published under a previous
// spec.tokenSecretName, once the token lives under the new name, if the tenant
// owns it as observe would tell (recordedTokenSecretUID and ownsTokenSecret).
func (r *Reconciler) deleteStaleTokenSecret(ctx context.Context, obs *observation) error {
	tenant := obs.tenant
	old := tenant.Status.TokenSecretName
	if old == "" || old == obs.secretName {
		return nil
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, keyOf(tenant.Namespace, old), secret); err != nil {
		return client.IgnoreNotFound(err)
	}
	recorded, err := r.recordedTokenSecretUID(ctx, tenant, secret)
	if err != nil {
		return err
	}
	if !ownsTokenSecret(secret, tenant, recorded, obs.app.inline(), obs.inputsHash) {
		return nil
	}
	err = r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func keyOf(namespace, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: namespace, Name: name}
}
