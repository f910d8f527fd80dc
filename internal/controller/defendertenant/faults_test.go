package defendertenant

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func TestMalformedCredentialValuesNeverReachEntra(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name  string
		value []byte
	}{
		{"binary garbage", []byte{0x00, 0xff, 0x10, 0x80, 'a', 'b'}},
		{"huge value", bytes.Repeat([]byte("A"), 512*1024)},
		{"a PEM certificate instead of a secret", []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")},
		{"inner whitespace", []byte("secret with spaces")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			createCredentialIn(t, h.ns, credentialName, map[string][]byte{"client-secret": tt.value})
			h.createTenant()
			h.reconcile()

			dt := h.tenant()
			expectCondition(t, dt, "Stalled", metav1.ConditionTrue, "InvalidClientSecret")
			if n := h.entra.TotalRequests(); n != 0 {
				t.Errorf("token requests = %d, want 0", n)
			}
			if msg := condition(dt, "Stalled").Message; len(msg) > 512 || strings.Contains(msg, string(tt.value)) {
				t.Errorf("message echoes the value or is oversized (%d bytes)", len(msg))
			}
		})
	}
}

func TestCredentialIsOnlyReadFromTheTenantsNamespace(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	// The credential exists, but in another namespace: the spec has no way to point there.
	other := createNamespace(t)
	createCredentialIn(t, other, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	h.createTenant()
	h.reconcile()

	expectCondition(t, h.tenant(), "Stalled", metav1.ConditionTrue, "CredentialsNotFound")
	if n := h.entra.TotalRequests(); n != 0 {
		t.Errorf("token requests = %d, want 0", n)
	}
}

// Not parallel: it counts the process's goroutines.
func TestHangingTokenEndpointTimesOutWithoutPileUp(t *testing.T) {
	requireControlPlane(t)
	h := newSerialHarness(t)
	h.r.Entra = &entra.Client{Timeout: 200 * time.Millisecond}
	h.createCredential(testClientSecret)
	const tenants = 20
	for i := range tenants {
		dt := newTenant(h.ns, fmt.Sprintf("hung-%d", i))
		if err := k8s.Create(h.ctx, dt); err != nil {
			t.Fatal(err)
		}
	}
	// The hanging requests are answered only when the test ends: a reconcile that
	// returns before then was ended by the client's own timeout.
	neverAnswered := make(chan struct{})
	t.Cleanup(func() { close(neverAnswered) })
	hangs := make([]entraemu.Failure, tenants)
	for i := range hangs {
		hangs[i] = entraemu.Failure{Status: http.StatusGatewayTimeout, Body: "upstream request timeout", Hold: neverAnswered}
	}
	h.entra.InjectFailures(testTenantID, hangs...)
	healthy := newTenant(h.ns, "healthy", func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = otherTenantID })
	h.entra.AddTenant(otherTenantID)
	h.entra.Grant(otherTenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	if err := k8s.Create(h.ctx, healthy); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()

	start := time.Now()
	var wg sync.WaitGroup
	reconcileErrs := make(chan error, tenants)
	for i := range tenants {
		wg.Go(func() {
			if _, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: keyOf(h.ns, fmt.Sprintf("hung-%d", i))}); err != nil {
				reconcileErrs <- err
			}
		})
	}
	if _, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: keyOf(h.ns, "healthy")}); err != nil {
		t.Fatal(err)
	}
	healthyDone := time.Since(start)
	returned := make(chan struct{})
	go func() { wg.Wait(); close(returned) }()
	// A cutoff for a client that does not give up, or only after DefaultTimeout
	// instead of its own; how long it took is logged, not judged.
	select {
	case <-returned:
	case <-time.After(entra.DefaultTimeout / 2):
		t.Fatalf("the reconciles of the hanging requests have not returned %s later: the client does not time out after its 200ms", entra.DefaultTimeout/2)
	}
	close(reconcileErrs)
	for err := range reconcileErrs {
		t.Error(err)
	}
	t.Logf("the hanging requests gave up %s after they started", time.Since(start).Round(time.Millisecond))

	dt := &v1alpha1.DefenderTenant{}
	for _, name := range []string{"hung-0", "hung-19"} {
		if err := k8s.Get(h.ctx, keyOf(h.ns, name), dt); err != nil {
			t.Fatal(err)
		}
		expectCondition(t, dt, "Reconciling", metav1.ConditionTrue, "TokenEndpointUnavailable")
	}
	if err := k8s.Get(h.ctx, keyOf(h.ns, "healthy"), dt); err != nil {
		t.Fatal(err)
	}
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
	t.Logf("healthy tenant published after %s while %d requests hung", healthyDone, tenants)

	// No pile-up: no goroutine is left in a token request, and of the connections
	// to the hanging endpoint none is left open but the few the pool keeps idle.
	// Counted by what the goroutines do, not in total: the manager and the HTTP
	// pool start and end goroutines of their own meanwhile.
	eventually(t, 5*time.Second, func() error {
		stacks := allStacks()
		if n := strings.Count(stacks, "internal/entra.(*Client).RequestToken"); n > 0 {
			return fmt.Errorf("%d goroutines still in a token request", n)
		}
		if n := strings.Count(stacks, "net/http.(*persistConn).readLoop"); n > http.DefaultMaxIdleConnsPerHost*2 {
			return fmt.Errorf("%d HTTP connections still open after the hanging requests (%d goroutines in all, %d before)", n, runtime.NumGoroutine(), baseline)
		}
		return nil
	})
}

// allStacks is the stack of every goroutine, as a panic would print them.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestThrottlingStormRespectsRetryAfterForEveryTenant(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	const tenants = 200
	retryAfter := make(map[string]time.Duration, tenants)
	for i := range tenants {
		tenantID := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		h.entra.AddTenant(tenantID)
		h.entra.Grant(tenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
		// Retry-After from 30 s to about 5 min, longer than the backoff for most.
		retryAfter[tenantID] = time.Duration(30+i*7/5) * time.Second
		h.entra.InjectFailures(tenantID, entraemu.Throttled(retryAfter[tenantID]))
		dt := newTenant(h.ns, fmt.Sprintf("t%03d", i), func(dt *v1alpha1.DefenderTenant) { dt.Spec.TenantID = tenantID })
		if err := k8s.Create(h.ctx, dt); err != nil {
			t.Fatal(err)
		}
	}
	reconcileAll := func() map[string]ctrl.Result {
		results := make(map[string]ctrl.Result, tenants)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 10)
		for i := range tenants {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				name := fmt.Sprintf("t%03d", i)
				res, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: keyOf(h.ns, name)})
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				results[fmt.Sprintf("00000000-0000-4000-8000-%012d", i)] = res
				mu.Unlock()
			})
		}
		wg.Wait()
		return results
	}

	for tenantID, res := range reconcileAll() {
		if res.RequeueAfter < retryAfter[tenantID] {
			t.Errorf("tenant %s requeued after %s, before its Retry-After %s", tenantID, res.RequeueAfter, retryAfter[tenantID])
		}
	}
	// Events arriving during the storm must not trigger early retries.
	h.clock.Step(29 * time.Second)
	reconcileAll()
	for tenantID := range retryAfter {
		if n := h.entra.Requests(tenantID); n != 1 {
			t.Errorf("tenant %s made %d requests before its Retry-After passed, want 1", tenantID, n)
		}
	}
}
