package kubectldefender

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the commands' output (review the diff before committing)")

var controlPlane = &testenv.ControlPlane{Scheme: scheme}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	stopController()
	controlPlane.Stop()
	os.Exit(code)
}

// k8s is the API server's admin client, for setting up and checking the world.
func k8s(t *testing.T) client.Client {
	t.Helper()
	controlPlane.Require(t)
	return controlPlane.Client
}

// kubeconfig writes a kubeconfig for the test API server whose context's
// namespace is namespace, as a user's would be.
func kubeconfig(t *testing.T, namespace string) string {
	t.Helper()
	controlPlane.Require(t)
	rc := controlPlane.Config
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: namespace}
	cfg.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// invocation is one run of kubectl defender.
type invocation struct {
	stdout, stderr string
	err            error
}

// run runs kubectl defender with args against the kubeconfig, as a shell would.
func run(t *testing.T, kubeconfigPath string, clk clock.PassiveClock, args ...string) invocation {
	t.Helper()
	var stdout, stderr bytes.Buffer
	o := &rootOptions{streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr}, clock: clk, pollInterval: 50 * time.Millisecond}
	if o.clock == nil {
		o.clock = clock.RealClock{}
	}
	cmd := newCommand(o)
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfigPath, "--cache-dir", t.TempDir()}, args...))
	err := cmd.ExecuteContext(t.Context())
	return invocation{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// mustRun is run for an invocation that must succeed.
func mustRun(t *testing.T, kubeconfigPath string, args ...string) string {
	t.Helper()
	got := run(t, kubeconfigPath, nil, args...)
	if got.err != nil {
		t.Fatalf("kubectl defender %s: %v (stderr %q)", strings.Join(args, " "), got.err, got.stderr)
	}
	return got.stdout
}

// Values the API server picks, which goldens cannot hold.
var volatile = []struct {
	pattern *regexp.Regexp
	with    string
}{
	{regexp.MustCompile(`("?uid"?: "?)[0-9a-f-]{36}`), "${1}<uid>"},
	{regexp.MustCompile(`("?resourceVersion"?: "?)[0-9]+`), "${1}<resourceVersion>"},
	{regexp.MustCompile(`("?creationTimestamp"?: "?)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`), "${1}<creationTimestamp>"},
}

// golden compares got, its volatile parts replaced, with testdata/name.golden, or
// rewrites the file with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	for _, v := range volatile {
		got = v.pattern.ReplaceAllString(got, v.with)
	}
	compareGolden(t, name, got)
}

// compareGolden compares got with testdata/name.golden, or rewrites the file with
// -update.
func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if got != string(want) {
		diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: difflib.SplitLines(string(want)), B: difflib.SplitLines(got), FromFile: path, ToFile: "got", Context: 2})
		t.Errorf("output differs from %s:\n%s", path, diff)
	}
}

// namespace creates a namespace of a fixed name (goldens show it), and deletes
// the test's DefenderTenants in it afterwards, so that -A of the next test sees
// its own only, and the test can run again on the same API server.
func namespace(t *testing.T, name string) string {
	t.Helper()
	c := k8s(t)
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeleteAllOf(context.Background(), &v1alpha1.DefenderTenant{}, client.InNamespace(name)); err != nil {
			t.Errorf("deleting the DefenderTenants of %s: %v", name, err)
		}
	})
	return name
}

// fixedTime is when every status of the fixtures says things happened.
var fixedTime = metav1.NewTime(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))

// createTenant creates tenant and then writes its status as the operator would.
func createTenant(t *testing.T, tenant *v1alpha1.DefenderTenant) *v1alpha1.DefenderTenant {
	t.Helper()
	c := k8s(t)
	status := tenant.Status
	if err := c.Create(context.Background(), tenant); err != nil {
		t.Fatal(err)
	}
	tenant.Status = status
	if err := c.Status().Update(context.Background(), tenant); err != nil {
		t.Fatal(err)
	}
	return tenant
}

// readyCond is a Ready condition as the operator writes it.
func readyCond(status metav1.ConditionStatus, reason, message string) []metav1.Condition {
	return []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: status, Reason: reason, Message: message, LastTransitionTime: fixedTime, ObservedGeneration: 1}}
}

func getTenantT(t *testing.T, namespace, name string) *v1alpha1.DefenderTenant {
	t.Helper()
	var tenant v1alpha1.DefenderTenant
	if err := k8s(t).Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &tenant); err != nil {
		t.Fatal(err)
	}
	return &tenant
}
