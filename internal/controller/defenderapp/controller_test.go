package defenderapp

import (
	"context"
	"fmt"
	"time"

	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestCredentialEventsQueueTheAppsThatUseIt(t *testing.T) {
	const crn = "operator-ns"
	namespaced := func(ns, name string, c v1alpha1.AppCredential) *v1alpha1.DefenderApp {
		return &v1alpha1.DefenderApp{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{Credential: c}}}
	}
	cluster := func(name string, c v1alpha1.AppCredential) *v1alpha1.ClusterDefenderApp {
		return &v1alpha1.ClusterDefenderApp{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterDefenderAppSpec{AppSpec: v1alpha1.AppSpec{Credential: c}}}
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	credentialKeys := func(o client.Object) []string { return credential.IndexKeys(o.(v1alpha1.App).AppSpec().Credential) }
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithIndex(&v1alpha1.DefenderApp{}, manager.AppCredentialIndex, credentialKeys).
		WithIndex(&v1alpha1.ClusterDefenderApp{}, manager.AppCredentialIndex, credentialKeys).
		WithObjects(
			namespaced("customer", "by-secret", clientSecretCredential("partner-app")),
			namespaced("customer", "by-cert", certificateCredential("partner-cert")),
			namespaced("elsewhere", "same-name", clientSecretCredential("partner-app")),
			cluster("cluster-secret", clientSecretCredential("partner-app")),
			cluster("cluster-wi", workloadIdentityCredential("partner-app")),
		).Build()
	secret := func(ns, name string) client.Object {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	tests := []struct {
		name   string
		kind   v1alpha1.AppKind
		object string
		obj    client.Object
		want   []string
	}{
		{"a Secret queues the DefenderApps of its namespace", v1alpha1.AppKindDefenderApp, "Secret", secret("customer", "partner-app"), []string{"customer/by-secret"}},
		{"a certificate Secret queues its DefenderApp", v1alpha1.AppKindDefenderApp, "Secret", secret("customer", "partner-cert"), []string{"customer/by-cert"}},
		{"an unused Secret queues nothing", v1alpha1.AppKindDefenderApp, "Secret", secret("customer", "unrelated"), nil},
		{"a Secret of the cluster resource namespace queues ClusterDefenderApps", v1alpha1.AppKindClusterDefenderApp, "Secret", secret(crn, "partner-app"), []string{"/cluster-secret"}},
		{"a Secret of a customer namespace queues no ClusterDefenderApp", v1alpha1.AppKindClusterDefenderApp, "Secret", secret("customer", "partner-app"), nil},
		{"a ServiceAccount queues its ClusterDefenderApp", v1alpha1.AppKindClusterDefenderApp, "ServiceAccount", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: crn, Name: "partner-app"}}, []string{"/cluster-wi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Reconciler{Client: c, Kind: tt.kind, ClusterResourceNamespace: crn}
			var got []string
			for _, req := range r.appsOfCredential(tt.object)(context.Background(), tt.obj) {
				got = append(got, req.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("queued %v, want %v", got, tt.want)
			}
		})
	}
}

// The app controllers as the operator wires them: the index registered once (by
// the DefenderTenant controller in the operator), the apps, their Secrets and
// ServiceAccounts watched.

func clientSecretCredential(secret string) v1alpha1.AppCredential {
	return v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: secret}}}
}

func certificateCredential(secret string) v1alpha1.AppCredential {
	return v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{SecretRef: v1alpha1.AppSecretReference{Name: secret}}}
}

func workloadIdentityCredential(serviceAccount string) v1alpha1.AppCredential {
	return v1alpha1.AppCredential{WorkloadIdentity: &v1alpha1.WorkloadIdentityCredential{ServiceAccountName: serviceAccount}}
}

// An app deleted without a finalizer is gone when its reconcile runs: the
// rotation memory kept for it goes with that reconcile, so creating and
// deleting apps grows nothing.
func TestRotationMemoryOfADeletedAppIsForgotten(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Client: fake.NewClientBuilder().WithScheme(scheme).Build(), Kind: v1alpha1.AppKindDefenderApp}
	for i := range 50 {
		gone := &v1alpha1.DefenderApp{ObjectMeta: metav1.ObjectMeta{Namespace: "customer", Name: fmt.Sprintf("app-%d", i), UID: types.UID(fmt.Sprint(i))}}
		r.rotations.update(gone, func(s *rotationState) { s.failures = 3 })
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(gone)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.rotations.apps); n != 0 {
		t.Fatalf("%d deleted apps still remembered, want none", n)
	}
}

func TestRotationMemoryOfAnAppCreatedAgainKeepsOnlyTheKeyGenerationLimit(t *testing.T) {
	var m rotationMemory
	generated := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	first := &v1alpha1.DefenderApp{ObjectMeta: metav1.ObjectMeta{Namespace: "customer", Name: "partner", UID: "1"}}
	m.update(first, func(s *rotationState) { s.failures, s.lastKeyGenerated, s.added.keyID = 4, generated, "k" })
	again := first.DeepCopy()
	again.UID = "2"
	got := m.get(again)
	if got.failures != 0 || got.added.keyID != "" || !got.lastKeyGenerated.Equal(generated) {
		t.Fatalf("memory of a new app under the same name: %+v, want only lastKeyGenerated kept", got)
	}
	m.update(again, func(s *rotationState) { s.failures++ })
	if got := m.get(again); got.failures != 1 || got.added.keyID != "" {
		t.Fatalf("after an update of the new app: %+v, want a fresh state", got)
	}
	m.forget(client.ObjectKeyFromObject(again))
	if got := m.get(again); !got.lastKeyGenerated.IsZero() {
		t.Fatalf("after forget: %+v", got)
	}
}
