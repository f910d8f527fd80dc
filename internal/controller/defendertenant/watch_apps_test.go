package defendertenant

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
)

// delayRecorder is a work queue that only records AddAfter's delays.
type delayRecorder struct {
	requestQueue
	delays map[reconcile.Request]time.Duration
}

func (q *delayRecorder) AddAfter(req reconcile.Request, d time.Duration) { q.delays[req] = d }

func TestRotationIsSpreadOverAMinuteAndNeverBunchedInOneSecond(t *testing.T) {
	seconds := int(rotationSpread / time.Second)
	for _, n := range []int{1, 59, 1000, 10000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			requests := make([]reconcile.Request, n)
			for i := range requests {
				requests[i] = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: fmt.Sprintf("customer-%03d", i%100), Name: fmt.Sprintf("tenant-%05d", i)}}
			}
			q := &delayRecorder{delays: map[reconcile.Request]time.Duration{}}
			enqueueSpread(q, requests)

			perSecond := map[int]int{}
			namespacesInFirstSecond := map[string]bool{}
			for _, req := range requests {
				d, ok := q.delays[req]
				if !ok {
					t.Fatalf("%s was not queued", req)
				}
				if d < 0 || d >= rotationSpread {
					t.Fatalf("%s queued after %s, want within [0, %s)", req, d, rotationSpread)
				}
				perSecond[int(d/time.Second)]++
				if d < time.Second {
					namespacesInFirstSecond[req.Namespace] = true
				}
			}
			busiest := 0
			for _, c := range perSecond {
				busiest = max(busiest, c)
			}
			// As even as whole tenants allow: never more than one above the mean.
			if limit := (n + seconds - 1) / seconds; busiest > limit {
				t.Errorf("%d of %d tenants in the busiest second, want at most %d", busiest, n, limit)
			}
			if want := min(n, seconds); len(perSecond) != want {
				t.Errorf("tenants fall in %d distinct seconds, want %d", len(perSecond), want)
			}
			if n == 1 && q.delays[requests[0]] != 0 {
				t.Errorf("the only tenant of an app waits %s, want none", q.delays[requests[0]])
			}
			// The order is a hash's, not the namespaces' in turn.
			if n >= 1000 && len(namespacesInFirstSecond) < 10 {
				t.Errorf("the first second reaches %d namespaces, want tenants of many", len(namespacesInFirstSecond))
			}

			again := &delayRecorder{delays: map[reconcile.Request]time.Duration{}}
			reversed := slices.Clone(requests)
			slices.Reverse(reversed)
			enqueueSpread(again, reversed)
			for _, req := range requests {
				if again.delays[req] != q.delays[req] {
					t.Fatalf("%s: delay %s, then %s: the same tenants, listed in another order, must get the same places", req, q.delays[req], again.delays[req])
				}
			}
		})
	}
}

// queueRecorder records which requests were queued at once and which after a delay.
type queueRecorder struct {
	requestQueue
	now     []reconcile.Request
	delayed map[reconcile.Request]time.Duration
}

func (q *queueRecorder) Add(req reconcile.Request) { q.now = append(q.now, req) }
func (q *queueRecorder) AddAfter(req reconcile.Request, d time.Duration) {
	if q.delayed == nil {
		q.delayed = map[reconcile.Request]time.Duration{}
	}
	q.delayed[req] = d
}

func TestAppUpdateQueuesItsTenants(t *testing.T) {
	app := &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: "partner", Generation: 1},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec:      v1alpha1.AppSpec{ClientID: testClientID, Credential: certCredential()},
			TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{"a", "b"}, TenantIDs: []string{"*"}}},
		},
	}
	tenants := make([]client.Object, 0, 3)
	for _, ns := range []string{"a", "b", "c"} {
		tenants = append(tenants, newTenant(ns, "contoso", func(dt *v1alpha1.DefenderTenant) {
			dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
			dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: app.Name}
		}))
	}
	c := fake.NewClientBuilder().WithScheme(testScheme).WithIndex(&v1alpha1.DefenderTenant{}, manager.AppIndex, tenantAppKeys).WithObjects(tenants...).Build()
	r := &Reconciler{Client: c}

	rotated := func(a *v1alpha1.ClusterDefenderApp) { a.Spec.Credential.Certificate.SecretRef.Name = "rotated" }
	withdrawn := func(a *v1alpha1.ClusterDefenderApp) { a.Spec.TenantGrants[0].Namespaces = []string{"a"} }
	tests := []struct {
		name    string
		change  []func(*v1alpha1.ClusterDefenderApp)
		spreads bool
	}{
		{"a credential change is spread", []func(*v1alpha1.ClusterDefenderApp){rotated}, true},
		{"a grant change is at once", []func(*v1alpha1.ClusterDefenderApp){withdrawn}, false},
		{"a grant change with a credential change is at once", []func(*v1alpha1.ClusterDefenderApp){rotated, withdrawn}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := app.DeepCopy()
			cur.Generation = 2
			for _, change := range tt.change {
				change(cur)
			}
			q := &queueRecorder{}
			r.appEvents().Update(context.Background(), event.TypedUpdateEvent[client.Object]{ObjectOld: app, ObjectNew: cur}, q)
			if queued := len(q.now) + len(q.delayed); queued != len(tenants) {
				t.Fatalf("%d tenants queued, want all %d", queued, len(tenants))
			}
			if spread := len(q.delayed) > 0; spread != tt.spreads {
				t.Errorf("spread = %v (at once %d, delayed %d), want %v", spread, len(q.now), len(q.delayed), tt.spreads)
			}
		})
	}
}

// tenantAppKeys indexes tenants by their appRef as manager.RegisterIndexes does.
func tenantAppKeys(o client.Object) []string {
	ref := o.(*v1alpha1.DefenderTenant).Spec.AppRef
	return []string{manager.AppKey(ref.KindOrDefault(), o.GetNamespace(), ref.Name)}
}
