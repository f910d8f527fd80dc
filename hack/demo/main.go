// Command demo is what `make demo` runs: the operator at work on one machine, with
// no cluster, Docker or Entra ID tenant. It starts a throwaway control plane (etcd
// and kube-apiserver), the Entra ID emulator loaded with cmd/entra-emulator/demo.yaml
// and the operator binary, applies config/samples, waits for the three sample
// tenants to settle, shows what a user would look at, and then keeps everything
// running for kubectl until Ctrl-C, which stops it all. A second part shows a
// partner's fleet: a ClusterDefenderApp with a certificate credential serving
// customer namespaces on Microsoft Graph, seen with `kubectl defender status` and
// `consent`; a customer admin consents and `kubectl defender refresh --wait` turns
// that tenant Ready at once; a tenant on the retiring Defender XDR API is warned
// about at apply time, in status and in Events; and a tenant its grants do not
// cover is refused. Last, the partner turns on managed rotation for a certificate
// that expires in 29 days: the operator adds a new key through the emulator's
// Microsoft Graph, waits until Entra ID accepts it, promotes it, and every tenant
// re-mints with it without leaving Ready.
//
// Run it from the repository root, after `make build`, with KUBEBUILDER_ASSETS set
// as `make demo` does. DEMO_EXIT=1 (or -exit) stops right after the tour, for
// scripts and CI.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

// Inputs, relative to the repository root.
const (
	managerBin     = "bin/manager"
	emulatorBin    = "bin/entra-emulator"
	pluginBin      = "bin/kubectl-defender"
	emulatorConfig = "cmd/entra-emulator/demo.yaml"
	crdDir         = "config/crd/bases"
	retiringPolicy = "config/admission/retiring_resources_policy.yaml"
	samplesDir     = "config/samples"
)

// expected is the state each sample tenant settles in, given demo.yaml.
var expected = []struct{ name, ready, reason string }{
	{"contoso", "True", v1alpha1.ReasonTokenReady},
	{"fabrikam", "False", v1alpha1.ReasonMissingRoles},
	{"northwind", "False", v1alpha1.ReasonConsentRequired},
}

// errInterrupted ends a wait cut short by Ctrl-C.
var errInterrupted = errors.New("interrupted")

// stopGrace is how long each process gets to exit after SIGTERM.
const stopGrace = 10 * time.Second

type options struct {
	dir       string
	namespace string
	timeout   time.Duration
	exit      bool
}

func main() {
	exitAfterTour, _ := strconv.ParseBool(os.Getenv("DEMO_EXIT"))
	var o options
	flag.StringVar(&o.dir, "dir", ".demo", "directory for the kubeconfig and the logs")
	flag.StringVar(&o.namespace, "namespace", "partner", "namespace to apply the samples in")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the sample tenants to settle")
	flag.BoolVar(&o.exit, "exit", exitAfterTour, "stop after the tour instead of waiting for Ctrl-C (default from $DEMO_EXIT)")
	flag.Parse()
	// envtest logs through controller-runtime; without a logger it complains after 30s.
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))

	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(o options) (err error) {
	for _, p := range []string{managerBin, emulatorBin, pluginBin, emulatorConfig, crdDir, retiringPolicy, samplesDir} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w: run the demo from the repository root with `make demo`, which builds the binaries", err)
		}
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		return fmt.Errorf("the demo shows the operator through kubectl: %w", err)
	}
	// The first signal stops the demo; later ones must not kill it half way through
	// stopping, which would leave the processes it started running.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		for range sigs {
			fmt.Fprintln(os.Stderr, "Still stopping: each process gets a few seconds to exit.")
		}
	}()

	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	d := &demo{options: o, kubeconfig: filepath.Join(dir, "kubeconfig")}

	step("Starting a local control plane (etcd and kube-apiserver) with the DefenderTenant CRD")
	cluster, err := localcluster.Start(crdDir)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopped("the control plane", cluster.Stop())) }()
	if err := localcluster.WriteKubeconfig(d.kubeconfig, cluster.Admin); err != nil {
		return err
	}
	if d.client, err = newClient(cluster); err != nil {
		return err
	}
	detail("API server: %s\n   kubeconfig: %s", cluster.Admin.Host, rel(d.kubeconfig))

	cert, err := newPartnerCertificate()
	if err != nil {
		return err
	}
	config, err := emulatorConfigWith(dir, cert)
	if err != nil {
		return err
	}
	step("Starting the Entra ID emulator with " + emulatorConfig + " and the partner app's certificate")
	urlFile := filepath.Join(dir, "emulator.url")
	_ = os.Remove(urlFile) // left by a demo that was killed: it names a dead port
	emulatorLog := filepath.Join(dir, "emulator.log")
	emulator, err := localcluster.StartProcess(emulatorLog, emulatorBin,
		"--config", config, "--listen", "127.0.0.1:0", "--url-file", urlFile,
		"--replication-delay", replicationDelay.String())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopped("the Entra ID emulator", emulator.Stop(stopGrace))) }()
	emulatorURL, err := waitForFile(ctx, urlFile, emulator)
	if err != nil {
		return fmt.Errorf("waiting for the emulator (see %s): %w", rel(emulatorLog), err)
	}
	d.emulatorURL = emulatorURL
	detail("token endpoint: %s/<tenant>/oauth2/v2.0/token\n   Microsoft Graph: %s/v1.0/applications\n   log: %s", emulatorURL, emulatorURL, rel(emulatorLog))

	step("Starting the operator (" + managerBin + ")")
	metricsAddr, err := localcluster.FreeLocalAddr()
	if err != nil {
		return err
	}
	d.operatorLog = filepath.Join(dir, "operator.log")
	operator, err := localcluster.StartProcess(d.operatorLog, managerBin,
		"--kubeconfig", d.kubeconfig,
		"--authority-host", emulatorURL,
		"--graph-host", emulatorURL,
		"--metrics-bind-address", metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address", "127.0.0.1:0",
		"--zap-encoder=console")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopped("the operator", operator.Stop(stopGrace))) }()
	detail("log: %s\n   metrics: http://%s/metrics", rel(d.operatorLog), metricsAddr)

	step("Installing the admission policy that warns about tenants on a retiring Defender API")
	if err := d.kubectl(ctx, "apply", "-f", retiringPolicy); err != nil {
		return err
	}

	step("Applying " + samplesDir + " to namespace " + o.namespace)
	start := time.Now()
	if err := d.kubectl(ctx, "create", "namespace", o.namespace); err != nil {
		return err
	}
	if err := d.kubectl(ctx, "apply", "-n", o.namespace, "-k", samplesDir); err != nil {
		return err
	}

	step("Waiting for the tenants to settle: contoso Ready, fabrikam MissingRoles, northwind ConsentRequired")
	if err := d.waitForTenants(ctx, operator); err != nil {
		if !errors.Is(err, errInterrupted) {
			_ = d.kubectl(context.Background(), "get", "dtn", "-n", o.namespace, "-o", "wide")
		}
		return err
	}
	detail("settled %s after the samples were applied", time.Since(start).Round(10*time.Millisecond))

	if err := d.tour(ctx, metricsAddr); err != nil {
		return err
	}
	if err := d.partnerApp(ctx, cert); err != nil {
		return err
	}
	if err := d.rotationTour(ctx); err != nil {
		return err
	}
	if o.exit {
		return nil
	}
	fmt.Println("\nPress Ctrl-C to stop the operator, the emulator and the control plane.")
	select {
	case <-ctx.Done():
		fmt.Println()
		return nil
	case <-operator.Done():
		return exitedEarly("operator", operator.Err(), rel(d.operatorLog))
	case <-emulator.Done():
		return exitedEarly("emulator", emulator.Err(), rel(emulatorLog))
	}
}

// exitedEarly reports that a process the demo still needed has exited; err is nil
// when it exited with status 0, which is no less unexpected.
func exitedEarly(what string, err error, log string) error {
	if err == nil {
		return fmt.Errorf("the %s stopped unexpectedly (exit status 0); see %s", what, log)
	}
	return fmt.Errorf("the %s stopped unexpectedly (%w); see %s", what, err, log)
}

type demo struct {
	options
	kubeconfig  string
	operatorLog string
	emulatorURL string
	client      client.Client
}

func newClient(c *localcluster.Cluster) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(c.Admin, client.Options{Scheme: scheme})
}

// tour prints what a user looks at once the tenants have settled.
func (d *demo) tour(ctx context.Context, metricsAddr string) error {
	ns := d.namespace
	step("The DefenderTenants")
	if err := d.kubectl(ctx, "get", "defendertenants", "-n", ns, "-o", "wide"); err != nil {
		return err
	}

	contoso := &v1alpha1.DefenderTenant{}
	if err := d.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "contoso"}, contoso); err != nil {
		return err
	}
	secretName := contoso.Status.TokenSecretName
	step("contoso's token Secret, what workloads mount (describe shows sizes, never values)")
	if err := d.kubectl(ctx, "describe", "secret", secretName, "-n", ns); err != nil {
		return err
	}
	secret := &corev1.Secret{}
	if err := d.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName}, secret); err != nil {
		return err
	}
	if owner := metav1.GetControllerOf(secret); owner != nil {
		// Garbage collection deletes the Secret with its DefenderTenant.
		fmt.Printf("\nOwned by (controller): %s %s, so it goes when the %s does.\n", owner.Kind, owner.Name, owner.Kind)
	}

	step("Claims of contoso's token, decoded from its payload (the token and its signature stay secret)")
	if err := printClaims(secret.Data[v1alpha1.TokenSecretKeyAccessToken]); err != nil {
		return err
	}

	step("The tenants that need a human")
	for _, name := range []string{"fabrikam", "northwind"} {
		t := &v1alpha1.DefenderTenant{}
		if err := d.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, t); err != nil {
			return err
		}
		printProblem(t)
	}

	step("Try it, in another terminal")
	for _, l := range []string{
		"# Use the demo cluster, then watch the tenants and what the operator reported:",
		"export KUBECONFIG=" + filepath.Join("$PWD", rel(d.kubeconfig)),
		"kubectl get dtn -n " + ns + " -w",
		"kubectl events -n " + ns,
		"# Delete the token Secret: the operator recreates it.",
		"kubectl delete secret " + secretName + " -n " + ns,
		"# Suspend a tenant: no more token requests, the Secret is left alone.",
		"kubectl patch dtn contoso -n " + ns + ` --type=merge -p '{"spec":{"suspend":true}}'`,
		"# The operator's log and metrics:",
		"tail -f " + rel(d.operatorLog),
		"curl -s http://" + metricsAddr + "/metrics | grep ^defender_tenant",
	} {
		fmt.Println("   " + l)
	}
	return nil
}

// waitForTenants waits until every sample tenant shows its expected Ready condition.
func (d *demo) waitForTenants(ctx context.Context, operator *localcluster.Process) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		pending, err := d.unsettled(ctx)
		if err == nil && len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return errInterrupted
			}
			if err == nil {
				err = fmt.Errorf("%s not settled", strings.Join(pending, ", "))
			}
			return fmt.Errorf("after %s: %w (see %s)", d.timeout, err, rel(d.operatorLog))
		case <-operator.Done():
			return exitedEarly("operator", operator.Err(), rel(d.operatorLog))
		case <-tick.C:
		}
	}
}

// unsettled returns the sample tenants not yet in their expected state.
func (d *demo) unsettled(ctx context.Context) ([]string, error) {
	var pending []string
	for _, want := range expected {
		t := &v1alpha1.DefenderTenant{}
		if err := d.client.Get(ctx, client.ObjectKey{Namespace: d.namespace, Name: want.name}, t); err != nil {
			return nil, err
		}
		ready := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady)
		if ready == nil || string(ready.Status) != want.ready || ready.Reason != want.reason {
			pending = append(pending, want.name)
		}
	}
	return pending, nil
}

// kubectl runs kubectl against the demo cluster, showing the command as a user
// who exported KUBECONFIG would type it.
func (d *demo) kubectl(ctx context.Context, args ...string) error {
	fmt.Printf("$ kubectl %s\n", shellWords(args))
	if err := d.kubectlCommand(ctx, args...).Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// printClaims prints the claims of a JWT that say who the token is for and what it
// grants. A JWT's payload is only base64url-encoded: anyone holding the token can
// read it, so it is no secret, but the whole token is a bearer credential.
func printClaims(token []byte) error {
	parts := strings.Split(string(token), ".")
	if len(parts) != 3 {
		return errors.New("the published access_token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("decoding the token payload: %w", err)
	}
	var c struct {
		Tid   string   `json:"tid"`
		AppID string   `json:"appid"`
		Roles []string `json:"roles"`
		Aud   string   `json:"aud"`
		Iss   string   `json:"iss"`
		Exp   int64    `json:"exp"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return fmt.Errorf("decoding the token payload: %w", err)
	}
	exp := time.Unix(c.Exp, 0).UTC()
	fmt.Printf("   tid    %s  (the customer tenant)\n", c.Tid)
	fmt.Printf("   appid  %s  (the partner's app)\n", c.AppID)
	fmt.Printf("   roles  %s\n", strings.Join(c.Roles, ", "))
	fmt.Printf("   aud    %s\n", c.Aud)
	fmt.Printf("   iss    %s\n", c.Iss)
	fmt.Printf("   exp    %d  (%s, in %s)\n", c.Exp, exp.Format(time.RFC3339), time.Until(exp).Round(time.Second))
	return nil
}

func printProblem(t *v1alpha1.DefenderTenant) {
	ready := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady)
	stalled := metav1.ConditionFalse
	if c := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionStalled); c != nil {
		stalled = c.Status
	}
	fmt.Printf("%s: Ready=%s, reason %s, Stalled=%s\n", t.Name, ready.Status, ready.Reason, stalled)
	fmt.Printf("   message:         %s\n", ready.Message)
	if len(t.Status.GrantedRoles) > 0 {
		fmt.Printf("   grantedRoles:    %s\n", strings.Join(t.Status.GrantedRoles, ", "))
	}
	if len(t.Status.MissingRoles) > 0 {
		fmt.Printf("   missingRoles:    %s\n", strings.Join(t.Status.MissingRoles, ", "))
	}
	fmt.Printf("   adminConsentURL: %s\n", t.Status.AdminConsentURL)
	if f := t.Status.LastFailure; f != nil {
		// What Microsoft support and the customer's sign-in logs find a request by.
		fmt.Printf("   lastFailure:     %s at %s\n", f.Reason, f.Time.UTC().Format(time.RFC3339))
		for _, field := range []struct{ name, value string }{
			{"code", f.Code}, {"traceID", f.TraceID}, {"correlationID", f.CorrelationID}, {"clientRequestID", f.ClientRequestID},
		} {
			if field.value != "" {
				fmt.Printf("      %-16s %s\n", field.name+":", field.value)
			}
		}
	}
}

// waitForFile returns the content of a file that a process writes once it is ready.
func waitForFile(ctx context.Context, path string, p *localcluster.Process) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if b, err := os.ReadFile(path); err == nil {
			return string(b), nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return "", errInterrupted
			}
			return "", ctx.Err()
		case <-p.Done():
			return "", p.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func step(title string) {
	fmt.Printf("\n==> %s\n", title)
}

func detail(format string, args ...any) {
	fmt.Printf("   "+format+"\n", args...)
}

func stopped(what string, err error) error {
	if err != nil {
		return fmt.Errorf("stopping %s: %w", what, err)
	}
	fmt.Println("Stopped " + what + ".")
	return nil
}

// rel shortens a path under the working directory (the repository root) for display.
func rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if r, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// shellWords joins args as a shell would need them typed: an argument with
// characters the shell treats specially goes in single quotes.
func shellWords(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'{}[]$*?|&;<>()\\`!#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted[i] = a
	}
	return strings.Join(quoted, " ")
}
