// Package v1alpha1 contains the DefenderTenant API: one object per customer tenant
// whose Microsoft Defender XDR API token the operator keeps fresh, and the
// DefenderApp and ClusterDefenderApp that define the partner app it uses.
// +kubebuilder:object:generate=true
// +groupName=defender.tenantcreds.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "defender.tenantcreds.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &schemeBuilder{}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// schemeBuilder keeps the Register(objects...) of controller-runtime's deprecated
// scheme.Builder, so that importing the API costs only apimachinery.
// +kubebuilder:object:generate=false
type schemeBuilder struct {
	runtime.SchemeBuilder
}

// Register adds objects to what AddToScheme registers under GroupVersion.
func (b *schemeBuilder) Register(objects ...runtime.Object) {
	b.SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, objects...)
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
}
