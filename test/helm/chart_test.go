package helm

// The chart's tests: helm lint, values.schema.json, and that the chart installs
// what config/ installs. config/ stays the source: role.yaml and the CRDs are
// generated from the Go markers, and the e2e suite runs the operator from
// config/default. These tests make the chart fail the moment it drifts from it.

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/diff"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

// canonicalRelease is the release name under which the chart's objects get the
// names config/default gives them (its namePrefix is defender-tenant-operator-).
const canonicalRelease = "defender-tenant-operator"

// Namespaces of config/default and config/namespaced.
const (
	defaultNamespace    = "defender-tenant-operator-system"
	namespacedNamespace = "defender-tenants"
)

const kindDeployment = "Deployment"

var repoRoot = filepath.Join(ChartDir(), "..", "..")

// valueSets are the values the tests lint and render the chart with.
var valueSets = map[string]string{
	"default":    ``,
	"namespaced": `namespaced: true`,
	"namespacedTwoNamespaces": `
namespaced: true
watchNamespaces: [defender-tenants, team-b]`,
	// Every opt-in part of config/default's kustomization.
	"optIns": optInValues,
	"everyValue": `
image: {repository: registry.example.com/defender-tenant-operator, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", pullPolicy: Always}
imagePullSecrets: [{name: registry}]
fullnameOverride: dto
watchNamespaces: [partner, team-b]
clusterResourceNamespace: partner-apps
allowedResources: [https://api.security.microsoft.com, https://graph.microsoft.com]
secretTemplateAnnotationPrefixes: [reloader.stakater.com/, example.com/]
workloadIdentityAudiences: [api://AzureADTokenExchange, api://partner-federation]
authorityHost: https://login.proxy.example
graphHost: USGovHigh=https://graph.proxy.example
adminConsentRedirectURI: https://portal.azure.com
maxConcurrentReconciles: 30
logLevel: 2
logEncoder: console
replicas: 2
leaderElection: {enabled: true, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s}
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 512Mi}}
extraArgs: [--kube-api-qps=100]
extraEnv: [{name: HTTPS_PROXY, value: "http://proxy.example:3128"}]
podAnnotations: {example.com/team: security}
podLabels: {example.com/team: security}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: security, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}]}]}}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {control-plane: controller-manager}}}]
serviceAccount: {annotations: {example.com/owner: security}}
metrics: {port: 9443, certSecretName: metrics-server-cert, certManager: {enabled: true}}
serviceMonitor: {enabled: true, labels: {release: prometheus}, interval: 30s, scrapeTimeout: 10s}
prometheusRule: {enabled: true, labels: {release: prometheus}}
networkPolicy: {enabled: true}`,
}

// optInValues turn on what uncommenting every opt-in line of
// config/default/kustomization.yaml turns on.
const optInValues = `
metrics: {certSecretName: metrics-server-cert, certManager: {enabled: true}}
serviceMonitor: {enabled: true}
prometheusRule: {enabled: true}
networkPolicy: {enabled: true}`

func TestMain(m *testing.M) {
	// controller-runtime's client logs through it; these tests read no client logs.
	logf.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func values(t *testing.T, name string) map[string]any {
	t.Helper()
	text, ok := valueSets[name]
	if !ok {
		t.Fatalf("no value set %q", name)
	}
	v, err := ParseValues(text)
	if err != nil {
		t.Fatalf("values %s: %v", name, err)
	}
	return v
}

func render(t *testing.T, release Release, valueSet string) *Rendered {
	t.Helper()
	r, err := Render(ChartDir(), release, values(t, valueSet))
	if err != nil {
		t.Fatalf("rendering the chart with the %s values: %v", valueSet, err)
	}
	return r
}

// TestChartLints runs helm lint, with the schema, on every value set: any warning
// or error fails.
func TestChartLints(t *testing.T) {
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range valueSets {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Run(name, func(t *testing.T) {
			linter := lint.AllWithKubeVersionAndSchemaValidation(ChartDir(), values(t, name), "defender-tenant-operator-system", nil, false)
			for _, msg := range linter.Messages {
				if msg.Severity >= support.WarningSev {
					t.Error(msg)
				}
			}
		})
	}
}

// TestChartSchemaRejectsBadValues: values.schema.json, and the template checks
// that need more than one value, refuse what the operator would refuse at start
// or what would install something broken, before anything is installed.
func TestChartSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, values, want string
	}{
		{"misspelled value", `watchNamespace: [partner]`, "additional properties 'watchNamespace' not allowed"},
		{"namespace not a DNS label", `watchNamespaces: [Partner_A]`, "watchNamespaces/0"},
		{"replicas not a number", `replicas: two`, "/replicas"},
		{"unknown log level", `logLevel: verbose`, "/logLevel"},
		{"no reconciles", `maxConcurrentReconciles: 0`, "/maxConcurrentReconciles"},
		{"resource over plain http", `allowedResources: [http://api.security.microsoft.com]`, "/allowedResources/0"},
		{"annotation prefixes in one string", `secretTemplateAnnotationPrefixes: ["reloader.stakater.com/,example.com/"]`, "/secretTemplateAnnotationPrefixes/0"},
		{"two audiences in one", `workloadIdentityAudiences: ["api://AzureADTokenExchange,https://kubernetes.default.svc"]`, "/workloadIdentityAudiences/0"},
		{"digest not sha256", `image: {digest: latest}`, "/image/digest"},
		{"extra arg not a flag", `extraArgs: [watch-namespaces=partner]`, "/extraArgs/0"},
		{"lease duration without unit", `leaderElection: {leaseDuration: "15"}`, "/leaderElection/leaseDuration"},
		{"metrics port on the probe port", `metrics: {port: 8081}`, "/metrics/port"},
		{"ServiceMonitor without a certificate", `serviceMonitor: {enabled: true}`, "serviceMonitor.enabled needs metrics.certSecretName"},
		{"cert-manager without a Secret", `metrics: {certManager: {enabled: true}}`, "metrics.certManager.enabled needs metrics.certSecretName"},
		{"two replicas without leader election", "replicas: 2\nleaderElection: {enabled: false}", "replicas above 1 need leaderElection.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseValues(tc.values)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Render(ChartDir(), Release{Name: canonicalRelease, Namespace: defaultNamespace}, v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rendering with %q: %v, want an error containing %q", tc.values, err, tc.want)
			}
		})
	}
}

// chartCopies are the files of config/ that the chart ships as they are: generated
// by controller-gen (the CRDs, the manager's rules) or maintained in config/ (the
// alerts). make manifests refreshes them, as does UPDATE_CHART_COPIES=1 go test ./test/helm/ -run Copies.
var chartCopies = map[string]string{
	"config/rbac/role.yaml":         "files/manager-role.yaml",
	"config/prometheus/alerts.yaml": "files/alerts.yaml",
	"config/crd/bases/defender.tenantcreds.io_clusterdefenderapps.yaml": "crds/defender.tenantcreds.io_clusterdefenderapps.yaml",
	"config/crd/bases/defender.tenantcreds.io_defenderapps.yaml":        "crds/defender.tenantcreds.io_defenderapps.yaml",
	"config/crd/bases/defender.tenantcreds.io_defendertenants.yaml":     "crds/defender.tenantcreds.io_defendertenants.yaml",
}

// TestChartCopiesOfConfigFilesAreCurrent: the chart's CRDs, manager rules and
// alerts are byte for byte the files in config/, and the chart ships no CRD that
// config/crd/bases does not have.
func TestChartCopiesOfConfigFilesAreCurrent(t *testing.T) {
	update := os.Getenv("UPDATE_CHART_COPIES") == "1"
	for from, to := range chartCopies {
		want, err := os.ReadFile(filepath.Join(repoRoot, from))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(ChartDir(), to)
		if update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("charts/defender-tenant-operator/%s is not a copy of %s (err %v): run make manifests", to, from, err)
		}
	}
	bases, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := filepath.Glob(filepath.Join(ChartDir(), "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bases) != len(shipped) {
		t.Errorf("config/crd/bases has %d CRDs, the chart's crds/ %d: add the new one to chartCopies", len(bases), len(shipped))
	}
}

// TestChartInstallsWhatConfigInstalls renders the chart and config/ and compares
// every object: the chart must install the same ones, with the same content, up to
// what Helm adds (its labels) and what the values choose (the image, and manager
// flags that config/ leaves at the operator's defaults). The CRDs, the RBAC, the
// admission policy, the Deployment and the opt-in parts are all compared, so
// neither can change without the other.
func TestChartInstallsWhatConfigInstalls(t *testing.T) {
	for _, tc := range []struct {
		name, namespace, valueSet, overlay string
		enable                             []string
	}{
		{"default", defaultNamespace, "default", "default", nil},
		{"namespaced", namespacedNamespace, "namespaced", "namespaced", nil},
		{"optIns", defaultNamespace, "optIns", "default", []string{"prometheus", "network-policy", "metrics-cert", "certmanager"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart := render(t, Release{Name: canonicalRelease, Namespace: tc.namespace}, tc.valueSet)
			config := kustomizeConfig(t, tc.overlay, tc.enable...)
			compareObjects(t, chart.All(), config)
		})
	}
}

// TestNamespacedInstallsMintNoServiceAccountTokens: a namespaced install serves no
// ClusterDefenderApps, so neither the chart nor config/namespaced lets the
// operator create ServiceAccount tokens, while the cluster-wide installs do (in
// the cluster resource namespace only), which shows the check finds such a rule.
func TestNamespacedInstallsMintNoServiceAccountTokens(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objects func(t *testing.T) []*unstructured.Unstructured
		mayMint bool
	}{
		{"chart, namespaced", func(t *testing.T) []*unstructured.Unstructured {
			return render(t, Release{Name: canonicalRelease, Namespace: namespacedNamespace}, "namespaced").All()
		}, false},
		{"chart, namespaced with two namespaces", func(t *testing.T) []*unstructured.Unstructured {
			return render(t, Release{Name: "team", Namespace: "team-operator"}, "namespacedTwoNamespaces").All()
		}, false},
		{"config/namespaced", func(t *testing.T) []*unstructured.Unstructured { return kustomizeConfig(t, "namespaced") }, false},
		{"config/namespaced with every opt-in", func(t *testing.T) []*unstructured.Unstructured {
			return kustomizeConfig(t, "namespaced", "prometheus", "network-policy", "metrics-cert", "certmanager")
		}, false},
		{"chart, cluster-wide", func(t *testing.T) []*unstructured.Unstructured {
			return render(t, Release{Name: canonicalRelease, Namespace: defaultNamespace}, "default").All()
		}, true},
		{"config/default", func(t *testing.T) []*unstructured.Unstructured { return kustomizeConfig(t, "default") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := localcluster.ServiceAccountTokenRules(tc.objects(t))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case !tc.mayMint && len(rules) > 0:
				t.Errorf("a namespaced install may create ServiceAccount tokens:\n%s", strings.Join(rules, "\n"))
			case tc.mayMint && len(rules) != 1:
				t.Errorf("%d rules let the cluster-wide install create ServiceAccount tokens, want the cluster resource namespace's one: %q", len(rules), rules)
			}
		})
	}
}

// kustomizeConfig builds config/<overlay> from a copy of config/ in which the
// opt-in lines for enable are uncommented in config/default/kustomization.yaml, as
// docs/install.md tells a user to.
func kustomizeConfig(t *testing.T, overlay string, enable ...string) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "config")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(repoRoot, "config"))); err != nil {
		t.Fatal(err)
	}
	kustomization := filepath.Join(dir, "default", "kustomization.yaml")
	data, err := os.ReadFile(kustomization)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range enable {
		line := []byte("\n#- ../" + part + "\n")
		if !bytes.Contains(data, line) {
			t.Fatalf("config/default/kustomization.yaml has no line %q to uncomment", bytes.TrimSpace(line))
		}
		data = bytes.Replace(data, line, []byte("\n- ../"+part+"\n"), 1)
	}
	if err := os.WriteFile(kustomization, data, 0o644); err != nil {
		t.Fatal(err)
	}
	objects, _, err := localcluster.Kustomize(filesys.MakeFsOnDisk(), filepath.Join(dir, overlay))
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

// objectKey identifies an object in both renders. config/prometheus names its
// ServiceMonitor and PrometheusRule after the operator, and config/default's
// namePrefix doubles that; the chart has one of each.
func objectKey(u *unstructured.Unstructured) string {
	switch u.GetKind() {
	case "ServiceMonitor", "PrometheusRule":
		return u.GetKind()
	}
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

func compareObjects(t *testing.T, chart, config []*unstructured.Unstructured) {
	t.Helper()
	chartByKey := map[string]*unstructured.Unstructured{}
	for _, u := range chart {
		chartByKey[objectKey(u)] = u
	}
	seen := map[string]bool{}
	for _, want := range config {
		key := objectKey(want)
		if want.GetKind() == "Namespace" {
			// Helm creates the release namespace (--create-namespace), not the chart.
			continue
		}
		seen[key] = true
		got, ok := chartByKey[key]
		if !ok {
			t.Errorf("config/ installs %s, the chart does not", key)
			continue
		}
		got, want = got.DeepCopy(), want.DeepCopy()
		normalise(t, key, got, want)
		if !equality.Semantic.DeepEqual(got.Object, want.Object) {
			t.Errorf("%s differs between the chart and config/ (- chart, + config/):\n%s", key, diff.Diff(got.Object, want.Object))
		}
	}
	for _, u := range chart {
		if key := objectKey(u); !seen[key] {
			t.Errorf("the chart installs %s, config/ does not", key)
		}
	}
}

// normalise removes from both objects what may differ: the chart's labels must
// include config/'s, and the chart's manager flags must include config/'s, with
// the image chosen by the values.
func normalise(t *testing.T, key string, chart, config *unstructured.Unstructured) {
	t.Helper()
	// Helm installs crds/ as they are, without the part-of label config/default adds;
	// TestChartCopiesOfConfigFilesAreCurrent compares them byte for byte.
	crd := chart.GetKind() == "CustomResourceDefinition"
	for _, path := range [][]string{{"metadata", "labels"}, {"spec", "template", "metadata", "labels"}} {
		want, _, _ := unstructured.NestedStringMap(config.Object, path...)
		got, _, _ := unstructured.NestedStringMap(chart.Object, path...)
		for k, v := range want {
			if got[k] != v && !crd {
				t.Errorf("%s: label %s=%q at %s, the chart's is %q", key, k, v, strings.Join(path, "."), got[k])
			}
		}
		unstructured.RemoveNestedField(chart.Object, path...)
		unstructured.RemoveNestedField(config.Object, path...)
	}
	if objectKey(chart) == chart.GetKind() {
		// Matched by kind: see objectKey.
		unstructured.RemoveNestedField(chart.Object, "metadata", "name")
		unstructured.RemoveNestedField(config.Object, "metadata", "name")
	}
	if chart.GetKind() == "ValidatingAdmissionPolicy" {
		// kustomize re-folds the policy's multi-line (>-) CEL expressions with other
		// line breaks; CEL reads any run of white space alike.
		for _, u := range []*unstructured.Unstructured{chart, config} {
			normaliseExpressions(t, u)
		}
		return
	}
	if chart.GetKind() != kindDeployment {
		return
	}
	containers := func(u *unstructured.Unstructured) []any {
		c, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		if len(c) != 1 {
			t.Fatalf("%s has %d containers, want 1", key, len(c))
		}
		return c
	}
	gotContainers, wantContainers := containers(chart), containers(config)
	gotManager, wantManager := gotContainers[0].(map[string]any), wantContainers[0].(map[string]any)
	gotArgs, _, _ := unstructured.NestedStringSlice(gotManager, "args")
	wantArgs, _, _ := unstructured.NestedStringSlice(wantManager, "args")
	for _, a := range wantArgs {
		// The kubelet expands $(POD_NAMESPACE) from the env, which both set alike.
		a = strings.ReplaceAll(a, "$(POD_NAMESPACE)", config.GetNamespace())
		if !slices.Contains(gotArgs, a) {
			t.Errorf("%s: config/ runs the manager with %s, the chart with %q", key, a, gotArgs)
		}
	}
	for _, field := range []string{"args", "image", "imagePullPolicy"} {
		delete(gotManager, field)
		delete(wantManager, field)
	}
	for u, c := range map[*unstructured.Unstructured][]any{chart: gotContainers, config: wantContainers} {
		if err := unstructured.SetNestedSlice(u.Object, c, "spec", "template", "spec", "containers"); err != nil {
			t.Fatal(err)
		}
	}
}

func normaliseExpressions(t *testing.T, policy *unstructured.Unstructured) {
	t.Helper()
	for _, field := range []string{"validations", "matchConditions", "variables"} {
		items, _, _ := unstructured.NestedSlice(policy.Object, "spec", field)
		for _, item := range items {
			if m, ok := item.(map[string]any); ok {
				if e, ok := m["expression"].(string); ok {
					m["expression"] = strings.Join(strings.Fields(e), " ")
				}
			}
		}
		if items != nil {
			if err := unstructured.SetNestedSlice(policy.Object, items, "spec", field); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestChartNotesTellHowToCreateTheFirstDefenderTenant: what `helm install` prints
// creates a DefenderTenant and its credential Secret in a namespace the release
// serves.
func TestChartNotesTellHowToCreateTheFirstDefenderTenant(t *testing.T) {
	for _, tc := range []struct {
		valueSet, namespace, tenantNamespace string
	}{
		{"default", defaultNamespace, "partner"},
		{"namespaced", namespacedNamespace, namespacedNamespace},
		{"namespacedTwoNamespaces", "team-operator", namespacedNamespace},
	} {
		t.Run(tc.valueSet, func(t *testing.T) {
			notes := render(t, Release{Name: canonicalRelease, Namespace: tc.namespace}, tc.valueSet).Notes
			for _, want := range []string{
				"kubectl -n " + tc.tenantNamespace + " create secret generic partner-app --from-literal=client-secret=",
				// At the start of a line, so that the pasted here-document ends.
				"\nkubectl -n " + tc.tenantNamespace + " apply -f - <<'YAML'\n",
				"\nkind: DefenderTenant\n",
				"\n  clientSecretRef: {name: partner-app}\n",
				"\nYAML\n",
				"kubectl -n " + tc.tenantNamespace + " get dtn contoso",
				"TokenReady",
			} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
				}
			}
		})
	}
}
