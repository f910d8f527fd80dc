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
	"k8s.io/apimachinery/pkg/labels"
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

// setLabel names the tenant set a DefenderTenant belongs to, so that the harness
// can watch and list one set whatever namespaces it spans.
const setLabel = "bench.tenantcreds.io/set"

// tenantSet is N tenants created and timed together (the run's, a floor's, a pair's):
// in the inline mode in one namespace of the set's name, each with the shared
// credential Secret; with -app spread round-robin over -namespaces namespaces, each
// naming the ClusterDefenderApp.
type tenantSet struct {
	name       string
	namespaces []string
	app        bool
}

func (b *bench) set(name string) tenantSet {
	if !b.App {
		return tenantSet{name: name, namespaces: []string{name}}
	}
	s := tenantSet{name: name, app: true}
	for k := range b.Namespaces {
		s.namespaces = append(s.namespaces, fmt.Sprintf("%s-%03d", name, k))
	}
	return s
}

func (s tenantSet) tenant(i int) *v1alpha1.DefenderTenant {
	dt := newTenant(s.namespaces[i%len(s.namespaces)], i)
	dt.Labels = map[string]string{setLabel: s.name}
	if s.app {
		dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
		dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: appName}
	}
	return dt
}

func (s tenantSet) selector() client.MatchingLabels { return client.MatchingLabels{setLabel: s.name} }

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

// readyWatch counts the tenants of a set that are Ready for their current
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

func watchReady(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, set tenantSet, n int) (*readyWatch, error) {
	w := &readyWatch{ready: map[string]bool{}, want: n, all: make(chan struct{}), last: -1}
	return w, watchTenants(ctx, cfg, scheme, set, w.observe)
}

// watchTenants calls observe with every DefenderTenant of the set the harness's own
// informer sees added or updated, once that informer has synced.
func watchTenants(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, set tenantSet, observe func(*v1alpha1.DefenderTenant)) error {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultLabelSelector: labels.SelectorFromSet(labels.Set(set.selector()))})
	if err != nil {
		return err
	}
	inf, err := c.GetInformer(ctx, &v1alpha1.DefenderTenant{})
	if err != nil {
		return err
	}
	handle := func(obj any) {
		if dt, ok := obj.(*v1alpha1.DefenderTenant); ok {
			observe(dt)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		return err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("the harness's DefenderTenant informer did not sync")
	}
	return nil
}

func (w *readyWatch) observe(dt *v1alpha1.DefenderTenant) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ready := dt.Status.ObservedGeneration == dt.Generation && meta.IsStatusConditionTrue(dt.Status.Conditions, v1alpha1.ConditionReady)
	key := dt.Namespace + "/" + dt.Name
	switch was := w.ready[key]; {
	case ready && !was:
		w.count++
	case !ready && was:
		w.count--
	}
	w.ready[key] = ready
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
func floorOnce(ctx context.Context, cl, writer client.Client, set tenantSet, n, workers int, sampleSecret *corev1.Secret, sampleStatus v1alpha1.DefenderTenantStatus) (time.Duration, error) {
	created := make(chan *v1alpha1.DefenderTenant, n)
	start := time.Now()
	errs := make(chan error, workers+1)
	go func() {
		defer close(created)
		errs <- parallel(ctx, workers, n, func(ctx context.Context, i int) error {
			dt := set.tenant(i)
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
						Name: dt.TokenSecretNameOrDefault(), Namespace: dt.Namespace,
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
// consented tenants holding the required roles, and its Microsoft Graph (for
// managed rotation) on a second loopback server; it returns both URLs.
func startEmulator(n int, latency time.Duration) (_ *entraemu.Emulator, signIn, graph string, stop func(), _ error) {
	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		return nil, "", "", nil, err
	}
	emu.AddApp(clientID, entraemu.Secret{Value: clientSecret})
	for i := range n {
		emu.Grant(tenantID(i), clientID, defenderAPI, roles...)
	}
	emu.SetLatency(latency)
	srv := httptest.NewServer(emu)
	graphSrv := httptest.NewServer(emu.Graph(v1alpha1.CloudPublic))
	return emu, srv.URL, graphSrv.URL, func() { graphSrv.Close(); srv.Close() }, nil
}

// grantOperatorRole binds the operator's ClusterRole, as generated into
// config/rbac/role.yaml, to the operator's user, and returns the resources it covers.
func grantOperatorRole(ctx context.Context, cl client.Client, path string) (map[string]bool, error) {
	role := &rbacv1.ClusterRole{}
	if err := readManifest(path, role); err != nil {
		return nil, err
	}
	if err := cl.Create(ctx, role); err != nil {
		return nil, err
	}
	return ruleResources(role.Rules), cl.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   operatorSubjects,
	})
}

// grantClusterResourcesRole binds the Role of config/rbac/cluster_resources_role.yaml
// to the operator's user in the cluster resource namespace, as an install does: the
// operator serves ClusterDefenderApps only with it. It returns the resources it covers.
func grantClusterResourcesRole(ctx context.Context, cl client.Client, path, namespace string) (map[string]bool, error) {
	role := &rbacv1.Role{}
	if err := readManifest(path, role); err != nil {
		return nil, err
	}
	role.Namespace = namespace
	if err := cl.Create(ctx, role); err != nil {
		return nil, err
	}
	return ruleResources(role.Rules), cl.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   operatorSubjects,
	})
}

func readManifest(path string, obj client.Object) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(raw, obj); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

var operatorSubjects = []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: operatorUser}}

// ruleResources is the set of resources, subresources included, that rules name.
func ruleResources(rules []rbacv1.PolicyRule) map[string]bool {
	resources := map[string]bool{}
	for _, rule := range rules {
		for _, r := range rule.Resources {
			resources[r] = true
		}
	}
	return resources
}
