package defendertenant

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/testenv"
)

const (
	testClientID     = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	testClientSecret = "s3cr3t~value.for-tests_0123456789abcdef"
	testTenantID     = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	defenderAPI      = "https://api.security.microsoft.com"
	credentialName   = "partner-app"
	tenantName       = "contoso"

	// managedLabel marks DefenderTenants that the running manager reconciles; all
	// others are driven by tests calling Reconcile with a fake clock.
	managedLabel = "test.tenantcreds.io/controller"
)

var (
	testScheme = runtime.NewScheme()
	restConfig *rest.Config
	// serviceAccountSigner is the certificate of the key the API server signs
	// ServiceAccount tokens with.
	serviceAccountSigner string
	k8s                  client.Client

	// The manager's Entra emulator runs on the real clock; tests give it their own tenants.
	managerEntra *entraemu.Emulator
	// managerSecretReads is what the manager's reconciles read of credential
	// Secrets from the API server.
	managerSecretReads = &versionsRead{}
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	must(clientgoscheme.AddToScheme(testScheme))
	must(v1alpha1.AddToScheme(testScheme))
	code := m.Run()
	controlPlane.Stop()
	os.Exit(code)
}

// controlPlane is the kube-apiserver and etcd, and the manager running on them,
// that the tests against a real API server share. They start with the first test
// that needs them (requireControlPlane), so the pure tests run without them.
var controlPlane = &testenv.ControlPlane{Scheme: testScheme, Started: func(cp *testenv.ControlPlane) (func(), error) {
	restConfig, k8s, serviceAccountSigner = cp.Config, cp.Client, cp.ServiceAccountSigner
	ctx, cancel := context.WithCancel(context.Background())
	stopped, err := startManager(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("starting the manager: %w", err)
	}
	return func() { cancel(); <-stopped }, nil
}}

// requireControlPlane starts the control plane on first use and fails the test
// when it cannot: a missing KUBEBUILDER_ASSETS is a failure, never a skip.
func requireControlPlane(t testing.TB) {
	t.Helper()
	controlPlane.Require(t)
}

// startManager runs the controller as the operator does, for tests about watches.
func startManager(ctx context.Context) (<-chan struct{}, error) {
	var err error
	if managerEntra, err = entraemu.New(entraemu.Options{}); err != nil {
		return nil, err
	}
	managerEntra.AddApp(testClientID, entraemu.Secret{Value: testClientSecret})
	server := httptest.NewServer(managerEntra)

	opts := manager.CacheOptions(nil, credential.DefaultClusterResourceNamespace)
	opts.ByObject[&v1alpha1.DefenderTenant{}] = cache.ByObject{Label: labels.SelectorFromSet(labels.Set{managedLabel: "manager"})}
	for obj, by := range opts.ByObject {
		if _, ok := obj.(*corev1.Secret); ok {
			// TestHugeSecretMetadataCostsTheCacheNothing measures the heap of a cache
			// of its own; this one's watch must not read its Secrets meanwhile.
			by.Field = fields.OneTermNotEqualSelector("metadata.namespace", hugeSecretsNamespace)
			opts.ByObject[obj] = by
		}
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:  testScheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   opts,
		Client:  manager.ClientOptions(),
	})
	if err != nil {
		return nil, err
	}
	managerSecretReads.Reader = mgr.GetAPIReader()
	r := &Reconciler{
		Client:                           mgr.GetClient(),
		APIReader:                        mgr.GetAPIReader(),
		SecretMetadata:                   mgr.GetCache(),
		Clock:                            clock.RealClock{},
		Entra:                            &entra.Client{},
		Authorities:                      entra.EveryCloud(server.URL),
		AllowedResources:                 entra.NewAllowList(entra.DefaultAllowedResources),
		SecretTemplateAnnotationPrefixes: DefaultSecretTemplateAnnotationPrefixes,
		Recorder:                         mgr.GetEventRecorder("defender-tenant-operator"),
		MaxConcurrentReconciles:          4,
		ClusterApps:                      true,
		ClusterResourceNamespace:         credential.DefaultClusterResourceNamespace,
		Credentials:                      &credential.Reader{APIReader: managerSecretReads, SecretMetadata: mgr.GetCache(), Client: mgr.GetClient()},
	}
	crn := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: credential.DefaultClusterResourceNamespace}}
	if err := k8s.Create(ctx, crn); err != nil {
		return nil, err
	}
	if err := manager.RegisterIndexes(ctx, mgr.GetFieldIndexer(), true); err != nil {
		return nil, err
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer server.Close()
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped:", err)
		}
	}()
	return stopped, nil
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_LOG_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel // keep `go test` output readable
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// harness is one test's world: its own namespace, fake clock and Entra emulator, and
// a reconciler the test drives by calling Reconcile.
type harness struct {
	t   *testing.T
	ctx context.Context
	ns  string
	// crn is the harness's cluster resource namespace, where its ClusterDefenderApps'
	// credentials live.
	crn      string
	clock    *clocktesting.FakeClock
	entra    *entraemu.Emulator
	recorder *events.FakeRecorder
	r        *Reconciler
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	t.Parallel()
	return newSerialHarness(t)
}

// newSerialHarness is for tests that read process-wide state, such as metrics, and so
// must not run beside other tests.
func newSerialHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessServedThrough(t, nil)
}

// newHarnessServedThrough is newSerialHarness with the emulator behind through, a
// middleware that sees every token request and answer; nil serves it directly.
func newHarnessServedThrough(t *testing.T, through func(http.Handler) http.Handler) *harness {
	t.Helper()
	requireControlPlane(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	emu, err := entraemu.New(entraemu.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	emu.AddApp(testClientID, entraemu.Secret{Value: testClientSecret})
	emu.AddTenant(testTenantID)
	emu.Grant(testTenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	var handler http.Handler = emu
	if through != nil {
		handler = through(emu)
	}
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)

	h := &harness{t: t, ctx: context.Background(), ns: createNamespace(t), crn: createNamespace(t), clock: clk, entra: emu, recorder: events.NewFakeRecorder(1024)} // Eventf blocks when this fills up
	h.r = h.newReconciler(entra.EveryCloud(server.URL))
	return h
}

// newReconciler builds a reconciler as a freshly started operator would have it. Its
// Secret metadata comes straight from the API server: a watch cache that is never behind.
func (h *harness) newReconciler(authorities entra.Authorities) *Reconciler {
	return &Reconciler{
		Client:                           k8s,
		APIReader:                        k8s,
		SecretMetadata:                   k8s,
		Clock:                            h.clock,
		Entra:                            &entra.Client{Timeout: 5 * time.Second, Clock: h.clock},
		Authorities:                      authorities,
		AllowedResources:                 entra.NewAllowList(entra.DefaultAllowedResources),
		SecretTemplateAnnotationPrefixes: DefaultSecretTemplateAnnotationPrefixes,
		Recorder:                         h.recorder,
		ClusterApps:                      true,
		ClusterResourceNamespace:         h.crn,
		Credentials:                      &credential.Reader{APIReader: k8s, SecretMetadata: k8s, Client: k8s},
	}
}

func createNamespace(t *testing.T) string {
	t.Helper()
	return controlPlane.Namespace(t)
}

func (h *harness) createCredential(value string) *corev1.Secret {
	h.t.Helper()
	return createCredentialIn(h.t, h.ns, credentialName, map[string][]byte{v1alpha1.DefaultClientSecretKey: []byte(value)})
}

func createCredentialIn(t *testing.T, ns, name string, data map[string][]byte) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

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

func (h *harness) createTenant(mutate ...func(*v1alpha1.DefenderTenant)) *v1alpha1.DefenderTenant {
	h.t.Helper()
	dt := newTenant(h.ns, tenantName, mutate...)
	if err := k8s.Create(h.ctx, dt); err != nil {
		h.t.Fatal(err)
	}
	return dt
}

// publishToken is the common start: a credential, a tenant, and the first reconcile.
func (h *harness) publishToken() {
	h.t.Helper()
	h.createCredential(testClientSecret)
	h.createTenant()
	h.reconcile()
}

// startFailing is the common start of a failing tenant: Entra answers with failures
// first, then a credential, a tenant, and the first reconcile, whose result it returns.
func (h *harness) startFailing(failures ...entraemu.Failure) ctrl.Result {
	h.t.Helper()
	h.entra.InjectFailures(testTenantID, failures...)
	h.createCredential(testClientSecret)
	h.createTenant()
	return h.reconcile()
}

func (h *harness) reconcile() ctrl.Result {
	h.t.Helper()
	res, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: keyOf(h.ns, tenantName)})
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (h *harness) tenant() *v1alpha1.DefenderTenant {
	h.t.Helper()
	dt := &v1alpha1.DefenderTenant{}
	if err := k8s.Get(h.ctx, keyOf(h.ns, tenantName), dt); err != nil {
		h.t.Fatal(err)
	}
	return dt
}

func (h *harness) updateTenant(mutate func(*v1alpha1.DefenderTenant)) {
	h.t.Helper()
	dt := h.tenant()
	mutate(dt)
	if err := k8s.Update(h.ctx, dt); err != nil {
		h.t.Fatal(err)
	}
}

// tokenSecret returns the Secret, or nil when it does not exist.
func (h *harness) tokenSecret(name string) *corev1.Secret {
	h.t.Helper()
	return getSecret(h.t, h.ns, name)
}

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	err := k8s.Get(context.Background(), keyOf(ns, name), s)
	if client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	if err != nil {
		return nil
	}
	return s
}

func condition(dt *v1alpha1.DefenderTenant, conditionType string) *metav1.Condition {
	return meta.FindStatusCondition(dt.Status.Conditions, conditionType)
}

// expectCondition fails unless the condition has this status and reason ("" status: absent).
func expectCondition(t *testing.T, dt *v1alpha1.DefenderTenant, conditionType string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := condition(dt, conditionType)
	switch {
	case status == "" && c != nil:
		t.Errorf("condition %s = %s/%s (%s), want absent", conditionType, c.Status, c.Reason, c.Message)
	case status == "":
	case c == nil:
		t.Errorf("condition %s absent, want %s/%s", conditionType, status, reason)
	case c.Status != status || c.Reason != reason:
		t.Errorf("condition %s = %s/%s (%s), want %s/%s", conditionType, c.Status, c.Reason, c.Message, status, reason)
	}
}

// eventually polls check until it returns nil or the timeout passes. Watch-driven
// tests need it; everything time-driven uses the fake clock instead.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

// versionsRead records the resourceVersions of the Secrets read through it.
type versionsRead struct {
	client.Reader
	mu   sync.Mutex
	read map[types.NamespacedName][]string
}

func (v *versionsRead) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := v.Reader.Get(ctx, key, obj, opts...)
	if _, ok := obj.(*corev1.Secret); ok && err == nil {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.read == nil {
			v.read = map[types.NamespacedName][]string{}
		}
		v.read[key] = append(v.read[key], obj.GetResourceVersion())
	}
	return err
}

// sawVersion: the Secret was read at this resourceVersion.
func (v *versionsRead) sawVersion(key types.NamespacedName, resourceVersion string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Contains(v.read[key], resourceVersion)
}
