//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// The sample tenants and the state each settles in, given cmd/entra-emulator/demo.yaml.
var samples = []struct {
	name   string
	ready  metav1.ConditionStatus
	reason string
}{
	{"contoso", metav1.ConditionTrue, v1alpha1.ReasonTokenReady},
	{"fabrikam", metav1.ConditionFalse, v1alpha1.ReasonMissingRoles},
	{"northwind", metav1.ConditionFalse, v1alpha1.ReasonConsentRequired},
}

func TestOperatorAuthenticatesAsItsServiceAccountAndIsNeverForbidden(t *testing.T) {
	cs, err := kubernetes.NewForConfig(w.operatorConfig)
	if err != nil {
		t.Fatal(err)
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "system:serviceaccount:" + w.operatorNamespace + ":" + w.serviceAccount
	if got := review.Status.UserInfo.Username; got != want {
		t.Fatalf("the operator's kubeconfig authenticates as %q, want the rendered Deployment's ServiceAccount %q", got, want)
	}

	// With every sample settled, the operator has read, written and watched all it
	// needs to; an RBAC gap would have been logged as a denial.
	waitForSamplesToSettle(t)
	if denials := logLinesContaining("is forbidden"); len(denials) > 0 {
		t.Errorf("the rendered RBAC denied the operator:\n%s", strings.Join(denials, "\n"))
	}
}

func TestLeaderElectionLeaseIsHeldInTheOperatorNamespace(t *testing.T) {
	if !w.leaderElection {
		t.Skip("the manager has no --leader-election-namespace flag; outside a pod --leader-elect cannot find its namespace, " +
			"so it runs without leader election and the leader-election Role is not exercised")
	}
	eventually(t, "a leader holds the Lease", func() error {
		lease := &coordinationv1.Lease{}
		if err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: w.operatorNamespace, Name: leaderElectionID}, lease); err != nil {
			return err
		}
		if ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
			return fmt.Errorf("Lease %s/%s has no holder", w.operatorNamespace, leaderElectionID)
		}
		return nil
	})
}

func TestHealthyTenantBecomesReadyAndPublishesItsTokenSecret(t *testing.T) {
	waitForReady(t, "contoso", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	tenant := getTenant(t, "contoso")
	if got, want := tenant.Status.TokenSecretName, "contoso-token"; got != want {
		t.Errorf("status.tokenSecretName = %q, want %q", got, want)
	}

	secret := &corev1.Secret{}
	if err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: samplesNamespace, Name: "contoso-token"}, secret); err != nil {
		t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want %q", secret.Type, corev1.SecretTypeOpaque)
	}
	for _, key := range []string{
		v1alpha1.TokenSecretKeyAccessToken, v1alpha1.TokenSecretKeyTokenType,
		v1alpha1.TokenSecretKeyExpiresAt, v1alpha1.TokenSecretKeyTenantID,
	} {
		if len(secret.Data[key]) == 0 {
			t.Errorf("key %q is missing or empty", key)
		}
	}
	if parts := strings.Split(string(secret.Data[v1alpha1.TokenSecretKeyAccessToken]), "."); len(parts) != 3 {
		t.Errorf("access_token is not a JWT: it has %d dot-separated parts, want 3", len(parts))
	}
	if got := string(secret.Data[v1alpha1.TokenSecretKeyTokenType]); got != "Bearer" {
		t.Errorf("token_type = %q, want Bearer", got)
	}
	if got := string(secret.Data[v1alpha1.TokenSecretKeyTenantID]); got != tenant.Spec.TenantID {
		t.Errorf("tenant_id = %q, want spec.tenantID %q", got, tenant.Spec.TenantID)
	}
	expiresAt := string(secret.Data[v1alpha1.TokenSecretKeyExpiresAt])
	exp, err := time.Parse(time.RFC3339, expiresAt)
	switch {
	case err != nil:
		t.Errorf("expires_at %q is not RFC 3339: %v", expiresAt, err)
	case !strings.HasSuffix(expiresAt, "Z"):
		t.Errorf("expires_at %q is not in UTC", expiresAt)
	case !exp.After(time.Now()):
		t.Errorf("expires_at %s is not in the future", expiresAt)
	case tenant.Status.ExpiresAt == nil || !tenant.Status.ExpiresAt.Time.Equal(exp):
		t.Errorf("expires_at %s differs from status.expiresAt %v", expiresAt, tenant.Status.ExpiresAt)
	}

	for k, want := range map[string]string{
		v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue,
		v1alpha1.LabelTenant:    "contoso",
	} {
		if got := secret.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	owner := metav1.GetControllerOf(secret)
	if owner == nil {
		t.Fatal("the token Secret has no controller ownerReference")
	}
	if owner.APIVersion != v1alpha1.GroupVersion.String() || owner.Kind != "DefenderTenant" || owner.Name != "contoso" || owner.UID != tenant.UID {
		t.Errorf("controller ownerReference = %s, want DefenderTenant contoso (uid %s)", mustJSON(owner), tenant.UID)
	}
}

func TestTenantLackingARequiredRoleIsStalledWithMissingRoles(t *testing.T) {
	waitForReady(t, "fabrikam", metav1.ConditionFalse, v1alpha1.ReasonMissingRoles)
	tenant := getTenant(t, "fabrikam")
	assertStalled(t, tenant, v1alpha1.ReasonMissingRoles)
	if got, want := tenant.Status.MissingRoles, []string{"ThreatHunting.Read.All"}; !slices.Equal(got, want) {
		t.Errorf("status.missingRoles = %q, want %q", got, want)
	}
	if got, want := tenant.Status.GrantedRoles, []string{"SecurityAlert.Read.All", "SecurityIncident.Read.All"}; !slices.Equal(got, want) {
		t.Errorf("status.grantedRoles = %q, want %q", got, want)
	}
	// A token that fails validation is never written.
	assertNoTokenSecret(t, "fabrikam-token")
}

func TestTenantWithoutConsentIsStalledWithAnAdminConsentURL(t *testing.T) {
	waitForReady(t, "northwind", metav1.ConditionFalse, v1alpha1.ReasonConsentRequired)
	tenant := getTenant(t, "northwind")
	assertStalled(t, tenant, v1alpha1.ReasonConsentRequired)

	u, err := url.Parse(tenant.Status.AdminConsentURL)
	if err != nil || tenant.Status.AdminConsentURL == "" {
		t.Fatalf("status.adminConsentURL %q is not a URL: %v", tenant.Status.AdminConsentURL, err)
	}
	q := u.Query()
	if u.Scheme != "https" || u.Host != "login.microsoftonline.com" || u.Path != "/"+tenant.Spec.TenantID+"/v2.0/adminconsent" ||
		q.Get("client_id") != tenant.Spec.ClientID || q.Get("scope") != "https://graph.microsoft.com/.default" {
		t.Errorf("status.adminConsentURL = %s, want https://login.microsoftonline.com/%s/v2.0/adminconsent?client_id=%s&scope=https://graph.microsoft.com/.default",
			u, tenant.Spec.TenantID, tenant.Spec.ClientID)
	}
	assertNoTokenSecret(t, "northwind-token")
}

// contoso's first token records no Event (the status says it); the failing samples
// record a Warning each.
func TestStatusChangesAreRecordedAsEvents(t *testing.T) {
	want := []struct{ name, reason, eventType string }{
		{"fabrikam", v1alpha1.ReasonMissingRoles, corev1.EventTypeWarning},
		{"northwind", v1alpha1.ReasonConsentRequired, corev1.EventTypeWarning},
	}
	eventually(t, "an Event for each failing sample tenant", func() error {
		events := &eventsv1.EventList{}
		if err := w.admin.List(context.Background(), events, client.InNamespace(samplesNamespace)); err != nil {
			return err
		}
		var missing []string
		for _, want := range want {
			if !slices.ContainsFunc(events.Items, func(e eventsv1.Event) bool {
				return e.Regarding.Kind == "DefenderTenant" && e.Regarding.Name == want.name &&
					e.Reason == want.reason && e.Type == want.eventType
			}) {
				missing = append(missing, fmt.Sprintf("%s %s for %s", want.eventType, want.reason, want.name))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no events.k8s.io Event: %s", strings.Join(missing, "; "))
		}
		return nil
	})
}

func TestMetricsEndpointServesControllerAndOperatorMetrics(t *testing.T) {
	waitForSamplesToSettle(t)
	body := fetchMetrics(t)
	families := map[string]bool{}
	for line := range strings.Lines(body) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			families[f[2]] = true
		}
	}
	for _, name := range []string{
		// controller-runtime's, which dashboards for any operator use
		"controller_runtime_reconcile_total",
		"controller_runtime_reconcile_errors_total",
		"workqueue_depth",
		// the operator's own
		"defender_tenant_token_requests_total",
		"defender_tenant_token_expiry_timestamp_seconds",
		"defender_tenant_token_request_duration_seconds",
		"defender_tenant_tenants",
	} {
		if !families[name] {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if !strings.Contains(body, `controller_runtime_reconcile_total{controller="defendertenant"`) {
		t.Error(`/metrics has no controller_runtime_reconcile_total series for controller="defendertenant"`)
	}
}

// The operator serves metrics as the Deployment runs it (--metrics-secure, the
// default): the API server authenticates each scraper and authorizes it by the
// metrics-reader ClusterRole that config/rbac ships. A bearer token the API server
// rejects gets controller-runtime's filter's answer, 500 "Authentication failed".
func TestMetricsEndpointServesOnlyScrapersBoundToTheMetricsReaderRole(t *testing.T) {
	unbound, err := createScraper("metrics-scraper-unbound", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		scraper string
		token   string
		want    int
	}{
		{"without a token", "", http.StatusUnauthorized},
		{"with a token the API server does not accept", "not-a-token", http.StatusInternalServerError},
		{"of a ServiceAccount without the metrics-reader binding", unbound, http.StatusForbidden},
		{"of a ServiceAccount bound to " + w.metricsReaderRole, w.metricsToken, http.StatusOK},
	} {
		code, body := getMetrics(t, c.token)
		if code != c.want {
			t.Errorf("scraper %s: %d %q, want %d", c.scraper, code, strings.TrimSpace(body), c.want)
		} else if code == http.StatusOK && !strings.Contains(body, "controller_runtime_") {
			t.Errorf("scraper %s: 200 without controller-runtime's metrics", c.scraper)
		}
	}
}

// jwtPattern matches a JWT's header and the start of its payload, both base64url
// JSON objects ("eyJ" is `{"`), whatever token it is: a published one or one the
// operator rejected.
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}`)

func TestNoClientSecretOrTokenAppearsInMetricsLogsEventsOrStatus(t *testing.T) {
	waitForSamplesToSettle(t)
	token := tokenOf(t, "contoso-token")
	signature := token[strings.LastIndex(token, ".")+1:]

	logs, err := os.ReadFile(w.operatorLog)
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{
		"/metrics":         fetchMetrics(t),
		"the operator log": string(logs),
		"the Events":       eventNotes(t),
		"the status":       statuses(t),
	}
	for source, text := range sources {
		// The messages name what leaked, never the leaked value.
		if strings.Contains(text, w.clientSecret) {
			t.Errorf("%s contains the client secret", source)
		}
		if strings.Contains(text, token) {
			t.Errorf("%s contains contoso's access token", source)
		} else if strings.Contains(text, signature) {
			t.Errorf("%s contains the signature of contoso's access token", source)
		}
		if jwtPattern.MatchString(text) {
			t.Errorf("%s contains a JWT", source)
		}
	}
	if len(logs) == 0 {
		t.Error("the operator log is empty: nothing was checked")
	}
}

func TestKubectlExplainDescribesTheSpecFields(t *testing.T) {
	var out string
	// The API server publishes a new CRD's OpenAPI schema a moment after it is established.
	eventually(t, "kubectl explain defendertenant.spec", func() (err error) {
		out, err = kubectl(nil, "explain", "defendertenant.spec")
		return err
	})
	// kubectl wraps descriptions to the terminal width: compare words, not lines.
	explained := strings.Join(strings.Fields(out), " ")
	for _, field := range []string{"tenantID", "clientSecretRef", "requiredRoles"} {
		desc := specFieldDescription(t, field)
		if desc == "" {
			t.Errorf("the CRD has no description for spec.%s", field)
			continue
		}
		if !strings.Contains(explained, field+" <") {
			t.Errorf("kubectl explain does not list spec.%s:\n%s", field, out)
		}
		if !strings.Contains(explained, strings.Join(strings.Fields(desc), " ")) {
			t.Errorf("kubectl explain does not show the description of spec.%s (%q):\n%s", field, desc, out)
		}
	}
}

func TestKstatusComputesHealthFromTheConditions(t *testing.T) {
	for _, tc := range []struct {
		name string
		want status.Status
	}{
		{"contoso", status.CurrentStatus},
		{"fabrikam", status.FailedStatus},
		{"northwind", status.FailedStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eventually(t, "kstatus "+tc.want.String(), func() error {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("DefenderTenant"))
				if err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: samplesNamespace, Name: tc.name}, u); err != nil {
					return err
				}
				res, err := status.Compute(u)
				if err != nil {
					return err
				}
				if res.Status != tc.want {
					return fmt.Errorf("kstatus = %s (%s), want %s", res.Status, res.Message, tc.want)
				}
				return nil
			})
		})
	}
}

// waitTimeout bounds every wait for the operator. It settles the samples in about a
// second; the margin is for a loaded CI machine.
const waitTimeout = 30 * time.Second

// eventually retries check until it returns nil, and fails the test with its last
// error when waitTimeout has passed or the operator has exited.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	waitFor(t, waitTimeout, what, check, &operator{Process: w.operator, name: "the operator", log: w.operatorLog})
}

// waitForReady waits until the tenant's Ready condition, computed for its current
// generation, has the given status and reason.
func waitForReady(t *testing.T, name string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	eventually(t, name+" Ready="+string(want)+" "+reason, readyIs(name, want, reason))
}

func waitForSamplesToSettle(t *testing.T) {
	t.Helper()
	for _, s := range samples {
		waitForReady(t, s.name, s.ready, s.reason)
	}
}

func readyIs(name string, want metav1.ConditionStatus, reason string) func() error {
	return func() error { return conditionError(w.admin, samplesNamespace, name, want, reason) }
}

func getTenant(t *testing.T, name string) *v1alpha1.DefenderTenant {
	t.Helper()
	tenant := &v1alpha1.DefenderTenant{}
	if err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: samplesNamespace, Name: name}, tenant); err != nil {
		t.Fatal(err)
	}
	return tenant
}

func assertStalled(t *testing.T, tenant *v1alpha1.DefenderTenant, reason string) {
	t.Helper()
	stalled := apimeta.FindStatusCondition(tenant.Status.Conditions, v1alpha1.ConditionStalled)
	if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != reason {
		t.Errorf("%s: Stalled condition = %s, want True with reason %s", tenant.Name, mustJSON(stalled), reason)
	}
	if apimeta.IsStatusConditionTrue(tenant.Status.Conditions, v1alpha1.ConditionReconciling) {
		t.Errorf("%s: Reconciling is True beside Stalled", tenant.Name)
	}
}

func assertNoTokenSecret(t *testing.T, name string) {
	t.Helper()
	err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: samplesNamespace, Name: name}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("Secret %s: got %v, want NotFound: a token that fails validation is never published", name, err)
	}
}

func tokenOf(t *testing.T, secretName string) string {
	t.Helper()
	secret := &corev1.Secret{}
	if err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: samplesNamespace, Name: secretName}, secret); err != nil {
		t.Fatal(err)
	}
	token := string(secret.Data[v1alpha1.TokenSecretKeyAccessToken])
	if strings.Count(token, ".") != 2 {
		t.Fatalf("Secret %s holds no JWT to look for", secretName)
	}
	return token
}

// fetchMetrics scrapes the operator as Prometheus would, with a token of a
// ServiceAccount bound to the metrics-reader ClusterRole.
func fetchMetrics(t *testing.T) string {
	t.Helper()
	code, body := getMetrics(t, w.metricsToken)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", w.metricsURL, code, body)
	}
	return body
}

// metricsClient accepts the self-signed certificate the manager generates when no
// --metrics-cert-path is given, which is how this suite runs it. The shipped
// ServiceMonitor verifies a mounted certificate instead (docs/install.md);
// TestMetricsAreServedWithTheCertificateInMetricsCertPathAndItsRenewal covers that.
var metricsClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// getMetrics sends GET /metrics with a bearer token, or none if token is empty.
func getMetrics(t *testing.T, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, w.metricsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func eventNotes(t *testing.T) string {
	t.Helper()
	events := &eventsv1.EventList{}
	if err := w.admin.List(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range events.Items {
		fmt.Fprintln(&b, e.Reason, e.Note)
	}
	return b.String()
}

func statuses(t *testing.T) string {
	t.Helper()
	tenants := &v1alpha1.DefenderTenantList{}
	if err := w.admin.List(context.Background(), tenants); err != nil {
		t.Fatal(err)
	}
	return mustJSON(tenants.Items)
}

func logLinesContaining(s string) []string {
	data, _ := os.ReadFile(w.operatorLog)
	var found []string
	for line := range strings.Lines(string(data)) {
		if strings.Contains(line, s) {
			found = append(found, strings.TrimSpace(line))
		}
	}
	return found
}

// specFieldDescription returns the description of a spec field in the rendered CRD.
func specFieldDescription(t *testing.T, field string) string {
	t.Helper()
	versions, _, _ := unstructured.NestedSlice(w.crd.Object, "spec", "versions")
	for _, v := range versions {
		v, _ := v.(map[string]any)
		if v["name"] != v1alpha1.GroupVersion.Version {
			continue
		}
		desc, _, _ := unstructured.NestedString(v, "schema", "openAPIV3Schema", "properties", "spec", "properties", field, "description")
		return desc
	}
	t.Fatalf("the rendered CRD has no version %s", v1alpha1.GroupVersion.Version)
	return ""
}
