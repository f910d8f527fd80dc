// Command bench measures the operator at scale against a real kube-apiserver and etcd
// (envtest) and the Entra ID emulator, with the manager running as its own process,
// built from ./cmd as the Dockerfile builds it (or the binary given with -manager).
// It prints one "name: value" per line on stdout; progress goes to stderr. See
// docs/performance.md for what each figure means.
//
// With -app the tenants are spread over -namespaces namespaces and all use one
// ClusterDefenderApp with a certificate credential, and the run adds the cost of
// signing assertions, a certificate rotation by the partner and, unless
// -managed-rotation=false, one by the operator itself (managed rotation).
//
//	make bench BENCH_ARGS="-n 1000 -latency 50ms"
//	make bench BENCH_ARGS="-app -n 10000"
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
	"github.com/tenantcreds/defender-tenant-operator/internal/selfsigned"
)

const (
	clientID     = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	clientSecret = "bench~client-secret-0123456789abcdef"
	credential   = "partner-app"
	defenderAPI  = "https://api.security.microsoft.com"
	benchNS      = "bench"
	unrelatedNS  = "unrelated"
	floorNS      = "floor"
	pairNS       = "pair"
	floorPairs   = 3
	operatorUser = "defender-tenant-operator"
)

var roles = []string{"Incident.Read.All", "AdvancedHunting.Read.All"}

// config is everything a run can vary; the flags set it.
type config struct {
	N            int
	Latency      time.Duration
	Idle         time.Duration
	Unrelated    int
	Workers      int
	Settle       time.Duration
	OperatorArgs []string
	OperatorEnv  []string
	Manager      string
	Assets       string
	Timeout      time.Duration
	App          bool
	Namespaces   int
	// SkipRotation leaves out the app mode's rotation, which takes a minute or more
	// whatever N (the operator spreads re-mints over rotationSpread).
	SkipRotation bool
	// ManagedRotation (-app) puts the app's certificate under managed rotation
	// after the rotation above and measures the operator's own rotation.
	ManagedRotation bool
	// ReplicationDelay is how long the emulator takes to accept a key added through
	// Graph, in the managed rotation.
	ReplicationDelay time.Duration
}

func main() {
	var c config
	var opArgs, opEnv string
	flag.IntVar(&c.N, "n", 1000, "number of DefenderTenants")
	flag.DurationVar(&c.Latency, "latency", 0, "latency the Entra emulator adds to every token request, e.g. 50ms")
	flag.DurationVar(&c.Idle, "idle", 60*time.Second, "idle period measured after all tenants are Ready")
	flag.IntVar(&c.Unrelated, "unrelated", 10000, "unrelated 4 KiB Secrets created in another namespace")
	flag.IntVar(&c.Workers, "workers", 10, "concurrency of the harness's creates and of the floor's plain client")
	flag.DurationVar(&c.Settle, "settle", 10*time.Second, "pause after the unrelated Secrets are created, before memory is read")
	flag.StringVar(&opArgs, "operator-args", "", "extra flags for the manager, space separated, e.g. \"--kube-api-qps=200 --kube-api-burst=400\"")
	flag.StringVar(&opEnv, "operator-env", "", "extra environment for the manager, space separated, e.g. \"GOMEMLIMIT=48MiB\"")
	flag.StringVar(&c.Manager, "manager", "", "manager binary to measure; default: build ./cmd as the Dockerfile does")
	flag.StringVar(&c.Assets, "assets", "", "directory with kube-apiserver and etcd; default $KUBEBUILDER_ASSETS or hack/envtest-binaries.sh")
	flag.DurationVar(&c.Timeout, "timeout", 60*time.Minute, "give up after this long")
	flag.BoolVar(&c.App, "app", false, "app mode: tenants over -namespaces namespaces, all using one ClusterDefenderApp with a certificate credential")
	flag.IntVar(&c.Namespaces, "namespaces", 100, "with -app: namespaces the tenants are spread over")
	flag.BoolVar(&c.ManagedRotation, "managed-rotation", true, "with -app: put the app's certificate under managed rotation, inside renewBefore, and measure the rotation")
	flag.DurationVar(&c.ReplicationDelay, "replication-delay", 2*time.Second, "with -managed-rotation: how long the emulator takes to accept a key added through Graph")
	flag.Parse()
	c.OperatorArgs, c.OperatorEnv = strings.Fields(opArgs), strings.Fields(opEnv)
	if c.N < 1 || c.Workers < 1 || c.Namespaces < 1 {
		fmt.Fprintln(os.Stderr, "bench: -n, -workers and -namespaces must be at least 1")
		os.Exit(2)
	}

	setLogger()

	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	_, err := run(ctx, c, newReport(os.Stdout))
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	progress("done")
}

// setLogger gives controller-runtime, which envtest and the harness's clients and
// caches log through, a logger: without one, the first message logged 30s or more
// into the run prints a stack trace in the middle of the figures. Errors only, and on
// stderr with the progress lines, so that stdout holds nothing but figures.
func setLogger() {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// bench is one run: the control plane, the emulator, the operator and the report.
type bench struct {
	config
	out *report
	cl  client.Client // the harness's client, unthrottled, its requests counted
	cfg *rest.Config  // cl's config
	// asOperator writes as the operator's user, unthrottled: the floor's writes go
	// through the same authorization and API Priority and Fairness as the operator's.
	asOperator client.Client
	api        *apiServerMetrics
	emu        *entraemu.Emulator
	op         *operator
	tmp        string
	bin        string
	args       []string

	operatorResources map[string]bool // what its ClusterRole (and with -app its Role) covers

	run     tenantSet     // the tenants of the first create, kept to the end
	ready   time.Duration // first create → all N Ready
	tenants []v1alpha1.DefenderTenant
	cpu     map[string]time.Duration // the operator's CPU time by phase
	cert    selfsigned.Certificate   // with -app: the app's current certificate
}

// run sets everything up, then measures phase by phase, reporting as it goes.
func run(ctx context.Context, c config, out *report) (_ *report, err error) {
	b := &bench{config: c, out: out, cpu: map[string]time.Duration{}}
	if b.tmp, err = os.MkdirTemp("", "defender-bench-"); err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			_ = os.RemoveAll(b.tmp)
		} else {
			progress("kept %s (operator logs) for inspection", b.tmp)
		}
	}()
	stop, err := b.setUp(ctx)
	defer stop()
	if err != nil {
		return nil, err
	}
	phases := []func(context.Context) error{b.create, b.idle, b.unrelated, b.spread, b.restart, b.floor}
	if b.App {
		phases = []func(context.Context) error{b.signing, b.create, b.idle, b.unrelated, b.spread}
		if !b.SkipRotation {
			phases = append(phases, b.rotation)
		}
		if b.ManagedRotation {
			phases = append(phases, b.managedRotation)
		}
		phases = append(phases, b.restart, b.floor)
	}
	for _, phase := range phases {
		if err := phase(ctx); err != nil {
			return nil, err
		}
	}
	out.add("loadavg_end", "%s", loadavg())
	return out, nil
}

// setUp builds the manager unless one was given, starts the control plane, the
// emulator and the operator, and returns what stops them.
func (b *bench) setUp(ctx context.Context) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return stop, err
	}
	if b.bin = b.Manager; b.bin == "" {
		if b.bin, err = buildManager(ctx, root, b.tmp); err != nil {
			return stop, err
		}
	}

	progress("starting kube-apiserver and etcd")
	if b.Assets == "" {
		if b.Assets, err = envtestAssets(root); err != nil {
			return stop, err
		}
	}
	// localcluster takes the binaries from the environment, as envtest does.
	if err := os.Setenv("KUBEBUILDER_ASSETS", b.Assets); err != nil {
		return stop, err
	}
	cluster, err := localcluster.Start(filepath.Join(root, "config", "crd", "bases"))
	if err != nil {
		return stop, err
	}
	stops = append(stops, func() { progress("stopping kube-apiserver and etcd"); _ = cluster.Stop() })

	// The harness's own requests are counted so that they can be told apart from the
	// operator's in the API server's metrics. QPS -1: no client-side rate limit.
	harness := &requestCounter{counts: map[string]float64{}}
	hcfg := rest.CopyConfig(cluster.Admin)
	hcfg.QPS, hcfg.Burst = -1, 0
	hcfg.Wrap(harness.wrap)
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	b.cfg = hcfg
	if b.cl, err = client.New(hcfg, client.Options{Scheme: scheme}); err != nil {
		return stop, err
	}
	if b.api, err = newAPIServerMetrics(hcfg, harness); err != nil {
		return stop, err
	}

	// The operator gets its own user, bound to its ClusterRole from config/rbac, and a
	// kubeconfig file, as in a real deployment.
	user, err := cluster.AddUser(operatorUser)
	if err != nil {
		return stop, err
	}
	if b.operatorResources, err = grantOperatorRole(ctx, b.cl, filepath.Join(root, "config", "rbac", "role.yaml")); err != nil {
		return stop, err
	}
	kubeconfigPath := filepath.Join(b.tmp, "kubeconfig")
	if err := localcluster.WriteKubeconfig(kubeconfigPath, user); err != nil {
		return stop, err
	}
	ocfg := rest.CopyConfig(user)
	ocfg.QPS, ocfg.Burst = -1, 0
	if b.asOperator, err = client.New(ocfg, client.Options{Scheme: b.cl.Scheme()}); err != nil {
		return stop, err
	}

	var emuURL string
	var stopEmu func()
	var graphURL string
	if b.emu, emuURL, graphURL, stopEmu, err = startEmulator(b.N, b.Latency); err != nil {
		return stop, err
	}
	stops = append(stops, stopEmu)

	if err := b.createNamespaces(ctx, root); err != nil {
		return stop, err
	}
	// The first custom resource a fresh API server stores costs it seconds (building
	// the CRD's storage and CEL programs); pay that before anything is timed.
	warm := newTenant(unrelatedNS, 0)
	warm.Name = "warm-up"
	if err := b.cl.Create(ctx, warm); err != nil {
		return stop, err
	}
	if err := b.cl.Delete(ctx, warm); err != nil {
		return stop, err
	}

	b.args = []string{"--kubeconfig=" + kubeconfigPath, "--authority-host=" + emuURL}
	if b.App {
		b.args = append(b.args, "--cluster-resource-namespace="+clusterResourceNS, "--graph-host="+graphURL)
	}
	b.args = append(b.args, b.OperatorArgs...)
	if b.op, err = startOperator(ctx, b.bin, b.args, b.OperatorEnv, filepath.Join(b.tmp, "operator-1.log")); err != nil {
		return stop, err
	}
	stops = append(stops, func() { _ = b.op.stop() })
	if b.App {
		if err := b.waitAppReady(ctx); err != nil {
			return stop, err
		}
	}

	b.out.add("n", "%d", b.N)
	b.out.add("mode", "%s", map[bool]string{false: "inline", true: "app"}[b.App])
	if b.App {
		b.out.add("namespaces", "%d", b.Namespaces)
	}
	b.out.add("token_latency", "%s", b.Latency)
	b.out.add("operator_args", "%s", strings.Join(b.OperatorArgs, " "))
	b.out.add("operator_env", "%s", strings.Join(b.OperatorEnv, " "))
	// The machine may be shared: the load average tells whether others were busy.
	b.out.add("loadavg_start", "%s", loadavg())
	return stop, nil
}

// createNamespaces creates the namespaces of every tenant set and what their tenants
// use: the shared credential Secret of the inline mode, or the app (-app).
func (b *bench) createNamespaces(ctx context.Context, root string) error {
	b.run = b.set(benchNS)
	sets := []tenantSet{b.run, b.set(floorNS + "-admin")}
	for i := 1; i <= floorPairs; i++ {
		sets = append(sets, b.set(fmt.Sprintf("%s-%d", floorNS, i)), b.set(fmt.Sprintf("%s-%d", pairNS, i)))
	}
	namespaces := []string{unrelatedNS}
	for _, s := range sets {
		namespaces = append(namespaces, s.namespaces...)
	}
	if err := parallel(ctx, b.Workers, len(namespaces), func(ctx context.Context, i int) error {
		// The label is what the ClusterDefenderApp's grant selects (-app).
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespaces[i], Labels: map[string]string{customerLabel: "true"}}}
		return b.cl.Create(ctx, ns)
	}); err != nil {
		return err
	}
	if b.App {
		if err := b.setUpApp(ctx, root); err != nil {
			return err
		}
	}
	// Inline, the credential is where the operator's tenants are: the run's and the pairs'.
	for _, ns := range namespaces {
		if b.App || (ns != benchNS && !strings.HasPrefix(ns, pairNS+"-")) {
			continue
		}
		cred := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: credential, Namespace: ns},
			StringData: map[string]string{"client-secret": clientSecret},
		}
		if err := b.cl.Create(ctx, cred); err != nil {
			return err
		}
	}
	return nil
}

// window runs fn and reports what happened meanwhile: the API requests of everyone
// but the harness, by verb and resource; the token requests; the operator's CPU time.
func (b *bench) window(ctx context.Context, phase string, fn func() error) error {
	before, err := b.api.snapshot(ctx)
	if err != nil {
		return err
	}
	op, tokens := b.op, b.emu.TotalRequests()
	cpu, err := op.cpu()
	if err != nil {
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	after, err := b.api.snapshot(ctx)
	if err != nil {
		return err
	}
	if b.op != op { // restarted: the new process's CPU time counts from zero
		cpu = 0
	}
	cpuAfter, err := b.op.cpu()
	if err != nil {
		return err
	}
	b.cpu[phase] = cpuAfter - cpu
	b.out.add(phase+"_token_requests", "%d", b.emu.TotalRequests()-tokens)
	b.out.add(phase+"_cpu_seconds", "%.2f", (cpuAfter - cpu).Seconds())
	b.requests(phase, after.minus(before))
	b.queueWaits(phase, after.queuedSince(before))
	return nil
}

// queueWaits reports how long requests waited for API Priority and Fairness, per
// priority level: the operator's user is not exempt, as the harness's admin is.
func (b *bench) queueWaits(phase string, means map[string]float64) {
	levels := make([]string, 0, len(means))
	for l := range means {
		levels = append(levels, l)
	}
	sort.Strings(levels)
	for _, l := range levels {
		b.out.add(phase+"_apf_wait_mean_ms "+l, "%.2f", means[l]*1000)
	}
}

// requests reports API requests by verb and resource, then the number of writes.
// Requests on resources that the operator's ClusterRole does not cover are
// kube-apiserver's own (its lease, the "kubernetes" Service and its endpoints) and
// are reported apart. Watches are left out: the API server counts one when it ends,
// so they say when a watch timed out rather than what anyone did.
func (b *bench) requests(phase string, counts map[string]float64) {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	requests, writes, appStatusWrites := 0.0, 0.0, 0.0
	for _, k := range keys {
		verb, res, _ := strings.Cut(k, " ")
		switch {
		case verb == "WATCH" || res == nonResource:
		case !b.operatorResources[res]:
			b.out.add(phase+"_apiserver_own "+k, "%.0f", counts[k])
		default:
			b.out.add(phase+"_api "+k, "%.0f", counts[k])
			requests += counts[k]
			if isWrite(verb) {
				writes += counts[k]
				if res == "defenderapps/status" || res == "clusterdefenderapps/status" {
					appStatusWrites += counts[k]
				}
			}
		}
	}
	b.out.add(phase+"_api_requests", "%.0f", requests)
	b.out.add(phase+"_api_writes", "%.0f", writes)
	// Included in the writes above: the apps' status writes, the credential checks'
	// and status.tenants', which is written at most every 10 s per app.
	b.out.add(phase+"_app_status_writes", "%.0f", appStatusWrites)
}

// create creates N tenants with the harness's workers and waits until all are Ready,
// then until the operator is quiet (watches still queue reconciles of Ready tenants).
func (b *bench) create(ctx context.Context) error {
	progress("creating %d DefenderTenants", b.N)
	tokens := b.emu.TotalRequests()
	err := b.window(ctx, "run", func() error {
		start := time.Now()
		ready, createTime, err := b.createReady(ctx, b.run)
		if err != nil {
			return err
		}
		b.ready = ready
		quietAt, err := b.op.waitQuiet(ctx, 0)
		if err != nil {
			return err
		}
		b.out.add("create_seconds", "%.2f", createTime.Seconds())
		b.out.add("ready_seconds", "%.2f", b.ready.Seconds())
		b.out.add("quiet_seconds", "%.2f", quietAt.Sub(start).Seconds())
		if b.App {
			// The app's summary trails its tenants by up to 10 s, a wait no work
			// queue shows: the run ends when the app shows every tenant Ready and
			// the operator is quiet again, so that the idle minute holds none of
			// the create's writes.
			if err := b.waitAppSummary(ctx, start); err != nil {
				return err
			}
			if _, err := b.op.waitQuiet(ctx, 0); err != nil {
				return err
			}
		}
		return b.latencies(ctx)
	})
	if err != nil {
		return err
	}
	// Everything the operator did per token: reconcile, token request (with -app,
	// signing its assertion) and both writes.
	b.out.add("run_cpu_ms_per_token", "%.2f", perToken(b.cpu["run"], b.emu.TotalRequests()-tokens))
	return nil
}

func perToken(cpu time.Duration, tokens int) float64 {
	if tokens == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Millisecond) / float64(tokens)
}

// createReady creates the N tenants of set with the harness's workers and returns how
// long it took until all were Ready, and how long the creates took.
func (b *bench) createReady(ctx context.Context, set tenantSet) (ready, creates time.Duration, err error) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	readiness, err := watchReady(watchCtx, b.cfg, b.cl.Scheme(), set, b.N)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	created := make(chan error, 1)
	go func() {
		err := parallel(ctx, b.Workers, b.N, func(ctx context.Context, i int) error {
			return b.cl.Create(ctx, set.tenant(i))
		})
		creates = time.Since(start)
		created <- err
	}()
	if err := readiness.wait(ctx); err != nil {
		return 0, 0, err
	}
	ready = time.Since(start)
	return ready, creates, <-created
}

// latencies reports where a reconcile's time went, from the operator's histograms:
// waiting in the work queue, the whole reconcile, and its token request.
func (b *bench) latencies(ctx context.Context) error {
	fams, err := b.op.metrics(ctx, "workqueue_queue_duration_seconds", "controller_runtime_reconcile_time_seconds", "defender_tenant_token_request_duration_seconds")
	if err != nil {
		return err
	}
	for _, h := range []struct{ metric, name string }{
		{"workqueue_queue_duration_seconds", "run_queue_wait_mean_ms"},
		{"controller_runtime_reconcile_time_seconds", "run_reconcile_mean_ms"},
		{"defender_tenant_token_request_duration_seconds", "run_token_request_mean_ms"},
	} {
		mean, _ := histogramMean(fams, h.metric)
		b.out.add(h.name, "%.1f", mean*1000)
	}
	return nil
}

func (b *bench) idle(ctx context.Context) error {
	progress("idle for %s", b.Idle)
	b.out.add("idle_seconds", "%.0f", b.Idle.Seconds())
	return b.window(ctx, "idle", func() error { return sleep(ctx, b.Idle) })
}

// unrelated reports the operator's memory, then creates the unrelated Secrets with
// the harness's workers and reports it again.
func (b *bench) unrelated(ctx context.Context) error {
	before, err := b.memory(ctx, "")
	if err != nil {
		return err
	}
	progress("creating %d unrelated 4 KiB Secrets", b.Unrelated)
	b.out.add("unrelated_secrets", "%d", b.Unrelated)
	if err := b.window(ctx, "unrelated", func() error {
		start := time.Now()
		if err := parallel(ctx, b.Workers, b.Unrelated, func(ctx context.Context, i int) error {
			return b.cl.Create(ctx, unrelatedSecret(i))
		}); err != nil {
			return err
		}
		b.out.add("unrelated_create_seconds", "%.2f", time.Since(start).Seconds())
		// Let the operator's informer take in the last events.
		return sleep(ctx, b.Settle)
	}); err != nil {
		return err
	}
	after, err := b.memory(ctx, "_after_unrelated")
	if err != nil {
		return err
	}
	b.out.add("rss_growth_unrelated_mib", "%.1f", mib(after.rss-before.rss))
	return nil
}

func (b *bench) memory(ctx context.Context, suffix string) (memoryUse, error) {
	m, err := b.op.memory(ctx)
	if err != nil {
		return m, err
	}
	b.out.add("rss"+suffix+"_mib", "%.1f", mib(m.rss))
	b.out.add("rss_anon"+suffix+"_mib", "%.1f", mib(m.anon))
	b.out.add("heap_inuse"+suffix+"_mib", "%.1f", mib(m.heap))
	return m, nil
}

// spread reports the largest number of tenants due for refresh in the same second.
func (b *bench) spread(ctx context.Context) error {
	var list v1alpha1.DefenderTenantList
	if err := b.cl.List(ctx, &list, b.run.selector()); err != nil {
		return err
	}
	b.tenants = list.Items
	perSecond := map[int64]int{}
	worst := 0
	for _, dt := range list.Items {
		if nrt := dt.Status.NextRefreshTime; nrt != nil {
			perSecond[nrt.Unix()]++
			worst = max(worst, perSecond[nrt.Unix()])
		}
	}
	b.out.add("refresh_spread_max_per_second", "%d", worst)
	b.out.add("refresh_spread_percent_of_n", "%.1f", 100*float64(worst)/float64(b.N))
	b.out.add("refresh_spread_distinct_seconds", "%d", len(perSecond))
	return nil
}

// restart stops the operator and starts it again with every token fresh, and waits
// for its caches to sync and a full pass of N reconciles to end.
func (b *bench) restart(ctx context.Context) error {
	progress("restarting the operator")
	if err := b.window(ctx, "restart", func() error {
		if err := b.op.stop(); err != nil {
			return err
		}
		start := time.Now()
		op, err := startOperator(ctx, b.bin, b.args, b.OperatorEnv, filepath.Join(b.tmp, "operator-2.log"))
		if err != nil {
			return err
		}
		b.op = op
		quietAt, err := op.waitQuiet(ctx, b.N)
		if err != nil {
			return err
		}
		b.out.add("restart_seconds", "%.2f", quietAt.Sub(start).Seconds())
		return nil
	}); err != nil {
		return err
	}
	if _, err := b.memory(ctx, "_after_restart"); err != nil {
		return err
	}
	return b.op.stop()
}

// floor measures the floor: with the operator stopped, the same tenant creates and
// the writes the operator cannot avoid, by a plain client with the operator's
// identity. The speed of a shared machine drifts by a factor of two within minutes,
// so each floor run is paired with an operator run a few seconds later: the
// operator starts, creates N fresh tenants and is stopped again. The ratio compares
// the medians of the pairs.
func (b *bench) floor(ctx context.Context) error {
	progress("measuring the floor, paired with operator runs")
	sample := b.tenants[0]
	secret := &corev1.Secret{}
	if err := b.cl.Get(ctx, client.ObjectKey{Namespace: sample.Namespace, Name: sample.TokenSecretNameOrDefault()}, secret); err != nil {
		return err
	}
	var floors, readies []float64
	for i := 1; i <= floorPairs; i++ {
		set := b.set(fmt.Sprintf("%s-%d", floorNS, i))
		d, err := floorOnce(ctx, b.cl, b.asOperator, set, b.N, b.Workers, secret, sample.Status)
		if err != nil {
			return err
		}
		floors = append(floors, d.Seconds())
		// The floor's tenants hold a token of another tenant: an operator would replace them.
		if err := b.clear(ctx, set); err != nil {
			return err
		}
		ready, err := b.operatorRun(ctx, b.set(fmt.Sprintf("%s-%d", pairNS, i)), i)
		if err != nil {
			return err
		}
		readies = append(readies, ready.Seconds())
	}
	b.out.add("floor_runs_seconds", "%s", seconds(floors))
	b.out.add("paired_ready_seconds", "%s", seconds(readies))
	b.out.add("floor_seconds", "%.2f", median(floors))
	b.out.add("paired_ready_median_seconds", "%.2f", median(readies))
	b.out.add("ratio_to_floor", "%.2f", median(readies)/median(floors))
	b.out.add("ratio_first_run_to_floor", "%.2f", b.ready.Seconds()/median(floors))

	// For reference only: the same writes as the cluster admin, whom kube-apiserver
	// neither authorizes against RBAC nor queues (system:masters). No operator can
	// run with that identity, so it is not the floor.
	admin, err := floorOnce(ctx, b.cl, b.cl, b.set(floorNS+"-admin"), b.N, b.Workers, secret, sample.Status)
	if err != nil {
		return err
	}
	b.out.add("floor_as_admin_seconds", "%.2f", admin.Seconds())
	return nil
}

// operatorRun starts the operator, waits until it has passed over the tenants it
// already has, times the N fresh tenants of set until Ready, and stops it.
func (b *bench) operatorRun(ctx context.Context, set tenantSet, round int) (time.Duration, error) {
	op, err := startOperator(ctx, b.bin, b.args, b.OperatorEnv, filepath.Join(b.tmp, fmt.Sprintf("operator-pair-%d.log", round)))
	if err != nil {
		return 0, err
	}
	defer func() { _ = op.stop() }()
	if _, err := op.waitQuiet(ctx, b.N*round); err != nil {
		return 0, err
	}
	ready, _, err := b.createReady(ctx, set)
	if err != nil {
		return 0, err
	}
	return ready, op.stop()
}

// clear deletes the DefenderTenants and Secrets of a set's namespaces (envtest runs
// no namespace or garbage collector).
func (b *bench) clear(ctx context.Context, set tenantSet) error {
	return parallel(ctx, b.Workers, len(set.namespaces), func(ctx context.Context, i int) error {
		ns := client.InNamespace(set.namespaces[i])
		if err := b.cl.DeleteAllOf(ctx, &v1alpha1.DefenderTenant{}, ns); err != nil {
			return err
		}
		return b.cl.DeleteAllOf(ctx, &corev1.Secret{}, ns)
	})
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func seconds(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

// loadavg is the 1, 5 and 15 minute load averages.
func loadavg() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run bench inside the module")
	}
	return filepath.Dir(gomod), nil
}

// buildManager builds ./cmd of the module at root into dir as the Dockerfile does,
// and returns the binary's path. Its flags make a build cache key of their own: on a
// machine where nothing else was built that way, this compiles every dependency.
func buildManager(ctx context.Context, root, dir string) (string, error) {
	progress("building the manager from ./cmd, as the Dockerfile does")
	bin := filepath.Join(dir, "manager")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building the manager: %w", err)
	}
	return bin, nil
}

func envtestAssets(root string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(root, "hack", "envtest-binaries.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/envtest-binaries.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
