package controllers

import (
	"fmt"
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
	const n = 10000
	requests := make([]reconcile.Request, n)
	for i := range requests {
		requests[i] = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: fmt.Sprintf("customer-%03d", i%100), Name: fmt.Sprintf("tenant-%05d", i)}}
	}
	q := &delayRecorder{delays: map[reconcile.Request]time.Duration{}}
	enqueueSpread(q, requests)

	perSecond := map[int]int{}
	for _, req := range requests {
		d, ok := q.delays[req]
		if !ok {
			t.Fatalf("%s was not queued", req)
		}
		if d < 0 || d >= rotationSpread {
			t.Fatalf("%s queued after %s, want within [0, %s)", req, d, rotationSpread)
		}
		perSecond[int(d/time.Second)]++
	}
	busiest := 0
	for _, c := range perSecond {
		busiest = max(busiest, c)
	}
	if limit := n * 2 / 100; busiest > limit {
		t.Errorf("%d of %d tenants in the busiest second, want at most 2%% (%d)", busiest, n, limit)
	}
	if len(perSecond) != int(rotationSpread/time.Second) {
		t.Errorf("tenants fall in %d distinct seconds, want all %d", len(perSecond), int(rotationSpread/time.Second))
	}

	again := &delayRecorder{delays: map[reconcile.Request]time.Duration{}}
	enqueueSpread(again, requests[:10])
	for _, req := range requests[:10] {
		if again.delays[req] != q.delays[req] {
			t.Errorf("%s: delay %s, then %s: a tenant's place in the spread must not move", req, q.delays[req], again.delays[req])
		}
	}
}
