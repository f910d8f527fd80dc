// Package testenv is the kube-apiserver and etcd that the tests against a real API
// server share within one test binary. It starts with the first test that needs
// it, so that a package's pure tests run without it, and a missing
// KUBEBUILDER_ASSETS fails those tests loudly instead of skipping them.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ControlPlane is started once, by the first Require.
type ControlPlane struct {
	// Scheme is what Client speaks; set before the first Require.
	Scheme *apiruntime.Scheme
	// Started, when set, runs once after the API server is up (a manager, say);
	// its error fails every Require. Its stop function runs in Stop.
	Started func(cp *ControlPlane) (stop func(), err error)

	// Config and Client reach the API server as its admin.
	Config *rest.Config
	Client client.Client
	// ServiceAccountSigner is the certificate of the key the API server signs
	// ServiceAccount tokens with.
	ServiceAccountSigner string

	once   sync.Once
	err    error
	env    *envtest.Environment
	stopFn func()
}

// Require starts the control plane on first use and fails the test when it
// cannot.
func (cp *ControlPlane) Require(t testing.TB) {
	t.Helper()
	cp.once.Do(func() { cp.err = cp.start() })
	if cp.err != nil {
		t.Fatal(cp.err)
	}
}

func (cp *ControlPlane) start() error {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds kube-apiserver and etcd once")
	}
	cp.env = &envtest.Environment{CRDDirectoryPaths: []string{CRDDirectory()}, ErrorIfCRDPathMissing: true}
	var err error
	if cp.Config, err = cp.env.Start(); err != nil {
		return fmt.Errorf("starting the test control plane: %w", err)
	}
	cp.ServiceAccountSigner = filepath.Join(cp.env.ControlPlane.APIServer.CertDir, "sa-signer.crt")
	cp.Config.QPS, cp.Config.Burst = 200, 400
	if cp.Client, err = client.New(cp.Config, client.Options{Scheme: cp.Scheme}); err != nil {
		return err
	}
	if cp.Started != nil {
		if cp.stopFn, err = cp.Started(cp); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops whatever started, also when it started only halfway (envtest leaves
// processes behind otherwise).
func (cp *ControlPlane) Stop() {
	if cp.stopFn != nil {
		cp.stopFn()
	}
	if cp.env != nil {
		_ = cp.env.Stop()
	}
}

// CRDDirectory is config/crd/bases of this module, wherever the test runs.
func CRDDirectory() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "config", "crd", "bases")
}

// notInALabel matches what a namespace name cannot hold, such as a test name's
// slashes, underscores and punctuation.
var notInALabel = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace named after the test.
func (cp *ControlPlane) Namespace(t testing.TB) string {
	t.Helper()
	cp.Require(t)
	name := "t-" + notInALabel.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.TrimRight(name, "-") + "-" + string(uuid.NewUUID())[:5]
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := cp.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}
