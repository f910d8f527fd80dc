package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	controllerManagerBinary = "kube-controller-manager"
	// GarbageCollector is the name kube-controller-manager's --controllers flag
	// gives the garbage collector.
	GarbageCollector = "garbage-collector-controller"
	// controllerManagerStartTimeout bounds the wait for /healthz. Most of it is
	// kube-controller-manager waiting for the API server's discovery and building
	// its clients; on a loaded 2-core machine that takes seconds, not minutes.
	controllerManagerStartTimeout = time.Minute
)

// ControllerManager is a kube-controller-manager running some of its controllers
// against a Cluster.
type ControllerManager struct {
	*Process
	// Log is the file its output goes to.
	Log string
}

// StartControllerManager starts kube-controller-manager, from $KUBEBUILDER_ASSETS
// like kube-apiserver (hack/envtest-binaries.sh builds all three), with only the
// named controllers, such as GarbageCollector, and returns once it serves /healthz.
// Its kubeconfig, serving certificate and log go to dir. Stop it, with Stop, before
// the Cluster.
//
// It runs without leader election, since it is the only one, and every controller
// acts as the cluster admin (--use-service-account-credentials=false): separate
// identities would need a ServiceAccount and a token controller in kube-system and
// would only tell, in an audit log nobody reads here, which controller did what.
//
// kube-controller-manager's garbage collector watches the resources that discovery
// lists, rediscovering every 30s: install CRDs before starting it, or their objects
// may take that long to be collected. WaitForGarbageCollector tells when it works.
func (c *Cluster) StartControllerManager(dir string, controllers ...string) (*ControllerManager, error) {
	if len(controllers) == 0 {
		return nil, errors.New("StartControllerManager needs at least one controller to run")
	}
	binary := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), controllerManagerBinary)
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("%w: KUBEBUILDER_ASSETS must name the directory that hack/envtest-binaries.sh prints, "+
			"which has kube-controller-manager next to kube-apiserver since it builds all three", err)
	}
	kubeconfig := filepath.Join(dir, controllerManagerBinary+".kubeconfig")
	if err := WriteKubeconfig(kubeconfig, c.Admin); err != nil {
		return nil, err
	}
	addr, err := FreeLocalAddr()
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, controllerManagerBinary+"-certs")
	m := &ControllerManager{Log: filepath.Join(dir, controllerManagerBinary+".log")}
	m.Process, err = StartProcess(m.Log, binary,
		"--kubeconfig", kubeconfig,
		"--controllers", strings.Join(controllers, ","),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		// Served only for the health check below, which every path list allows
		// without authorization: no kubeconfig is needed to review anyone's tokens.
		"--bind-address", host,
		"--secure-port", port,
		"--cert-dir", certDir,
	)
	if err != nil {
		return nil, err
	}
	if err := m.waitHealthy(filepath.Join(certDir, controllerManagerBinary+".crt"), "https://"+addr+"/healthz"); err != nil {
		return nil, errors.Join(err, m.Stop())
	}
	return m, nil
}

// Stop stops kube-controller-manager. It has no SIGTERM handler, so the signal
// ends it at once, as the kubelet stopping its pod does: that is a clean stop.
func (m *ControllerManager) Stop() error {
	err := m.Process.Stop(10 * time.Second)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() && status.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return err
}

// waitHealthy polls /healthz, trusting the self-signed certificate that
// kube-controller-manager writes to its --cert-dir before it serves, until it
// answers 200, the process exits or controllerManagerStartTimeout passes.
func (m *ControllerManager) waitHealthy(certFile, healthz string) error {
	deadline := time.Now().Add(controllerManagerStartTimeout)
	var last error
	for {
		last = probeHealthz(certFile, healthz)
		if last == nil {
			return nil
		}
		select {
		case <-m.Done():
			return fmt.Errorf("kube-controller-manager exited at start: %w\n%s", m.Err(), m.logTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-controller-manager is not healthy after %s: %w\n%s", controllerManagerStartTimeout, last, m.logTail())
		}
	}
}

func probeHealthz(certFile, healthz string) error {
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return err // not written yet
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no certificate", certFile)
	}
	hc := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(healthz)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", healthz, resp.Status)
	}
	return nil
}

func (m *ControllerManager) logTail() string {
	data, _ := os.ReadFile(m.Log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "kube-controller-manager log (last lines):\n" + strings.Join(lines, "\n")
}

// WaitForGarbageCollector returns once a garbage collector deletes an object whose
// owner is gone: it creates two ConfigMaps in namespace, the second owned by the
// first, deletes the first and waits for the second to go. kube-controller-manager
// is healthy before its garbage collector has listed every resource and started
// its workers; only then does it collect anything, which this sees happen.
func (c *Cluster) WaitForGarbageCollector(ctx context.Context, namespace string, timeout time.Duration) error {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	configMaps := cs.CoreV1().ConfigMaps(namespace)
	owner, err := configMaps.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "gc-probe-owner-"}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the garbage collector probe: %w", err)
	}
	dependent, err := configMaps.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "gc-probe-dependent-",
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, Controller: ptr.To(true),
		}},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the garbage collector probe: %w", err)
	}
	if err := configMaps.Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("deleting the garbage collector probe's owner: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		_, err := configMaps.Get(ctx, dependent.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case time.Now().After(deadline):
			_ = configMaps.Delete(ctx, dependent.Name, metav1.DeleteOptions{})
			return fmt.Errorf("no garbage collector deleted ConfigMap %s/%s within %s of its owner's deletion", namespace, dependent.Name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
