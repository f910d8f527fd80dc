package defendertenant

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
)

// summaryWorld is a harness with a manager of its own whose cache holds this
// test's namespaces and ClusterDefenderApps, as the summary controller reads them;
// with watched set, the manager runs both summary controllers too.
type summaryWorld struct {
	*harness
	other  string // a second namespace of tenants
	cached client.Client
	writes atomic.Int32
}

func newSummaryWorld(t *testing.T, watched func(c client.Client) []*defenderapp.SummaryReconciler) *summaryWorld {
	t.Helper()
	h := newHarness(t)
	w := &summaryWorld{harness: h, other: createNamespace(t)}
	cacheOpts := manager.CacheOptions([]string{h.ns, h.crn, w.other}, h.crn)
	cacheOpts.ByObject[&v1alpha1.ClusterDefenderApp{}] = cache.ByObject{Label: labels.SelectorFromSet(labels.Set{managedLabel: h.ns})}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:     testScheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cacheOpts,
		Client:     manager.ClientOptions(),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := manager.RegisterIndexes(ctx, mgr.GetFieldIndexer(), true); err != nil {
		t.Fatal(err)
	}
	w.cached = mgr.GetClient()
	if watched != nil {
		for _, r := range watched(w.counted()) {
			if err := r.SetupWithManager(mgr); err != nil {
				t.Fatal(err)
			}
		}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("the cache did not sync")
	}
	return w
}

// counted is the cached client, counting the status writes made through it.
func (w *summaryWorld) counted() client.Client {
	return statusWriteCounter{Client: w.cached, n: &w.writes}
}

type statusWriteCounter struct {
	client.Client
	n *atomic.Int32
}

func (c statusWriteCounter) Status() client.SubResourceWriter {
	return countedStatus{SubResourceWriter: c.Client.Status(), n: c.n}
}

type countedStatus struct {
	client.SubResourceWriter
	n *atomic.Int32
}

func (s countedStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	s.n.Add(1)
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

func (w *summaryWorld) reconciler(kind v1alpha1.AppKind) *defenderapp.SummaryReconciler {
	return &defenderapp.SummaryReconciler{Client: w.counted(), Clock: w.clock, Kind: kind}
}

// createApp creates a DefenderApp in the harness's namespace, or a
// ClusterDefenderApp this world's cache holds, and returns its key.
func (w *summaryWorld) createApp(kind v1alpha1.AppKind, name string) types.NamespacedName {
	w.t.Helper()
	spec := v1alpha1.AppSpec{ClientID: testClientID, Credential: appClientSecretCredential()}
	var app client.Object = &v1alpha1.DefenderApp{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name}, Spec: v1alpha1.DefenderAppSpec{AppSpec: spec}}
	if kind == v1alpha1.AppKindClusterDefenderApp {
		app = &v1alpha1.ClusterDefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: w.ns + "-" + name, Labels: map[string]string{managedLabel: w.ns}},
			Spec:       v1alpha1.ClusterDefenderAppSpec{AppSpec: spec, TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{w.ns}, TenantIDs: []string{"*"}}}},
		}
		w.t.Cleanup(func() { _ = k8s.Delete(context.Background(), app) })
	}
	if err := k8s.Create(w.ctx, app); err != nil {
		w.t.Fatal(err)
	}
	return client.ObjectKeyFromObject(app)
}

// appRef names the app of key; a nil ref: the inline form.
func appRef(kind v1alpha1.AppKind, key types.NamespacedName) *v1alpha1.AppReference {
	return &v1alpha1.AppReference{Kind: kind, Name: key.Name}
}

// tenantWith creates a tenant in ns naming ref, with the given status
// conditions, and retiring: a status.resourceRetiresAt.
func (w *summaryWorld) tenantWith(ns, name string, ref *v1alpha1.AppReference, retiring bool, conds ...metav1.Condition) *v1alpha1.DefenderTenant {
	w.t.Helper()
	dt := newTenant(ns, name, func(dt *v1alpha1.DefenderTenant) {
		if ref != nil {
			dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
			dt.Spec.AppRef = ref
		}
	})
	if err := k8s.Create(w.ctx, dt); err != nil {
		w.t.Fatal(err)
	}
	w.setStatus(dt, retiring, conds...)
	return dt
}

// setStatus writes the tenant's conditions as the tenant controller would, and
// waits until the cache holds them.
func (w *summaryWorld) setStatus(dt *v1alpha1.DefenderTenant, retiring bool, conds ...metav1.Condition) {
	w.t.Helper()
	now := metav1.NewTime(w.clock.Now().Truncate(time.Second))
	dt.Status.Conditions = nil
	for _, c := range conds {
		c.LastTransitionTime, c.Message, c.ObservedGeneration = now, "set by the test", dt.Generation
		dt.Status.Conditions = append(dt.Status.Conditions, c)
	}
	dt.Status.ResourceRetiresAt = nil
	if retiring {
		dt.Status.ResourceRetiresAt = &metav1.Time{Time: time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)}
	}
	if err := k8s.Status().Update(w.ctx, dt); err != nil {
		w.t.Fatal(err)
	}
	w.waitCached(dt)
}

func (w *summaryWorld) switchApp(dt *v1alpha1.DefenderTenant, ref *v1alpha1.AppReference) {
	w.t.Helper()
	dt.Spec.AppRef = ref
	if err := k8s.Update(w.ctx, dt); err != nil {
		w.t.Fatal(err)
	}
	w.waitCached(dt)
}

// waitCached waits until the cache holds obj's resourceVersion.
func (w *summaryWorld) waitCached(obj client.Object) {
	w.t.Helper()
	eventually(w.t, 10*time.Second, func() error {
		got := obj.DeepCopyObject().(client.Object)
		if err := w.cached.Get(w.ctx, client.ObjectKeyFromObject(obj), got); err != nil {
			return err
		}
		if got.GetResourceVersion() != obj.GetResourceVersion() {
			return fmt.Errorf("cache at resourceVersion %s, not %s", got.GetResourceVersion(), obj.GetResourceVersion())
		}
		return nil
	})
}

func readyAs(status metav1.ConditionStatus, reason string) metav1.Condition {
	return metav1.Condition{Type: v1alpha1.ConditionReady, Status: status, Reason: reason}
}

func stalledAs(reason string) metav1.Condition {
	return metav1.Condition{Type: v1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: reason}
}

var (
	tokenReady = readyAs(metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	consent    = []metav1.Condition{readyAs(metav1.ConditionFalse, v1alpha1.ReasonConsentRequired), stalledAs(v1alpha1.ReasonConsentRequired)}
	missing    = []metav1.Condition{readyAs(metav1.ConditionFalse, v1alpha1.ReasonMissingRoles), stalledAs(v1alpha1.ReasonMissingRoles)}
)

func (w *summaryWorld) summary(kind v1alpha1.AppKind, key types.NamespacedName) (*v1alpha1.TenantsSummary, string) {
	w.t.Helper()
	app := w.newAppObject(kind)
	if err := k8s.Get(w.ctx, key, app); err != nil {
		w.t.Fatal(err)
	}
	return app.AppStatus().Tenants, app.GetResourceVersion()
}

func (w *summaryWorld) reconcileSummary(r *defenderapp.SummaryReconciler, key types.NamespacedName) ctrl.Result {
	w.t.Helper()
	res, err := r.Reconcile(w.ctx, ctrl.Request{NamespacedName: key})
	if err != nil {
		w.t.Fatalf("Reconcile %s: %v", key, err)
	}
	return res
}

func (w *summaryWorld) expectSummary(kind v1alpha1.AppKind, key types.NamespacedName, want v1alpha1.TenantsSummary) {
	w.t.Helper()
	if got, _ := w.summary(kind, key); got == nil || !reflect.DeepEqual(*got, want) {
		w.t.Errorf("%s %s status.tenants = %+v, want %+v", kind, key, got, want)
	}
}

func TestAppSummaryCountsTheTenantsOfEachKindOfApp(t *testing.T) {
	requireControlPlane(t)
	for _, kind := range []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp, v1alpha1.AppKindClusterDefenderApp} {
		t.Run(string(kind), func(t *testing.T) {
			w := newSummaryWorld(t, nil)
			app, otherApp := w.createApp(kind, appName), w.createApp(kind, "other")
			ref := appRef(kind, app)
			w.tenantWith(w.ns, "ready-retiring", ref, true, tokenReady)
			w.tenantWith(w.ns, "ready", ref, false, tokenReady)
			w.tenantWith(w.ns, "consent", ref, true, consent...)
			w.tenantWith(w.ns, "missing", ref, false, missing...)
			w.tenantWith(w.ns, "suspended", ref, false, readyAs(metav1.ConditionFalse, v1alpha1.ReasonSuspended))
			w.tenantWith(w.ns, "progressing", ref, false, readyAs(metav1.ConditionFalse, v1alpha1.ReasonProgressing))
			w.tenantWith(w.ns, "new", ref, false)
			w.tenantWith(w.ns, "of-another-app", appRef(kind, otherApp), false, consent...)
			w.tenantWith(w.ns, "inline", nil, false, tokenReady)
			otherKind := v1alpha1.AppKindClusterDefenderApp
			if kind == otherKind {
				otherKind = v1alpha1.AppKindDefenderApp
			}
			w.tenantWith(w.ns, "of-the-other-kind", &v1alpha1.AppReference{Kind: otherKind, Name: app.Name}, false, tokenReady)
			// Only a ClusterDefenderApp serves other namespaces; a DefenderApp of the
			// same name there is another app.
			w.tenantWith(w.other, "elsewhere", ref, false, consent...)

			r := w.reconciler(kind)
			w.reconcileSummary(r, app)
			w.reconcileSummary(r, otherApp)

			want := v1alpha1.TenantsSummary{Total: 7, Ready: 2, Stalled: 2, RetiringResource: 2,
				Reasons: map[string]int32{v1alpha1.ReasonConsentRequired: 1, v1alpha1.ReasonMissingRoles: 1, v1alpha1.ReasonSuspended: 1}}
			if kind == v1alpha1.AppKindClusterDefenderApp {
				want.Total, want.Stalled, want.Reasons[v1alpha1.ReasonConsentRequired] = 8, 3, 2
			}
			w.expectSummary(kind, app, want)
			w.expectSummary(kind, otherApp, v1alpha1.TenantsSummary{Total: 1, Stalled: 1, Reasons: map[string]int32{v1alpha1.ReasonConsentRequired: 1}})
		})
	}
}

func TestAppSummaryIsWrittenAtMostOncePerIntervalAndOnlyWhenItChanged(t *testing.T) {
	requireControlPlane(t)
	w := newSummaryWorld(t, nil)
	kind := v1alpha1.AppKindDefenderApp
	app := w.createApp(kind, appName)
	ref := appRef(kind, app)
	first := w.tenantWith(w.ns, "first", ref, false, tokenReady)
	r := w.reconciler(kind)

	if res := w.reconcileSummary(r, app); res.RequeueAfter != 0 {
		t.Errorf("first write asks to come back after %s", res.RequeueAfter)
	}
	if n := w.writes.Load(); n != 1 {
		t.Fatalf("%d status writes for the first summary, want 1", n)
	}
	w.expectSummary(kind, app, v1alpha1.TenantsSummary{Total: 1, Ready: 1})

	// Four changes within the interval: none is written, each reconcile comes
	// back when the interval is over.
	start := w.clock.Now()
	changes := []func(){
		func() { w.setStatus(first, false, consent...) },
		func() { w.tenantWith(w.ns, "second", ref, false, tokenReady) },
		func() { w.tenantWith(w.ns, "third", ref, true, missing...) },
		func() { w.setStatus(first, false, tokenReady) },
	}
	for _, change := range changes {
		w.clock.Step(2 * time.Second)
		change()
		want := defenderapp.SummaryInterval - w.clock.Since(start)
		if res := w.reconcileSummary(r, app); res.RequeueAfter != want {
			t.Errorf("within the interval: come back after %s, want %s", res.RequeueAfter, want)
		}
	}
	if n := w.writes.Load(); n != 1 {
		t.Errorf("%d status writes after four changes within the interval, want still 1", n)
	}
	w.expectSummary(kind, app, v1alpha1.TenantsSummary{Total: 1, Ready: 1})

	w.clock.SetTime(start.Add(defenderapp.SummaryInterval))
	if res := w.reconcileSummary(r, app); res.RequeueAfter != 0 {
		t.Errorf("the write after the interval asks to come back after %s", res.RequeueAfter)
	}
	if n := w.writes.Load(); n != 2 {
		t.Fatalf("%d status writes once the interval is over, want 2", n)
	}
	w.expectSummary(kind, app, v1alpha1.TenantsSummary{Total: 3, Ready: 2, Stalled: 1, RetiringResource: 1,
		Reasons: map[string]int32{v1alpha1.ReasonMissingRoles: 1}})

	// Nothing changed since: neither the same reconciler after the interval nor a
	// restarted one writes.
	written := w.newAppObject(kind)
	if err := k8s.Get(w.ctx, app, written); err != nil {
		t.Fatal(err)
	}
	w.waitCached(written)
	w.clock.Step(time.Minute)
	w.reconcileSummary(r, app)
	w.reconcileSummary(w.reconciler(kind), app)
	if n := w.writes.Load(); n != 2 {
		t.Errorf("%d status writes with nothing changed, want still 2", n)
	}
	if _, rv := w.summary(kind, app); rv != written.GetResourceVersion() {
		t.Errorf("resourceVersion %s → %s with nothing changed", written.GetResourceVersion(), rv)
	}
}

func TestAppSummaryFollowsTenantsThroughWatches(t *testing.T) {
	requireControlPlane(t)
	var summaries []*defenderapp.SummaryReconciler
	w := newSummaryWorld(t, func(c client.Client) []*defenderapp.SummaryReconciler {
		// The interval is the subject of the test above; here every change is
		// written as soon as the watches deliver it, on the real clock the work
		// queue also uses.
		for _, kind := range []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp, v1alpha1.AppKindClusterDefenderApp} {
			summaries = append(summaries, &defenderapp.SummaryReconciler{Client: c, Clock: clock.RealClock{}, Kind: kind, Interval: time.Millisecond})
		}
		return summaries
	})
	a, b := w.createApp(v1alpha1.AppKindDefenderApp, "a"), w.createApp(v1alpha1.AppKindDefenderApp, "b")
	c := w.createApp(v1alpha1.AppKindClusterDefenderApp, "c")
	shows := func(kind v1alpha1.AppKind, key types.NamespacedName, want v1alpha1.TenantsSummary) func() error {
		return func() error {
			if got, _ := w.summary(kind, key); got == nil || !reflect.DeepEqual(*got, want) {
				return fmt.Errorf("%s status.tenants = %+v, want %+v", key, got, want)
			}
			return nil
		}
	}
	empty := v1alpha1.TenantsSummary{}
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindDefenderApp, b, empty))
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindClusterDefenderApp, c, empty))

	x := w.tenantWith(w.ns, "x", appRef(v1alpha1.AppKindDefenderApp, a), false, tokenReady)
	y := w.tenantWith(w.ns, "y", appRef(v1alpha1.AppKindDefenderApp, a), false, consent...)
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindDefenderApp, a,
		v1alpha1.TenantsSummary{Total: 2, Ready: 1, Stalled: 1, Reasons: map[string]int32{v1alpha1.ReasonConsentRequired: 1}}))

	w.switchApp(y, appRef(v1alpha1.AppKindDefenderApp, b))
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindDefenderApp, a, v1alpha1.TenantsSummary{Total: 1, Ready: 1}))
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindDefenderApp, b,
		v1alpha1.TenantsSummary{Total: 1, Stalled: 1, Reasons: map[string]int32{v1alpha1.ReasonConsentRequired: 1}}))

	w.switchApp(y, appRef(v1alpha1.AppKindClusterDefenderApp, c))
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindDefenderApp, b, empty))
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindClusterDefenderApp, c,
		v1alpha1.TenantsSummary{Total: 1, Stalled: 1, Reasons: map[string]int32{v1alpha1.ReasonConsentRequired: 1}}))

	w.setStatus(y, true, tokenReady)
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindClusterDefenderApp, c, v1alpha1.TenantsSummary{Total: 1, Ready: 1, RetiringResource: 1}))

	if err := k8s.Delete(w.ctx, x); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, shows(v1alpha1.AppKindDefenderApp, a, empty))
}

func TestAppControllerAndSummaryKeepEachOthersStatus(t *testing.T) {
	requireControlPlane(t)
	w := newSummaryWorld(t, nil)
	kind := v1alpha1.AppKindDefenderApp
	w.createCredential(testClientSecret)
	app := w.createApp(kind, appName)
	w.tenantWith(w.ns, "ready", appRef(kind, app), false, tokenReady)
	apps := w.appReconciler(kind, nil)

	w.reconcileApp(apps)
	w.expectApp(kind, v1alpha1.ReasonCredentialReady)
	// The summary controller reads the app from its cache, which must hold the
	// app controller's write for the test to say anything about it.
	withConditions := w.app(kind)
	w.waitCached(withConditions)
	w.reconcileSummary(w.reconciler(kind), app)
	w.expectApp(kind, v1alpha1.ReasonCredentialReady)
	w.expectSummary(kind, app, v1alpha1.TenantsSummary{Total: 1, Ready: 1})

	if err := k8s.Delete(w.ctx, getSecret(t, w.ns, credentialName)); err != nil {
		t.Fatal(err)
	}
	w.reconcileApp(apps)
	w.expectApp(kind, v1alpha1.ReasonCredentialsNotFound)
	w.expectSummary(kind, app, v1alpha1.TenantsSummary{Total: 1, Ready: 1})
}
