package kubectldefender

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defendertenant"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// controlledLabel marks the DefenderTenants the running operator reconciles: the
// other tests' tenants keep the statuses they wrote.
const controlledLabel = "test.tenantcreds.io/controller"

// operator is the operator's controllers, set up as cmd/main.go sets them up, on a
// fake clock shared with its Entra ID emulator.
type operator struct {
	clock    *clocktesting.FakeClock
	entra    *entraemu.Emulator
	entraURL string
}

var (
	operatorOnce sync.Once
	operatorErr  error
	theOperator  *operator
	operatorStop func()
)

// startOperator starts the operator once per test binary (controller names are
// unique per process).
func startOperator(t *testing.T) *operator {
	t.Helper()
	controlPlane.Require(t)
	operatorOnce.Do(func() { theOperator, operatorStop, operatorErr = newOperator() })
	if operatorErr != nil {
		t.Fatal(operatorErr)
	}
	return theOperator
}

func newOperator() (*operator, func(), error) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	emu, err := entraemu.New(entraemu.Options{Clock: clk})
	if err != nil {
		return nil, nil, err
	}
	server := httptest.NewServer(emu)
	opts := manager.CacheOptions(nil, credential.DefaultClusterResourceNamespace)
	opts.ByObject[&v1alpha1.DefenderTenant{}] = cache.ByObject{Label: labels.SelectorFromSet(labels.Set{controlledLabel: "true"})}
	mgr, err := ctrl.NewManager(controlPlane.Config, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   opts,
		Client:  manager.ClientOptions(),
	})
	if err != nil {
		server.Close()
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, err = controller.Setup(ctx, mgr, controller.Config{
		Clock:                            clk,
		Entra:                            &entra.Client{Timeout: 5 * time.Second, Clock: clk},
		Authorities:                      entra.EveryCloud(server.URL),
		AllowedResources:                 entra.NewAllowList(entra.DefaultAllowedResources),
		SecretTemplateAnnotationPrefixes: defendertenant.DefaultSecretTemplateAnnotationPrefixes,
		ClusterResourceNamespace:         credential.DefaultClusterResourceNamespace,
		MaxConcurrentReconciles:          2,
		EventSource:                      "defender-tenant-operator",
	})
	if err != nil {
		cancel()
		server.Close()
		return nil, nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped:", err)
		}
	}()
	return &operator{clock: clk, entra: emu, entraURL: server.URL}, func() { cancel(); <-stopped; server.Close() }, nil
}

func stopController() {
	if operatorStop != nil {
		operatorStop()
	}
}
