//go:build e2e

package e2e

// The Helm chart, installed as `helm install` installs it: the objects it renders
// (with Helm's own engine, test/helm) go into a sandbox's API server, and the
// manager runs as the chart's ServiceAccount with the chart Deployment's environment
// and arguments.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/test/helm"
)

// TestHelmChartDefaultInstallServesATenant installs the chart with its default
// values under a release name other than the chart's, so that every name the
// templates derive differs from config/default's, and checks that a DefenderTenant
// in a namespace of its own becomes TokenReady with a valid token, with the
// ClusterRole, leader election Role and admission policy the chart installs, and
// that the operator is never denied anything.
//
// A second DefenderTenant uses a ClusterDefenderApp whose client secret is in the
// release namespace, which is not the operator's built-in default: it becomes
// Ready only if the POD_NAMESPACE the chart's Deployment sets makes that namespace
// the cluster resource namespace, where the chart binds the operator's Role.
func TestHelmChartDefaultInstallServesATenant(t *testing.T) {
	t.Parallel()
	release := helm.Release{Name: "dto", Namespace: "dto-system"}
	s := newChartSandbox(t, release, "")
	if s.operatorNamespace != release.Namespace {
		t.Fatalf("the chart's Deployment is in namespace %q, not the release's %q", s.operatorNamespace, release.Namespace)
	}
	const ns = "customer"
	s.createNamespace(t, ns)
	createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	createCredential(t, s.admin, release.Namespace, credentialSecret, sandboxClientSecret)
	ctx := context.Background()
	if err := s.admin.Create(ctx, &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: "partner"},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec: v1alpha1.AppSpec{ClientID: sandboxClientID, Credential: v1alpha1.AppCredential{
				ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: credentialSecret}},
			}},
			TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{ns}, TenantIDs: []string{tenantID(1)}}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	op := s.startOperator(t, "operator")

	s.addConsentedTenant(tenantID(0))
	s.createTenant(t, ns, "contoso", tenantID(0))
	s.addConsentedTenant(tenantID(1))
	if err := s.admin.Create(ctx, &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fabrikam"},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:      tenantID(1),
			AppRef:        &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"},
			RequiredRoles: grantedRoles,
		},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the DefenderTenant is Ready", func() error { return readyError(s.admin, ns, "contoso") }, op)
	checkChartTokenSecret(t, s, ns, "contoso", tenantID(0))
	waitFor(t, 30*time.Second, "the DefenderTenant of the ClusterDefenderApp is Ready", func() error { return readyError(s.admin, ns, "fabrikam") }, op)
	checkChartTokenSecret(t, s, ns, "fabrikam", tenantID(1))
	// The summary trails its tenants by up to 10 s.
	waitFor(t, 30*time.Second, "the ClusterDefenderApp counts its Ready tenant", func() error {
		app := &v1alpha1.ClusterDefenderApp{}
		if err := s.admin.Get(ctx, client.ObjectKey{Name: "partner"}, app); err != nil {
			return err
		}
		if got := app.Status.Tenants; got == nil || got.Total != 1 || got.Ready != 1 || got.Stalled != 0 {
			return fmt.Errorf("status.tenants = %+v, want 1 tenant, Ready", got)
		}
		return nil
	}, op)
	if !op.isLeader(t) {
		t.Error("the operator serves tenants but does not hold the Lease")
	}
	if denials := op.logLines("forbidden"); len(denials) > 0 {
		t.Errorf("the chart's install was denied something it tried:\n%s", strings.Join(denials, "\n"))
	}
}

// TestHelmChartNamespacedInstallServesOnlyItsNamespaces installs the chart with
// namespaced: true and two watchNamespaces, for which it installs the operator's
// Role in each: DefenderTenants in both become TokenReady, one in a third
// namespace gets no token request, and the operator is never denied anything.
func TestHelmChartNamespacedInstallServesOnlyItsNamespaces(t *testing.T) {
	t.Parallel()
	s := newChartSandbox(t, helm.Release{Name: "team", Namespace: "team-operator"}, `
namespaced: true
watchNamespaces: [team-a, team-b]`)
	if !slices.Contains(s.deploymentArgs, "--watch-namespaces=team-a,team-b") {
		t.Fatalf("the chart's Deployment does not restrict the manager to team-a and team-b: args %q", s.deploymentArgs)
	}
	const other = "other-team"
	s.createNamespace(t, other)
	for _, ns := range []string{"team-a", "team-b", other} {
		createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	}
	op := s.startOperator(t, "operator")

	// The one elsewhere first: an operator that watched every namespace would take
	// it in before the others.
	s.addConsentedTenant(tenantID(2))
	s.createTenant(t, other, "elsewhere", tenantID(2))
	for i, ns := range []string{"team-a", "team-b"} {
		s.addConsentedTenant(tenantID(i))
		s.createTenant(t, ns, "contoso", tenantID(i))
	}
	for i, ns := range []string{"team-a", "team-b"} {
		waitFor(t, 30*time.Second, "the DefenderTenant in "+ns+" is Ready", func() error { return readyError(s.admin, ns, "contoso") }, op)
		checkChartTokenSecret(t, s, ns, "contoso", tenantID(i))
	}
	// An operator that watched every namespace got the one elsewhere from the same
	// informer before the others, which it has served: once it is idle, it has
	// finished with it too.
	op.waitForIdle(t)
	expectNothingServedIn(t, s, op, other, tenantID(2))
}

// newChartSandbox renders the chart for release with values (a values file's
// text), adds the namespaces served and those its objects go into, as `helm
// install --create-namespace` and the user would create them, and hands the result to
// newSandbox as a kustomization of those objects alone, which kustomize passes
// through unchanged.
func newChartSandbox(t *testing.T, release helm.Release, values string) *sandbox {
	t.Helper()
	v, err := helm.ParseValues(values)
	if err != nil {
		t.Fatal(err)
	}
	r, err := helm.Render(helm.ChartDir(), release, v)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	// The namespaces served, whether or not the chart puts objects there.
	names, _, _ := unstructured.NestedStringSlice(v, "watchNamespaces")
	for _, u := range r.All() {
		names = append(names, u.GetNamespace())
	}
	var namespaces []*unstructured.Unstructured
	seen := map[string]bool{}
	for _, ns := range names {
		if ns != "" && !seen[ns] {
			seen[ns] = true
			n := &unstructured.Unstructured{}
			n.SetAPIVersion("v1")
			n.SetKind("Namespace")
			n.SetName(ns)
			namespaces = append(namespaces, n)
		}
	}
	manifest, err := helm.YAML(slices.Concat(namespaces, r.All()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "chart.yaml"), manifest, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources: [chart.yaml]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// newSandbox takes an overlay relative to config/.
	config, err := filepath.Abs(filepath.Join(repoRoot, "config"))
	if err != nil {
		t.Fatal(err)
	}
	overlay, err := filepath.Rel(config, dir)
	if err != nil {
		t.Fatal(err)
	}
	return newSandbox(t, overlay)
}

func checkChartTokenSecret(t *testing.T, s *sandbox, ns, name, tenant string) {
	t.Helper()
	secret, ok := tokenSecrets(t, s.admin, ns)[name+"-token"]
	if !ok {
		t.Fatalf("no token Secret %s/%s-token", ns, name)
	}
	if err := checkTokenSecret(secret, s.signingKeys(t), tenant); err != nil {
		t.Error(err)
	}
}
