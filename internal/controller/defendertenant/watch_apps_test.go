package defendertenant

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
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
			now := time.Now()
			enqueueSpread(q, requests, now, now)

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
			enqueueSpread(again, reversed, now, now)
			for _, req := range requests {
				if again.delays[req] != q.delays[req] {
					t.Fatalf("%s: delay %s, then %s: the same tenants, listed in another order, must get the same places", req, q.delays[req], again.delays[req])
				}
			}
		})
	}
}

// delayingQueue keeps, as client-go's delaying queue does, the earlier of two
// times for a request still waiting, on a clock the test moves.
type delayingQueue struct {
	requestQueue
	clock *clocktesting.FakePassiveClock
	due   map[reconcile.Request]time.Time
}

func (q *delayingQueue) AddAfter(req reconcile.Request, d time.Duration) {
	at := q.clock.Now().Add(d)
	if due, waiting := q.due[req]; !waiting || at.Before(due) {
		q.due[req] = at
	}
}

// runUntil hands out every request due by t, as workers would, and moves the clock to t.
func (q *delayingQueue) runUntil(t time.Time) (handed map[reconcile.Request]time.Time) {
	handed = map[reconcile.Request]time.Time{}
	for req, due := range q.due {
		if !due.After(t) {
			handed[req] = due
			delete(q.due, req)
		}
	}
	q.clock.SetTime(t)
	return handed
}

// A managed rotation changes the credential Secret twice within seconds: next.*
// (nothing for the tenants to do), then the promotion (every tenant re-mints).
// Whatever the time between them, every tenant is visited once after the
// promotion, within a minute, and no second holds more than the even share.
func TestOverlappingSpreadsVisitEachTenantOnceAtItsPlace(t *testing.T) {
	const n = 1000
	seconds := int(rotationSpread / time.Second)
	requests := make([]reconcile.Request, n)
	for i := range requests {
		requests[i] = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: fmt.Sprintf("customer-%03d", i%100), Name: fmt.Sprintf("tenant-%05d", i)}}
	}
	for _, gap := range []time.Duration{0, 300 * time.Millisecond, 2 * time.Second, 17500 * time.Millisecond, 59 * time.Second, rotationSpread, 90 * time.Second} {
		t.Run(gap.String(), func(t *testing.T) {
			start := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
			fakeClock := clocktesting.NewFakePassiveClock(start)
			r := &Reconciler{Clock: fakeClock}
			q := &delayingQueue{clock: fakeClock, due: map[reconcile.Request]time.Time{}}

			r.spread(q, "Secret/partner/cert", requests) // next.* written
			q.runUntil(start.Add(gap))                   // visited before the promotion: nothing to re-mint
			promoted := fakeClock.Now()
			r.spread(q, "Secret/partner/cert", requests) // promoted

			visits := q.runUntil(promoted.Add(2 * rotationSpread))
			if len(visits) != n {
				t.Fatalf("%d tenants visited after the promotion, want all %d", len(visits), n)
			}
			perSecond := map[int64]int{}
			for req, at := range visits {
				if at.Before(promoted) || !at.Before(promoted.Add(rotationSpread)) {
					t.Fatalf("%s visited %s after the promotion, want within [0, %s)", req, at.Sub(promoted), rotationSpread)
				}
				perSecond[at.Unix()]++
			}
			busiest := 0
			for _, c := range perSecond {
				busiest = max(busiest, c)
			}
			if limit := (n + seconds - 1) / seconds; busiest > limit {
				t.Errorf("%d of %d tenants re-mint in the busiest second after the promotion, want at most %d", busiest, n, limit)
			}
		})
	}
}

func TestSpreadOriginsAreForgottenAfterAMinute(t *testing.T) {
	var s spreadOrigins
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	if got := s.origin("a", t0); !got.Equal(t0) {
		t.Fatalf("first spread begins at %s, want now %s", got, t0)
	}
	if got := s.origin("a", t0.Add(59*time.Second)); !got.Equal(t0) {
		t.Errorf("a spread within the minute begins at %s, want the running one's %s", got, t0)
	}
	if got := s.origin("b", t0.Add(59*time.Second)); !got.Equal(t0.Add(59 * time.Second)) {
		t.Errorf("another source shares an origin: %s", got)
	}
	later := t0.Add(rotationSpread)
	if got := s.origin("a", later); !got.Equal(later) {
		t.Errorf("a spread a minute later begins at %s, want now %s", got, later)
	}
	s.origin("c", later.Add(2*rotationSpread))
	if len(s.began) != 1 {
		t.Errorf("%d origins remembered, want only the one begun within the minute", len(s.began))
	}

	// Updates of Secrets that are no app's credential queue nobody and are
	// not remembered: an editor writing Secrets in a loop grows nothing.
	r := &Reconciler{Clock: clocktesting.NewFakePassiveClock(t0)}
	for i := range 100 {
		r.spread(&delayRecorder{delays: map[reconcile.Request]time.Duration{}}, fmt.Sprintf("Secret/ns/unrelated-%d", i), nil)
	}
	if len(r.spreads.began) != 0 {
		t.Errorf("%d origins remembered for changes that queued no tenant", len(r.spreads.began))
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
	r := &Reconciler{Client: c, Clock: clocktesting.NewFakePassiveClock(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))}

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
