//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// The rendered config/default installs a ValidatingAdmissionPolicy on the operator's
// Secret writes. The rest of this suite shows that normal operation passes it; this
// test shows that the writes a stolen operator token would make are refused, although
// the operator's ClusterRole allows every one of them.
func TestAdmissionPolicyConfinesTheOperatorsSecretWrites(t *testing.T) {
	ctx := context.Background()
	asOperator, err := newClient(w.operatorConfig)
	if err != nil {
		t.Fatal(err)
	}
	victim := "admission-victim"
	if err := w.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: victim}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "database", Namespace: victim}, StringData: map[string]string{"password": "hunter2"}}
	if err := w.admin.Create(ctx, foreign); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}

	// A Secret the operator would write for DefenderTenant contoso, but for its
	// controller reference.
	tokenSecret := func(name string, controller metav1.OwnerReference) *corev1.Secret {
		controller.UID, controller.Controller = "0d6f2a1c-9e11-4c4f-9b7e-6e3c1a8e2f6b", ptr.To(true)
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: victim,
				Labels:          map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: "contoso"},
				OwnerReferences: []metav1.OwnerReference{controller},
			},
			Type: corev1.SecretTypeOpaque,
		}
	}
	tenantGroupVersion := v1alpha1.GroupVersion.String()
	forged := map[string]metav1.OwnerReference{
		"forged-version": {APIVersion: "defender.tenantcreds.io/v9", Kind: "DefenderTenant", Name: "contoso"},
		"forged-kind":    {APIVersion: tenantGroupVersion, Kind: "DefenderApp", Name: "contoso"},
		"forged-name":    {APIVersion: tenantGroupVersion, Kind: "DefenderTenant", Name: "fabrikam"},
	}

	attempts := []struct {
		name  string
		write func() error
	}{
		{"create a service-account-token Secret in another namespace", func() error {
			return asOperator.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "stolen", Namespace: victim, Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
				Type:       corev1.SecretTypeServiceAccountToken,
			})
		}},
		{"create an Opaque Secret that no DefenderTenant controls", func() error {
			return asOperator.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
				Name: "planted", Namespace: victim, Labels: map[string]string{"app.kubernetes.io/managed-by": "defender-tenant-operator"},
			}})
		}},
		{"create a token Secret controlled by a DefenderTenant of another API version", func() error {
			return asOperator.Create(ctx, tokenSecret("forged-version", forged["forged-version"]))
		}},
		{"create a token Secret controlled by another kind of the API group", func() error {
			return asOperator.Create(ctx, tokenSecret("forged-kind", forged["forged-kind"]))
		}},
		{"create a token Secret controlled by a DefenderTenant its tenant label does not name", func() error {
			return asOperator.Create(ctx, tokenSecret("forged-name", forged["forged-name"]))
		}},
		{"update a Secret the operator did not label", func() error {
			s := &corev1.Secret{}
			if err := asOperator.Get(ctx, client.ObjectKeyFromObject(foreign), s); err != nil {
				return err
			}
			s.Data["password"] = []byte("changed")
			return asOperator.Update(ctx, s)
		}},
		{"delete a Secret the operator did not label", func() error {
			return asOperator.Delete(ctx, foreign.DeepCopy())
		}},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			// The API server starts enforcing a new policy within a second or so.
			eventually(t, "the write is refused by the admission policy", func() error {
				err := a.write()
				if err == nil {
					return errors.New("the write was allowed")
				}
				if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
					return fmt.Errorf("refused, but not by admission: %w", err)
				}
				if !strings.Contains(err.Error(), "secret-writes") {
					return fmt.Errorf("refused by something other than the Secret-writes policy: %w", err)
				}
				return nil
			})
		})
	}

	// The policy is enforced by now: the token Secret the operator does write passes it.
	t.Run("create a token Secret controlled by the DefenderTenant its tenant label names", func(t *testing.T) {
		allowed := tokenSecret("allowed", metav1.OwnerReference{APIVersion: tenantGroupVersion, Kind: "DefenderTenant", Name: "contoso"})
		if err := asOperator.Create(ctx, allowed); err != nil {
			t.Fatalf("the operator's own kind of token Secret was refused: %v", err)
		}
		// Its owner does not exist, so the garbage collector may have taken it already.
		if err := w.admin.Delete(ctx, allowed); client.IgnoreNotFound(err) != nil {
			t.Error(err)
		}
	})

	s := &corev1.Secret{}
	if err := w.admin.Get(ctx, client.ObjectKeyFromObject(foreign), s); err != nil {
		t.Fatalf("the foreign Secret is gone: %v", err)
	}
	if string(s.Data["password"]) != "hunter2" {
		t.Error("the foreign Secret was changed")
	}
	for _, name := range []string{"stolen", "planted", "forged-version", "forged-kind", "forged-name"} {
		if err := w.admin.Get(ctx, client.ObjectKey{Namespace: victim, Name: name}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s/%s exists or could not be checked (%v): the operator created it", victim, name, err)
		}
	}
}
