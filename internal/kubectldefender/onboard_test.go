package kubectldefender

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/testenv"
)

// The customers of the onboarding tests, as the emulator knows them.
const (
	onboardClientID   = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	contosoTenantID   = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	fabrikamTenantID  = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"
	northwindTenantID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
	agencyTenantID    = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
)

// Namespaces of the onboarding tests: onboard-contoso is granted to partner by a
// label only, so that onboarding there works only if the label is read.
const (
	nsContoso = "onboard-contoso"
	nsFleet   = "onboard-fleet"
	nsOwn     = "onboard-own"
	nsGov     = "onboard-gov"
)

// onboardWorld is an API server with the partner's apps, and the emulator
// answering discovery as login.microsoftonline.com and login.microsoftonline.us.
type onboardWorld struct {
	controlPlane *testenv.ControlPlane
	admin        client.Client
	kubeconfig   string
	emu          *entraemu.Emulator
	publicURL    string
	govURL       string
}

func TestOnboard(t *testing.T) {
	w := newOnboardWorld(t)
	publicAuthority := []string{"--authority-host", w.publicURL}

	t.Run("Domain", func(t *testing.T) {
		got := w.run(t, append([]string{"onboard", "--domain", "Contoso.com", "--app", "ClusterDefenderApp/partner", "-n", nsContoso}, publicAuthority...)...)
		w.golden(t, "onboard-domain", got)
		if got.err != nil {
			t.FailNow()
		}
		if n := w.emu.DiscoveryRequests("contoso.com"); n != 1 {
			t.Errorf("discovery requests for contoso.com: %d, want 1", n)
		}
		w.expectNoTenants(t, nsContoso)
		w.expectAcceptedByAPIServer(t, got.stdout)
	})

	t.Run("GUID", func(t *testing.T) {
		got := w.run(t, append([]string{"onboard", "--tenant-id", strings.ToUpper(contosoTenantID), "--app", "DefenderApp/own", "-n", nsOwn,
			"--roles", "SecurityIncident.Read.All,SecurityAlert.Read.All"}, publicAuthority...)...)
		w.golden(t, "onboard-guid", got)
		if got.err != nil {
			t.FailNow()
		}
		w.expectNoTenants(t, nsOwn)
		w.expectAcceptedByAPIServer(t, got.stdout)
	})

	t.Run("UnknownDomain", func(t *testing.T) {
		got := w.run(t, append([]string{"onboard", "--domain", "unknown.example", "--app", "ClusterDefenderApp/partner", "-n", nsFleet}, publicAuthority...)...)
		w.golden(t, "onboard-unknown-domain", got)
		if got.err == nil {
			t.Fatal("onboarding an unknown domain succeeded")
		}
		if n := w.emu.DiscoveryRequests("unknown.example"); n != 1 {
			t.Errorf("discovery requests for unknown.example: %d, want 1", n)
		}
	})

	t.Run("TenantOfAnotherCloud", func(t *testing.T) {
		got := w.run(t, append([]string{"onboard", "--domain", "agency.gov", "--app", "ClusterDefenderApp/partner", "-n", nsFleet}, publicAuthority...)...)
		w.golden(t, "onboard-other-cloud", got)
		if got.err == nil {
			t.Fatal("onboarding a tenant of USGovHigh with an app of Public succeeded")
		}
		w.expectNoTenants(t, nsFleet)
	})

	t.Run("NotCoveredByGrants", func(t *testing.T) {
		// contoso's namespace is granted contoso's tenant only.
		got := w.run(t, append([]string{"onboard", "--domain", "northwind.com", "--app", "ClusterDefenderApp/partner", "-n", nsContoso, "--apply"}, publicAuthority...)...)
		w.golden(t, "onboard-not-covered", got)
		if got.err == nil {
			t.Fatal("onboarding a tenant no grant covers succeeded")
		}
		w.expectNoTenants(t, nsContoso)
	})

	t.Run("GrantLimitsResources", func(t *testing.T) {
		got := w.run(t, append([]string{"onboard", "--domain", "contoso.com", "--app", "ClusterDefenderApp/partner", "-n", nsContoso,
			"--resource", "https://api.security.microsoft.com", "--roles", "Incident.Read.All"}, publicAuthority...)...)
		w.golden(t, "onboard-resource-not-granted", got)
		if got.err == nil {
			t.Fatal("onboarding for a resource the grant does not list succeeded")
		}
	})

	t.Run("GovernmentCloudByCloudAuthority", func(t *testing.T) {
		got := w.run(t, "onboard", "--domain", "agency.gov", "--app", "ClusterDefenderApp/partner-gov", "-n", nsGov, "--authority-host", "USGovHigh="+w.govURL)
		w.golden(t, "onboard-gov", got)
		if got.err != nil {
			t.FailNow()
		}
		w.expectAcceptedByAPIServer(t, got.stdout)
	})

	t.Run("Apply", func(t *testing.T) {
		args := append([]string{"onboard", "--domain", "fabrikam.com", "--app", "ClusterDefenderApp/partner", "-n", nsFleet, "--apply"}, publicAuthority...)
		first := w.run(t, args...)
		w.golden(t, "onboard-apply", first)
		if first.err != nil {
			t.FailNow()
		}
		applied := w.fleetTenant(t, "fabrikam")
		want := v1alpha1.DefenderTenantSpec{
			TenantID:      fabrikamTenantID,
			AppRef:        &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"},
			Resource:      "https://graph.microsoft.com",
			RequiredRoles: []string{"SecurityIncident.Read.All", "SecurityAlert.Read.All", "ThreatHunting.Read.All"},
		}
		expectOnboardedSpec(t, applied, want)
		if !slices.ContainsFunc(applied.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
			return m.Manager == FieldManager && m.Operation == metav1.ManagedFieldsOperationApply
		}) {
			t.Errorf("no server-side apply by %s in managedFields: %+v", FieldManager, applied.ManagedFields)
		}

		second := w.run(t, args...)
		if second.err != nil || second.stdout != first.stdout {
			t.Errorf("second apply: %q, error %v; want %q", second.stdout, second.err, first.stdout)
		}
		again := w.fleetTenant(t, "fabrikam")
		if again.ResourceVersion != applied.ResourceVersion || again.Generation != 1 {
			t.Errorf("second apply changed the DefenderTenant: resourceVersion %s → %s, generation %d", applied.ResourceVersion, again.ResourceVersion, again.Generation)
		}

		// The name is fabrikam's: onboarding another customer under it must not
		// move the DefenderTenant to that customer.
		taken := w.run(t, append([]string{"onboard", "--tenant-id", contosoTenantID, "--name", "fabrikam", "--app", "ClusterDefenderApp/partner", "-n", nsFleet, "--apply"}, publicAuthority...)...)
		w.golden(t, "onboard-name-taken", taken)
		expectOnboardedSpec(t, w.fleetTenant(t, "fabrikam"), want)
	})

	t.Run("FromCSV", func(t *testing.T) {
		// Line 3's quoted roles cell holds commas and spans two lines, so the bad
		// row is on line 6 of the file although it is the fourth record.
		csvPath := writeOnboardCSV(t, `Domain,tenantId,name,namespace,roles,resource
contoso.com,,contoso-eu,onboard-contoso,,
,3F2B8C1D-5A4E-4B7F-8C2D-1E9A6B5C4D30,"fabrikam-inc","onboard-fleet","SecurityIncident.Read.All,
ThreatHunting.Read.All",
northwind.com,,,,SecurityAlert.Read.All;SecurityIncident.Read.All,
unknown.example,,,,,
`)
		got := w.run(t, append([]string{"onboard", "--from-csv", csvPath, "--app", "ClusterDefenderApp/partner", "-n", nsFleet}, publicAuthority...)...)
		w.golden(t, "onboard-csv", got, csvPath)
		if got.err == nil {
			t.Fatal("a CSV with a bad row succeeded")
		}
		w.expectNoTenants(t, nsContoso)
		if n := w.emu.DiscoveryRequests("northwind.com"); n == 0 {
			t.Error("the row after the first failure was not onboarded")
		}
		w.expectAcceptedByAPIServer(t, got.stdout)
	})

	t.Run("FromCSVApply", func(t *testing.T) {
		csvPath := writeOnboardCSV(t, "tenantId,name,roles\n"+
			northwindTenantID+",northwind,\"SecurityAlert.Read.All SecurityIncident.Read.All\"\n"+
			"not-a-guid,broken,\n"+
			northwindTenantID+",northwind,\n")
		got := w.run(t, append([]string{"onboard", "--from-csv", csvPath, "--app", "ClusterDefenderApp/partner", "-n", nsFleet, "--apply"}, publicAuthority...)...)
		w.golden(t, "onboard-csv-apply", got, csvPath)
		if got.err == nil {
			t.Fatal("a CSV with bad rows succeeded")
		}
		expectOnboardedSpec(t, w.fleetTenant(t, "northwind"), v1alpha1.DefenderTenantSpec{
			TenantID:      northwindTenantID,
			AppRef:        &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"},
			Resource:      "https://graph.microsoft.com",
			RequiredRoles: []string{"SecurityAlert.Read.All", "SecurityIncident.Read.All"},
		})
	})

	t.Run("CSVOverTheRowBound", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("domain\n")
		for i := range maxCSVRows + 1 {
			fmt.Fprintf(&b, "customer%d.example\n", i)
		}
		csvPath := writeOnboardCSV(t, b.String())
		got := w.run(t, append([]string{"onboard", "--from-csv", csvPath, "--app", "ClusterDefenderApp/partner", "-n", nsFleet}, publicAuthority...)...)
		w.golden(t, "onboard-csv-too-many-rows", got, csvPath)
		if n := w.emu.DiscoveryRequests("customer0.example"); n != 0 {
			t.Errorf("%d discovery requests for a file that is refused", n)
		}
	})
}

func newOnboardWorld(t *testing.T) *onboardWorld {
	t.Helper()
	// An API server of its own: the other tests list every namespace (-A), and
	// their goldens must not see the tenants onboarding applies.
	cp := &testenv.ControlPlane{Scheme: scheme}
	t.Cleanup(cp.Stop)
	cp.Require(t)
	w := &onboardWorld{controlPlane: cp, admin: cp.Client}

	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.emu = emu
	emu.AddApp(onboardClientID)
	emu.AddDomain(contosoTenantID, "contoso.com")
	emu.AddDomain(contosoTenantID, "contoso.onmicrosoft.com")
	emu.AddDomain(fabrikamTenantID, "fabrikam.com")
	emu.AddDomain(northwindTenantID, "northwind.com")
	emu.AddDomain(agencyTenantID, "agency.gov")
	emu.SetCloud(agencyTenantID, v1alpha1.CloudUSGovHigh)
	public := httptest.NewServer(emu)
	t.Cleanup(public.Close)
	gov := httptest.NewServer(emu.Cloud(v1alpha1.CloudUSGovHigh))
	t.Cleanup(gov.Close)
	w.publicURL, w.govURL = public.URL, gov.URL

	ctx := context.Background()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: nsContoso, Labels: map[string]string{"defender.tenantcreds.io/customer": "contoso"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsFleet}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsOwn}},
		{ObjectMeta: metav1.ObjectMeta{Name: nsGov}},
	} {
		if err := w.admin.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	secret := v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: "partner-app"}}}
	for _, obj := range []client.Object{
		&v1alpha1.ClusterDefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: "partner"},
			Spec: v1alpha1.ClusterDefenderAppSpec{
				AppSpec: v1alpha1.AppSpec{ClientID: onboardClientID, Cloud: v1alpha1.CloudPublic, Credential: secret, AdminConsentRedirectURI: "https://partner.example/consented"},
				TenantGrants: []v1alpha1.TenantGrant{
					{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"defender.tenantcreds.io/customer": "contoso"}},
						TenantIDs:         []string{contosoTenantID},
						Resources:         []string{"https://graph.microsoft.com"},
					},
					{Namespaces: []string{nsFleet}, TenantIDs: []string{"*"}},
				},
			},
		},
		&v1alpha1.ClusterDefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: "partner-gov"},
			Spec: v1alpha1.ClusterDefenderAppSpec{
				AppSpec:      v1alpha1.AppSpec{ClientID: onboardClientID, Cloud: v1alpha1.CloudUSGovHigh, Credential: secret},
				TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{nsGov}, TenantIDs: []string{"*"}}},
			},
		},
		&v1alpha1.DefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: "own", Namespace: nsOwn},
			Spec:       v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{ClientID: onboardClientID, Credential: secret}},
		},
	} {
		if err := w.admin.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	rc := cp.Config
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "envtest"
	w.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, w.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return w
}

// onboardRun is one run of kubectl defender.
type onboardRun struct {
	stdout, stderr string
	err            error
}

// run runs kubectl defender as the plugin's main does.
func (w *onboardWorld) run(t *testing.T, args ...string) onboardRun {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr})
	cmd.SetArgs(append([]string{"--kubeconfig", w.kubeconfig, "--cache-dir", t.TempDir()}, args...))
	err := cmd.ExecuteContext(t.Context())
	return onboardRun{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// transcript is what a terminal shows of a run, stdout and stderr apart, with the
// emulator's addresses, which change from run to run, named.
func (w *onboardWorld) transcript(r onboardRun, csvPath string) string {
	var b strings.Builder
	b.WriteString("==> stdout\n" + r.stdout)
	b.WriteString("==> stderr\n" + r.stderr)
	if r.err != nil {
		b.WriteString("error: " + r.err.Error() + "\n==> exit 1\n")
	} else {
		b.WriteString("==> exit 0\n")
	}
	replacements := []string{w.publicURL, "http://<emulator>", w.govURL, "http://<emulator-us>"}
	if csvPath != "" {
		replacements = append(replacements, csvPath, filepath.Base(csvPath))
	}
	return strings.NewReplacer(replacements...).Replace(b.String())
}

// golden compares the run's transcript with testdata/name.golden, or rewrites the
// file with -update. The temporary CSV file, if any, reads as its base name.
func (w *onboardWorld) golden(t *testing.T, name string, r onboardRun, csvPath ...string) {
	t.Helper()
	compareGolden(t, name, w.transcript(r, strings.Join(csvPath, "")))
}

// expectNoTenants: a dry run or a refused onboarding wrote nothing.
func (w *onboardWorld) expectNoTenants(t *testing.T, namespace string) {
	t.Helper()
	var list v1alpha1.DefenderTenantList
	if err := w.admin.List(context.Background(), &list, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range list.Items {
		t.Errorf("DefenderTenant %s/%s exists; nothing may be written without --apply or after a refusal", tenant.Namespace, tenant.Name)
	}
}

// expectAcceptedByAPIServer creates each printed document as a server-side dry
// run, as `kubectl apply -f -` would send it, so that the schema and CEL rules
// judge the output.
func (w *onboardWorld) expectAcceptedByAPIServer(t *testing.T, out string) {
	t.Helper()
	docs := strings.Split(out, "\n---\n")
	for _, doc := range docs {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, doc)
		}
		if keys := slices.Sorted(maps.Keys(u.Object)); !slices.Equal(keys, []string{"apiVersion", "kind", "metadata", "spec"}) {
			t.Errorf("document has fields %v, want apiVersion, kind, metadata, spec only", keys)
		}
		if err := w.admin.Create(context.Background(), &u, client.DryRunAll); err != nil {
			t.Errorf("the API server refuses the printed DefenderTenant: %v\n%s", err, doc)
		}
	}
	if len(docs) == 0 {
		t.Error("nothing printed")
	}
}

// fleetTenant reads a DefenderTenant of onboard-fleet, where the tests apply.
func (w *onboardWorld) fleetTenant(t *testing.T, name string) *v1alpha1.DefenderTenant {
	t.Helper()
	namespace := nsFleet
	var tenant v1alpha1.DefenderTenant
	if err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &tenant); err != nil {
		if apierrors.IsNotFound(err) {
			t.Fatalf("DefenderTenant %s/%s was not applied", namespace, name)
		}
		t.Fatal(err)
	}
	return &tenant
}

func expectOnboardedSpec(t *testing.T, tenant *v1alpha1.DefenderTenant, want v1alpha1.DefenderTenantSpec) {
	t.Helper()
	got := tenant.Spec
	if got.TenantID != want.TenantID || got.Resource != want.Resource || !slices.Equal(got.RequiredRoles, want.RequiredRoles) ||
		got.AppRef == nil || *got.AppRef != *want.AppRef || got.ClientID != "" || got.TokenSecretName != "" {
		t.Errorf("spec of %s/%s = %+v (appRef %+v), want %+v (appRef %+v)", tenant.Namespace, tenant.Name, got, got.AppRef, want, want.AppRef)
	}
}

func writeOnboardCSV(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "customers.csv")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
