// Package crd tests the CustomResourceDefinitions as the API server enforces them:
// their schemas, CEL rules, defaults and printer columns, and the samples.
package crd

import (
	"os"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/testenv"
)

var (
	testScheme   = runtime.NewScheme()
	controlPlane = &testenv.ControlPlane{Scheme: testScheme}
	// k8s is the API server's admin client, set by requireControlPlane.
	k8s client.Client
)

func TestMain(m *testing.M) {
	if err := clientgoscheme.AddToScheme(testScheme); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(testScheme); err != nil {
		panic(err)
	}
	code := m.Run()
	controlPlane.Stop()
	os.Exit(code)
}

func requireControlPlane(t testing.TB) {
	t.Helper()
	controlPlane.Require(t)
	k8s = controlPlane.Client
}

func createNamespace(t *testing.T) string {
	t.Helper()
	requireControlPlane(t)
	return controlPlane.Namespace(t)
}

// The IDs and names of the objects admitted; none is ever used to sign in.
const (
	testClientID   = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	testTenantID   = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	credentialName = "partner-app"
	tenantName     = "contoso"
)

// newTenant is an inline-form DefenderTenant that admission accepts.
func newTenant(ns, name string, mutate ...func(*v1alpha1.DefenderTenant)) *v1alpha1.DefenderTenant {
	dt := &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:        testTenantID,
			ClientID:        testClientID,
			ClientSecretRef: v1alpha1.ClientSecretReference{Name: credentialName},
			RequiredRoles:   []string{"Incident.Read.All", "AdvancedHunting.Read.All"},
		},
	}
	for _, m := range mutate {
		m(dt)
	}
	return dt
}
