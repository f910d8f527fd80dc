package defenderapp

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
)

// SummaryInterval is the least time between two writes of one app's
// status.tenants: however many of its tenants change, an app costs the API server
// at most one status write per interval.
const SummaryInterval = 10 * time.Second

// SummaryReconciler keeps status.tenants of one kind of app: how many
// DefenderTenants use the app, how many are Ready or Stalled, why the others need
// attention, and how many are on a retiring resource. It is apart from the app's
// Reconciler so that a tenant's status change never re-runs the credential checks,
// and it writes nothing but status.tenants.
//
// When status.tenants was last written is kept in memory only: a restarted
// operator may write a changed summary at once, at most once per app.
type SummaryReconciler struct {
	client.Client
	Clock clock.PassiveClock
	// Kind is the kind served: v1alpha1.AppKindDefenderApp or
	// v1alpha1.AppKindClusterDefenderApp.
	Kind v1alpha1.AppKind
	// Interval is SummaryInterval unless set (tests).
	Interval time.Duration

	mu      sync.Mutex
	written map[types.NamespacedName]time.Time
}

// Reconcile writes the app's summary when it changed, unless it was written less
// than an Interval ago; then it comes back when the interval is over, and the
// tenants are only listed then.
func (r *SummaryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	app := newApp(r.Kind)
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !app.GetDeletionTimestamp().IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	now := r.Clock.Now()
	if wait := r.wait(req.NamespacedName, now); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	var tenants v1alpha1.DefenderTenantList
	// Read only, so the cache's objects need no copies: a large fleet is listed
	// without allocating it again.
	if err := r.List(ctx, &tenants, client.UnsafeDisableDeepCopy,
		client.MatchingFields{manager.AppIndex: manager.AppKey(r.Kind, req.Namespace, req.Name)}); err != nil {
		return ctrl.Result{}, err
	}
	summary := summarise(tenants.Items)
	if sameSummary(app.AppStatus().Tenants, summary) {
		return ctrl.Result{}, nil
	}
	patch, err := summaryPatch(app.AppStatus().Tenants, summary)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Status().Patch(ctx, app, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.remember(req.NamespacedName, now)
	ctrl.LoggerFrom(ctx).V(2).Info("Wrote the tenants' summary", "total", summary.Total, "ready", summary.Ready, "stalled", summary.Stalled)
	return ctrl.Result{}, nil
}

func newApp(kind v1alpha1.AppKind) v1alpha1.App {
	if kind == v1alpha1.AppKindClusterDefenderApp {
		return &v1alpha1.ClusterDefenderApp{}
	}
	return &v1alpha1.DefenderApp{}
}

func (r *SummaryReconciler) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return SummaryInterval
}

// wait is how long the app's next write must wait; zero or less: none.
func (r *SummaryReconciler) wait(app types.NamespacedName, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, ok := r.written[app]
	if !ok {
		return 0
	}
	return last.Add(r.interval()).Sub(now)
}

func (r *SummaryReconciler) remember(app types.NamespacedName, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written == nil {
		r.written = map[types.NamespacedName]time.Time{}
	}
	r.written[app] = at
}

// forget drops a deleted app, so that the map holds the apps that exist.
func (r *SummaryReconciler) forget(app types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.written, app)
}

// summarise counts the tenants of one app. A tenant needs attention when it is
// Stalled (counted under its Stalled reason), or when it is neither Ready nor
// Stalled and its Ready reason says why (Suspended, TokenExpired, Throttled, an
// app that is not Ready, …). Progressing is left out: the first token is on its
// way and nobody needs to act. Only reasons of v1alpha1.ReasonKinds are counted,
// so that whoever can write a tenant's status cannot grow the app's.
func summarise(tenants []v1alpha1.DefenderTenant) v1alpha1.TenantsSummary {
	var s v1alpha1.TenantsSummary
	for i := range tenants {
		t := &tenants[i]
		s.Total++
		ready := meta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady)
		stalled := meta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionStalled)
		isReady := ready != nil && ready.Status == metav1.ConditionTrue
		isStalled := stalled != nil && stalled.Status == metav1.ConditionTrue
		if isReady {
			s.Ready++
		}
		if t.Status.ResourceRetiresAt != nil {
			s.RetiringResource++
		}
		reason := ""
		switch {
		case isStalled:
			s.Stalled++
			reason = stalled.Reason
		case !isReady && ready != nil:
			reason = ready.Reason
		}
		if needsAttention(reason) {
			if s.Reasons == nil {
				s.Reasons = map[string]int32{}
			}
			s.Reasons[reason]++
		}
	}
	return s
}

func needsAttention(reason string) bool {
	kind, known := v1alpha1.ReasonKinds[reason]
	return known && kind != v1alpha1.KindReady && reason != v1alpha1.ReasonProgressing
}

// sameSummary: what the app shows is s. An app that shows none differs even from
// an empty summary, so that its columns read 0 rather than nothing.
func sameSummary(shown *v1alpha1.TenantsSummary, s v1alpha1.TenantsSummary) bool {
	if shown == nil {
		return false
	}
	if shown.Total != s.Total || shown.Ready != s.Ready || shown.Stalled != s.Stalled ||
		shown.RetiringResource != s.RetiringResource || len(shown.Reasons) != len(s.Reasons) {
		return false
	}
	for reason, n := range s.Reasons {
		if got, ok := shown.Reasons[reason]; !ok || got != n {
			return false
		}
	}
	return true
}

// summaryPatch is a JSON merge patch of status.tenants alone, so that it
// neither overwrites nor is overwritten by the app controller's status writes.
// A merge patch merges maps, so every reason the new summary lacks is deleted
// explicitly: each one the app shows, and each one it may show without the cache
// knowing yet (v1alpha1.ReasonKinds, a bounded set).
func summaryPatch(shown *v1alpha1.TenantsSummary, s v1alpha1.TenantsSummary) ([]byte, error) {
	tenants := map[string]any{"total": s.Total, "ready": s.Ready, "stalled": s.Stalled, "retiringResource": nil, "reasons": nil}
	if s.RetiringResource > 0 {
		tenants["retiringResource"] = s.RetiringResource
	}
	if len(s.Reasons) > 0 {
		reasons := map[string]any{}
		for reason := range v1alpha1.ReasonKinds {
			reasons[reason] = nil
		}
		if shown != nil {
			for reason := range shown.Reasons {
				reasons[reason] = nil
			}
		}
		for reason, n := range s.Reasons {
			reasons[reason] = n
		}
		tenants["reasons"] = reasons
	}
	return json.Marshal(map[string]any{"status": map[string]any{"tenants": tenants}})
}

// summaryOf is what a tenant adds to its app's summary; a tenant event that
// leaves it as it was (a refreshed token, a new expiry) queues nothing.
type summaryOf struct {
	app            string
	ready, stalled bool
	readyReason    string
	stalledReason  string
	retiring       bool
}

func tenantSummaryOf(t *v1alpha1.DefenderTenant) summaryOf {
	var s summaryOf
	if t.Spec.AppRef != nil {
		s.app = manager.AppKey(t.Spec.AppRef.KindOrDefault(), t.Namespace, t.Spec.AppRef.Name)
	}
	if c := meta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		s.ready, s.readyReason = c.Status == metav1.ConditionTrue, c.Reason
	}
	if c := meta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionStalled); c != nil {
		s.stalled, s.stalledReason = c.Status == metav1.ConditionTrue, c.Reason
	}
	s.retiring = t.Status.ResourceRetiresAt != nil
	return s
}

type requestQueue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// tenantEvents queues the app of r.Kind that a tenant names when what it adds to
// the summary changes, and on a switch of app both the one it leaves and the one
// it joins.
func (r *SummaryReconciler) tenantEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	enqueue := func(q requestQueue, obj client.Object) {
		if req, ok := r.appOf(obj); ok {
			q.Add(req)
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q requestQueue) {
			enqueue(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q requestQueue) {
			old, cur := e.ObjectOld.(*v1alpha1.DefenderTenant), e.ObjectNew.(*v1alpha1.DefenderTenant)
			if tenantSummaryOf(old) == tenantSummaryOf(cur) {
				return
			}
			enqueue(q, old)
			enqueue(q, cur)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q requestQueue) {
			enqueue(q, e.Object)
		},
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[client.Object], q requestQueue) {
			enqueue(q, e.Object)
		},
	}
}

// appOf is the app of r.Kind a tenant names, if any.
func (r *SummaryReconciler) appOf(obj client.Object) (reconcile.Request, bool) {
	t, ok := obj.(*v1alpha1.DefenderTenant)
	if !ok || t.Spec.AppRef == nil || t.Spec.AppRef.KindOrDefault() != r.Kind {
		return reconcile.Request{}, false
	}
	if r.Kind == v1alpha1.AppKindClusterDefenderApp {
		return reconcile.Request{NamespacedName: types.NamespacedName{Name: t.Spec.AppRef.Name}}, true
	}
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: t.Namespace, Name: t.Spec.AppRef.Name}}, true
}

// SetupWithManager registers the summary controller of r.Kind, named
// "<kind>-tenants". It uses manager.AppIndex, which manager.RegisterIndexes
// registers, and the DefenderTenant and app informers the other controllers
// share: it adds no cache. Its own status writes come back as app events, which
// find the summary unchanged and write nothing.
func (r *SummaryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	name := "defenderapp-tenants"
	if r.Kind == v1alpha1.AppKindClusterDefenderApp {
		name = "clusterdefenderapp-tenants"
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(newApp(r.Kind)).
		Watches(&v1alpha1.DefenderTenant{}, r.tenantEvents()).
		Complete(r)
}
