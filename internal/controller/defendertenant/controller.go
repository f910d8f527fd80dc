// Package defendertenant holds the DefenderTenant controller: observe, decide,
// act and settle for one token Secret per tenant (see docs/design.md).
package defendertenant

import (
	"context"
	"errors"
	"slices"

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
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/metrics"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Reconciler keeps one token Secret per DefenderTenant fresh.
type Reconciler struct {
	client.Client
	// APIReader reads Secrets straight from the API server. The manager caches only
	// Secret metadata, so no Secret's contents sit in the operator's memory beyond the
	// client secrets it uses, and a just-written token Secret is never read back stale.
	APIReader client.Reader
	// SecretMetadata reads Secret metadata from the watch cache (the manager's cache),
	// which spares the live reads that could tell nothing new (see observe.go).
	// Nil sends every read to the API server.
	SecretMetadata client.Reader
	Clock          clock.PassiveClock
	Entra          entra.Requester
	// Authorities is where each cloud's token requests go (--authority-host); nil
	// sends every cloud to its real sign-in host.
	Authorities      entra.Authorities
	AllowedResources entra.AllowList
	// SecretTemplateAnnotationPrefixes are the prefixes an annotation key of
	// spec.secretTemplate must start with (--secret-template-annotation-prefixes);
	// empty allows no annotation.
	SecretTemplateAnnotationPrefixes []string
	// ClusterApps: the operator may read ClusterDefenderApps and namespaces, so it
	// serves tenants of ClusterDefenderApps. A namespaced install may not, and
	// reports such tenants as not granted instead of failing to start.
	ClusterApps bool
	// ClusterResourceNamespace is where ClusterDefenderApp credentials live
	// (--cluster-resource-namespace); empty means credential.DefaultClusterResourceNamespace.
	ClusterResourceNamespace string
	// Credentials reads the apps' credentials, shared with the app controllers so
	// that each credential version is read and parsed once.
	Credentials *credential.Reader
	// AdminConsentRedirectURI, when set, is where the consent page sends the admin
	// afterwards (--admin-consent-redirect-uri); it must be registered on the app.
	AdminConsentRedirectURI string
	Recorder                events.EventRecorder
	// MaxConcurrentReconciles bounds parallel reconciles, and so parallel token requests.
	MaxConcurrentReconciles int
	// Discover asks OpenID discovery where a tenant Entra ID did not find lives
	// (see discovery.go); nil means entra.DiscoverTenant over the shared client.
	Discover func(ctx context.Context, authorityHost, tenantID string) (entra.TenantDiscovery, error)

	leftovers perTenant[leftover]
	// written is the status this process last wrote per tenant, until the watch
	// cache shows it (see observeOwnStatusWrite).
	written perTenant[writtenStatus]
	// created is the UID of the token Secret this process created per tenant,
	// until a status records it (see recordedTokenSecretUID).
	created perTenant[types.UID]
	// ownWrites holds, by token Secret, the resourceVersion this process's update of
	// it started from, until the watch announces that update (see
	// notOwnTokenSecretWrite).
	ownWrites perTenant[string]
	// discovered is what OpenID discovery said of a tenant in its current
	// TenantNotFound episode (see discoverCloud).
	discovered perTenant[discoveryMemo]
	// spreads is when each running spread of re-mints began (see enqueueSpread).
	spreads spreadOrigins
}

// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defendertenants,verbs=get;list;watch
// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defendertenants/status,verbs=patch
// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defendertenants/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=defender.tenantcreds.io,resources=defenderapps;clusterdefenderapps,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Reconcile observes the tenant, its credential and its published token, decides
// what to do, does it, and writes the status once, in a defer, also when acting
// failed.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	tenant := &v1alpha1.DefenderTenant{}
	if err := r.Get(ctx, req.NamespacedName, tenant); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tenant.DeletionTimestamp.IsZero() {
		// The token Secret is owned by the tenant; garbage collection removes it.
		return ctrl.Result{}, nil
	}
	// A failed read leaves nothing new to report: the status stays as it is and
	// controller-runtime retries.
	obs, err := r.observe(ctx, tenant)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := decide(obs)
	ctrl.LoggerFrom(ctx).V(2).Info("Decided", "check", p.check, "action", p.action.String())
	out := held(obs, p)
	defer func() {
		status := computeStatus(tenant.Status, statusInputOf(obs, out))
		if werr := r.writeStatus(ctx, tenant, status, retirementOf(obs)); werr != nil {
			if apierrors.IsNotFound(werr) {
				// Deleted while this reconcile acted: there is no one to report to, and
				// a token Secret just written goes with the tenant (garbage
				// collection), so neither its error nor a retry helps.
				r.forget(req.NamespacedName)
				res, err = ctrl.Result{}, nil
				return
			}
			// controller-runtime ignores a result returned with an error; its backoff retries.
			res, err = ctrl.Result{}, errors.Join(err, werr)
			return
		}
		metrics.Tenants.Set(req.NamespacedName, status)
	}()

	acted := r.act(ctx, obs, p)
	out = settle(obs, p, acted)
	r.recordTokenRequest(ctx, obs, acted, out)
	if out.err != nil {
		return ctrl.Result{}, out.err
	}
	return ctrl.Result{RequeueAfter: requeueAfter(obs.now, out.recheck, out.published)}, nil
}

// recordTokenRequest counts a token request in the metrics, and logs a failed one
// by the IDs Microsoft support and the customer's sign-in logs know it by; never
// the credential or the token, which no outcome holds.
func (r *Reconciler) recordTokenRequest(ctx context.Context, obs *observation, res result, out outcome) {
	reason := requestReason(obs, res)
	if reason == "" {
		return
	}
	metrics.RecordTokenRequest(reason, res.took)
	if f := out.failure; f != nil && reason != v1alpha1.ReasonTokenReady {
		ctrl.LoggerFrom(ctx).Info("Token request failed", "tenantID", obs.tenant.Spec.TenantID, "reason", f.Reason, "code", f.Code,
			"traceID", f.TraceID, "correlationID", f.CorrelationID, "clientRequestID", f.ClientRequestID)
	}
}

// statusInputOf is what the status is computed from. The generation is stamped only
// when the spec was fully handled: after an API error it was not.
func statusInputOf(obs *observation, out outcome) statusInput {
	generation := obs.tenant.Generation
	if out.err != nil {
		generation = obs.tenant.Status.ObservedGeneration
	}
	retiresAt, _ := entra.RetiresAt(obs.resource) // zero when it does not retire
	return statusInput{
		Generation:        generation,
		Now:               obs.now,
		AdminConsentURL:   obs.adminConsentURL,
		SecretName:        obs.secretName,
		Published:         out.published,
		SecretUID:         out.secretUID,
		Problem:           out.problem,
		Failure:           out.failure,
		Suspended:         obs.tenant.Spec.Suspend,
		Roles:             out.roles,
		NextRefresh:       out.nextRefresh,
		HandledRequest:    out.handledRequest,
		ResourceKnown:     obs.resourceKnown,
		ResourceRetiresAt: retiresAt,
	}
}

// forget drops what the operator remembers of a deleted tenant.
func (r *Reconciler) forget(key types.NamespacedName) {
	r.leftovers.forget(key)
	r.written.forget(key)
	r.created.forget(key)
	r.discovered.forget(key)
	metrics.Tenants.Forget(key)
}

// writeStatus patches the status only when it changed, and records an Event for
// transitions (never for a routine refresh).
func (r *Reconciler) writeStatus(ctx context.Context, tenant *v1alpha1.DefenderTenant, status v1alpha1.DefenderTenantStatus, retiring retirement) error {
	if equality.Semantic.DeepEqual(tenant.Status, status) {
		return nil
	}
	before := tenant.DeepCopy()
	tenant.Status = status
	if err := r.Status().Patch(ctx, tenant, client.MergeFrom(before)); err != nil {
		return err
	}
	key := client.ObjectKeyFromObject(tenant)
	prev, hadPrev := r.written.get(key)
	r.written.set(key, writtenOver(prev, hadPrev, before.ResourceVersion, tenant.ResourceVersion, *status.DeepCopy()))
	if uid, ok := r.created.get(key); ok && uid == status.TokenSecretUID {
		r.created.forget(key)
	}
	r.recordTransition(tenant, before.Status, status, retiring)
	return nil
}

// SetupWithManager registers the controller. Secrets are watched as metadata only,
// which is enough to notice credential rotation and deleted or edited token Secrets.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.DefenderTenant{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: r.forgetCaughtUpWrite},
			predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, refreshRequestChanged))).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.tenantsForSecret),
			builder.WithPredicates(ignoreCreatedTokenSecrets, predicate.Funcs{
				UpdateFunc: r.notOwnTokenSecretWrite,
				DeleteFunc: func(e event.DeleteEvent) bool { r.ownWrites.forget(client.ObjectKeyFromObject(e.Object)); return true },
			})).
		WatchesMetadata(&corev1.Secret{}, r.credentialEvents("Secret"), builder.WithPredicates(ignoreCreatedTokenSecrets)).
		Watches(&v1alpha1.DefenderApp{}, r.appEvents())
	if r.ClusterApps {
		inClusterResourceNamespace := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetNamespace() == r.clusterResourceNamespace() })
		b = b.Watches(&v1alpha1.ClusterDefenderApp{}, r.appEvents()).
			WatchesMetadata(&corev1.Namespace{}, r.namespaceEvents()).
			Watches(&corev1.ServiceAccount{}, r.credentialEvents("ServiceAccount"), builder.WithPredicates(inClusterResourceNamespace))
	}
	return b.WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}

// ignoreCreatedTokenSecrets drops Create events for Secrets a DefenderTenant
// controls. Such a Secret appears because the operator just published it (the tenant
// needs no second reconcile, which would cost two reads and could repeat a status
// patch from a stale cache) or because the cache is starting, when every
// DefenderTenant is queued anyway. Updates and deletions still wake the tenant.
var ignoreCreatedTokenSecrets = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return manager.TenantControllerOf(e.Object) == nil },
}

// refreshRequestChanged lets through the updates that change
// AnnotationRequestedAt, which the generation does not count.
var refreshRequestChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	return e.ObjectOld.GetAnnotations()[v1alpha1.AnnotationRequestedAt] != e.ObjectNew.GetAnnotations()[v1alpha1.AnnotationRequestedAt]
}}

// forgetCaughtUpWrite drops the status this process wrote for a tenant once the
// watch shows a version of the tenant that write did not replace: the cache has
// caught up, and memory holds only writes in flight. It lets every event through.
func (r *Reconciler) forgetCaughtUpWrite(e event.UpdateEvent) bool {
	key := client.ObjectKeyFromObject(e.ObjectNew)
	if w, ok := r.written.get(key); ok && !slices.Contains(w.replaced, e.ObjectNew.GetResourceVersion()) {
		r.written.forget(key)
	}
	return true
}

// notOwnTokenSecretWrite drops the Update event of the token Secret update this
// process just made, for the reason ignoreCreatedTokenSecrets drops its Create: the
// reconcile it would start reads the Secret again and, when the watch cache does not
// hold the status patch that followed the update yet, patches the same status a
// second time (a third of the tenants in a rotation did). The update is known by
// the version it moved the Secret from, the one the operator read and updated with
// (a conflicting update by anyone else fails the operator's, whose reconcile is then
// retried). Any other change of the Secret, a hand edit included, moves it from
// another version and wakes the tenant. The entry is dropped by the first Update
// event of the Secret, so it lives for the watch's delay; one lost with a restart
// costs one reconcile, nothing else.
func (r *Reconciler) notOwnTokenSecretWrite(e event.UpdateEvent) bool {
	key := client.ObjectKeyFromObject(e.ObjectNew)
	updatedFrom, ok := r.ownWrites.get(key)
	if !ok {
		return true
	}
	r.ownWrites.forget(key)
	return updatedFrom != e.ObjectOld.GetResourceVersion()
}

func (r *Reconciler) tenantsForSecret(ctx context.Context, secret client.Object) []reconcile.Request {
	r.Credentials.ForgetDeleted(ctx, client.ObjectKeyFromObject(secret))
	var tenants v1alpha1.DefenderTenantList
	if err := r.List(ctx, &tenants, client.InNamespace(secret.GetNamespace()), client.MatchingFields{manager.SecretNameIndex: secret.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list DefenderTenants for a Secret", "secret", client.ObjectKeyFromObject(secret))
		return nil
	}
	requests := make([]reconcile.Request, 0, len(tenants.Items))
	for i := range tenants.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tenants.Items[i])})
	}
	// A Secret we own under a name the tenant no longer uses still leads back to it.
	if ref := manager.TenantControllerOf(secret); ref != nil && len(requests) == 0 {
		requests = append(requests, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: secret.GetNamespace(), Name: ref.Name}})
	}
	return requests
}
