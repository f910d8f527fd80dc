package crd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// warnings collects the warnings the API server sends a client, as kubectl prints them.
type warnings struct {
	mu   sync.Mutex
	text []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text = append(w.text, text)
}

// take returns the warnings received since the last call.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	text := w.text
	w.text = nil
	return text
}

// installPolicies creates the admission policies and bindings of a config/admission
// file, as config/default does (without its name prefix), and removes them when
// the test ends.
func installPolicies(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "admission", file))
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			t.Fatalf("%s, document %d: %v", file, i, err)
		}
		if err := k8s.Create(t.Context(), obj); err != nil {
			t.Fatalf("%s, %s %s: %v", file, obj.GetKind(), obj.GetName(), err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
}

// TestAdmissionWarnsAboutRetiringResources: creating a DefenderTenant whose resource
// Microsoft retires prints a warning naming the date and the Graph resource to use
// (what kubectl apply shows); a tenant on Microsoft Graph gets none.
func TestAdmissionWarnsAboutRetiringResources(t *testing.T) {
	requireControlPlane(t)
	installPolicies(t, "retiring_resources_policy.yaml")
	ns := createNamespace(t)
	received := &warnings{}
	cfg := rest.CopyConfig(controlPlane.Config)
	cfg.WarningHandler, cfg.WarningHandlerWithContext = nil, received
	warned, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string, mutate func(*v1alpha1.DefenderTenant)) []string {
		t.Helper()
		if err := warned.Create(t.Context(), newTenant(ns, name, mutate)); err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
		return received.take()
	}
	const graphHosts = "https://graph.microsoft.com (https://graph.microsoft.us in GCC High, https://dod-graph.microsoft.us in DoD)"

	// The API server starts enforcing a new policy within a second or so: the first
	// warning is also the positive control for the Graph tenants below.
	attempt := 0
	var first []string
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		attempt++
		first = create(fmt.Sprintf("default-%d", attempt), func(*v1alpha1.DefenderTenant) {})
		return len(first) > 0, nil
	})
	if err != nil {
		t.Fatalf("no warning for a tenant on the default resource after %d tenants: %v", attempt, err)
	}
	expectWarning(t, first, "retiring-resources", "spec.resource is empty", "2027-02-01", "Set spec.resource to Microsoft Graph, https://graph.microsoft.com, ")

	for _, tc := range []struct {
		name   string
		mutate func(*v1alpha1.DefenderTenant)
		want   []string
	}{
		{"xdr", func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = "https://api.security.microsoft.com" },
			[]string{"spec.resource https://api.security.microsoft.com is a Defender API", "2027-02-01", "Microsoft Graph, https://graph.microsoft.com, "}},
		{"endpoint-case-and-slash", func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = "https://API.securitycenter.microsoft.com/" },
			[]string{"spec.resource https://api.securitycenter.microsoft.com is a Defender API", "2027-02-01"}},
		{"gcc-high", func(dt *v1alpha1.DefenderTenant) {
			dt.Spec.Cloud, dt.Spec.Resource = v1alpha1.CloudUSGovHigh, "https://api-gov.security.microsoft.us"
		}, []string{"2027-02-01", "Microsoft Graph, https://graph.microsoft.us, "}},
		{"dod-default", func(dt *v1alpha1.DefenderTenant) { dt.Spec.Cloud = v1alpha1.CloudDoD },
			[]string{"spec.resource is empty", "2027-02-01", "Microsoft Graph, https://dod-graph.microsoft.us, "}},
		// The policy cannot read the app, whose cloud picks the default: it names every Graph.
		{"app-default", func(dt *v1alpha1.DefenderTenant) {
			dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
			dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"}
		}, []string{"spec.resource is empty", "the app's cloud with appRef", "2027-02-01", graphHosts}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectWarning(t, create(tc.name, tc.mutate), append([]string{"retiring-resources"}, tc.want...)...)
		})
	}

	for _, tc := range []struct {
		name   string
		mutate func(*v1alpha1.DefenderTenant)
	}{
		{"graph", func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = "https://graph.microsoft.com" }},
		{"graph-gcc-high", func(dt *v1alpha1.DefenderTenant) {
			dt.Spec.Cloud, dt.Spec.Resource = v1alpha1.CloudUSGovHigh, "https://graph.microsoft.us/"
		}},
		{"graph-app", func(dt *v1alpha1.DefenderTenant) {
			dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
			dt.Spec.AppRef = &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"}
			dt.Spec.Resource = "https://dod-graph.microsoft.us"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := create(tc.name, tc.mutate); len(got) != 0 {
				t.Errorf("warnings for a tenant on Microsoft Graph: %q", got)
			}
		})
	}

	// An update that moves a tenant to Graph is quiet; one that moves it back warns.
	t.Run("update", func(t *testing.T) {
		dt := &v1alpha1.DefenderTenant{}
		if err := warned.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "xdr"}, dt); err != nil {
			t.Fatal(err)
		}
		dt.Spec.Resource = "https://graph.microsoft.com"
		if err := warned.Update(t.Context(), dt); err != nil {
			t.Fatal(err)
		}
		if got := received.take(); len(got) != 0 {
			t.Errorf("warnings for an update to Microsoft Graph: %q", got)
		}
		dt.Spec.Resource = ""
		if err := warned.Update(t.Context(), dt); err != nil {
			t.Fatal(err)
		}
		expectWarning(t, received.take(), "retiring-resources", "spec.resource is empty", "2027-02-01")
	})
}

func expectWarning(t *testing.T, got []string, inText ...string) {
	t.Helper()
	if len(got) != 1 {
		t.Errorf("warnings = %q, want one", got)
		return
	}
	var missing []string
	for _, s := range inText {
		if !strings.Contains(got[0], s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		t.Errorf("warning %q lacks %q", got[0], missing)
	}
}

// TestRetiringResourcesPolicyListsWhatTheOperatorRetires: the policy's list and
// the operator's (status.resourceRetiresAt) name the same resources, among them
// every resource of the default allow-list that retires.
func TestRetiringResourcesPolicyListsWhatTheOperatorRetires(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "admission", "retiring_resources_policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy := struct {
		Spec struct {
			Variables []struct{ Name, Expression string } `json:"variables"`
		} `json:"spec"`
	}{}
	if err := yaml.Unmarshal(bytes.Split(data, []byte("\n---\n"))[0], &policy); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, v := range policy.Spec.Variables {
		if v.Name == "retiring" {
			listed = regexp.MustCompile(`'([^']+)'`).FindAllString(v.Expression, -1)
		}
	}
	for i := range listed {
		listed[i] = strings.Trim(listed[i], "'")
	}
	if len(listed) == 0 {
		t.Fatal("the policy has no variable retiring listing resources")
	}
	for _, r := range listed {
		if _, retires := entra.RetiresAt(r); !retires {
			t.Errorf("the policy warns about %s, which the operator does not take as retiring", r)
		}
	}
	for _, r := range entra.DefaultAllowedResources {
		if _, retires := entra.RetiresAt(r); retires && !slices.Contains(listed, strings.ToLower(strings.TrimSuffix(r, "/"))) {
			t.Errorf("the policy does not warn about %s, which retires", r)
		}
	}
}
