package defendertenant

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// siemTemplate is the SIEM connector config of docs/workloads.md.
const siemTemplate = `{"tenantId": "{{ .TenantID }}", "resource": "{{ .Resource }}", "accessToken": "{{ .AccessToken }}", "expiresAt": "{{ .ExpiresAt }}"}`

func withSecretTemplate(data map[string]string) func(*v1alpha1.DefenderTenant) {
	return func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.SecretTemplate = &v1alpha1.SecretTemplate{
			Labels:      map[string]v1alpha1.LabelValue{"team": "soc"},
			Annotations: map[string]string{"reloader.stakater.com/match": "true"},
			Data:        dataTemplates(data),
		}
	}
}

func dataTemplates(data map[string]string) map[string]v1alpha1.DataTemplate {
	out := make(map[string]v1alpha1.DataTemplate, len(data))
	for k, v := range data {
		out[k] = v1alpha1.DataTemplate(v)
	}
	return out
}

// expectRendered fails unless the Secret's template keys hold what its token renders to.
func expectRendered(t *testing.T, h *harness) {
	t.Helper()
	s := h.tokenSecret("contoso-token")
	if s == nil {
		t.Fatal("token Secret missing")
	}
	token := string(s.Data["access_token"])
	if got, want := string(s.Data["authorization"]), "Bearer "+token; got != want {
		t.Errorf("authorization = %.40q…, want Bearer and the published token", got)
	}
	var config map[string]string
	if err := json.Unmarshal(s.Data["siem.json"], &config); err != nil {
		t.Fatalf("siem.json is not JSON: %v", err)
	}
	want := map[string]string{"tenantId": testTenantID, "resource": defenderAPI, "accessToken": token, "expiresAt": string(s.Data["expires_at"])}
	for k, v := range want {
		if config[k] != v {
			t.Errorf("siem.json %s = %.40q, want %.40q", k, config[k], v)
		}
	}
}

func TestSecretTemplateKeysFollowEachRefresh(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(withSecretTemplate(map[string]string{"authorization": "Bearer {{ .AccessToken }}", "siem.json": siemTemplate}))
	h.reconcile()

	s := h.tokenSecret("contoso-token")
	if keys := keysOf(s.Data); !slices.Equal(keys, []string{"access_token", "authorization", "expires_at", "siem.json", "tenant_id", "token_type"}) {
		t.Errorf("keys = %v", keys)
	}
	expectRendered(t, h)
	if s.Labels["team"] != "soc" || s.Labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue || s.Labels[v1alpha1.LabelTenant] != tenantName {
		t.Errorf("labels = %v: want the template's beside the operator's", s.Labels)
	}
	if s.Annotations["reloader.stakater.com/match"] != "true" || s.Annotations[v1alpha1.AnnotationInputsHash] == "" {
		t.Errorf("annotations = %v: want the template's beside the operator's", s.Annotations)
	}
	first := string(s.Data["authorization"])

	h.clock.Step(50 * time.Minute)
	h.reconcile()

	if n := h.entra.Requests(testTenantID); n != 2 {
		t.Fatalf("token requests = %d, want 2 (a refresh)", n)
	}
	expectRendered(t, h)
	if string(h.tokenSecret("contoso-token").Data["authorization"]) == first {
		t.Error("authorization did not follow the refreshed token")
	}
	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
}

func TestSecretTemplateChangeRepublishesWithoutATokenRequest(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(withSecretTemplate(map[string]string{"authorization": "Bearer {{ .AccessToken }}", "siem.json": siemTemplate}))
	h.reconcile()
	token := string(h.tokenSecret("contoso-token").Data["access_token"])

	h.updateTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.SecretTemplate.Data = map[string]v1alpha1.DataTemplate{"authorization": "{{ .TokenType }} {{ .AccessToken }}", "tenant.txt": "{{ .TenantID }}"}
		dt.Spec.SecretTemplate.Labels["tier"] = "gold"
	})
	h.reconcile()

	s := h.tokenSecret("contoso-token")
	if keys := keysOf(s.Data); !slices.Equal(keys, []string{"access_token", "authorization", "expires_at", "tenant.txt", "tenant_id", "token_type"}) {
		t.Errorf("keys = %v: want siem.json removed and tenant.txt added", keys)
	}
	if string(s.Data["access_token"]) != token || string(s.Data["authorization"]) != "Bearer "+token || string(s.Data["tenant.txt"]) != testTenantID {
		t.Error("template keys were not re-rendered from the same token")
	}
	if s.Labels["tier"] != "gold" {
		t.Errorf("labels = %v", s.Labels)
	}
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests = %d, want 1: a template change is no new token", n)
	}
	dt := h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
	if dt.Status.ObservedGeneration != dt.Generation {
		t.Errorf("observedGeneration = %d, want %d", dt.Status.ObservedGeneration, dt.Generation)
	}

	t.Run("steady state makes no writes", func(t *testing.T) {
		dtVersion, secretVersion := h.tenant().ResourceVersion, h.tokenSecret("contoso-token").ResourceVersion
		h.clock.Step(5 * time.Minute)
		h.reconcile()
		h.reconcile()
		if v := h.tenant().ResourceVersion; v != dtVersion {
			t.Errorf("DefenderTenant written (resourceVersion %s -> %s) though nothing changed", dtVersion, v)
		}
		if v := h.tokenSecret("contoso-token").ResourceVersion; v != secretVersion {
			t.Errorf("token Secret written (resourceVersion %s -> %s) though nothing changed", secretVersion, v)
		}
	})
}

func TestHandEditedSecretTemplateKeyIsRestored(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(withSecretTemplate(map[string]string{"authorization": "Bearer {{ .AccessToken }}", "siem.json": siemTemplate}))
	h.reconcile()
	s := h.tokenSecret("contoso-token")
	s.Data["authorization"] = []byte("Bearer stale")
	delete(s.Data, "siem.json")
	delete(s.Labels, "team")
	if err := k8s.Update(h.ctx, s); err != nil {
		t.Fatal(err)
	}

	h.reconcile()

	expectRendered(t, h)
	if got := h.tokenSecret("contoso-token").Labels["team"]; got != "soc" {
		t.Errorf("label team = %q, want restored", got)
	}
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
}

// kubectl explain shows the CRD's descriptions, so each new field needs one.
func TestSecretTemplateFieldsAreExplained(t *testing.T) {
	requireControlPlane(t)
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := k8s.Get(t.Context(), keyOf("", "defendertenants.defender.tenantcreds.io"), crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if len(versions) != 1 {
		t.Fatalf("versions = %d", len(versions))
	}
	version := versions[0].(map[string]any)
	spec, _, _ := unstructured.NestedMap(version, "schema", "openAPIV3Schema", "properties", "spec", "properties", "secretTemplate")
	if d, _ := spec["description"].(string); d == "" {
		t.Error("spec.secretTemplate has no description")
	}
	fields, _, _ := unstructured.NestedMap(spec, "properties")
	for _, f := range []string{"labels", "annotations", "data"} {
		field, _ := fields[f].(map[string]any)
		if d, _ := field["description"].(string); len(d) < 40 {
			t.Errorf("spec.secretTemplate.%s description = %q", f, d)
		}
	}
}

// kubectl get -o wide asks the API server for a Table and shows every column;
// the plain kubectl get shows those of priority 0.
func TestWideColumnsShowAppGrantedRolesAndNextRefresh(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	withApp := newTenant(h.ns, "fabrikam", func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.ClientID, dt.Spec.ClientSecretRef = "", v1alpha1.ClientSecretReference{}
		dt.Spec.AppRef = &v1alpha1.AppReference{Name: "partner"}
	})
	if err := k8s.Create(h.ctx, withApp); err != nil {
		t.Fatal(err)
	}

	httpClient, err := rest.HTTPClientFor(restConfig)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(h.ctx, http.MethodGet, strings.TrimSuffix(restConfig.Host, "/")+"/apis/defender.tenantcreds.io/v1alpha1/namespaces/"+h.ns+"/defendertenants", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("%v: %.300s", err, body)
	}

	var standard, wide []string
	column := map[string]int{}
	for i, c := range table.ColumnDefinitions {
		column[c.Name] = i
		if c.Priority == 0 {
			standard = append(standard, c.Name)
		} else {
			wide = append(wide, c.Name)
		}
	}
	if !slices.Equal(standard, []string{"Name", "Tenant", "Ready", "Reason", "Expires", "Age"}) {
		t.Errorf("kubectl get columns = %v", standard)
	}
	if !slices.Equal(wide, []string{"App", "Granted roles", "Next refresh"}) {
		t.Errorf("-o wide adds %v, want App, Granted roles, Next refresh", wide)
	}
	if len(table.Rows) != 2 {
		t.Fatalf("rows = %d, want 2", len(table.Rows))
	}
	published := h.tenant()
	for _, row := range table.Rows {
		name := row.Cells[column["Name"]]
		switch name {
		case tenantName:
			roles := fmt.Sprint(row.Cells[column["Granted roles"]])
			if !strings.Contains(roles, "AdvancedHunting.Read.All") || !strings.Contains(roles, "Incident.Read.All") {
				t.Errorf("Granted roles = %q", roles)
			}
			if got, want := row.Cells[column["Next refresh"]], published.Status.NextRefreshTime.UTC().Format(time.RFC3339); got != want {
				t.Errorf("Next refresh = %v, want %s", got, want)
			}
		case "fabrikam":
			if got := row.Cells[column["App"]]; got != "partner" {
				t.Errorf("App = %v, want partner", got)
			}
		default:
			t.Errorf("unexpected row %v", name)
		}
	}
}
