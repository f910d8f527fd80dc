package defendertenant

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// countingReader counts live Secret reads by name.
type countingReader struct {
	client.Reader
	mu    sync.Mutex
	reads map[string]int
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		c.mu.Lock()
		if c.reads == nil {
			c.reads = map[string]int{}
		}
		c.reads[key.Name]++
		c.mu.Unlock()
	}
	return c.Reader.Get(ctx, key, obj, opts...)
}

func (c *countingReader) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[name]
}

// unseenCache is a watch cache that has not yet seen any Secret.
type unseenCache struct{}

func (unseenCache) Get(_ context.Context, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
}

// List finds nothing, as a cache that has seen no Secret.
func (unseenCache) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

func TestSharedCredentialIsReadOncePerVersion(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	reads := &countingReader{Reader: k8s}
	h.r.APIReader, h.r.Credentials.APIReader = reads, reads
	cred := h.createCredential(testClientSecret)
	names := []string{tenantName, "fabrikam", "northwind"}
	for _, name := range names {
		if err := k8s.Create(h.ctx, newTenant(h.ns, name)); err != nil {
			t.Fatal(err)
		}
	}
	reconcileAll := func() {
		t.Helper()
		for _, name := range names {
			if _, err := h.r.Reconcile(h.ctx, reqNamed(h.ns, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	reconcileAll()
	if n := reads.count(credentialName); n != 1 {
		t.Errorf("credential read %d times for %d tenants, want once", n, len(names))
	}
	for _, name := range names {
		if n := reads.count(name + "-token"); n != 0 {
			t.Errorf("token Secret %s read %d times before it existed, want 0", name, n)
		}
		expectCondition(t, tenantNamed(t, h.ns, name), "Ready", metav1.ConditionTrue, "TokenReady")
	}

	cred.Data[v1alpha1.DefaultClientSecretKey] = []byte(testClientSecret + "\n")
	if err := k8s.Update(h.ctx, cred); err != nil {
		t.Fatal(err)
	}
	reconcileAll()
	if n := reads.count(credentialName); n != 2 {
		t.Errorf("credential read %d times after one update, want 2", n)
	}
	for _, name := range names {
		if n := reads.count(name + "-token"); n != 1 {
			t.Errorf("token Secret %s read %d times once it existed, want 1", name, n)
		}
	}
	if n := h.entra.Requests(testTenantID); n != len(names) {
		t.Errorf("token requests = %d, want %d: the same secret value needs no new token", n, len(names))
	}

	if err := k8s.Delete(h.ctx, cred); err != nil {
		t.Fatal(err)
	}
	reconcileAll()
	for _, name := range names {
		expectCondition(t, tenantNamed(t, h.ns, name), "Stalled", metav1.ConditionTrue, "CredentialsNotFound")
	}
	if h.r.Credentials.Holds(keyOf(h.ns, credentialName)) {
		t.Error("the deleted credential's value is still held in memory")
	}
}

func TestTokenSecretUnseenByTheCache(t *testing.T) {
	requireControlPlane(t)
	t.Run("a foreign Secret is left untouched", func(t *testing.T) {
		h := newHarness(t)
		h.r.SecretMetadata, h.r.Credentials.SecretMetadata = unseenCache{}, unseenCache{}
		h.createCredential(testClientSecret)
		foreign := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "contoso-token", Namespace: h.ns},
			Data:       map[string][]byte{"access_token": []byte("someone else's")},
		}
		if err := k8s.Create(h.ctx, foreign); err != nil {
			t.Fatal(err)
		}
		h.createTenant()
		h.reconcile()

		expectCondition(t, h.tenant(), "Stalled", metav1.ConditionTrue, "SecretConflict")
		after := h.tokenSecret("contoso-token")
		if after.ResourceVersion != foreign.ResourceVersion || string(after.Data["access_token"]) != "someone else's" {
			t.Error("the foreign Secret was modified")
		}
	})
	t.Run("own Secret is updated in place", func(t *testing.T) {
		h := newHarness(t)
		cred := h.createCredential(testClientSecret)
		h.createTenant()
		h.reconcile()
		before := h.tokenSecret("contoso-token")
		h.r.SecretMetadata, h.r.Credentials.SecretMetadata = unseenCache{}, unseenCache{}
		h.entra.SetAppSecrets(testClientID, entraemu.Secret{Value: "new-secret-value"})
		cred.Data[v1alpha1.DefaultClientSecretKey] = []byte("new-secret-value")
		if err := k8s.Update(h.ctx, cred); err != nil {
			t.Fatal(err)
		}
		h.reconcile()

		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
		after := h.tokenSecret("contoso-token")
		if after.UID != before.UID || after.ResourceVersion == before.ResourceVersion {
			t.Errorf("token Secret not updated in place: uid %s→%s, resourceVersion %s→%s", before.UID, after.UID, before.ResourceVersion, after.ResourceVersion)
		}
		if string(after.Data[v1alpha1.TokenSecretKeyAccessToken]) == string(before.Data[v1alpha1.TokenSecretKeyAccessToken]) {
			t.Error("the token was not replaced")
		}
	})
}

func reqNamed(ns, name string) ctrl.Request { return ctrl.Request{NamespacedName: keyOf(ns, name)} }

func tenantNamed(t *testing.T, ns, name string) *v1alpha1.DefenderTenant {
	t.Helper()
	dt := &v1alpha1.DefenderTenant{}
	if err := k8s.Get(context.Background(), keyOf(ns, name), dt); err != nil {
		t.Fatal(err)
	}
	return dt
}

// failingSecretWrites makes the next `failures` Secret creates and updates fail as
// an unreachable API server would.
type failingSecretWrites struct {
	client.Client
	mu       sync.Mutex
	failures int
}

func (f *failingSecretWrites) fail(obj client.Object) error {
	if _, ok := obj.(*corev1.Secret); !ok {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures == 0 {
		return nil
	}
	f.failures--
	return apierrors.NewServiceUnavailable("the API server is restarting")
}

func (f *failingSecretWrites) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if err := f.fail(obj); err != nil {
		return err
	}
	return f.Client.Create(ctx, obj, opts...)
}

func (f *failingSecretWrites) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if err := f.fail(obj); err != nil {
		return err
	}
	return f.Client.Update(ctx, obj, opts...)
}

// startWithFailingWrites is the common start of a tenant whose first Secret writes
// fail as an unreachable API server's would.
func (h *harness) startWithFailingWrites(failures int) {
	h.t.Helper()
	h.r.Client = &failingSecretWrites{Client: k8s, failures: failures}
	h.createCredential(testClientSecret)
	h.createTenant()
}

// reconcileFails reconciles and fails the test unless Reconcile returns an error.
func (h *harness) reconcileFails() {
	h.t.Helper()
	if _, err := h.r.Reconcile(h.ctx, reqFor(h.ns)); err == nil {
		h.t.Fatal("reconcile with a failing write returned no error")
	}
}

func TestFailedWriteOfAMintedTokenCostsNoSecondRequest(t *testing.T) {
	requireControlPlane(t)
	t.Run("the retry publishes the token already minted", func(t *testing.T) {
		h := newHarness(t)
		h.startWithFailingWrites(3)
		for range 3 {
			h.reconcileFails()
		}
		h.reconcile()
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
		if n := h.entra.Requests(testTenantID); n != 1 {
			t.Errorf("token requests = %d, want 1: the token minted before the failed writes is still good", n)
		}
		claimsOf(t, h.tokenSecret("contoso-token"))
	})
	t.Run("a spec change discards it", func(t *testing.T) {
		h := newHarness(t)
		h.startWithFailingWrites(1)
		h.reconcileFails()
		h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.RequiredRoles = []string{"Incident.Read.All"} })
		h.reconcile()
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
		if n := h.entra.Requests(testTenantID); n != 2 {
			t.Errorf("token requests = %d, want 2: a token minted for the previous spec was published", n)
		}
	})
}

// deletesTheTenantFirst deletes the DefenderTenant just before the operator writes
// its token Secret, as a user deleting it during a refresh does.
type deletesTheTenantFirst struct {
	client.Client
	tenant client.Object
}

func (d deletesTheTenantFirst) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		if err := d.Delete(ctx, d.tenant); err != nil {
			return err
		}
	}
	return d.Client.Create(ctx, obj, opts...)
}

func TestTenantDeletedWhileItsTokenIsPublishedEndsTheReconcileQuietly(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	dt := h.createTenant()
	h.r.Client = deletesTheTenantFirst{Client: k8s, tenant: dt}

	// The status write finds no tenant: that is the end of it, not an error for
	// controller-runtime to log with a stack trace and retry.
	if _, err := h.r.Reconcile(h.ctx, reqFor(h.ns)); err != nil {
		t.Errorf("Reconcile = %v, want nil once the tenant is gone", err)
	}
	if err := k8s.Get(h.ctx, keyOf(h.ns, tenantName), &v1alpha1.DefenderTenant{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the tenant was not deleted before the write: %v", err)
	}
}
