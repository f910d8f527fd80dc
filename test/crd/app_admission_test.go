package crd

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
)

// admitApp creates an object of kind with spec through the real API server (CRD
// schema and CEL rules) and returns what the server stored, or its error. Cluster-scoped
// objects are deleted when the test ends, so that tests listing them see only their own.
func admitApp(t *testing.T, kind, ns string, spec map[string]any) (*unstructured.Unstructured, error) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       kind,
		"spec":       spec,
	}}
	obj.SetGenerateName("admission-")
	if kind != cdappKind {
		obj.SetNamespace(ns)
	}
	err := k8s.Create(t.Context(), obj)
	if err == nil && kind == cdappKind {
		t.Cleanup(func() { _ = k8s.Delete(t.Context(), obj) })
	}
	return obj, err
}

func expectRejected(t *testing.T, err error, inText string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("Create error = %v, want Invalid", err)
	}
	if !strings.Contains(err.Error(), inText) {
		t.Errorf("error %q does not mention %q", err, inText)
	}
}

func clientSecretCredential() map[string]any {
	return map[string]any{"clientSecret": map[string]any{"secretRef": map[string]any{"name": credentialName}}}
}

func certificateCredential() map[string]any {
	return map[string]any{"certificate": map[string]any{"secretRef": map[string]any{"name": "partner-app-cert"}}}
}

func workloadIdentityCredential() map[string]any {
	return map[string]any{"workloadIdentity": map[string]any{"serviceAccountName": "partner-app"}}
}

func appSpec(kind, ns string) map[string]any {
	spec := map[string]any{"clientID": testClientID, "credential": clientSecretCredential()}
	if kind == cdappKind {
		spec["tenantGrants"] = []any{map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{testTenantID}}}
	}
	return spec
}

func grant(g map[string]any) func(map[string]any) {
	return func(s map[string]any) { s["tenantGrants"] = []any{g} }
}

func redirect(uri string) func(map[string]any) {
	return func(s map[string]any) { s["adminConsentRedirectURI"] = uri }
}

const redirectRule = "adminConsentRedirectURI must be an absolute https URL"

func TestAdmissionRejectsMalformedApps(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	selector := map[string]any{"matchLabels": map[string]any{"defender.tenantcreds.io/customer": "contoso"}}
	tests := []struct {
		name   string
		kinds  []string
		mutate func(spec map[string]any)
		inText string
	}{
		{"clientID missing", bothKinds, func(s map[string]any) { delete(s, "clientID") }, "spec.clientID"},
		{"clientID not a GUID", bothKinds, func(s map[string]any) { s["clientID"] = "partner-app" }, "spec.clientID"},
		{"cloud unknown", bothKinds, func(s map[string]any) { s["cloud"] = "China" }, "spec.cloud"},
		{"credential missing", bothKinds, func(s map[string]any) { delete(s, "credential") }, "spec.credential"},
		{"credential empty", bothKinds, func(s map[string]any) { s["credential"] = map[string]any{} },
			"credential must set exactly one of clientSecret, certificate or workloadIdentity"},
		{"clientSecret and certificate", bothKinds, func(s map[string]any) {
			s["credential"] = map[string]any{"clientSecret": clientSecretCredential()["clientSecret"], "certificate": certificateCredential()["certificate"]}
		}, "credential must set exactly one of clientSecret, certificate or workloadIdentity"},
		{"all three credentials", []string{cdappKind}, func(s map[string]any) {
			s["credential"] = map[string]any{
				"clientSecret":     clientSecretCredential()["clientSecret"],
				"certificate":      certificateCredential()["certificate"],
				"workloadIdentity": workloadIdentityCredential()["workloadIdentity"],
			}
		}, "credential must set exactly one of clientSecret, certificate or workloadIdentity"},
		{"workloadIdentity on a DefenderApp", []string{dappKind}, func(s map[string]any) { s["credential"] = workloadIdentityCredential() },
			"credential.workloadIdentity is only allowed on a ClusterDefenderApp"},
		{"clientSecret without a Secret name", bothKinds, func(s map[string]any) {
			s["credential"] = map[string]any{"clientSecret": map[string]any{"secretRef": map[string]any{"key": "client-secret"}}}
		}, "spec.credential.clientSecret.secretRef.name"},
		{"clientSecret key with a slash", bothKinds, func(s map[string]any) {
			s["credential"] = map[string]any{"clientSecret": map[string]any{"secretRef": map[string]any{"name": credentialName, "key": "a/b"}}}
		}, "spec.credential.clientSecret.secretRef.key"},
		{"certificate Secret name not a Secret name", bothKinds, func(s map[string]any) {
			s["credential"] = map[string]any{"certificate": map[string]any{"secretRef": map[string]any{"name": "Partner_Cert"}}}
		}, "spec.credential.certificate.secretRef.name"},
		{"workloadIdentity without a ServiceAccount", []string{cdappKind}, func(s map[string]any) {
			s["credential"] = map[string]any{"workloadIdentity": map[string]any{"audience": "api://AzureADTokenExchange"}}
		}, "spec.credential.workloadIdentity.serviceAccountName"},
		{"redirect URI over http", bothKinds, redirect("http://partner.example.com/consented"), redirectRule},
		{"redirect URI not absolute", bothKinds, redirect("portal.azure.com"), redirectRule},
		{"redirect URI with user info", bothKinds, redirect("https://user@partner.example.com"), redirectRule},
		{"redirect URI with a fragment", bothKinds, redirect("https://partner.example.com/#fragment"), redirectRule},
		{"redirect URI over ftp", bothKinds, redirect("ftp://partner.example.com"), redirectRule},
		{"tenantGrants missing", []string{cdappKind}, func(s map[string]any) { delete(s, "tenantGrants") }, "spec.tenantGrants"},
		{"tenantGrants empty", []string{cdappKind}, func(s map[string]any) { s["tenantGrants"] = []any{} }, "spec.tenantGrants"},
		{"grant without namespaces or selector", []string{cdappKind},
			grant(map[string]any{"tenantIDs": []any{testTenantID}}), "a tenant grant must set namespaces, namespaceSelector, or both"},
		{"grant with an empty namespace list only", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{}, "tenantIDs": []any{testTenantID}}), "a tenant grant must set namespaces, namespaceSelector, or both"},
		{"grant without tenantIDs", []string{cdappKind},
			grant(map[string]any{"namespaceSelector": selector}), "spec.tenantGrants[0].tenantIDs"},
		{"grant with empty tenantIDs", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{}}), "spec.tenantGrants[0].tenantIDs"},
		{"grant tenantID not a GUID", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{testTenantID, "contoso.onmicrosoft.com"}}), "spec.tenantGrants[0].tenantIDs[1]"},
		{"grant tenantID a glob other than *", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{"6e3c1a8e-*"}}), "spec.tenantGrants[0].tenantIDs[0]"},
		{"grant namespace not a DNS label", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{"Customer_Contoso"}, "tenantIDs": []any{testTenantID}}), "spec.tenantGrants[0].namespaces[0]"},
		{"grant resource over plain http", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{testTenantID}, "resources": []any{"http://graph.microsoft.com"}}), "spec.tenantGrants[0].resources[0]"},
		{"grant resource not a URL", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{testTenantID}, "resources": []any{"graph"}}), "spec.tenantGrants[0].resources[0]"},
	}
	for _, tt := range tests {
		for _, kind := range tt.kinds {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				spec := appSpec(kind, ns)
				tt.mutate(spec)
				_, err := admitApp(t, kind, ns, spec)
				expectRejected(t, err, tt.inText)
			})
		}
	}
}

const (
	dappKind  = string(v1alpha1.AppKindDefenderApp)
	cdappKind = string(v1alpha1.AppKindClusterDefenderApp)
)

var bothKinds = []string{dappKind, cdappKind}

func TestAdmissionAcceptsAndDefaultsValidApps(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	selector := map[string]any{"matchExpressions": []any{map[string]any{"key": "defender.tenantcreds.io/customer", "operator": "Exists"}}}
	tests := []struct {
		name   string
		kinds  []string
		mutate func(spec map[string]any)
		want   map[string]string // dotted spec path: the stored value
	}{
		{"client secret, defaults", bothKinds, func(map[string]any) {},
			map[string]string{"cloud": "Public", "credential.clientSecret.secretRef.key": "client-secret"}},
		{"certificate in GCC High", bothKinds, func(s map[string]any) { s["credential"] = certificateCredential(); s["cloud"] = "USGovHigh" },
			map[string]string{"cloud": "USGovHigh", "credential.certificate.secretRef.name": "partner-app-cert"}},
		{"workload identity, default audience", []string{cdappKind}, func(s map[string]any) { s["credential"] = workloadIdentityCredential() },
			map[string]string{"credential.workloadIdentity.audience": "api://AzureADTokenExchange"}},
		{"workload identity, own audience", []string{cdappKind}, func(s map[string]any) {
			s["credential"] = map[string]any{"workloadIdentity": map[string]any{"serviceAccountName": "partner-app", "audience": "api://partner"}}
		}, map[string]string{"credential.workloadIdentity.audience": "api://partner"}},
		{"redirect URI https", bothKinds, redirect("https://portal.azure.com"), map[string]string{"adminConsentRedirectURI": "https://portal.azure.com"}},
		{"redirect URI with a path and query", bothKinds, redirect("https://partner.example.com/consented?from=operator"), nil},
		{"redirect URI http on localhost", bothKinds, redirect("http://localhost:8400/consented"), nil},
		{"redirect URI http on 127.0.0.1", bothKinds, redirect("http://127.0.0.1:8400/consented"), nil},
		{"redirect URI http on ::1", bothKinds, redirect("http://[::1]:8400/consented"), nil},
		{"grant by selector only, any tenant", []string{cdappKind},
			grant(map[string]any{"namespaceSelector": selector, "tenantIDs": []any{"*"}}), nil},
		{"grant by names and selector, two tenants", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns, "customer-fabrikam"}, "namespaceSelector": selector, "tenantIDs": []any{testTenantID, "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"}}), nil},
		{"grant matching every namespace with an empty selector", []string{cdappKind},
			grant(map[string]any{"namespaceSelector": map[string]any{}, "tenantIDs": []any{testTenantID}}), nil},
		{"grant limited to Microsoft Graph", []string{cdappKind},
			grant(map[string]any{"namespaces": []any{ns}, "tenantIDs": []any{testTenantID}, "resources": []any{"https://graph.microsoft.com", "https://dod-graph.microsoft.us/"}}), nil},
	}
	for _, tt := range tests {
		for _, kind := range tt.kinds {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				spec := appSpec(kind, ns)
				tt.mutate(spec)
				stored, err := admitApp(t, kind, ns, spec)
				if err != nil {
					t.Fatal(err)
				}
				for path, want := range tt.want {
					got, _, _ := unstructured.NestedString(stored.Object, append([]string{"spec"}, strings.Split(path, ".")...)...)
					if got != want {
						t.Errorf("spec.%s = %q, want %q", path, got, want)
					}
				}
			})
		}
	}
}

func TestAdmissionOfTenantAppRefAndInlineForms(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	appRef := map[string]any{"name": "partner"}
	inline := func(s map[string]any) {
		s["clientID"] = testClientID
		s["clientSecretRef"] = map[string]any{"name": credentialName}
	}
	rejected := []struct {
		name   string
		mutate func(spec map[string]any)
		inText string
	}{
		{"appRef and the inline pair", inline, "set either appRef or the inline clientID and clientSecretRef, not both"},
		{"appRef and clientID", func(s map[string]any) { s["clientID"] = testClientID }, "not both"},
		{"appRef and clientSecretRef", func(s map[string]any) { s["clientSecretRef"] = map[string]any{"name": credentialName} }, "not both"},
		{"neither appRef nor the inline pair", func(s map[string]any) { delete(s, "appRef") }, "the tenant needs an app: set appRef, or the inline clientID and clientSecretRef"},
		{"clientID without clientSecretRef", func(s map[string]any) { delete(s, "appRef"); s["clientID"] = testClientID },
			"clientSecretRef is required with clientID (the inline form)"},
		{"clientSecretRef without clientID", func(s map[string]any) {
			delete(s, "appRef")
			s["clientSecretRef"] = map[string]any{"name": credentialName}
		},
			"clientID is required with clientSecretRef (the inline form)"},
		{"cloud with appRef", func(s map[string]any) { s["cloud"] = "USGovHigh" }, "cloud is only for the inline form"},
		{"cloud Public with appRef", func(s map[string]any) { s["cloud"] = "Public" }, "spec.cloud"},
		{"appRef kind unknown", func(s map[string]any) { s["appRef"] = map[string]any{"kind": "ClusterSecretStore", "name": "partner"} }, "spec.appRef.kind"},
		{"appRef without a name", func(s map[string]any) { s["appRef"] = map[string]any{"kind": cdappKind} }, "spec.appRef.name"},
		{"appRef name not an object name", func(s map[string]any) { s["appRef"] = map[string]any{"name": "Partner App"} }, "spec.appRef.name"},
	}
	for _, tt := range rejected {
		t.Run("rejects/"+tt.name, func(t *testing.T) {
			t.Parallel()
			spec := map[string]any{"tenantID": testTenantID, "appRef": appRef}
			tt.mutate(spec)
			_, err := admitApp(t, manager.TenantKind, ns, spec)
			expectRejected(t, err, tt.inText)
		})
	}

	accepted := []struct {
		name string
		spec map[string]any
		want map[string]string // dotted spec path: the stored value ("" absent)
	}{
		{"appRef, kind defaulted", map[string]any{"appRef": appRef},
			map[string]string{"appRef.kind": dappKind, "appRef.name": "partner", "cloud": "", "clientID": ""}},
		{"appRef to a ClusterDefenderApp", map[string]any{"appRef": map[string]any{"kind": cdappKind, "name": "partner"}, "requiredRoles": []any{"Incident.Read.All"}},
			map[string]string{"appRef.kind": cdappKind}},
		{"inline pair with a cloud, as before", map[string]any{"clientID": testClientID, "clientSecretRef": map[string]any{"name": credentialName}, "cloud": "USGov"},
			map[string]string{"cloud": "USGov", "clientSecretRef.key": "client-secret"}},
		{"inline pair with every other field, as before", map[string]any{
			"clientID": testClientID, "clientSecretRef": map[string]any{"name": credentialName, "key": "secret"}, "cloud": "Public",
			"resource": "https://api.security.microsoft.com", "requiredRoles": []any{"Incident.Read.All"}, "tokenSecretName": "contoso-token",
			"refreshBefore": "20m", "suspend": true,
		}, map[string]string{"cloud": "Public", "clientSecretRef.key": "secret"}},
		// The CRD no longer defaults cloud (it could not, with appRef); the operator reads an absent cloud as Public.
		{"inline pair without a cloud", map[string]any{"clientID": testClientID, "clientSecretRef": map[string]any{"name": credentialName}},
			map[string]string{"cloud": ""}},
	}
	for _, tt := range accepted {
		t.Run("accepts/"+tt.name, func(t *testing.T) {
			t.Parallel()
			tt.spec["tenantID"] = testTenantID
			stored, err := admitApp(t, manager.TenantKind, ns, tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range tt.want {
				got, _, _ := unstructured.NestedString(stored.Object, append([]string{"spec"}, strings.Split(path, ".")...)...)
				if got != want {
					t.Errorf("spec.%s = %q, want %q", path, got, want)
				}
			}
		})
	}
}

// A typed client must be able to write the appRef form: an unset clientSecretRef is
// left out of the request rather than sent as an empty object that fails the rules.
func TestAdmissionAcceptsATypedAppRefTenant(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	dt := &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Name: tenantName, Namespace: ns},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID: testTenantID,
			AppRef:   &v1alpha1.AppReference{Kind: v1alpha1.AppKindClusterDefenderApp, Name: "partner"},
		},
	}
	if err := k8s.Create(t.Context(), dt); err != nil {
		t.Fatal(err)
	}
	if !dt.UsesApp() || dt.CloudOrDefault() != v1alpha1.CloudPublic || dt.Spec.ClientSecretRef != (v1alpha1.ClientSecretReference{}) {
		t.Errorf("stored spec = %+v", dt.Spec)
	}
}

// printerColumns reads the additionalPrinterColumns of the CRD file for plural.
func printerColumns(t *testing.T, plural string) (names, paths []string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", v1alpha1.GroupVersion.Group+"_"+plural+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := map[string]any{}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd, "spec", "versions")
	if len(versions) != 1 {
		t.Fatalf("%s: %d versions, want 1", plural, len(versions))
	}
	columns, _, _ := unstructured.NestedSlice(versions[0].(map[string]any), "additionalPrinterColumns")
	for _, c := range columns {
		c := c.(map[string]any)
		names = append(names, c["name"].(string))
		paths = append(paths, c["jsonPath"].(string))
	}
	return names, paths
}

func TestAdmissionPrinterColumnsOfAppsResolveOnASampleObject(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	apps := map[string]v1alpha1.App{
		"defenderapps": &v1alpha1.DefenderApp{
			ObjectMeta: metav1.ObjectMeta{Name: "partner", Namespace: ns},
			Spec: v1alpha1.DefenderAppSpec{AppSpec: v1alpha1.AppSpec{
				ClientID:   testClientID,
				Credential: v1alpha1.AppCredential{ClientSecret: &v1alpha1.ClientSecretCredential{SecretRef: v1alpha1.AppSecretKeyReference{Name: credentialName}}},
			}},
		},
		"clusterdefenderapps": &v1alpha1.ClusterDefenderApp{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "admission-columns-"},
			Spec: v1alpha1.ClusterDefenderAppSpec{
				AppSpec: v1alpha1.AppSpec{
					ClientID:   testClientID,
					Cloud:      v1alpha1.CloudUSGovHigh,
					Credential: v1alpha1.AppCredential{WorkloadIdentity: &v1alpha1.WorkloadIdentityCredential{ServiceAccountName: "partner-app"}},
				},
				TenantGrants: []v1alpha1.TenantGrant{{Namespaces: []string{ns}, TenantIDs: []string{"*"}}},
			},
		},
	}
	for plural, app := range apps {
		t.Run(plural, func(t *testing.T) {
			names, paths := printerColumns(t, plural)
			if want := []string{"Client", "Cloud", "Credential", "Ready", "Reason", "Tenants", "Ready Tenants", "Stalled", "Next Rotation", "Age"}; !slices.Equal(names, want) {
				t.Errorf("printer columns %v, want %v", names, want)
			}
			if err := k8s.Create(t.Context(), app); err != nil {
				t.Fatal(err)
			}
			if app.GetNamespace() == "" {
				t.Cleanup(func() { _ = k8s.Delete(t.Context(), app) })
			}
			status := app.AppStatus()
			status.Credential = app.AppSpec().Credential.Kind()
			status.Conditions = []metav1.Condition{{
				Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCredentialReady,
				Message: "The credential can be used.", LastTransitionTime: metav1.Now(),
			}}
			status.Tenants = &v1alpha1.TenantsSummary{Total: 130, Ready: 121, Stalled: 7}
			nextRotation := metav1.NewTime(time.Date(2027, 3, 1, 8, 0, 0, 0, time.UTC))
			status.Rotation = &v1alpha1.RotationStatus{Phase: v1alpha1.RotationIdle, NextRotationTime: &nextRotation}
			if err := k8s.Status().Update(t.Context(), app); err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			u.SetAPIVersion(v1alpha1.GroupVersion.String())
			u.SetKind(map[string]string{"defenderapps": dappKind, "clusterdefenderapps": cdappKind}[plural])
			if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(app), u); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"Client": testClientID, "Cloud": string(app.AppSpec().CloudOrDefault()), "Credential": string(status.Credential),
				"Ready": "True", "Reason": v1alpha1.ReasonCredentialReady,
				"Tenants": "130", "Ready Tenants": "121", "Stalled": "7", "Next Rotation": "2027-03-01T08:00:00Z",
			}
			for i, path := range paths {
				jp := jsonpath.New(names[i])
				if err := jp.Parse("{" + path + "}"); err != nil {
					t.Fatalf("column %s: %v", names[i], err)
				}
				var out bytes.Buffer
				if err := jp.Execute(&out, u.Object); err != nil {
					t.Fatalf("column %s (%s): %v", names[i], path, err)
				}
				got := out.String()
				if w, ok := want[names[i]]; ok && got != w || got == "" {
					t.Errorf("column %s (%s) = %q, want %q", names[i], path, got, w)
				}
			}
		})
	}
}

// The samples are what users copy; each must pass admission as written, and
// config/samples/kustomization.yaml must list every one of them.
func TestAdmissionAcceptsEverySample(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	dir := filepath.Join("..", "..", "config", "samples")
	kustomization := struct {
		Resources []string `json:"resources"`
	}{}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kustomization); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(kustomization.Resources, base) {
			t.Errorf("config/samples/kustomization.yaml does not list %s", base)
		}
	}
	kinds := map[string]bool{}
	for _, name := range kustomization.Resources {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
				t.Fatalf("%s, document %d: %v", name, i, err)
			}
			if obj.GetKind() != cdappKind {
				obj.SetNamespace(ns)
			}
			kinds[obj.GetKind()] = true
			if err := k8s.Create(t.Context(), obj, client.DryRunAll); err != nil {
				t.Errorf("%s, %s %s: %v", name, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
	for _, kind := range []string{manager.TenantKind, dappKind, cdappKind} {
		if !kinds[kind] {
			t.Errorf("config/samples has no %s", kind)
		}
	}
}

// TestAdmissionOfCertificateRotation: rotation's GUIDs are checked, and its
// durations are held to minimums that keep a typo from rotating all day long.
func TestAdmissionOfCertificateRotation(t *testing.T) {
	requireControlPlane(t)
	t.Parallel()
	ns := createNamespace(t)
	const objectID, twoDays = "7d3c5a9e-1b2c-4d3e-8f4a-5b6c7d8e9f01", "48h"
	rotation := func(kind string, mutate func(r map[string]any)) map[string]any {
		r := map[string]any{"applicationObjectID": objectID, "homeTenantID": testTenantID}
		mutate(r)
		spec := appSpec(kind, ns)
		spec["credential"] = map[string]any{"certificate": map[string]any{
			"secretRef": map[string]any{"name": "partner-app-cert"}, "rotation": r,
		}}
		return spec
	}
	for _, tc := range []struct {
		name   string
		mutate func(r map[string]any)
		inText string // empty: admitted
	}{
		{"defaults", func(map[string]any) {}, ""},
		{"everything at its minimum", func(r map[string]any) { r["validity"], r["renewBefore"], r["retireAfter"] = "24h", "12h", "1h" }, ""},
		{"renewBefore alone, under the default validity", func(r map[string]any) { r["renewBefore"] = "2148h" }, ""},
		{"object ID not a GUID", func(r map[string]any) { r["applicationObjectID"] = "partner-app" }, "applicationObjectID"},
		{"home tenant not a GUID", func(r map[string]any) { r["homeTenantID"] = "contoso.onmicrosoft.com" }, "homeTenantID"},
		{"no object ID", func(r map[string]any) { delete(r, "applicationObjectID") }, "applicationObjectID"},
		{"validity of a minute", func(r map[string]any) { r["validity"] = "1m" }, "validity must be between 24h and 87600h"},
		{"validity of 20 years", func(r map[string]any) { r["validity"] = "175200h" }, "validity must be between 24h and 87600h"},
		{"renewBefore of a minute", func(r map[string]any) { r["renewBefore"] = "1m" }, "renewBefore must be at least 1h"},
		{"renewBefore equal to validity", func(r map[string]any) { r["validity"], r["renewBefore"] = twoDays, twoDays }, "at least 12h shorter than validity"},
		{"renewBefore a minute short of validity", func(r map[string]any) { r["validity"], r["renewBefore"] = twoDays, "47h59m" }, "at least 12h shorter than validity"},
		{"renewBefore alone, over the default validity", func(r map[string]any) { r["renewBefore"] = "2150h" }, "at least 12h shorter than validity"},
		{"retireAfter of a minute", func(r map[string]any) { r["retireAfter"] = "1m" }, "retireAfter must be between 1h and 720h"},
		{"retireAfter of a year", func(r map[string]any) { r["retireAfter"] = "8760h" }, "retireAfter must be between 1h and 720h"},
	} {
		for _, kind := range []string{dappKind, cdappKind} {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				_, err := admitApp(t, kind, ns, rotation(kind, tc.mutate))
				if tc.inText == "" {
					if err != nil {
						t.Fatalf("rejected: %v", err)
					}
					return
				}
				expectRejected(t, err, tc.inText)
			})
		}
	}
}
