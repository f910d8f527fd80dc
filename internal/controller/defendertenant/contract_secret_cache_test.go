package defendertenant

import (
	"context"
	"fmt"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// laggingSecretCache is Secret metadata as a watch cache that is behind the API
// server holds it: the Secrets of its namespaces as they were when it last caught
// up, and nothing created, changed or deleted since.
type laggingSecretCache struct {
	mu   sync.Mutex
	seen map[types.NamespacedName]metav1.PartialObjectMetadata
}

// catchUp makes the cache hold the Secrets of namespaces as the API server has them now.
func (c *laggingSecretCache) catchUp(t *testing.T, namespaces ...string) {
	t.Helper()
	seen := map[types.NamespacedName]metav1.PartialObjectMetadata{}
	for _, ns := range namespaces {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			seen[client.ObjectKeyFromObject(&s)] = s
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = seen
}

func (c *laggingSecretCache) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	into, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return fmt.Errorf("the Secret metadata cache holds no %T", obj)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.seen[key]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	s.DeepCopyInto(into)
	return nil
}

func (c *laggingSecretCache) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	into, ok := list.(*metav1.PartialObjectMetadataList)
	if !ok {
		return fmt.Errorf("the Secret metadata cache holds no %T", list)
	}
	var o client.ListOptions
	o.ApplyOptions(opts)
	c.mu.Lock()
	defer c.mu.Unlock()
	into.Items = nil
	for _, s := range c.seen {
		if (o.Namespace == "" || s.Namespace == o.Namespace) && (o.LabelSelector == nil || o.LabelSelector.Matches(labels.Set(s.Labels))) {
			into.Items = append(into.Items, *s.DeepCopy())
		}
	}
	return nil
}

func TestTokenSecretTheCacheHasNotSeenYetIsNotMintedAgain(t *testing.T) {
	h := newHarness(t)
	cache := &laggingSecretCache{}
	h.r.SecretMetadata = cache
	h.createCredential(testClientSecret)
	cache.catchUp(t, h.ns)
	h.createTenant()
	h.reconcile()
	h.expectReady()
	published := h.tokenSecret(tenantName + "-token")

	// The watch has not delivered the token Secret's creation when the tenant is
	// reconciled again, as a credential or app event can make it be.
	h.reconcile()

	h.expectReady()
	h.expectRequests(1)
	if after := h.tokenSecret(tenantName + "-token"); after.ResourceVersion != published.ResourceVersion {
		t.Errorf("the token Secret was written again (resourceVersion %s → %s) although its token is fresh", published.ResourceVersion, after.ResourceVersion)
	}
}

func TestTokenSecretReadsOfIdleTenants(t *testing.T) {
	t.Run("a published token is read once per reconcile", func(t *testing.T) {
		h := newHarness(t)
		cache := &laggingSecretCache{}
		h.r.SecretMetadata = cache
		h.publishToken()
		cache.catchUp(t, h.ns)
		reads := &countingReader{Reader: k8s}
		h.r.APIReader = reads

		for range 3 {
			h.reconcile()
		}
		h.expectReady()
		h.expectRequests(1)
		if n := reads.count(tenantName + "-token"); n != 3 {
			t.Errorf("token Secret read %d times in 3 reconciles, want 3", n)
		}
	})
	t.Run("a tenant that never published reads none", func(t *testing.T) {
		h := newHarness(t)
		cache := &laggingSecretCache{}
		h.r.SecretMetadata = cache
		h.createTenant() // no credential: it stalls before any token request
		cache.catchUp(t, h.ns)
		reads := &countingReader{Reader: k8s}
		h.r.APIReader = reads

		for range 3 {
			h.reconcile()
		}
		h.expectStalled(v1alpha1.ReasonCredentialsNotFound)
		if n := reads.count(tenantName + "-token"); n != 0 {
			t.Errorf("token Secret read %d times although the cache knows it does not exist, want 0", n)
		}
	})
}

// TestTokenPublishedUnderLaggingCachesIsNotMintedAgain: the tenant's cache and
// the Secrets' cache have both not seen the reconcile that published the token
// (its status write and its Secret). The next reconcile must find the token all
// the same, from what this process wrote, and not ask Entra ID again.
func TestTokenPublishedUnderLaggingCachesIsNotMintedAgain(t *testing.T) {
	h := newHarness(t)
	cache := &laggingSecretCache{}
	h.r.SecretMetadata = cache
	h.createCredential(testClientSecret)
	beforePublish := h.createTenant()
	cache.catchUp(t, h.ns)
	h.reconcile()
	h.expectReady()

	h.r.Client = &staleReads{Client: k8s, stale: beforePublish}
	h.reconcile()
	h.expectRequests(1)
}

// statusWritesFailing fails the first status writes with 503, as an API server
// that is briefly unavailable does.
type statusWritesFailing struct {
	client.Client
	failures int
}

func (s *statusWritesFailing) Status() client.SubResourceWriter {
	return failingStatusWriter{SubResourceWriter: s.Client.Status(), owner: s}
}

type failingStatusWriter struct {
	client.SubResourceWriter
	owner *statusWritesFailing
}

func (w failingStatusWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if w.owner.failures > 0 {
		w.owner.failures--
		return apierrors.NewServiceUnavailable("status writes are failing")
	}
	return w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// TestFailedStatusWriteAfterPublishingKeepsTheTokenOfAnAppTenant: the status write
// that was to record a just-created token Secret fails. A tenant of an app cannot
// prove the Secret its own by the inputs digest (a namespace editor could forge
// that), so without the UID this process remembers it would report SecretConflict
// against its own Secret for good.
func TestFailedStatusWriteAfterPublishingKeepsTheTokenOfAnAppTenant(t *testing.T) {
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createApp(appClientSecretCredential())
	h.createAppTenant(v1alpha1.AppKindDefenderApp, appName)
	h.r.Client = &statusWritesFailing{Client: k8s, failures: 1}
	if _, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: keyOf(h.ns, tenantName)}); err == nil {
		t.Fatal("the reconcile whose status write failed reported no error")
	}
	if h.tokenSecret(tenantName+"-token") == nil {
		t.Fatal("no token Secret was published before the status write")
	}

	h.reconcile()
	h.expectReady()
	h.expectRequests(1)
}
