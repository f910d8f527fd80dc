package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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

// readyWatch counts the tenants of a namespace that are Ready for their current
// generation, from an informer, so the harness sees the moment the last one turns
// Ready without polling. Polling would cost the API server a List of every tenant
// each time (a sixth of its time at N=1000) and report up to a pause late; the
// informer's watch shares the serialization the operator's own watch already pays.
type readyWatch struct {
	mu    sync.Mutex
	ready map[string]bool
	count int // of ready's true values
	want  int
	all   chan struct{}
	last  int // count at the last progress line
}

func watchReady(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, ns string, n int) (*readyWatch, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return nil, err
	}
	inf, err := c.GetInformer(ctx, &v1alpha1.DefenderTenant{})
	if err != nil {
		return nil, err
	}
	w := &readyWatch{ready: map[string]bool{}, want: n, all: make(chan struct{}), last: -1}
	observe := func(obj any) {
		if dt, ok := obj.(*v1alpha1.DefenderTenant); ok {
			w.observe(dt)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the harness's DefenderTenant informer did not sync")
	}
	return w, nil
}

func (w *readyWatch) observe(dt *v1alpha1.DefenderTenant) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ready := dt.Status.ObservedGeneration == dt.Generation && meta.IsStatusConditionTrue(dt.Status.Conditions, v1alpha1.ConditionReady)
	switch was := w.ready[dt.Name]; {
	case ready && !was:
		w.count++
	case !ready && was:
		w.count--
	}
	w.ready[dt.Name] = ready
	count := w.count
	if step := max(w.want/10, 1); count/step != w.last/step {
		progress("%d/%d Ready", count, w.want)
		w.last = count
	}
	if count == w.want {
		select {
		case <-w.all:
		default:
			close(w.all)
		}
	}
}

// wait returns when all tenants are Ready.
func (w *readyWatch) wait(ctx context.Context) error {
	select {
	case <-w.all:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		defer w.mu.Unlock()
		return fmt.Errorf("%d of %d Ready: %w", w.last, w.want, ctx.Err())
	}
}

// floorOnce does what the operator must do at the least, with none of its logic: the
// same tenant creates by the same harness workers (cl), and for each created tenant
// one token Secret create and one status patch by a plain client with as many
// workers, authenticated as the operator (writer).
func floorOnce(ctx context.Context, cl, writer client.Client, ns string, n, workers int, sampleSecret *corev1.Secret, sampleStatus v1alpha1.DefenderTenantStatus) (time.Duration, error) {
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
				if err := writer.Create(ctx, secret); err != nil {
					errs <- err
					return
				}
				patch := client.MergeFrom(dt.DeepCopy())
				dt.Status = *sampleStatus.DeepCopy()
				dt.Status.ObservedGeneration = dt.Generation
				dt.Status.TokenSecretName = secret.Name
				if err := writer.Status().Patch(ctx, dt, patch); err != nil {
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
