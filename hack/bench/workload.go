package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func tenantID(i int) string { return fmt.Sprintf("be4c0000-0000-4000-8000-%012x", i) }

func newTenant(ns string, i int) *v1alpha1.DefenderTenant {
	return &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("tenant-%05d", i), Namespace: ns},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:        tenantID(i),
			ClientID:        clientID,
			ClientSecretRef: v1alpha1.ClientSecretReference{Name: credential},
			RequiredRoles:   roles,
		},
	}
}

func unrelatedSecret(i int) *corev1.Secret {
	data := make([]byte, 4096)
	for j := range data {
		data[j] = byte(i + j)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%05d", i), Namespace: unrelatedNS},
		Data:       map[string][]byte{"blob": data},
	}
}

// waitAllReady polls with a List until n tenants are Ready for their current
// generation. The pause between Lists is five times the last List's duration (at
// least 100 ms), so polling costs the API server at most about a sixth of its time.
func waitAllReady(ctx context.Context, cl client.Client, ns string, n int) error {
	last := -1
	for {
		start := time.Now()
		var list v1alpha1.DefenderTenantList
		if err := cl.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		took := time.Since(start)
		ready := 0
		for i := range list.Items {
			dt := &list.Items[i]
			if dt.Status.ObservedGeneration == dt.Generation && meta.IsStatusConditionTrue(dt.Status.Conditions, v1alpha1.ConditionReady) {
				ready++
			}
		}
		if ready == n {
			return nil
		}
		if ready/max(n/10, 1) != last/max(n/10, 1) {
			progress("%d/%d Ready", ready, n)
			last = ready
		}
		if err := sleep(ctx, max(100*time.Millisecond, 5*took)); err != nil {
			return fmt.Errorf("%d of %d Ready: %w", ready, n, err)
		}
	}
}

// floorOnce does what the operator must do at the least, with none of its logic: the
// same tenant creates by the same harness workers, and for each created tenant one
// token Secret create and one status patch by a plain client with as many workers.
func floorOnce(ctx context.Context, cl client.Client, ns string, n, workers int, sampleSecret *corev1.Secret, sampleStatus v1alpha1.DefenderTenantStatus) (time.Duration, error) {
	created := make(chan *v1alpha1.DefenderTenant, n)
	start := time.Now()
	errs := make(chan error, workers+1)
	go func() {
		defer close(created)
		errs <- parallel(ctx, workers, n, func(ctx context.Context, i int) error {
			dt := newTenant(ns, i)
			if err := cl.Create(ctx, dt); err != nil {
				return err
			}
			created <- dt
			return nil
		})
	}()
	for range workers {
		go func() {
			for dt := range created {
				secret := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{
						Name: dt.TokenSecretNameOrDefault(), Namespace: ns,
						Labels:          map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: dt.Name},
						Annotations:     sampleSecret.Annotations,
						OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dt, v1alpha1.GroupVersion.WithKind("DefenderTenant"))},
					},
					Type: corev1.SecretTypeOpaque,
					Data: sampleSecret.Data,
				}
				if err := cl.Create(ctx, secret); err != nil {
					errs <- err
					return
				}
				patch := client.MergeFrom(dt.DeepCopy())
				dt.Status = *sampleStatus.DeepCopy()
				dt.Status.ObservedGeneration = dt.Generation
				dt.Status.TokenSecretName = secret.Name
				if err := cl.Status().Patch(ctx, dt, patch); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers + 1 {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// startEmulator serves the Entra ID emulator on loopback with the app and n
// consented tenants holding the required roles.
func startEmulator(n int, latency time.Duration) (*entraemu.Emulator, string, func(), error) {
	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		return nil, "", nil, err
	}
	emu.AddApp(clientID, entraemu.Secret{Value: clientSecret})
	for i := range n {
		emu.Grant(tenantID(i), clientID, defenderAPI, roles...)
	}
	emu.SetLatency(latency)
	srv := httptest.NewServer(emu)
	return emu, srv.URL, srv.Close, nil
}

// grantOperatorRole binds the operator's ClusterRole, as generated into
// config/rbac/role.yaml, to the operator's user, and returns the resources it covers.
func grantOperatorRole(ctx context.Context, cl client.Client, path string) (map[string]bool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(raw, role); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	resources := map[string]bool{}
	for _, rule := range role.Rules {
		for _, r := range rule.Resources {
			resources[r] = true
		}
	}
	if err := cl.Create(ctx, role); err != nil {
		return nil, err
	}
	return resources, cl.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: operatorUser}},
	})
}
