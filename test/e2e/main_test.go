//go:build e2e

// Package e2e runs the manager binary as it is shipped: built with go build,
// authenticated as the ServiceAccount that config/default deploys and authorised
// only by the RBAC rendered from it, against a real kube-apiserver and the Entra ID
// emulator, with config/samples applied by kubectl. Run it with `make test-e2e`.
//
// TestMain sets up that one world; each test asserts one part of the user contract
// (docs in /shared/API.md) against it, waiting for the operator where needed.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

const (
	repoRoot = "../.."
	// samplesNamespace is where the tests apply config/samples, as a user would.
	samplesNamespace = "partner"
	// leaderElectionID is the Lease name cmd/main.go elects with.
	leaderElectionID = "defender-tenant-operator.tenantcreds.io"
	// kindDeployment marks the manager among the objects a config overlay renders:
	// the tests run the manager themselves instead.
	kindDeployment = "Deployment"
)

// world is what TestMain sets up for the tests.
type world struct {
	admin           client.Client // cluster-admin, for reading what the operator did
	adminKubeconfig string        // for kubectl, as the user who applies the samples
	operatorConfig  *rest.Config  // the operator's ServiceAccount identity

	operatorNamespace string // from the rendered Deployment
	serviceAccount    string // from the rendered Deployment
	leaderElection    bool   // whether the manager could run with --leader-elect

	operator    *localcluster.Process
	operatorLog string
	metricsURL  string

	metricsReaderRole string // the rendered ClusterRole that config/rbac/metrics_reader_role.yaml ships
	metricsToken      string // a scraper's, bound to metricsReaderRole as Prometheus' ServiceAccount would be

	crd          *unstructured.Unstructured // the CRD as rendered by kustomize
	clientSecret string                     // the value in config/samples, to look for leaks
}

var w world

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	dir, err := os.MkdirTemp("", "defender-tenant-operator-e2e-")
	if err != nil {
		return fail(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	stop, err := setUp(dir)
	if stop != nil {
		defer func() {
			if err := stop(); err != nil {
				code = fail(err)
			}
		}()
	}
	if err != nil {
		return fail(err)
	}
	defer func() {
		if code != 0 {
			dumpOperatorLog()
		}
	}()
	return m.Run()
}

// setUp builds and starts everything. The returned stop function, which may be
// non-nil even on error, stops what was started, last started first.
func setUp(dir string) (stop func() error, err error) {
	var stops []func() error
	stop = func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		return errors.Join(errs...)
	}

	if _, err := exec.LookPath("kubectl"); err != nil {
		return nil, err
	}

	manager := filepath.Join(dir, "manager")
	if out, err := exec.Command("go", "build", "-o", manager, "github.com/tenantcreds/defender-tenant-operator/cmd").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the manager: %w\n%s", err, out)
	}
	objects, err := renderDefault()
	if err != nil {
		return nil, err
	}
	if w.clientSecret, err = sampleClientSecret(); err != nil {
		return nil, err
	}

	cluster, err := localcluster.Start()
	if err != nil {
		return nil, err
	}
	stops = append(stops, cluster.Stop)
	if w.admin, err = newClient(cluster.Admin); err != nil {
		return stop, err
	}
	w.adminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := localcluster.WriteKubeconfig(w.adminKubeconfig, cluster.Admin); err != nil {
		return stop, err
	}

	// Install what `make deploy` installs, except the Deployment: its pod would need
	// nodes and an image. The manager runs as a local process instead, with the
	// Deployment's identity.
	if err := applyAllButDeployment(objects); err != nil {
		return stop, err
	}
	if _, err := kubectl(nil, "wait", "--for=condition=Established", "--timeout=30s", "crd/"+w.crd.GetName()); err != nil {
		return stop, err
	}
	operatorKubeconfig := filepath.Join(dir, "operator.kubeconfig")
	if err := writeServiceAccountKubeconfig(cluster.Admin, operatorKubeconfig); err != nil {
		return stop, err
	}
	if w.metricsToken, err = createScraper("metrics-scraper", true); err != nil {
		return stop, err
	}

	emulator, err := startEmulator()
	if err != nil {
		return stop, err
	}
	stops = append(stops, func() error { emulator.Close(); return nil })

	w.operatorLog = filepath.Join(dir, "operator.log")
	readyz, err := startOperator(manager, operatorKubeconfig, emulator.URL)
	if err != nil {
		return stop, err
	}
	// The operator must exit cleanly on SIGTERM, as it does when its pod is deleted.
	stops = append(stops, func() error { return w.operator.Stop(15 * time.Second) })
	// A manager that cannot start fails here, with its log, rather than in every test.
	if err := waitForOperator(readyz); err != nil {
		return stop, err
	}

	if _, err := kubectl(nil, "create", "namespace", samplesNamespace); err != nil {
		return stop, err
	}
	if _, err := kubectl(nil, "apply", "-n", samplesNamespace, "-k", filepath.Join(repoRoot, "config", "samples")); err != nil {
		return stop, err
	}
	return stop, nil
}

// renderDefault renders config/default, as `make deploy` does, and remembers the
// identity the Deployment runs as and the CRD.
//
// It uses kustomize's library, at the version of the kustomize release that
// KUSTOMIZE_VERSION in the Makefile should name, so that the tests need no binary.
func renderDefault() ([]*unstructured.Unstructured, error) {
	objects, _, err := localcluster.Kustomize(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		return nil, err
	}
	for _, u := range objects {
		switch u.GetKind() {
		case kindDeployment:
			w.operatorNamespace = u.GetNamespace()
			w.serviceAccount, _, _ = unstructured.NestedString(u.Object, "spec", "template", "spec", "serviceAccountName")
		case "CustomResourceDefinition":
			w.crd = u
		case "ClusterRole":
			if strings.HasSuffix(u.GetName(), "metrics-reader") {
				w.metricsReaderRole = u.GetName()
			}
		}
	}
	if w.serviceAccount == "" || w.operatorNamespace == "" || w.crd == nil || w.metricsReaderRole == "" {
		return nil, errors.New("config/default renders no Deployment with a serviceAccountName, no CRD or no metrics-reader ClusterRole")
	}
	return objects, nil
}

func applyAllButDeployment(objects []*unstructured.Unstructured) error {
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}
	for _, u := range objects {
		if u.GetKind() != kindDeployment {
			list.Items = append(list.Items, *u)
		}
	}
	data, err := list.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = kubectl(data, "apply", "-f", "-")
	return err
}

// writeServiceAccountKubeconfig writes a kubeconfig that authenticates with a token
// of the operator's ServiceAccount, as its pod would: so the operator has exactly
// the permissions of the rendered RBAC, and nothing of the admin's.
func writeServiceAccountKubeconfig(admin *rest.Config, path string) error {
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	tr, err := cs.CoreV1().ServiceAccounts(w.operatorNamespace).CreateToken(context.Background(), w.serviceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", w.operatorNamespace, w.serviceAccount, err)
	}
	w.operatorConfig = &rest.Config{
		Host:            admin.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData},
		BearerToken:     tr.Status.Token,
	}
	return localcluster.WriteKubeconfig(path, w.operatorConfig)
}

// createScraper creates a ServiceAccount in the operator's namespace, bound to the
// rendered metrics-reader ClusterRole if bound, and returns a token of it.
func createScraper(name string, bound bool) (string, error) {
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: w.operatorNamespace, Name: name}}
	if err := w.admin.Create(ctx, sa); err != nil {
		return "", err
	}
	if bound {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: w.metricsReaderRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: sa.Namespace, Name: sa.Name}},
		}
		if err := w.admin.Create(ctx, binding); err != nil {
			return "", err
		}
		// The operator caches a denial for 30s: a scrape must not beat RBAC's informers.
		if err := waitForMetricsAccess("system:serviceaccount:" + sa.Namespace + ":" + sa.Name); err != nil {
			return "", err
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if err := w.admin.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	return tr.Status.Token, nil
}

func waitForMetricsAccess(user string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:                  user,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
		}}
		if err := w.admin.Create(context.Background(), review); err != nil {
			return err
		}
		if review.Status.Allowed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s may still not get /metrics 10s after it was bound to %s", user, w.metricsReaderRole)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startEmulator serves the world of cmd/entra-emulator/demo.yaml, which the
// samples are written for.
func startEmulator() (*httptest.Server, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "entra-emulator", "demo.yaml"))
	if err != nil {
		return nil, err
	}
	cfg, err := entraemu.ParseConfig(data)
	if err != nil {
		return nil, err
	}
	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		return nil, err
	}
	emu.Load(cfg)
	return httptest.NewServer(emu), nil
}

// startOperator starts the manager and returns the URL of its readiness endpoint.
func startOperator(manager, kubeconfig, authorityHost string) (readyz string, err error) {
	metricsAddr, err := localcluster.FreeLocalAddr()
	if err != nil {
		return "", err
	}
	probeAddr, err := localcluster.FreeLocalAddr()
	if err != nil {
		return "", err
	}
	w.metricsURL = "https://" + metricsAddr + "/metrics"
	args := []string{
		"--kubeconfig", kubeconfig,
		"--authority-host", authorityHost,
		// Secure metrics, the default the Deployment relies on: HTTPS, and only for
		// scrapers the API server authenticates and authorizes.
		"--metrics-bind-address", metricsAddr,
		"--health-probe-bind-address", probeAddr,
		// Debug logs say the most, which is what the leak test wants to scan.
		"--zap-log-level=debug",
	}
	// Outside a pod, leader election cannot read its namespace from the mounted
	// ServiceAccount, so it must be given.
	help, _ := exec.Command(manager, "-h").CombinedOutput()
	if w.leaderElection = bytes.Contains(help, []byte("-leader-election-namespace")); w.leaderElection {
		args = append(args, "--leader-elect", "--leader-election-namespace", w.operatorNamespace)
	}
	if w.operator, err = localcluster.StartProcess(w.operatorLog, manager, args...); err != nil {
		return "", err
	}
	return "http://" + probeAddr + "/readyz", nil
}

func waitForOperator(readyz string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(readyz); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-w.operator.Done():
			exit := w.operator.Err()
			if exit == nil {
				exit = errors.New("exit status 0")
			}
			return fmt.Errorf("the operator exited at start: %w\n%s", exit, operatorLogTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the operator did not become ready within 30s\n%s", operatorLogTail())
		}
	}
}

// sampleClientSecret reads the client secret that config/samples applies.
func sampleClientSecret() (string, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "samples", "credential_secret.yaml"))
	if err != nil {
		return "", err
	}
	var s struct {
		StringData map[string]string `json:"stringData"`
	}
	if err := yaml.Unmarshal(data, &s); err != nil {
		return "", err
	}
	if secret := s.StringData[v1alpha1.DefaultClientSecretKey]; secret != "" {
		return secret, nil
	}
	return "", errors.New("config/samples/credential_secret.yaml has no stringData." + v1alpha1.DefaultClientSecretKey)
}

func newClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// kubectl runs kubectl as the cluster admin and returns its stdout.
func kubectl(stdin []byte, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("kubectl", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+w.adminKubeconfig)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func operatorLogTail() string {
	return "operator log (last lines):\n" + logTail(w.operatorLog, 40)
}

func dumpOperatorLog() {
	if w.operatorLog != "" {
		fmt.Fprintln(os.Stderr, operatorLogTail())
	}
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "e2e:", err)
	return 1
}

// mustJSON is for failure messages.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
