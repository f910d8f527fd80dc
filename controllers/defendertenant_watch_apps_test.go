package controllers

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
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
