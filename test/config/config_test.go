// Package config checks the kustomize configurations under config/: that every
// variant a user can build renders, that the opt-in parts (NetworkPolicy, metrics
// certificate, TLS-verified ServiceMonitor) fit the manager they are meant for,
// and that a real kube-apiserver accepts their built-in objects (server-side dry
// run). cert-manager's and the Prometheus Operator's CRDs are not installed there,
// so their objects are only rendered and checked.
//
// Run it with KUBEBUILDER_ASSETS set, as `make test` does.
package config

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

const repoRoot = "../.."

// The opt-in parts, as config/default/kustomization.yaml lists them commented out.
const (
	networkPolicy = "network-policy"
	metricsCert   = "metrics-cert"
	certManager   = "certmanager"
	prometheus    = "prometheus"
)

// Kinds whose CRDs the test API server does not have.
var notServed = []string{"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}

// render builds config/<dir> with kustomize's library, as `kustomize build` does,
// from an in-memory copy of config/ in which config/default's opt-in lines for
// enable are uncommented, as a user would.
func render(t *testing.T, dir string, enable ...string) []*unstructured.Unstructured {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(filepath.Join(repoRoot, "config"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, path)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join("/", rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(enable) > 0 {
		const defaultKustomization = "/config/default/kustomization.yaml"
		data, err := mem.ReadFile(defaultKustomization)
		if err != nil {
			t.Fatal(err)
		}
		k := string(data)
		for _, part := range enable {
			k = uncomment(t, k, "#- ../"+part+"\n")
			if part != prometheus {
				k = strings.Replace(k, "#components:\n", "components:\n", 1)
			}
		}
		if err := mem.WriteFile(defaultKustomization, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}

	objects, out, err := localcluster.Kustomize(mem, filepath.Join("/config", dir))
	if err != nil {
		t.Fatalf("config/%s with %v: %v", dir, enable, err)
	}
	if bytes.Contains(out, []byte("insecureSkipVerify: true")) {
		t.Errorf("config/%s with %v renders insecureSkipVerify: true", dir, enable)
	}
	return objects
}

func uncomment(t *testing.T, kustomization, line string) string {
	t.Helper()
	if !strings.Contains(kustomization, line) {
		t.Fatalf("config/default/kustomization.yaml has no line %q to uncomment", strings.TrimSpace(line))
	}
	return strings.Replace(kustomization, line, line[1:], 1)
}

func find(objects []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var found []*unstructured.Unstructured
	for _, u := range objects {
		if u.GetKind() == kind {
			found = append(found, u)
		}
	}
	return found
}

func only(t *testing.T, objects []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := find(objects, kind)
	if len(found) != 1 {
		t.Fatalf("rendered %d %ss, want 1", len(found), kind)
	}
	return found[0]
}

func str(t *testing.T, u *unstructured.Unstructured, path ...string) string {
	t.Helper()
	s, ok, err := unstructured.NestedString(u.Object, path...)
	if err != nil || !ok {
		t.Fatalf("%s %s has no string at %v (%v)", u.GetKind(), u.GetName(), path, err)
	}
	return s
}

func slice(t *testing.T, u *unstructured.Unstructured, path ...string) []any {
	t.Helper()
	s, ok, err := unstructured.NestedSlice(u.Object, path...)
	if err != nil || !ok {
		t.Fatalf("%s %s has no list at %v (%v)", u.GetKind(), u.GetName(), path, err)
	}
	return s
}

// endpointTLS is the tlsConfig of a ServiceMonitor's only endpoint.
func endpointTLS(t *testing.T, monitor *unstructured.Unstructured) map[string]any {
	t.Helper()
	endpoints := slice(t, monitor, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("ServiceMonitor has %d endpoints, want 1", len(endpoints))
	}
	tlsConfig, _, _ := unstructured.NestedMap(endpoints[0].(map[string]any), "tlsConfig")
	return tlsConfig
}

// manager is the rendered Deployment's pod template labels and its manager
// container.
func manager(t *testing.T, objects []*unstructured.Unstructured) (map[string]string, map[string]any) {
	t.Helper()
	d := only(t, objects, "Deployment")
	podLabels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
	for _, c := range slice(t, d, "spec", "template", "spec", "containers") {
		if c := c.(map[string]any); c["name"] == "manager" {
			return podLabels, c
		}
	}
	t.Fatal("the Deployment has no manager container")
	return nil, nil
}

// Every variant builds; without opting in, none of the opt-in parts is rendered.
func TestEveryVariantRenders(t *testing.T) {
	for _, tc := range []struct {
		dir    string
		enable []string
	}{
		{dir: "default"},
		{dir: "namespaced"},
		{dir: prometheus},
		{dir: "default", enable: []string{networkPolicy}},
		{dir: "default", enable: []string{prometheus, metricsCert, certManager, networkPolicy}},
		{dir: "default", enable: []string{prometheus, metricsCert}}, // with a provided Secret
		{dir: "namespaced", enable: []string{prometheus, metricsCert, certManager, networkPolicy}},
	} {
		t.Run(fmt.Sprintf("%s+%v", tc.dir, tc.enable), func(t *testing.T) {
			objects := render(t, tc.dir, tc.enable...)
			if len(tc.enable) == 0 && tc.dir != prometheus {
				for _, kind := range append([]string{"NetworkPolicy"}, notServed...) {
					if n := len(find(objects, kind)); n != 0 {
						t.Errorf("config/%s renders %d %ss without opting in", tc.dir, n, kind)
					}
				}
				if _, c := manager(t, objects); c["volumeMounts"] != nil {
					t.Errorf("config/%s mounts volumes in the manager without opting in: %v", tc.dir, c["volumeMounts"])
				}
			}
		})
	}
}

// The standalone config/prometheus, applied on its own, verifies the cluster-wide
// install's metrics Service.
func TestStandaloneServiceMonitorVerifiesTheClusterWideService(t *testing.T) {
	svc := only(t, render(t, "default"), "Service")
	monitor := only(t, render(t, prometheus), "ServiceMonitor")
	want := svc.GetName() + "." + svc.GetNamespace() + ".svc"
	if got := endpointTLS(t, monitor)["serverName"]; got != want {
		t.Errorf("serverName %q, want %q", got, want)
	}
}

// With the metrics certificate, cert-manager and the ServiceMonitor enabled, the
// pieces agree: the certificate names the Service, the manager serves the Secret
// it fills, and the ServiceMonitor trusts that Secret's CA for the Service's name.
func TestMetricsCertificatePartsAgree(t *testing.T) {
	for _, dir := range []string{"default", "namespaced"} {
		t.Run(dir, func(t *testing.T) {
			objects := render(t, dir, prometheus, metricsCert, certManager)
			svc := only(t, objects, "Service")
			serverName := svc.GetName() + "." + svc.GetNamespace() + ".svc"

			cert := only(t, objects, "Certificate")
			if got, want := slice(t, cert, "spec", "dnsNames"), []any{serverName, serverName + ".cluster.local"}; !slices.Equal(got, want) {
				t.Errorf("Certificate dnsNames %v, want %v", got, want)
			}
			issuer := only(t, objects, "Issuer")
			if got := str(t, cert, "spec", "issuerRef", "name"); got != issuer.GetName() {
				t.Errorf("Certificate issuerRef %q, want the rendered Issuer %q", got, issuer.GetName())
			}
			secret := str(t, cert, "spec", "secretName")
			if cert.GetNamespace() != svc.GetNamespace() || issuer.GetNamespace() != svc.GetNamespace() {
				t.Errorf("Certificate in %q and Issuer in %q, want the operator's namespace %q", cert.GetNamespace(), issuer.GetNamespace(), svc.GetNamespace())
			}

			monitor := only(t, objects, "ServiceMonitor")
			tlsConfig := endpointTLS(t, monitor)
			if tlsConfig["insecureSkipVerify"] != false || tlsConfig["serverName"] != serverName {
				t.Errorf("ServiceMonitor tlsConfig %v, want serverName %q and insecureSkipVerify false", tlsConfig, serverName)
			}
			if got, _, _ := unstructured.NestedString(tlsConfig, "ca", "secret", "name"); got != secret {
				t.Errorf("ServiceMonitor trusts the CA in Secret %q, want %q", got, secret)
			}
			if monitor.GetNamespace() != svc.GetNamespace() {
				t.Errorf("ServiceMonitor in %q, want the Secret's namespace %q", monitor.GetNamespace(), svc.GetNamespace())
			}

			_, c := manager(t, objects)
			args, _, _ := unstructured.NestedStringSlice(c, "args")
			const certPath = "/tmp/k8s-metrics-server/metrics-certs"
			if !slices.Contains(args, "--metrics-cert-path="+certPath) {
				t.Errorf("manager args %v lack --metrics-cert-path=%s", args, certPath)
			}
			mounts, _, _ := unstructured.NestedSlice(c, "volumeMounts")
			volumes := slice(t, only(t, objects, "Deployment"), "spec", "template", "spec", "volumes")
			var mounted bool
			for _, m := range mounts {
				m := m.(map[string]any)
				for _, v := range volumes {
					v := v.(map[string]any)
					name, _, _ := unstructured.NestedString(v, "secret", "secretName")
					if v["name"] == m["name"] && m["mountPath"] == certPath && name == secret {
						mounted = true
					}
				}
			}
			if !mounted {
				t.Errorf("manager does not mount Secret %q at %s: mounts %v, volumes %v", secret, certPath, mounts, volumes)
			}
		})
	}
}

// The NetworkPolicy admits exactly the manager's metrics and probe ports, and lets
// it reach DNS, the API server and port 443.
func TestNetworkPolicyFitsTheManager(t *testing.T) {
	objects := render(t, "default", networkPolicy)
	np := only(t, objects, "NetworkPolicy")
	_, c := manager(t, objects)
	ports := c["ports"].([]any)
	containerPorts := make([]string, 0, len(ports))
	for _, p := range ports {
		p := p.(map[string]any)
		containerPorts = append(containerPorts, fmt.Sprintf("%v/%v", p["protocol"], p["containerPort"]))
	}
	if got := policyPorts(t, np, "ingress"); !sameSet(got, containerPorts) {
		t.Errorf("ingress ports %v, want the manager's %v", got, containerPorts)
	}
	if got, want := policyPorts(t, np, "egress"), []string{"UDP/53", "TCP/53", "TCP/443", "TCP/6443"}; !sameSet(got, want) {
		t.Errorf("egress ports %v, want %v", got, want)
	}
	if svc := only(t, objects, "Service"); np.GetNamespace() != svc.GetNamespace() {
		t.Errorf("NetworkPolicy in %q, want the operator's namespace %q", np.GetNamespace(), svc.GetNamespace())
	}
}

// policyPorts lists the ports of a NetworkPolicy's ingress or egress rules, which
// must not restrict peers.
func policyPorts(t *testing.T, np *unstructured.Unstructured, direction string) []string {
	t.Helper()
	var ports []string
	for _, r := range slice(t, np, "spec", direction) {
		r := r.(map[string]any)
		if r["from"] != nil || r["to"] != nil {
			t.Errorf("%s rule %v restricts peers", direction, r)
		}
		for _, p := range r["ports"].([]any) {
			p := p.(map[string]any)
			ports = append(ports, fmt.Sprintf("%v/%v", p["protocol"], p["port"]))
		}
	}
	return ports
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A real kube-apiserver accepts every built-in object of both installs with all
// opt-in parts enabled (server-side dry run), and the NetworkPolicy it would store
// selects the manager's pods.
func TestOptInPartsPassServerSideDryRun(t *testing.T) {
	cluster, err := localcluster.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Error(err)
		}
	})
	c, err := client.New(cluster.Admin, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	for _, dir := range []string{"default", "namespaced"} {
		t.Run(dir, func(t *testing.T) {
			objects := render(t, dir, prometheus, metricsCert, certManager, networkPolicy)
			// Namespaced objects can only be dry-run in a namespace that exists.
			for _, ns := range find(objects, "Namespace") {
				if err := c.Create(ctx, ns.DeepCopy()); err != nil {
					t.Fatalf("creating Namespace %s: %v", ns.GetName(), err)
				}
			}
			var checked int
			for _, u := range objects {
				if u.GetKind() == "Namespace" || slices.Contains(notServed, u.GetKind()) {
					continue
				}
				obj := u.DeepCopy()
				if err := c.Create(ctx, obj, client.DryRunAll); err != nil {
					t.Errorf("dry run of %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
					continue
				}
				checked++
				if u.GetKind() != "NetworkPolicy" {
					continue
				}
				sel, _, _ := unstructured.NestedMap(obj.Object, "spec", "podSelector")
				var ls metav1.LabelSelector
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sel, &ls); err != nil {
					t.Fatal(err)
				}
				selector, err := metav1.LabelSelectorAsSelector(&ls)
				if err != nil {
					t.Fatal(err)
				}
				podLabels, _ := manager(t, objects)
				if selector.Empty() || !selector.Matches(labels.Set(podLabels)) {
					t.Errorf("NetworkPolicy selector %q does not select the manager's pods %v", selector, podLabels)
				}
			}
			for _, kind := range []string{"NetworkPolicy", "Deployment", "Service"} {
				if len(find(objects, kind)) == 0 {
					t.Errorf("config/%s renders no %s to dry-run", dir, kind)
				}
			}
			t.Logf("config/%s: %d objects accepted by a server-side dry run", dir, checked)
		})
	}
}

// The namespaced install serves no ClusterDefenderApps, so it has no workload
// identities and must not let the operator create ServiceAccount tokens anywhere;
// the cluster-wide install may, in its cluster resource namespace only (which also
// shows that the check finds such a rule).
func TestNamespacedInstallMintsNoServiceAccountTokens(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		enable  []string
		mayMint bool
	}{
		{dir: "namespaced"},
		{dir: "namespaced", enable: []string{prometheus, metricsCert, certManager, networkPolicy}},
		{dir: "default", mayMint: true},
	} {
		t.Run(fmt.Sprintf("%s+%v", tc.dir, tc.enable), func(t *testing.T) {
			objects := render(t, tc.dir, tc.enable...)
			rules, err := localcluster.ServiceAccountTokenRules(objects)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case !tc.mayMint && len(rules) > 0:
				t.Errorf("config/%s lets the operator create ServiceAccount tokens:\n%s", tc.dir, strings.Join(rules, "\n"))
			case tc.mayMint && len(rules) != 1:
				t.Errorf("config/%s has %d rules that let the operator create ServiceAccount tokens, want the cluster resource namespace's one: %q", tc.dir, len(rules), rules)
			}
			if tc.mayMint {
				return
			}
			for _, u := range objects {
				if strings.Contains(u.GetName(), "cluster-resources") {
					t.Errorf("config/%s renders %s %s, the Role for workload identities it does not serve", tc.dir, u.GetKind(), u.GetName())
				}
			}
		})
	}
}
