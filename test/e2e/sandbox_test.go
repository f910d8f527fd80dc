//go:build e2e

package e2e

// A sandbox is a world of one test's own: a control plane, the operator's CRD and
// RBAC rendered from a kustomization, an in-process Entra ID emulator whose request
// counters the test reads, and any number of manager processes, each running as the
// rendered ServiceAccount. Tests that stop the API server, kill managers, run two
// replicas or install config/namespaced need one: in TestMain's world the
// cluster-wide operator would reconcile their tenants too, and a restart there would
// disturb every other test.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

const (
	// The multi-tenant app of every sandbox, and its client secret.
	sandboxClientID     = "5d1c0b7e-3a2f-4e6d-9b8c-7a6f5e4d3c21"
	sandboxClientSecret = "sandbox-client-secret-value"
	// credentialSecret is the name of the Secret holding it, in each tenant namespace.
	credentialSecret = "partner-app"
	defenderResource = "https://api.security.microsoft.com"
)

// leaderElection is the leader election timing of a sandbox's managers.
type leaderElection struct {
	lease, renew, retry time.Duration
	args                []string // the manager flags that set it; none for the defaults
}

// maxRetry is the longest a standby waits between two attempts to take the Lease:
// client-go retries every RetryPeriod with a jitter factor of 1.2.
func (le leaderElection) maxRetry() time.Duration {
	return le.retry * 22 / 10
}

func (le leaderElection) String() string {
	return fmt.Sprintf("LeaseDuration %s, RenewDeadline %s, RetryPeriod %s", le.lease, le.renew, le.retry)
}

// defaultLeaderElection is what cmd/main.go runs with today: controller-runtime's
// defaults, since it has no flags for them.
var defaultLeaderElection = leaderElection{lease: 15 * time.Second, renew: 10 * time.Second, retry: 2 * time.Second}

// fastLeaderElection returns short timings, which shorten the tests that wait for a
// dead leader's Lease to expire, when the manager has flags to set them; otherwise
// the defaults.
func fastLeaderElection(t *testing.T) leaderElection {
	t.Helper()
	flags := []string{"leader-elect-lease-duration", "leader-elect-renew-deadline", "leader-elect-retry-period"}
	help := managerHelp(t)
	for _, f := range flags {
		if !strings.Contains(help, "-"+f+" ") {
			return defaultLeaderElection
		}
	}
	le := leaderElection{lease: 6 * time.Second, renew: 4 * time.Second, retry: time.Second}
	for i, d := range []time.Duration{le.lease, le.renew, le.retry} {
		le.args = append(le.args, "--"+flags[i]+"="+d.String())
	}
	return le
}

// grantedRoles are what every sandbox tenant's admin consented to.
var grantedRoles = []string{"AdvancedHunting.Read.All", "Incident.Read.All"}

// controlPlaneStarts serialises the CPU-heavy starts of kube-apiserver, so that
// parallel tests do not all start their control planes at once on a small machine,
// and so that a test timing an API server restart is not slowed down by another
// test's control plane starting.
var controlPlaneStarts sync.Mutex

type sandbox struct {
	dir     string
	cluster *localcluster.Cluster
	admin   client.Client

	emu    *entraemu.Emulator
	emuURL string

	// From the rendered Deployment: where and as whom the manager runs, with
	// which arguments ($(POD_NAMESPACE) and the like expanded, as the kubelet does)
	// and which environment (NAME=value, POD_NAMESPACE among them).
	operatorNamespace string
	serviceAccount    string
	deploymentArgs    []string
	deploymentEnv     []string

	operatorConfig     *rest.Config // the ServiceAccount's identity, with a TokenRequest token
	operatorKubeconfig string
}

// newSandbox starts a control plane, installs everything the kustomization at
// overlay (relative to config/) renders except the Deployment, and starts an
// emulator. Everything is stopped when the test ends.
func newSandbox(t *testing.T, overlay string) *sandbox {
	t.Helper()
	s := &sandbox{dir: t.TempDir()}
	r, err := renderOverlay(overlay)
	if err != nil {
		t.Fatal(err)
	}
	s.operatorNamespace, s.serviceAccount, s.deploymentArgs, s.deploymentEnv = r.namespace, r.serviceAccount, r.args, r.env

	controlPlaneStarts.Lock()
	s.cluster, err = localcluster.Start()
	controlPlaneStarts.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.cluster.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	if s.admin, err = newClient(s.cluster.Admin); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, u := range r.objects {
		if err := s.admin.Create(ctx, u.DeepCopy()); err != nil {
			t.Fatalf("installing %s %s/%s from config/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), overlay, err)
		}
	}
	waitFor(t, 30*time.Second, "the CRD is established", func() error {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := s.admin.Get(ctx, client.ObjectKey{Name: r.crdName}, crd); err != nil {
			return err
		}
		conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conditions {
			if c, _ := c.(map[string]any); c["type"] == "Established" && c["status"] == "True" {
				return s.admin.List(ctx, &v1alpha1.DefenderTenantList{})
			}
		}
		return errors.New("not established yet")
	})

	cs, err := kubernetes.NewForConfig(s.cluster.Admin)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(s.operatorNamespace).CreateToken(ctx, s.serviceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", s.operatorNamespace, s.serviceAccount, err)
	}
	s.operatorConfig = &rest.Config{
		Host:            s.cluster.Admin.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.cluster.Admin.CAData},
		BearerToken:     tr.Status.Token,
	}
	s.operatorKubeconfig = filepath.Join(s.dir, "operator.kubeconfig")
	if err := localcluster.WriteKubeconfig(s.operatorKubeconfig, s.operatorConfig); err != nil {
		t.Fatal(err)
	}

	if s.emu, err = entraemu.New(entraemu.Options{}); err != nil {
		t.Fatal(err)
	}
	s.emu.AddApp(sandboxClientID, entraemu.Secret{Value: sandboxClientSecret})
	srv := httptest.NewServer(s.emu)
	t.Cleanup(srv.Close)
	s.emuURL = srv.URL
	return s
}

type rendered struct {
	objects        []*unstructured.Unstructured // all but the Deployment
	crdName        string
	namespace      string
	serviceAccount string
	args           []string
	env            []string // NAME=value
}

// renderOverlay renders config/<overlay> with kustomize's library, as
// renderDefault does, without touching the shared world.
func renderOverlay(overlay string) (*rendered, error) {
	objects, _, err := localcluster.Kustomize(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, "config", overlay))
	if err != nil {
		return nil, err
	}
	r := &rendered{}
	for _, u := range objects {
		switch u.GetKind() {
		case kindDeployment:
			if err := r.readDeployment(u); err != nil {
				return nil, fmt.Errorf("config/%s: %w", overlay, err)
			}
			continue
		case "CustomResourceDefinition":
			r.crdName = u.GetName()
		}
		r.objects = append(r.objects, u)
	}
	if r.serviceAccount == "" || r.crdName == "" {
		return nil, fmt.Errorf("config/%s renders no Deployment with a serviceAccountName, or no CRD", overlay)
	}
	return r, nil
}

// readDeployment takes the manager container's environment, with the downward API's
// metadata.namespace resolved, and its args, with $(VAR) references to that
// environment expanded as the kubelet expands them.
func (r *rendered) readDeployment(u *unstructured.Unstructured) error {
	var d struct {
		Spec struct {
			Template struct {
				Spec corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return err
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) == 0 {
		return errors.New("the Deployment has no container")
	}
	r.namespace, r.serviceAccount = u.GetNamespace(), pod.ServiceAccountName
	env := map[string]string{}
	for _, e := range pod.Containers[0].Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = u.GetNamespace()
		default:
			return fmt.Errorf("env %s: only values and metadata.namespace are supported here", e.Name)
		}
		r.env = append(r.env, e.Name+"="+env[e.Name])
	}
	for _, a := range pod.Containers[0].Args {
		for name, value := range env {
			a = strings.ReplaceAll(a, "$("+name+")", value)
		}
		r.args = append(r.args, a)
	}
	return nil
}

// operator is a manager process of a sandbox.
type operator struct {
	*localcluster.Process
	name       string
	log        string
	metricsURL string
}

var (
	managerOnce sync.Once
	managerPath string
)

// managerBinary is the manager that TestMain built, next to its log.
func managerBinary(t *testing.T) string {
	t.Helper()
	managerOnce.Do(func() {
		p := filepath.Join(filepath.Dir(w.operatorLog), "manager")
		if _, err := os.Stat(p); err == nil {
			managerPath = p
		}
	})
	if managerPath != "" {
		return managerPath
	}
	// TestMain keeps it elsewhere now: build one for this test.
	p := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-o", p, "github.com/tenantcreds/defender-tenant-operator/cmd").CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	return p
}

var (
	managerHelpOnce sync.Once
	managerHelpText string
)

// managerHelp is what the manager prints for -h: its flags.
func managerHelp(t *testing.T) string {
	t.Helper()
	bin := managerBinary(t)
	managerHelpOnce.Do(func() {
		out, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits 0 or 2, depending on the flag package
		managerHelpText = string(out)
	})
	return managerHelpText
}

// startOperator starts a manager with the rendered Deployment's environment and
// arguments, then the arguments a process outside a pod needs, and waits until it serves /readyz. It
// is stopped with SIGTERM when the test ends, if it still runs; its log is shown
// if the test failed.
func (s *sandbox) startOperator(t *testing.T, name string, extraArgs ...string) *operator {
	t.Helper()
	metricsAddr, err := localcluster.FreeLocalAddr()
	if err != nil {
		t.Fatal(err)
	}
	probeAddr, err := localcluster.FreeLocalAddr()
	if err != nil {
		t.Fatal(err)
	}
	// A flag given twice takes its last value: these replace the in-pod ones.
	args := append(slices.Clone(s.deploymentArgs),
		"--kubeconfig", s.operatorKubeconfig,
		"--authority-host", s.emuURL,
		"--metrics-bind-address", metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address", probeAddr,
		"--leader-election-namespace", s.operatorNamespace,
		"--zap-log-level=debug",
	)
	args = append(args, extraArgs...)
	op := &operator{name: name, log: filepath.Join(s.dir, name+".log"), metricsURL: "http://" + metricsAddr + "/metrics"}
	if op.Process, err = localcluster.StartProcessWithEnv(op.log, managerBinary(t), s.deploymentEnv, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := op.Stop(15 * time.Second); err != nil && !strings.Contains(err.Error(), "signal: killed") {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", name, logTail(op.log, 30))
		}
	})
	readyz := "http://" + probeAddr + "/readyz"
	waitFor(t, 30*time.Second, name+" serves /readyz", func() error {
		resp, err := http.Get(readyz)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}, op)
	return op
}

func logTail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logLines returns the lines of the operator's log that contain s, ignoring case.
func (op *operator) logLines(s string) []string {
	data, _ := os.ReadFile(op.log)
	var found []string
	for line := range strings.Lines(string(data)) {
		if strings.Contains(strings.ToLower(line), strings.ToLower(s)) {
			found = append(found, strings.TrimSpace(line))
		}
	}
	return found
}

// metric returns the sum of the samples of a metric family whose labels contain
// every one of labels (each written name="value"); 0 when there are none.
func (op *operator) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(op.metricsURL)
	if err != nil {
		t.Fatalf("%s: %v", op.name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if !allContained(line, labels) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("%s: metric line %q: %v", op.name, line, err)
		}
		sum += v
	}
	return sum
}

func allContained(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// isLeader tells from controller-runtime's leader_election_master_status gauge
// whether the manager leads.
func (op *operator) isLeader(t *testing.T) bool {
	t.Helper()
	return op.metric(t, "leader_election_master_status") == 1
}

// waitForIdle waits until the operator's DefenderTenant controller has no
// reconcile running or queued: everything its informers had handed it so far is
// done.
func (op *operator) waitForIdle(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, op.name+" is idle", func() error {
		busy := op.metric(t, "controller_runtime_active_workers", `controller="defendertenant"`)
		queued := op.metric(t, "workqueue_depth", `name="defendertenant"`)
		if busy+queued > 0 {
			return fmt.Errorf("%v reconciles running, %v queued", busy, queued)
		}
		return nil
	}, op)
}

// waitFor retries check every 100ms until it returns nil, and fails the test with
// its last error when timeout has passed or one of the operators has exited.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() error, running ...*operator) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		for _, op := range running {
			select {
			case <-op.Done():
				t.Fatalf("%s: %v; %s has exited: %v\n%s", what, err, op.name, op.Err(), logTail(op.log, 30))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tenantID returns the GUID of the i-th customer tenant of a sandbox.
func tenantID(i int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
}

// addConsentedTenant makes a customer tenant exist in Entra with the app consented
// and grantedRoles granted.
func (s *sandbox) addConsentedTenant(id string) {
	s.emu.Grant(id, sandboxClientID, defenderResource, grantedRoles...)
}

func (s *sandbox) createNamespace(t *testing.T, ns string) {
	t.Helper()
	if err := s.admin.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
}

// createCredential creates the Secret that tenants of ns reference.
func createCredential(t *testing.T, c client.Client, ns, name, value string) {
	t.Helper()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		StringData: map[string]string{v1alpha1.DefaultClientSecretKey: value},
	}
	if err := c.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
}

func newTenant(ns, name, tenant string, roles ...string) *v1alpha1.DefenderTenant {
	return &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:        tenant,
			ClientID:        sandboxClientID,
			ClientSecretRef: v1alpha1.ClientSecretReference{Name: credentialSecret},
			RequiredRoles:   roles,
		},
	}
}

func (s *sandbox) createTenant(t *testing.T, ns, name, tenant string) {
	t.Helper()
	if err := s.admin.Create(context.Background(), newTenant(ns, name, tenant, grantedRoles...)); err != nil {
		t.Fatal(err)
	}
}

// readyError says why the tenant is not Ready=True for its current generation.
func readyError(c client.Client, ns, name string) error {
	return conditionError(c, ns, name, metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
}

func conditionError(c client.Client, ns, name string, want metav1.ConditionStatus, reason string) error {
	tenant := &v1alpha1.DefenderTenant{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, tenant); err != nil {
		return err
	}
	ready := apimeta.FindStatusCondition(tenant.Status.Conditions, v1alpha1.ConditionReady)
	switch {
	case tenant.Status.ObservedGeneration != tenant.Generation:
		return fmt.Errorf("%s: status.observedGeneration %d, generation %d", name, tenant.Status.ObservedGeneration, tenant.Generation)
	case ready == nil:
		return fmt.Errorf("%s has no Ready condition", name)
	case ready.Status != want || ready.Reason != reason:
		return fmt.Errorf("%s: Ready=%s %s (%s), want Ready=%s %s", name, ready.Status, ready.Reason, ready.Message, want, reason)
	}
	return nil
}

// tokenClaims are the claims of an emulated Entra v1 access token that the tests check.
type tokenClaims struct {
	TenantID string           `json:"tid"`
	AppID    string           `json:"appid"`
	Expiry   *jwt.NumericDate `json:"exp"`
	Roles    []string         `json:"roles"`
}

// signingKeys fetches the emulator's signing keys, as a resource server would.
func (s *sandbox) signingKeys(t *testing.T) *jose.JSONWebKeySet {
	t.Helper()
	resp, err := http.Get(s.emuURL + "/common/discovery/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	keys := &jose.JSONWebKeySet{}
	if err := json.NewDecoder(resp.Body).Decode(keys); err != nil {
		t.Fatal(err)
	}
	return keys
}

// checkTokenSecret checks, independently of the operator's own validation, that the
// token Secret of a tenant holds a token the emulator signed for that tenant and the
// sandbox app, unexpired and with every granted role, and that the Secret's other
// keys agree with it.
func checkTokenSecret(secret *corev1.Secret, keys *jose.JSONWebKeySet, tenant string) error {
	raw := string(secret.Data[v1alpha1.TokenSecretKeyAccessToken])
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return fmt.Errorf("Secret %s: access_token is not a signed JWT: %w", secret.Name, err)
	}
	var c tokenClaims
	if err := tok.Claims(keys, &c); err != nil {
		return fmt.Errorf("Secret %s: access_token is not signed by the emulator: %w", secret.Name, err)
	}
	switch {
	case !strings.EqualFold(c.TenantID, tenant):
		return fmt.Errorf("Secret %s: tid = %q, want %q", secret.Name, c.TenantID, tenant)
	case !strings.EqualFold(c.AppID, sandboxClientID):
		return fmt.Errorf("Secret %s: appid = %q, want %q", secret.Name, c.AppID, sandboxClientID)
	case c.Expiry == nil || !c.Expiry.Time().After(time.Now()):
		return fmt.Errorf("Secret %s: exp %v is not in the future", secret.Name, c.Expiry)
	case !allIn(grantedRoles, c.Roles):
		return fmt.Errorf("Secret %s: roles %q lack some of %q", secret.Name, c.Roles, grantedRoles)
	case string(secret.Data[v1alpha1.TokenSecretKeyTenantID]) != tenant:
		return fmt.Errorf("Secret %s: tenant_id = %q, want %q", secret.Name, secret.Data[v1alpha1.TokenSecretKeyTenantID], tenant)
	case string(secret.Data[v1alpha1.TokenSecretKeyExpiresAt]) != c.Expiry.Time().UTC().Format(time.RFC3339):
		return fmt.Errorf("Secret %s: expires_at = %q, the token's exp is %s", secret.Name, secret.Data[v1alpha1.TokenSecretKeyExpiresAt], c.Expiry.Time().UTC().Format(time.RFC3339))
	}
	return nil
}

func allIn(want, have []string) bool {
	for _, r := range want {
		if !slices.Contains(have, r) {
			return false
		}
	}
	return true
}

// tokenSecrets returns the token Secrets of ns by name.
func tokenSecrets(t *testing.T, c client.Client, ns string) map[string]*corev1.Secret {
	t.Helper()
	list := &corev1.SecretList{}
	if err := c.List(context.Background(), list, client.InNamespace(ns),
		client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*corev1.Secret{}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out
}
