package defendertenant

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// wideVerbs is the template of the security finding: each verb makes printf build
// a million bytes, before text/template could count them.
var wideVerbs = `{{ printf "` + strings.Repeat("%0999999d", 200) + `"` + strings.Repeat(" 1", 200) + ` }}`

// dataTemplateRulesPath is where, in a version of the DefenderTenant CRD, the rules
// on secretTemplate.data's values are.
var dataTemplateRulesPath = []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "secretTemplate", "properties", "data", "additionalProperties", "x-kubernetes-validations"}

// servedWithoutDataTemplateRules serves the DefenderTenant CRD without its rules on
// secretTemplate.data's values, as the release before them did, until the returned
// function (or the test's end) restores the CRD and sees the rules enforced again.
// Only a test that runs alone may use it: every DefenderTenant of the cluster is
// admitted without the rules meanwhile.
func servedWithoutDataTemplateRules(t *testing.T, ns string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	key := keyOf("", "defendertenants.defender.tenantcreds.io")
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := k8s.Get(ctx, key, crd); err != nil {
		t.Fatal(err)
	}
	originalSpec, _, _ := unstructured.NestedMap(crd.Object, "spec")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		version := v.(map[string]any)
		if _, found, _ := unstructured.NestedSlice(version, dataTemplateRulesPath...); !found {
			t.Fatalf("version %v of the CRD has no rules on secretTemplate.data's values", version["name"])
		}
		unstructured.RemoveNestedField(version, dataTemplateRulesPath...)
	}
	if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Update(ctx, crd); err != nil {
		t.Fatal(err)
	}

	var once sync.Once
	restore = func() {
		once.Do(func() {
			eventually(t, 30*time.Second, func() error {
				live := crd.DeepCopy()
				if err := k8s.Get(ctx, key, live); err != nil {
					return err
				}
				if err := unstructured.SetNestedMap(live.Object, originalSpec, "spec"); err != nil {
					return err
				}
				return k8s.Update(ctx, live)
			})
			eventually(t, 60*time.Second, func() error {
				probe := newTenant(ns, "probe", withSecretTemplate(map[string]string{"k": `{{ printf "%9999999d" 1 }}`}))
				err := k8s.Create(ctx, probe, client.DryRunAll)
				if apierrors.IsInvalid(err) && strings.Contains(err.Error(), "spec.secretTemplate.data[k]") {
					return nil
				}
				return fmt.Errorf("the restored rules are not enforced yet: %w", err)
			})
		})
	}
	t.Cleanup(restore)
	return restore
}

// A template the CRD's rules now refuse may have been stored before them. The
// operator refuses it as well: no token is requested, the render that would have
// taken gigabytes never runs, and other tenants carry on.
func TestSecretTemplateStoredBeforeTheRulesIsRefusedWithoutATokenRequest(t *testing.T) {
	requireControlPlane(t)
	h := newSerialHarness(t)
	h.createCredential(testClientSecret)
	stored := newTenant(h.ns, tenantName, withSecretTemplate(map[string]string{"authorization": wideVerbs}))

	restore := servedWithoutDataTemplateRules(t, h.ns)
	eventually(t, 60*time.Second, func() error {
		attempt := stored.DeepCopy()
		err := k8s.Create(h.ctx, attempt)
		if apierrors.IsInvalid(err) {
			return fmt.Errorf("the rules are still served: %w", err)
		}
		return err
	})
	restore()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 3 {
		h.reconcile()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("three reconciles allocated %.1f MiB, and the heap grew by %.1f MiB", float64(allocated)/(1<<20), float64(retained)/(1<<20))
	if retained > 16<<20 || allocated > 64<<20 {
		t.Errorf("three reconciles allocated %d bytes and kept %d: the template was rendered", allocated, retained)
	}

	if n := h.entra.TotalRequests(); n != 0 {
		t.Errorf("token requests = %d, want 0", n)
	}
	if s := h.tokenSecret("contoso-token"); s != nil {
		t.Errorf("token Secret published with keys %v", keysOf(s.Data))
	}
	dt := h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionFalse, v1alpha1.ReasonInvalidSecretTemplate)
	expectCondition(t, dt, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonInvalidSecretTemplate)
	if c := condition(dt, "Stalled"); c != nil && !strings.Contains(c.Message, `data key "authorization": found a function call (printf) at line 1, column 4`) {
		t.Errorf("message %q does not say which key calls which function where", c.Message)
	}
	if dt.Status.LastFailure != nil {
		t.Errorf("lastFailure = %+v: a template refused before any request is no failed request", dt.Status.LastFailure)
	}

	t.Run("a tenant in another namespace still gets its token", func(t *testing.T) {
		other := createNamespace(t)
		createCredentialIn(t, other, credentialName, map[string][]byte{v1alpha1.DefaultClientSecretKey: []byte(testClientSecret)})
		if err := k8s.Create(h.ctx, newTenant(other, tenantName, withSecretTemplate(map[string]string{"authorization": "Bearer {{ .AccessToken }}"}))); err != nil {
			t.Fatal(err)
		}
		if _, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: keyOf(other, tenantName)}); err != nil {
			t.Fatal(err)
		}
		published := &v1alpha1.DefenderTenant{}
		if err := k8s.Get(h.ctx, keyOf(other, tenantName), published); err != nil {
			t.Fatal(err)
		}
		expectCondition(t, published, "Ready", metav1.ConditionTrue, "TokenReady")
		s := getSecret(t, other, "contoso-token")
		if s == nil || string(s.Data["authorization"]) != "Bearer "+string(s.Data["access_token"]) {
			t.Error("the other tenant's template key was not published")
		}
		if n := h.entra.TotalRequests(); n != 1 {
			t.Errorf("token requests = %d, want the other tenant's 1", n)
		}
	})
}

func TestSecretTemplateAnnotationNeedsAnAllowedPrefix(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(withSecretTemplate(map[string]string{"authorization": "Bearer {{ .AccessToken }}"}), func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.SecretTemplate.Annotations = map[string]string{"replicator.v1.mittwald.de/replicate-to": "*"}
	})
	h.reconcile()

	if n := h.entra.Requests(testTenantID); n != 0 {
		t.Errorf("token requests = %d, want 0", n)
	}
	if s := h.tokenSecret("contoso-token"); s != nil {
		t.Errorf("token Secret published with annotations %v", s.Annotations)
	}
	dt := h.tenant()
	expectCondition(t, dt, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonInvalidSecretTemplate)
	if c := condition(dt, "Stalled"); c != nil && !strings.Contains(c.Message, `annotation "replicator.v1.mittwald.de/replicate-to" does not start with a prefix the operator allows (reloader.stakater.com/)`) {
		t.Errorf("message %q does not name the annotation and the allowed prefixes", c.Message)
	}

	reloader := map[string]string{"reloader.stakater.com/match": "true"}
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.SecretTemplate.Annotations = reloader })
	h.reconcile()

	s := h.tokenSecret("contoso-token")
	if s == nil {
		t.Fatal("token Secret missing")
	}
	for k, v := range reloader {
		if s.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
		}
	}
	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
	expectCondition(t, h.tenant(), "Stalled", "", "")
}

func TestSecretTemplateRendersAllFiveFields(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(withSecretTemplate(map[string]string{
		"all":     "{{ .AccessToken }}|{{ .TokenType }}|{{ .ExpiresAt }}|{{ .TenantID }}|{{ .Resource }}",
		"trimmed": "tenant:\n  {{- .TenantID -}}  \n.",
	}))
	h.reconcile()

	s := h.tokenSecret("contoso-token")
	if s == nil {
		t.Fatal("token Secret missing")
	}
	want := strings.Join([]string{string(s.Data["access_token"]), "Bearer", string(s.Data["expires_at"]), testTenantID, defenderAPI}, "|")
	if got := string(s.Data["all"]); got != want || len(s.Data["access_token"]) == 0 {
		t.Errorf("all = %.60q…, want the five values joined by |", got)
	}
	if got, want := string(s.Data["trimmed"]), "tenant:"+testTenantID+"."; got != want {
		t.Errorf("trimmed = %q, want %q", got, want)
	}
}
