package defendertenant

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
)

func TestSecretMetadataCacheKeepsOnlyWhatTheOperatorReads(t *testing.T) {
	tenantRef := metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: manager.TenantKind, Name: "contoso", UID: "0d6f2a1c-9e11-4c4f-9b7e-6e3c1a8e2f6b", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	owned := func(refs ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta: credential.SecretTypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				Name: "contoso-token", Namespace: "customer", UID: "uid-1", ResourceVersion: "42",
				Labels: map[string]string{
					v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: "contoso",
					"team": "security", "padding": strings.Repeat("x", 63),
				},
				Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("{}", 1000)},
				OwnerReferences: refs,
				Finalizers:      []string{"example.com/keep"},
				ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
			},
		}
	}
	stripped := func(refs ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta: credential.SecretTypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				Name: "contoso-token", Namespace: "customer", UID: "uid-1", ResourceVersion: "42",
				Labels:          map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: "contoso"},
				OwnerReferences: refs,
			},
		}
	}
	other := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "uid-2"}
	notController := tenantRef
	notController.Controller = ptr.To(false)
	otherVersion := tenantRef
	otherVersion.APIVersion = "defender.tenantcreds.io/v9"
	hugeName := tenantRef
	hugeName.Name = strings.Repeat("a", 254)
	hugeUID := tenantRef
	hugeUID.UID = "0d6f2a1c-9e11-4c4f-9b7e-6e3c1a8e2f6b0"

	for _, tt := range []struct {
		name    string
		in, out *metav1.PartialObjectMetadata
	}{
		{"token Secret: the controller reference stays, the other owners go", owned(other, tenantRef), stripped(tenantRef)},
		{"a DefenderTenant that is not the controller", owned(notController), stripped()},
		{"a DefenderTenant of another API version", owned(otherVersion), stripped()},
		{"a DefenderTenant reference longer than an object name", owned(hugeName), stripped()},
		{"a DefenderTenant reference with a UID the API server never assigns", owned(hugeUID), stripped()},
		{"a Secret without labels", &metav1.PartialObjectMetadata{TypeMeta: credential.SecretTypeMeta, ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "customer", Annotations: map[string]string{"a": "b"}}},
			&metav1.PartialObjectMetadata{TypeMeta: credential.SecretTypeMeta, ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "customer"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := manager.StripSecretMetadata(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, tt.out) {
				t.Errorf("transformed (- got, + want):\n%s", diff.Diff(got, tt.out))
			}
		})
	}
}

// hugeSecretCount Secrets of hugeLabelBytes of labels each are what anyone who may
// create Secrets in one namespace can make the operator watch.
const (
	// hugeSecretsNamespace holds them; the suite's manager does not watch it.
	hugeSecretsNamespace = "huge-secret-metadata"
	hugeSecretCount      = 30
	hugeLabelBytes       = 1 << 20
	// maxLabelValue is the longest label value the API server accepts.
	maxLabelValue = 63
)

// createSecretWithHugeLabels creates a Secret whose labels, keys and values,
// hold hugeLabelBytes. Nothing of it is kept in this process.
func createSecretWithHugeLabels(t *testing.T, ns, name string) {
	t.Helper()
	labels := map[string]string{}
	for i, size := 0, 0; size < hugeLabelBytes; i++ {
		key := fmt.Sprintf("l-%05d", i)
		value := key + strings.Repeat("v", maxLabelValue-len(key))
		labels[key] = value
		size += len(key) + len(value)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	if err := k8s.Create(context.Background(), secret); err != nil {
		t.Fatalf("creating Secret %s with %d labels: %v", name, len(labels), err)
	}
}

func liveHeap() uint64 {
	// Twice: sync.Pool keeps what it held for one more collection.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A cache configured as the operator's (CacheOptions), watching Secret metadata as
// the controllers do, takes in 30 more Secrets with a megabyte of labels each for
// less than 2 MiB of heap. It runs alone: no other test allocates meanwhile, and
// the suite's manager does not watch its namespace.
func TestHugeSecretMetadataCostsTheCacheNothing(t *testing.T) {
	requireControlPlane(t)
	ns := hugeSecretsNamespace
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.DeleteAllOf(context.Background(), &corev1.Secret{}, client.InNamespace(ns)); err != nil {
			t.Error(err)
		}
	})
	opts := manager.CacheOptions([]string{ns}, ns)
	opts.Scheme = testScheme
	secretCache, err := cache.New(restConfig, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := secretCache.GetInformer(ctx, &metav1.PartialObjectMetadata{TypeMeta: credential.SecretTypeMeta}); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := secretCache.Start(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	if !secretCache.WaitForCacheSync(ctx) {
		t.Fatal("the cache did not sync")
	}

	cacheHolds := func(want int) func() error {
		return func() error {
			secrets := &metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "SecretList"}}
			if err := secretCache.List(ctx, secrets, client.InNamespace(ns)); err != nil {
				return err
			}
			if len(secrets.Items) != want {
				return fmt.Errorf("the cache holds %d Secrets, want %d", len(secrets.Items), want)
			}
			return nil
		}
	}

	// A watch decodes each event in a buffer that grows to the largest event it
	// has read, and keeps it (apimachinery's streaming decoder): a cost per watch,
	// bounded by the API server's object size limit, the same for one such Secret
	// as for thousands, and no part of the cache. One huge Secret first grows it,
	// so that what is measured is what holding the Secrets costs.
	createSecretWithHugeLabels(t, ns, "huge-first")
	eventually(t, time.Minute, cacheHolds(1))

	before := liveHeap()
	for i := range hugeSecretCount {
		createSecretWithHugeLabels(t, ns, fmt.Sprintf("huge-%02d", i))
	}
	eventually(t, time.Minute, cacheHolds(1+hugeSecretCount))
	after := liveHeap()
	runtime.KeepAlive(secretCache)

	growth := float64(int64(after)-int64(before)) / (1 << 20)
	t.Logf("heap grew by %.2f MiB while the cache took in %d Secrets with %d MiB of labels each", growth, hugeSecretCount, hugeLabelBytes>>20)
	if growth >= 2 {
		t.Errorf("heap grew by %.2f MiB, want less than 2 MiB", growth)
	}
}
