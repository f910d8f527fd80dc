package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// tokenSecretData is exactly what workloads mount; keys outside it are removed.
func tokenSecretData(tenantID, token string, expiresAt time.Time) map[string][]byte {
	return map[string][]byte{
		v1alpha1.TokenSecretKeyAccessToken: []byte(token),
		v1alpha1.TokenSecretKeyTokenType:   []byte("Bearer"),
		v1alpha1.TokenSecretKeyExpiresAt:   []byte(rfc3339(expiresAt)),
		v1alpha1.TokenSecretKeyTenantID:    []byte(tenantID),
	}
}

// publish makes the tenant's token Secret hold this token, creating it or restoring
// what was edited, and writes nothing when it already does. Labels and annotations of
// other tools are kept; only the operator's own are enforced.
func (r *DefenderTenantReconciler) publish(ctx context.Context, obs *observation, token string, expiresAt, minted time.Time) error {
	tenant := obs.tenant
	secret := obs.tokenSecret
	if secret == nil {
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: obs.secretName, Namespace: tenant.Namespace}, Type: corev1.SecretTypeOpaque}
	} else {
		secret = secret.DeepCopy()
	}
	before := secret.DeepCopy()

	if secret.Labels == nil {
		secret.Labels = map[string]string{}
	}
	maps.Copy(secret.Labels, map[string]string{
		v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue,
		v1alpha1.LabelTenant:    tenant.Name,
	})
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	maps.Copy(secret.Annotations, map[string]string{
		v1alpha1.AnnotationMintedAt:   rfc3339(minted),
		v1alpha1.AnnotationInputsHash: obs.inputsHash,
	})
	secret.Data = tokenSecretData(tenant.Spec.TenantID, token, expiresAt)
	secret.StringData = nil
	if err := controllerutil.SetControllerReference(tenant, secret, r.Scheme()); err != nil {
		return err
	}

	if obs.tokenSecret == nil {
		err := r.Create(ctx, secret)
		if apierrors.IsAlreadyExists(err) {
			return r.publishOverUnseen(ctx, obs, token, expiresAt, minted)
		}
		if err != nil {
			return fmt.Errorf("creating token Secret %s: %w", secret.Name, err)
		}
	} else if !equality.Semantic.DeepEqual(before, secret) {
		if err := r.Update(ctx, secret); err != nil {
			return fmt.Errorf("updating token Secret %s: %w", secret.Name, err)
		}
	}
	obs.tokenSecret = secret
	return nil
}

// errTokenSecretTaken: the token Secret's name belongs to a Secret the tenant does not own.
var errTokenSecretTaken = errors.New("token Secret name taken by a Secret the DefenderTenant does not own")

// publishOverUnseen handles a token Secret that exists although the watch cache had
// not seen it: it is read, then published over if the tenant owns it and left alone
// if not.
func (r *DefenderTenantReconciler) publishOverUnseen(ctx context.Context, obs *observation, token string, expiresAt, minted time.Time) error {
	live := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, keyOf(obs.tenant.Namespace, obs.secretName), live); err != nil {
		return fmt.Errorf("reading token Secret %s: %w", obs.secretName, err)
	}
	obs.tokenSecret = live
	if !metav1.IsControlledBy(live, obs.tenant) {
		return errTokenSecretTaken
	}
	return r.publish(ctx, obs, token, expiresAt, minted)
}

// deleteStaleTokenSecret removes the Secret published under a previous
// spec.tokenSecretName, once the token lives under the new name.
func (r *DefenderTenantReconciler) deleteStaleTokenSecret(ctx context.Context, tenant *v1alpha1.DefenderTenant, current string) error {
	old := tenant.Status.TokenSecretName
	if old == "" || old == current {
		return nil
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, keyOf(tenant.Namespace, old), secret); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(secret, tenant) {
		return nil
	}
	err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func keyOf(namespace, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: namespace, Name: name}
}

// metav1ControllerOf returns the DefenderTenant controlling obj, if any.
func metav1ControllerOf(obj metav1.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.Kind != "DefenderTenant" || ref.APIVersion != v1alpha1.GroupVersion.String() {
		return nil
	}
	return ref
}
