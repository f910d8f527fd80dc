// Package controllers holds the DefenderTenant controller.
package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// secretNameIndex indexes DefenderTenants by the names of the Secrets they read
// (the credential) and write (the token), so a Secret event finds its tenants
// without listing every DefenderTenant.
const secretNameIndex = "defender.tenantcreds.io/secret-names"

// DefenderTenantReconciler keeps one token Secret per DefenderTenant fresh.
type DefenderTenantReconciler struct {
	client.Client
	// APIReader reads Secrets straight from the API server. The manager caches only
	// Secret metadata, so no Secret's contents sit in the operator's memory beyond the
	// client secrets it uses, and a just-written token Secret is never read back stale.
	APIReader client.Reader
	// SecretMetadata reads Secret metadata from the watch cache (the manager's cache),
	// which spares the live reads that could tell nothing new; see secret_reads.go.
	// Nil sends every read to the API server.
	SecretMetadata client.Reader
	Clock          clock.PassiveClock
	Entra          entra.Requester
	// AuthorityHost, when set, replaces every cloud's authority host (proxies, emulators).
	AuthorityHost    string
	AllowedResources entra.AllowList
	Recorder         events.EventRecorder
	// MaxConcurrentReconciles bounds parallel reconciles, and so parallel token requests.
	MaxConcurrentReconciles int

	retries     retryGate
	credentials credentialCache
	unpublished perTenant[unpublishedToken]
}

// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defendertenants,verbs=get;list;watch
// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defendertenants/status,verbs=patch
// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defendertenants/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile observes the tenant, its credential and its published token, refreshes the
// token when it is due, and writes the status once.
func (r *DefenderTenantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tenant := &v1alpha1.DefenderTenant{}
	if err := r.Get(ctx, req.NamespacedName, tenant); err != nil {
		if apierrors.IsNotFound(err) {
			r.retries.forget(req.NamespacedName)
			r.unpublished.forget(req.NamespacedName)
			tenantsTally.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tenant.DeletionTimestamp.IsZero() {
		// The token Secret is owned by the tenant; garbage collection removes it.
		return ctrl.Result{}, nil
	}

	obs, err := r.observe(ctx, tenant)
	if err != nil {
		return ctrl.Result{}, err
	}
	out, err := r.refresh(ctx, obs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if out.Published != nil {
		if err := r.deleteStaleTokenSecret(ctx, tenant, obs.secretName); err != nil {
			return ctrl.Result{}, err
		}
	}

	status := computeStatus(tenant.Status, statusObservation{
		Generation:      tenant.Generation,
		Now:             obs.now,
		AdminConsentURL: obs.adminConsentURL,
		Published:       out.Published,
		Problem:         out.Problem,
		Attempted:       out.Attempted,
		Suspended:       tenant.Spec.Suspend,
		Roles:           out.Roles,
		NextRefresh:     out.NextRefresh,
	})
	if err := r.writeStatus(ctx, tenant, status); err != nil {
		return ctrl.Result{}, err
	}
	tenantsTally.set(req.NamespacedName, status)
	return ctrl.Result{RequeueAfter: out.RequeueAfter}, nil
}

// writeStatus patches the status only when it changed, and records an Event for
// transitions (never for a routine refresh).
func (r *DefenderTenantReconciler) writeStatus(ctx context.Context, tenant *v1alpha1.DefenderTenant, status v1alpha1.DefenderTenantStatus) error {
	if equality.Semantic.DeepEqual(tenant.Status, status) {
		return nil
	}
	before := tenant.DeepCopy()
	tenant.Status = status
	if err := r.Status().Patch(ctx, tenant, client.MergeFrom(before)); err != nil {
		return err
	}
	r.recordTransition(tenant, before.Status, status)
	return nil
}

// SetupWithManager registers the controller. Secrets are watched as metadata only,
// which is enough to notice credential rotation and deleted or edited token Secrets.
func (r *DefenderTenantReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.DefenderTenant{}, secretNameIndex, secretNames); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.DefenderTenant{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.tenantsForSecret),
			builder.WithPredicates(ignoreCreatedTokenSecrets)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}

// ignoreCreatedTokenSecrets drops Create events for Secrets a DefenderTenant
// controls. Such a Secret appears because the operator just published it (the tenant
// needs no second reconcile, which would cost two reads and could repeat a status
// patch from a stale cache) or because the cache is starting, when every
// DefenderTenant is queued anyway. Updates and deletions still wake the tenant.
var ignoreCreatedTokenSecrets = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return metav1ControllerOf(e.Object) == nil },
}

func secretNames(obj client.Object) []string {
	tenant := obj.(*v1alpha1.DefenderTenant)
	return []string{tenant.Spec.ClientSecretRef.Name, tenant.TokenSecretNameOrDefault()}
}

func (r *DefenderTenantReconciler) tenantsForSecret(ctx context.Context, secret client.Object) []reconcile.Request {
	r.forgetDeletedCredential(ctx, client.ObjectKeyFromObject(secret))
	var tenants v1alpha1.DefenderTenantList
	if err := r.List(ctx, &tenants, client.InNamespace(secret.GetNamespace()), client.MatchingFields{secretNameIndex: secret.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list DefenderTenants for a Secret", "secret", client.ObjectKeyFromObject(secret))
		return nil
	}
	requests := make([]reconcile.Request, 0, len(tenants.Items))
	for i := range tenants.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tenants.Items[i])})
	}
	// A Secret we own under a name the tenant no longer uses still leads back to it.
	if ref := metav1ControllerOf(secret); ref != nil && len(requests) == 0 {
		requests = append(requests, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: secret.GetNamespace(), Name: ref.Name}})
	}
	return requests
}

// retryGate remembers, per tenant, until when a failed token request must not be
// repeated for the same inputs. A change of credential or spec opens the gate at
// once; that is what makes a rotated secret take effect promptly. It lives in memory:
// after a restart each failing tenant retries once, which is cheap and safe.
type retryGate struct {
	entries perTenant[retryEntry]
}

type retryEntry struct {
	inputsHash string
	generation int64
	until      time.Time
}

func (g *retryGate) block(key types.NamespacedName, e retryEntry) { g.entries.set(key, e) }

// blocked reports until when the tenant must wait, if it must.
func (g *retryGate) blocked(key types.NamespacedName, inputsHash string, generation int64, now time.Time) (time.Time, bool) {
	e, ok := g.entries.get(key)
	if !ok || e.inputsHash != inputsHash || e.generation != generation || !now.Before(e.until) {
		return time.Time{}, false
	}
	return e.until, true
}

func (g *retryGate) forget(key types.NamespacedName) { g.entries.forget(key) }

// unpublishedToken is a token that was minted but whose write failed. It lives in
// memory only until the next attempt takes it.
type unpublishedToken struct {
	raw        string
	minted     time.Time
	inputsHash string
	generation int64
}

// perTenant is what the operator remembers per tenant between reconciles, safe for
// concurrent workers.
type perTenant[V any] struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]V
}

func (p *perTenant[V]) set(key types.NamespacedName, v V) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.entries == nil {
		p.entries = map[types.NamespacedName]V{}
	}
	p.entries[key] = v
}

func (p *perTenant[V]) get(key types.NamespacedName) (V, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.entries[key]
	return v, ok
}

func (p *perTenant[V]) forget(key types.NamespacedName) { p.take(key) }

func (p *perTenant[V]) take(key types.NamespacedName) (V, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.entries[key]
	delete(p.entries, key)
	return v, ok
}
