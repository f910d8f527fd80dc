package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/testenv"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// parseFlags parses args as the manager's command line.
func parseFlags(t *testing.T, args ...string) options {
	t.Helper()
	var o options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bindFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	return o
}

// environment reads variables from env only, never from the test's own environment.
func environment(env map[string]string) func(string) string {
	return func(name string) string { return env[name] }
}

// TestClusterResourceNamespace checks where ClusterDefenderApp credentials are read:
// --cluster-resource-namespace, else the operator's own namespace, which a pod learns
// from POD_NAMESPACE (the Deployments set it from the downward API), else the
// default that README.md documents.
func TestClusterResourceNamespace(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"neither flag nor POD_NAMESPACE", nil, nil, "defender-tenant-operator-system"},
		{"POD_NAMESPACE", nil, map[string]string{"POD_NAMESPACE": "operators"}, "operators"},
		{"the flag wins over POD_NAMESPACE", []string{"--cluster-resource-namespace=partner-credentials"}, map[string]string{"POD_NAMESPACE": "operators"}, "partner-credentials"},
		{"the flag alone", []string{"--cluster-resource-namespace", "partner-credentials"}, nil, "partner-credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newConfig(parseFlags(t, tc.args...), environment(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if r.ClusterResourceNamespace != tc.want {
				t.Errorf("cluster resource namespace %q, want %q", r.ClusterResourceNamespace, tc.want)
			}
		})
	}
}

// TestAdminConsentRedirectURIReachesTheReconciler checks that the redirect URI of
// the admin consent links is the flag's, that none is set without it, and that one
// Entra would not accept stops the manager, naming the flag.
func TestAdminConsentRedirectURIReachesTheReconciler(t *testing.T) {
	const uri = "https://portal.azure.com"
	r, err := newConfig(parseFlags(t, "--admin-consent-redirect-uri="+uri), environment(nil))
	if err != nil {
		t.Fatal(err)
	}
	if r.AdminConsentRedirectURI != uri {
		t.Errorf("admin consent redirect URI %q, want %q", r.AdminConsentRedirectURI, uri)
	}

	if r, err = newConfig(parseFlags(t), environment(nil)); err != nil {
		t.Fatal(err)
	}
	if r.AdminConsentRedirectURI != "" {
		t.Errorf("admin consent redirect URI %q without the flag, want none", r.AdminConsentRedirectURI)
	}

	const insecure = "http://portal.example.com"
	if _, err := newConfig(parseFlags(t, "--admin-consent-redirect-uri="+insecure), environment(nil)); err == nil {
		t.Errorf("--admin-consent-redirect-uri=%s was accepted, want an error", insecure)
	} else if want := "--admin-consent-redirect-uri"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
}

// TestMaxConcurrentReconcilesReachesTheController sets up the controllers as run
// does, on a manager of a real API server, and reads the DefenderTenant
// controller's worker count from controller-runtime's
// controller_runtime_max_concurrent_reconciles gauge once it has started.
func TestMaxConcurrentReconcilesReachesTheController(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds kube-apiserver and etcd once.")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{testenv.CRDDirectory()},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })

	const workers = 7 // not the flag's default
	r, err := newConfig(parseFlags(t, "--max-concurrent-reconciles=7"), environment(nil))
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  manager.CacheOptions(nil, r.ClusterResourceNamespace),
		Client:                 manager.ClientOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := controller.Setup(ctx, mgr, r); err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	var stopErr error
	go func() { stopErr = mgr.Start(ctx); close(stopped) }()
	t.Cleanup(func() {
		cancel()
		<-stopped
		if stopErr != nil {
			t.Errorf("manager: %v", stopErr)
		}
	})

	const controllerName = "defendertenant"
	// Polls until the controller has started (its gauge appears) or the manager
	// stopped; the timeout is only a cutoff for a controller that never starts.
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		select {
		case <-stopped:
			return false, fmt.Errorf("the manager stopped before the %s controller started: %w", controllerName, stopErr)
		default:
		}
		got, found := gauge(t, "controller_runtime_max_concurrent_reconciles", "controller", controllerName)
		if found && got != workers {
			return false, fmt.Errorf("the %s controller runs %v workers, want %d", controllerName, got, workers)
		}
		return found, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// gauge reads the gauge name{label="value"} from controller-runtime's registry.
func gauge(t *testing.T, name, label, value string) (float64, bool) {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabel(m, label, value) {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestGraphHostReachesTheConfig checks that --graph-host overrides Microsoft
// Graph per cloud like --authority-host, that the real hosts stay without it,
// and that a host a bearer token must not travel to stops the manager.
func TestGraphHostReachesTheConfig(t *testing.T) {
	r, err := newConfig(parseFlags(t, "--graph-host=DoD=https://graph-proxy.example"), environment(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GraphHosts.Host(v1alpha1.CloudDoD); got != "https://graph-proxy.example" {
		t.Errorf("DoD Graph host %q, want the flag's", got)
	}
	if got := r.GraphHosts.Host(v1alpha1.CloudUSGovHigh); got != "https://graph.microsoft.us" {
		t.Errorf("USGovHigh Graph host %q, want the real one", got)
	}
	if r.Graph == nil {
		t.Error("no Graph client")
	}
	if r, err = newConfig(parseFlags(t), environment(nil)); err != nil || r.GraphHosts.Host(v1alpha1.CloudPublic) != "https://graph.microsoft.com" {
		t.Errorf("without the flag: %v, %v", r.GraphHosts, err)
	}
	if _, err := newConfig(parseFlags(t, "--graph-host=http://graph.example"), environment(nil)); err == nil || !strings.Contains(err.Error(), "--graph-host") {
		t.Errorf("plain http to a remote Graph host: %v", err)
	}
}
