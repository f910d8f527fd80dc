package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// The builder is this package's own, so check that it registers what clients and
// the manager's cache look types up by, metav1's options types included.
func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{
		&DefenderTenant{}, &DefenderTenantList{}, &DefenderApp{}, &DefenderAppList{}, &ClusterDefenderApp{}, &ClusterDefenderAppList{}, &metav1.ListOptions{},
	} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil {
			t.Errorf("%T: %v", obj, err)
			continue
		}
		if len(gvks) == 0 || gvks[0].GroupVersion() != GroupVersion {
			t.Errorf("%T registered as %v, want under %v", obj, gvks, GroupVersion)
		}
	}
}
