package crd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// installSecretWritesPolicy installs config/admission's policy for a
// ServiceAccount of ns named operator, under names of its own, and returns a
// client that acts as that ServiceAccount, allowed every Secret write in ns by
// RBAC: only the policy stands in its way.
func installSecretWritesPolicy(t *testing.T, ns string) client.Client {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "admission", "secret_writes_policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const placeholder = "system:serviceaccount:system:controller-manager:"
	user := "system:serviceaccount:" + ns + ":operator"
	if !bytes.Contains(data, []byte(placeholder)) {
		t.Fatalf("the policy no longer names %s", placeholder)
	}
	data = bytes.ReplaceAll(data, []byte(placeholder), []byte(user+":"))
	for _, doc := range strings.Split(string(data), "\n---\n") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatal(err)
		}
		obj.SetName("secret-writes-" + ns)
		if obj.GetKind() == "ValidatingAdmissionPolicyBinding" {
			if err := unstructured.SetNestedField(obj.Object, "secret-writes-"+ns, "spec", "policyName"); err != nil {
				t.Fatal(err)
			}
		}
		if err := k8s.Create(t.Context(), obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "secrets"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"*"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "secrets"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(controlPlane.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	asOperator, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	return asOperator
}

func managedCertificateSecret(ns, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelManagedCertificate: "true",
		}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: []byte("certificate"), corev1.TLSPrivateKeyKey: []byte("key")},
	}
}

func refusedByThePolicy(err error) error {
	switch {
	case err == nil:
		return errors.New("the write was allowed")
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		return fmt.Errorf("refused, but not by admission: %w", err)
	case !strings.Contains(err.Error(), "secret-writes"):
		return fmt.Errorf("refused by something other than the Secret-writes policy: %w", err)
	}
	return nil
}

// TestSecretWritesPolicyAdmitsManagedCertificateSecretsOnly: the operator may
// create and update the labelled kubernetes.io/tls Secret of an app with managed
// rotation, and nothing that merely resembles one; it may never delete one.
func TestSecretWritesPolicyAdmitsManagedCertificateSecretsOnly(t *testing.T) {
	ns := createNamespace(t)
	asOperator := installSecretWritesPolicy(t, ns)
	ctx := t.Context()

	// The API server enforces a new policy within a second or so: wait until it
	// refuses what it must, the positive control for the writes it lets through.
	unlabelledTLS := func(name string) *corev1.Secret {
		s := managedCertificateSecret(ns, name)
		delete(s.Labels, v1alpha1.LabelManagedCertificate)
		return s
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return refusedByThePolicy(asOperator.Create(ctx, unlabelledTLS("probe"))) == nil, nil
	}); err != nil {
		t.Fatalf("the policy never refused a kubernetes.io/tls Secret without the managed-certificate label: %v", err)
	}

	managed := managedCertificateSecret(ns, "partner-cert")
	if err := asOperator.Create(ctx, managed); err != nil {
		t.Fatalf("creating a managed certificate Secret: %v", err)
	}
	managed.Data["next.crt"], managed.Data["next.key"] = []byte("next certificate"), []byte("next key")
	if err := asOperator.Update(ctx, managed); err != nil {
		t.Fatalf("updating a managed certificate Secret: %v", err)
	}

	// A Secret a person made: adopting it is reading it, never writing it.
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "by-hand"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: []byte("c"), corev1.TLSPrivateKeyKey: []byte("k")}}
	if err := k8s.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}

	attempts := []struct {
		name  string
		write func() error
	}{
		{"create a kubernetes.io/tls Secret without the managed-certificate label", func() error {
			return asOperator.Create(ctx, unlabelledTLS("unlabelled"))
		}},
		{"create a managed certificate Secret of another type", func() error {
			s := managedCertificateSecret(ns, "basic-auth")
			s.Type, s.Data = corev1.SecretTypeBasicAuth, map[string][]byte{"username": []byte("u"), "password": []byte("p")}
			return asOperator.Create(ctx, s)
		}},
		{"create a managed certificate Secret holding another key, as a serving certificate for some other component would", func() error {
			s := managedCertificateSecret(ns, "ca-bundle")
			s.Data["ca.crt"] = s.Data[corev1.TLSCertKey]
			return asOperator.Create(ctx, s)
		}},
		{"create a managed certificate Secret that a tenant's label claims", func() error {
			s := managedCertificateSecret(ns, "tenant-labelled")
			s.Labels[v1alpha1.LabelTenant] = "contoso"
			return asOperator.Create(ctx, s)
		}},
		{"create a managed certificate Secret with an owner", func() error {
			s := managedCertificateSecret(ns, "owned")
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "0d6f2a1c-9e11-4c4f-9b7e-6e3c1a8e2f6b", Controller: ptr.To(true)}}
			return asOperator.Create(ctx, s)
		}},
		{"delete a managed certificate Secret", func() error {
			return asOperator.Delete(ctx, managedCertificateSecret(ns, "partner-cert"))
		}},
		{"update a managed certificate Secret out of its label", func() error {
			s := &corev1.Secret{}
			if err := asOperator.Get(ctx, client.ObjectKey{Namespace: ns, Name: "partner-cert"}, s); err != nil {
				return err
			}
			delete(s.Labels, v1alpha1.LabelManagedCertificate)
			return asOperator.Update(ctx, s)
		}},
		{"label a Secret a person made as a managed certificate", func() error {
			s := &corev1.Secret{}
			if err := asOperator.Get(ctx, client.ObjectKeyFromObject(foreign), s); err != nil {
				return err
			}
			s.Labels = managedCertificateSecret(ns, "").Labels
			return asOperator.Update(ctx, s)
		}},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			if err := refusedByThePolicy(a.write()); err != nil {
				t.Fatal(err)
			}
		})
	}
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(managed), s); err != nil || string(s.Data["next.crt"]) != "next certificate" ||
		s.Labels[v1alpha1.LabelManagedCertificate] != "true" {
		t.Fatalf("the managed certificate Secret is gone or changed: %v", err)
	}
}
