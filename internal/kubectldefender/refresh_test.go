package kubectldefender

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// requestedAt is each tenant's AnnotationRequestedAt, "" when it has none.
func requestedAt(t *testing.T, namespace string, names ...string) []string {
	t.Helper()
	values := make([]string, 0, len(names))
	for _, name := range names {
		values = append(values, getTenantT(t, namespace, name).Annotations[v1alpha1.AnnotationRequestedAt])
	}
	return values
}

func expectRequestedAt(t *testing.T, namespace string, want map[string]string) {
	t.Helper()
	for name, value := range want {
		if got := requestedAt(t, namespace, name)[0]; got != value {
			t.Errorf("%s/%s requested-at = %q, want %q", namespace, name, got, value)
		}
	}
}

// TestRefresh writes the current time, with nanoseconds, to the named tenants,
// or to those of --all with --reason, and to no other; a name that does not
// exist refreshes nothing.
func TestRefresh(t *testing.T) {
	f := createFleet(t, "refresh")
	path := kubeconfig(t, f.east)
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 11, 21, 12, 0, 0, 123456789, time.UTC))
	const first, second = "2026-11-21T12:00:00.123456789Z", "2026-11-21T12:00:00.123456790Z"

	got := run(t, path, clk, "refresh", "fabrikam", "contoso")
	if got.err != nil {
		t.Fatal(got.err)
	}
	golden(t, "refresh-names", got.stdout)
	expectRequestedAt(t, f.east, map[string]string{"contoso": first, "fabrikam": first, "northwind": "", "woodgrove": ""})

	clk.SetTime(clk.Now().Add(time.Nanosecond))
	got = run(t, path, clk, "refresh", "--all", "--reason", "MissingRoles")
	if got.err != nil {
		t.Fatal(got.err)
	}
	golden(t, "refresh-all-reason", got.stdout)
	expectRequestedAt(t, f.east, map[string]string{"contoso": first, "fabrikam": first, "northwind": second, "woodgrove": second})
	expectRequestedAt(t, f.west, map[string]string{"tailspin": ""})

	clk.SetTime(clk.Now().Add(time.Hour))
	got = run(t, path, clk, "refresh", "contoso", "nobody")
	if got.err == nil || got.err.Error() != `DefenderTenant "nobody" not found in namespace "refresh-east"` {
		t.Errorf("refresh of a missing tenant: error %v, want it named", got.err)
	}
	expectRequestedAt(t, f.east, map[string]string{"contoso": first})

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"refresh"}, "name the DefenderTenants to refresh, or use --all"},
		{[]string{"refresh", "contoso", "--all"}, "not both"},
		{[]string{"refresh", "contoso", "--reason", "MissingRoles"}, "--reason selects among --all"},
		{[]string{"refresh", "contoso", "-A"}, "--all-namespaces works with --all"},
	} {
		if got := run(t, path, clk, tt.args...); got.err == nil || !strings.Contains(got.err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, got.err, tt.want)
		}
	}
	expectRequestedAt(t, f.east, map[string]string{"contoso": first})
}

// TestRefreshWaitSkipsWhatOnlyTheClusterFixes: the operator never handles a
// request of a tenant whose reason only a fix in the cluster resolves, so --wait
// says so at once and fails, instead of waiting out --timeout (no operator runs
// here: waiting would time out).
func TestRefreshWaitSkipsWhatOnlyTheClusterFixes(t *testing.T) {
	f := createFleet(t, "refresh-skip")
	got := run(t, kubeconfig(t, f.west), nil, "refresh", "litware", "--wait", "--timeout", "20s")
	if got.err == nil || got.err.Error() != "1 of 1 tenants are not Ready" {
		t.Errorf("error %v, want 1 of 1 tenants are not Ready", got.err)
	}
	golden(t, "refresh-wait-cluster-side", got.stdout)
}

// TestRefreshWaitAfterConsent runs the operator: a tenant waits for consent
// (ConsentRequired, its backoff 15 minutes), the emulator grants the consent,
// two minutes pass (the once-a-minute rule allows a request), and refresh --wait
// returns Ready from the token request it caused, long before the backoff ends.
// A tenant still without consent comes back ConsentRequired, with a non-zero exit.
func TestRefreshWaitAfterConsent(t *testing.T) {
	op := startOperator(t)
	c := k8s(t)
	// A namespace of its own per run: envtest runs no garbage collector, so the
	// token Secrets of an earlier run on the same API server stay behind.
	ns := controlPlane.Namespace(t)
	t.Cleanup(func() { _ = c.DeleteAllOf(context.Background(), &v1alpha1.DefenderTenant{}, client.InNamespace(ns)) })
	ctx := context.Background()
	const consented, waiting = "a1a1a1a1-1111-4111-8111-111111111111", "b2b2b2b2-2222-4222-8222-222222222222"
	const clientID, secret = "c3c3c3c3-3333-4333-8333-333333333333", "refresh~wait.secret-value_0123456789"
	op.entra.AddApp(clientID, entraemu.Secret{Value: secret})
	op.entra.AddTenant(consented)
	op.entra.AddTenant(waiting)
	// The emulator lives as long as the test binary: an earlier run's consent goes.
	op.entra.Revoke(consented, clientID)
	op.entra.Revoke(waiting, clientID)
	before := map[string]int{consented: op.entra.Requests(consented), waiting: op.entra.Requests(waiting)}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "partner", Namespace: ns}, Data: map[string][]byte{v1alpha1.DefaultClientSecretKey: []byte(secret)}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for name, tenantID := range map[string]string{"alpha": consented, "beta": waiting} {
		tenant := &v1alpha1.DefenderTenant{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{controlledLabel: "true"}},
			Spec: v1alpha1.DefenderTenantSpec{
				TenantID: tenantID, ClientID: clientID, ClientSecretRef: v1alpha1.ClientSecretReference{Name: "partner"},
				Resource: graph, RequiredRoles: []string{"SecurityIncident.Read.All"},
			},
		}
		if err := c.Create(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"alpha", "beta"} {
		waitForReason(t, ns, name, v1alpha1.ReasonConsentRequired)
	}
	if n := op.entra.Requests(consented) - before[consented]; n != 1 {
		t.Fatalf("%d token requests for the tenant before its consent, want 1", n)
	}

	op.entra.Grant(consented, clientID, graph, "SecurityIncident.Read.All")
	op.clock.Step(2 * time.Minute)
	path := kubeconfig(t, ns)

	got := run(t, path, nil, "refresh", "alpha", "--wait", "--timeout", "60s")
	if got.err != nil {
		t.Fatalf("refresh --wait: %v (stdout %q)", got.err, got.stdout)
	}
	golden(t, "refresh-wait-ready", strings.ReplaceAll(got.stdout, ns+"/", "<namespace>/"))
	if n := op.entra.Requests(consented) - before[consented]; n != 2 {
		t.Errorf("%d token requests for the tenant, want 2: one more for the refresh", n)
	}
	alpha := getTenantT(t, ns, "alpha")
	if alpha.Status.LastHandledRequestedAt == "" || alpha.Status.LastHandledRequestedAt != alpha.Annotations[v1alpha1.AnnotationRequestedAt] {
		t.Errorf("lastHandledRequestedAt %q, requested-at %q: want the request handled", alpha.Status.LastHandledRequestedAt, alpha.Annotations[v1alpha1.AnnotationRequestedAt])
	}

	got = run(t, path, nil, "refresh", "beta", "--wait", "--timeout", "60s")
	if got.err == nil || got.err.Error() != "1 of 1 tenants are not Ready" {
		t.Errorf("refresh --wait of a tenant without consent: error %v, want 1 of 1 tenants are not Ready", got.err)
	}
	if want := ns + "/beta: not Ready: ConsentRequired: "; !strings.Contains(got.stdout, want) {
		t.Errorf("stdout %q, want a line starting %q", got.stdout, want)
	}
	if n := op.entra.Requests(waiting) - before[waiting]; n != 2 {
		t.Errorf("%d token requests for the tenant without consent, want 2: one more for the refresh", n)
	}
}

// waitForReason polls until the tenant's Ready reason is reason.
func waitForReason(t *testing.T, namespace, name, reason string) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		tenant := getTenantT(t, namespace, name)
		if c := meta.FindStatusCondition(tenant.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			last = c.Reason
		}
		return last == reason, nil
	})
	if err != nil {
		t.Fatalf("%s/%s: Ready reason %q, want %s: %v", namespace, name, last, reason, err)
	}
}
