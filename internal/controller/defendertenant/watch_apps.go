package defendertenant

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
)

// rotationSpread is how far re-minting after a change of an app is spread: a
// certificate rotation of an app with thousands of tenants must not send them all to
// Entra ID (and to the API server) in the same second.
const rotationSpread = time.Minute

// tenantsOfApp lists the tenants that use an app, from the index.
func (r *Reconciler) tenantsOfApp(ctx context.Context, kind v1alpha1.AppKind, namespace, name string) []reconcile.Request {
	var tenants v1alpha1.DefenderTenantList
	opts := []client.ListOption{client.MatchingFields{manager.AppIndex: manager.AppKey(kind, namespace, name)}}
	if kind == v1alpha1.AppKindDefenderApp {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := r.List(ctx, &tenants, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list the DefenderTenants of an app", "app", manager.AppKey(kind, namespace, name))
		return nil
	}
	requests := make([]reconcile.Request, 0, len(tenants.Items))
	for i := range tenants.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tenants.Items[i])})
	}
	return requests
}

// appsOfCredential lists the apps whose credential is the Secret or ServiceAccount
// named: DefenderApps of its namespace, and ClusterDefenderApps when it is in the
// cluster resource namespace.
func (r *Reconciler) appsOfCredential(ctx context.Context, kind, namespace, name string) []client.Object {
	field := client.MatchingFields{manager.AppCredentialIndex: kind + "/" + name}
	var namespaced v1alpha1.DefenderAppList
	if err := r.List(ctx, &namespaced, client.InNamespace(namespace), field); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list the DefenderApps of a credential", "namespace", namespace, "name", name)
	}
	apps := make([]client.Object, 0, len(namespaced.Items))
	for i := range namespaced.Items {
		apps = append(apps, &namespaced.Items[i])
	}
	if !r.ClusterApps || namespace != r.clusterResourceNamespace() {
		return apps
	}
	var cluster v1alpha1.ClusterDefenderAppList
	if err := r.List(ctx, &cluster, field); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list the ClusterDefenderApps of a credential", "name", name)
	}
	for i := range cluster.Items {
		apps = append(apps, &cluster.Items[i])
	}
	return apps
}

func (r *Reconciler) tenantsOfCredential(ctx context.Context, kind, namespace, name string) []reconcile.Request {
	var requests []reconcile.Request
	for _, app := range r.appsOfCredential(ctx, kind, namespace, name) {
		requests = append(requests, r.tenantsOfApp(ctx, appKindOf(app), app.GetNamespace(), app.GetName())...)
	}
	return requests
}

func appKindOf(app client.Object) v1alpha1.AppKind {
	if _, ok := app.(*v1alpha1.ClusterDefenderApp); ok {
		return v1alpha1.AppKindClusterDefenderApp
	}
	return v1alpha1.AppKindDefenderApp
}

type requestQueue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// spreadOrigins remembers when each running spread began, by what it is about
// (an app, or a credential), for rotationSpread. A managed rotation changes the
// credential Secret twice within seconds (next.* written, then promoted); a
// second spread over a first would visit the tenants reached before the
// promotion again at the start of the minute, when the rest are still due, and
// double the busiest second. Spreads that share an origin give each tenant the
// same place in the same minute instead.
type spreadOrigins struct {
	mu    sync.Mutex
	began map[string]time.Time
}

// origin is when the spread about source began: now, unless one began less
// than rotationSpread ago. Origins older than that are forgotten, so the map
// holds only what changed within the last minute.
func (s *spreadOrigins) origin(source string, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, began := range s.began {
		if now.Sub(began) >= rotationSpread || now.Before(began) {
			delete(s.began, k)
		}
	}
	if began, ok := s.began[source]; ok {
		return began
	}
	if s.began == nil {
		s.began = map[string]time.Time{}
	}
	s.began[source] = now
	return now
}

// enqueueSpread queues the tenants evenly over the minute from origin, in the
// order of a hash of their names, so that a rotation reaches as many tenants in
// each second. A delay drawn from the hash alone is uniform only on average: at
// 1,000 tenants its busiest second held twice the mean. Ranking by the hash
// keeps the order the same for the same tenants, and mixes namespaces rather
// than taking them in turn. A tenant whose place in a running spread (origin
// before now) has passed gets the same place in the following minute: the
// work queue keeps the earlier of two times for a tenant still waiting, so
// every tenant is visited once at its place, whatever the spreads overlap.
func enqueueSpread(q requestQueue, requests []reconcile.Request, origin, now time.Time) {
	type ranked struct {
		req  reconcile.Request
		rank float64
	}
	order := make([]ranked, len(requests))
	for i, req := range requests {
		order[i] = ranked{req, jitterFraction(req.String())}
	}
	slices.SortFunc(order, func(a, b ranked) int { return cmp.Compare(a.rank, b.rank) })
	for i, r := range order {
		at := origin.Add(rotationSpread * time.Duration(i) / time.Duration(len(order)))
		if at.Before(now) {
			at = at.Add(rotationSpread)
		}
		q.AddAfter(r.req, at.Sub(now))
	}
}

// spread queues requests over the spread about source. A change that queues
// no tenant (any Secret of a watched namespace, most of them no credential)
// leaves no origin behind.
func (r *Reconciler) spread(q requestQueue, source string, requests []reconcile.Request) {
	if len(requests) == 0 {
		return
	}
	now := r.Clock.Now()
	enqueueSpread(q, requests, r.spreads.origin(source, now), now)
}

func enqueueNow(q requestQueue, requests []reconcile.Request) {
	for _, req := range requests {
		q.Add(req)
	}
}

// appEvents queues the tenants of an app. A new or deleted app, and a change of
// its grants, are applied at once (a withdrawn grant withdraws the token within
// seconds); a change of what tokens are minted with (client ID, cloud, credential)
// is spread over rotationSpread.
func (r *Reconciler) appEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	tenants := func(ctx context.Context, obj client.Object) []reconcile.Request {
		return r.tenantsOfApp(ctx, appKindOf(obj), obj.GetNamespace(), obj.GetName())
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q requestQueue) {
			enqueueNow(q, tenants(ctx, e.Object))
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q requestQueue) {
			old, cur := e.ObjectOld.(v1alpha1.App), e.ObjectNew.(v1alpha1.App)
			if old.GetGeneration() == cur.GetGeneration() {
				return // a status write, which changes nothing for tenants
			}
			// A change of grants may withdraw one, and a withdrawal is never spread,
			// even when the same update also changes what tokens are minted with.
			if equality.Semantic.DeepEqual(old.AppSpec(), cur.AppSpec()) || grantsChanged(old, cur) {
				enqueueNow(q, tenants(ctx, e.ObjectNew))
				return
			}
			r.spread(q, "app/"+manager.AppKey(appKindOf(cur), cur.GetNamespace(), cur.GetName()), tenants(ctx, e.ObjectNew))
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q requestQueue) {
			enqueueNow(q, tenants(ctx, e.Object))
		},
	}
}

// credentialEvents queues the tenants whose app's credential an event is about: at
// once when it appears or goes (its tenants have no usable token from it), spread
// when it changes (a rotation, and the tenants hold tokens still valid).
func (r *Reconciler) credentialEvents(kind string) handler.TypedEventHandler[client.Object, reconcile.Request] {
	tenants := func(ctx context.Context, obj client.Object) []reconcile.Request {
		return r.tenantsOfCredential(ctx, kind, obj.GetNamespace(), obj.GetName())
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q requestQueue) {
			enqueueNow(q, tenants(ctx, e.Object))
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q requestQueue) {
			if e.ObjectOld.GetResourceVersion() == e.ObjectNew.GetResourceVersion() {
				return // a resync
			}
			r.spread(q, kind+"/"+e.ObjectNew.GetNamespace()+"/"+e.ObjectNew.GetName(), tenants(ctx, e.ObjectNew))
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q requestQueue) {
			enqueueNow(q, tenants(ctx, e.Object))
		},
	}
}

// namespaceEvents re-evaluates the grants of a namespace's tenants when its labels
// change: a namespaceSelector grant may have started or stopped matching.
func (r *Reconciler) namespaceEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q requestQueue) {
			if equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
				return
			}
			var tenants v1alpha1.DefenderTenantList
			if err := r.List(ctx, &tenants, client.InNamespace(e.ObjectNew.GetName())); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Failed to list the DefenderTenants of a namespace", "namespace", e.ObjectNew.GetName())
				return
			}
			for i := range tenants.Items {
				if ref := tenants.Items[i].Spec.AppRef; ref != nil && ref.Kind == v1alpha1.AppKindClusterDefenderApp {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tenants.Items[i])})
				}
			}
		},
	}
}

// grantsChanged: an update of a ClusterDefenderApp changed its tenantGrants.
func grantsChanged(old, cur v1alpha1.App) bool {
	before, wasCluster := old.(*v1alpha1.ClusterDefenderApp)
	after, isCluster := cur.(*v1alpha1.ClusterDefenderApp)
	return wasCluster && isCluster && !equality.Semantic.DeepEqual(before.Spec.TenantGrants, after.Spec.TenantGrants)
}
