package defendertenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// result is what act did, as Entra ID and the API server answered: raw facts,
// nothing judged. settle makes the outcome of it.
type result struct {
	// requested: a token request was made (or its TokenRequest was), taking took.
	requested bool
	took      time.Duration
	// credentialErr: the workload identity's TokenRequest failed; requestErr: the
	// token request did; answer is Entra ID's token otherwise.
	credentialErr error
	requestErr    error
	answer        *entra.Token
	// discoveredCloud is where OpenID discovery places a tenant the request did
	// not find (TenantNotFound); empty otherwise, or when discovery did not say.
	discoveredCloud v1alpha1.Cloud
	// minted is the answer's token when tokenVerdict let it be published;
	// refused is why not, otherwise.
	minted  *token
	refused *requestFailure
	// grantErr: the grant could not be read again before publishing;
	// grantWithdrawn: it no longer covers the tenant, so nothing was published and
	// the tenant's token Secrets were deleted (revokeErr: not all of them).
	grantErr       error
	grantWithdrawn bool
	revokeErr      error
	// writeErr is the failed write of the token Secret (errTokenSecretTaken: the
	// name is another's); secretUID the Secret written otherwise.
	writeErr  error
	secretUID types.UID
	// staleErr: the Secret under a former spec.tokenSecretName could not be deleted.
	staleErr error
}

// act carries out the plan: I/O only. What a token request and a write mean,
// and what the status says of them, is settle's.
func (r *Reconciler) act(ctx context.Context, obs *observation, p plan) result {
	var res result
	switch p.action {
	case actionRestore, actionPublishLeftover:
		r.publishUnderGrant(ctx, obs, p.token, &res)
	case actionMint:
		r.requestToken(ctx, obs, &res)
		if res.answer == nil {
			return res
		}
		if res.minted, res.refused = tokenVerdict(obs, res.answer); res.minted != nil {
			r.publishUnderGrant(ctx, obs, res.minted, &res)
		}
	case actionRevoke:
		res.revokeErr = r.revoke(ctx, obs)
	}
	return res
}

// revoke deletes every token Secret the tenant controls: those the API server
// lists, right now, with the operator's labels for this tenant and a controller
// reference to it, whatever their names (a renamed spec.tokenSecretName leaves one
// behind) and whatever the cache says of the tenant's status (a mint that finished
// just before the grant was withdrawn left one it has not recorded yet). Each is
// deleted with its UID as a precondition, so a Secret that took the name since it
// was listed is never touched. The token leaves memory too.
func (r *Reconciler) revoke(ctx context.Context, obs *observation) error {
	r.leftovers.forget(keyOf(obs.tenant.Namespace, obs.tenant.Name))
	deleted, err := r.deleteTokenSecrets(ctx, obs.tenant)
	if err != nil {
		return fmt.Errorf("withdrawing the token Secrets of the tenant: %w", err)
	}
	if len(deleted) > 0 {
		ctrl.LoggerFrom(ctx).Info("Deleted token Secrets minted under a grant the tenant no longer has", "secrets", deleted, "app", obs.app.describe())
	}
	return nil
}

// deleteTokenSecrets deletes the token Secrets the tenant controls, found live by
// the labels and controller reference the operator writes, and names those it
// deleted.
func (r *Reconciler) deleteTokenSecrets(ctx context.Context, tenant *v1alpha1.DefenderTenant) ([]string, error) {
	var secrets metav1.PartialObjectMetadataList
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := r.APIReader.List(ctx, &secrets, client.InNamespace(tenant.Namespace), tokenSecretLabels(tenant)); err != nil {
		return nil, fmt.Errorf("listing them: %w", err)
	}
	var deleted []string
	for i := range secrets.Items {
		secret := &secrets.Items[i]
		if !labelledTokenSecretOf(secret, tenant) || secret.DeletionTimestamp != nil {
			continue
		}
		err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID})
		switch {
		case err == nil:
			deleted = append(deleted, secret.Name)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// Gone already, or another Secret under that name now: not ours to delete.
		default:
			return deleted, fmt.Errorf("deleting %s: %w", secret.Name, err)
		}
	}
	return deleted, nil
}

// publishUnderGrant publishes a token, after checking, past the cache,
// that a ClusterDefenderApp still grants the tenant: a grant withdrawn while the
// request was in flight withdraws the token before anyone can mount it. If the
// grant was withdrawn after this check, the event of the withdrawal queues the
// tenant again, and that reconcile revokes what this one published.
func (r *Reconciler) publishUnderGrant(ctx context.Context, obs *observation, t *token, res *result) {
	if obs.app.kind == v1alpha1.AppKindClusterDefenderApp {
		allowed, err := r.grantStillAllows(ctx, obs)
		if err != nil {
			// Not published: the token stays in memory for the retry, like a failed write.
			r.leftovers.set(keyOf(obs.tenant.Namespace, obs.tenant.Name), leftoverOf(obs, t))
			res.grantErr = err
			return
		}
		if !allowed {
			res.grantWithdrawn = true
			res.revokeErr = r.revoke(ctx, obs)
			return
		}
	}
	r.publish(ctx, obs, t, res)
}

// publish writes t to the token Secret. When the write fails, t stays in memory, so
// that the retry publishes it instead of asking Entra ID again.
func (r *Reconciler) publish(ctx context.Context, obs *observation, t *token, res *result) {
	key := keyOf(obs.tenant.Namespace, obs.tenant.Name)
	res.secretUID, res.writeErr = r.writeTokenSecret(ctx, obs, t)
	switch {
	case errors.Is(res.writeErr, errTokenSecretTaken):
		r.leftovers.forget(key)
		return
	case res.writeErr != nil:
		r.leftovers.set(key, leftoverOf(obs, t))
		return
	}
	r.leftovers.forget(key)
	ctrl.LoggerFrom(ctx).V(1).Info("Published token", "expiresAt", conditions.RFC3339(t.expiresAt()))
	res.staleErr = r.deleteStaleTokenSecret(ctx, obs)
}

func leftoverOf(obs *observation, t *token) leftover {
	return leftover{raw: t.raw, mintedAt: t.mintedAt, inputsHash: t.inputsHash, generation: obs.tenant.Generation}
}
