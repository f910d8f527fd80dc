package defendertenant

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/tokencheck"
)

const otherTenantID = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"

func claimsOf(t *testing.T, s *corev1.Secret) tokencheck.Verdict {
	t.Helper()
	v, err := tokencheck.Check(string(s.Data[v1alpha1.TokenSecretKeyAccessToken]), tokencheck.Expectation{TenantID: testTenantID, ClientID: testClientID}, time.Time{})
	if err != nil {
		t.Fatalf("published token does not pass validation: %v", err)
	}
	return v
}

func TestTokenReadyPublishesTokenSecret(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	dt := h.createTenant()
	now := h.clock.Now()

	res := h.reconcile()

	s := h.tokenSecret("contoso-token")
	if s == nil {
		t.Fatal("token Secret contoso-token was not created")
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want Opaque", s.Type)
	}
	wantKeys := []string{"access_token", "expires_at", "tenant_id", "token_type"}
	keys := keysOf(s.Data)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("keys = %v, want %v", keys, wantKeys)
	}
	claims := claimsOf(t, s)
	wantExpiry := now.Add(3599 * time.Second)
	if !claims.ExpiresAt.Equal(wantExpiry) {
		t.Errorf("token exp = %s, want %s", claims.ExpiresAt, wantExpiry)
	}
	if got := string(s.Data["token_type"]); got != "Bearer" {
		t.Errorf("token_type = %q", got)
	}
	if got := string(s.Data["expires_at"]); got != "2026-11-21T12:59:59Z" {
		t.Errorf("expires_at = %q, want RFC 3339 UTC 2026-11-21T12:59:59Z", got)
	}
	if got := string(s.Data["tenant_id"]); got != testTenantID {
		t.Errorf("tenant_id = %q", got)
	}
	if s.Labels["app.kubernetes.io/managed-by"] != "defender-tenant-operator" || s.Labels["defender.tenantcreds.io/tenant"] != tenantName {
		t.Errorf("labels = %v", s.Labels)
	}
	if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != dt.UID || ref.Kind != "DefenderTenant" {
		t.Errorf("controller ownerReference = %+v, want the DefenderTenant", ref)
	}

	got := h.tenant()
	expectCondition(t, got, "Ready", metav1.ConditionTrue, "TokenReady")
	expectCondition(t, got, "Stalled", "", "")
	expectCondition(t, got, "Reconciling", "", "")
	st := got.Status
	if st.ObservedGeneration != got.Generation {
		t.Errorf("observedGeneration = %d, want %d", st.ObservedGeneration, got.Generation)
	}
	if st.TokenSecretName != "contoso-token" || !st.ExpiresAt.Time.Equal(wantExpiry) || !st.LastRefreshTime.Time.Equal(now) {
		t.Errorf("status token fields = %q %v %v", st.TokenSecretName, st.ExpiresAt, st.LastRefreshTime)
	}
	// Default refreshBefore is a third of 3599 s, moved up to a fifth of that earlier by jitter.
	latest, earliest := wantExpiry.Add(-1199*time.Second-time.Second), wantExpiry.Add(-1200*time.Second-240*time.Second)
	if nr := st.NextRefreshTime.Time; nr.Before(earliest) || nr.After(latest) {
		t.Errorf("nextRefreshTime = %s, want within [%s, %s]", nr, earliest, latest)
	}
	if res.RequeueAfter != st.NextRefreshTime.Sub(now) {
		t.Errorf("RequeueAfter = %s, want until nextRefreshTime (%s)", res.RequeueAfter, st.NextRefreshTime.Sub(now))
	}
	if !slices.Equal(st.GrantedRoles, []string{"AdvancedHunting.Read.All", "Incident.Read.All"}) || len(st.MissingRoles) != 0 {
		t.Errorf("grantedRoles = %v, missingRoles = %v", st.GrantedRoles, st.MissingRoles)
	}
	wantConsent := "https://login.microsoftonline.com/" + testTenantID + "/v2.0/adminconsent?client_id=" + testClientID + "&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"
	if st.AdminConsentURL != wantConsent {
		t.Errorf("adminConsentURL = %q, want %q", st.AdminConsentURL, wantConsent)
	}
	if st.FailedAttempts != 0 {
		t.Errorf("failedAttempts = %d", st.FailedAttempts)
	}
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
	expectEvents(t, h.recorder) // a first token is no news: the status says it
}

func TestSteadyStateMakesNoWritesAndNoTokenRequests(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	dtVersion, secretVersion := h.tenant().ResourceVersion, h.tokenSecret("contoso-token").ResourceVersion

	h.clock.Step(10 * time.Minute)
	h.reconcile()
	h.reconcile()

	if v := h.tenant().ResourceVersion; v != dtVersion {
		t.Errorf("DefenderTenant was written (resourceVersion %s -> %s) though nothing changed", dtVersion, v)
	}
	if v := h.tokenSecret("contoso-token").ResourceVersion; v != secretVersion {
		t.Errorf("token Secret was written (resourceVersion %s -> %s) though nothing changed", secretVersion, v)
	}
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
}

func TestRefreshHappensRefreshBeforeExpiryWithJitter(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.RefreshBefore = &metav1.Duration{Duration: 10 * time.Minute}
	})
	h.reconcile()
	first := h.tenant().Status
	firstToken := string(h.tokenSecret("contoso-token").Data["access_token"])
	due := first.NextRefreshTime.Time
	if latest, earliest := first.ExpiresAt.Add(-10*time.Minute), first.ExpiresAt.Add(-12*time.Minute); due.After(latest) || due.Before(earliest) {
		t.Fatalf("nextRefreshTime = %s, want within [%s, %s]", due, earliest, latest)
	}

	h.clock.SetTime(due.Add(-time.Second))
	h.reconcile()
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Fatalf("token requests a second before the refresh time = %d, want 1", n)
	}

	h.clock.SetTime(due)
	res := h.reconcile()
	if n := h.entra.Requests(testTenantID); n != 2 {
		t.Fatalf("token requests at the refresh time = %d, want 2", n)
	}
	s := h.tokenSecret("contoso-token")
	if string(s.Data["access_token"]) == firstToken {
		t.Error("token Secret still holds the first token after the refresh")
	}
	st := h.tenant().Status
	if !st.LastRefreshTime.Time.Equal(due) || !st.ExpiresAt.Time.Equal(due.Add(3599*time.Second)) {
		t.Errorf("lastRefreshTime = %s, expiresAt = %s after refreshing at %s", st.LastRefreshTime, st.ExpiresAt, due)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 3599*time.Second-10*time.Minute {
		t.Errorf("RequeueAfter = %s after refresh", res.RequeueAfter)
	}
	expectEvents(t, h.recorder) // neither the first token nor the routine refresh records anything
}

func TestRefreshNeverMoreThanOnceAMinute(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.entra.SetLifetime(testTenantID, 70*time.Second)
	h.createCredential(testClientSecret)
	h.createTenant()
	now := h.clock.Now()
	res := h.reconcile()

	if got := h.tenant().Status.NextRefreshTime.Time; !got.Equal(now.Add(time.Minute)) {
		t.Errorf("nextRefreshTime = %s, want a minute after minting (%s)", got, now.Add(time.Minute))
	}
	if res.RequeueAfter != time.Minute {
		t.Errorf("RequeueAfter = %s, want 1m", res.RequeueAfter)
	}
	h.clock.Step(59 * time.Second)
	h.reconcile()
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests within the first minute = %d, want 1", n)
	}
}

func TestOperatorRestartReusesFreshToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	before := h.tenant()

	restarted := h.newReconciler(h.r.Authorities)
	h.clock.Step(5 * time.Minute)
	if _, err := restarted.Reconcile(h.ctx, reqFor(h.ns)); err != nil {
		t.Fatal(err)
	}

	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Errorf("token requests after restart = %d, want 1 (the published token is still fresh)", n)
	}
	if after := h.tenant(); after.ResourceVersion != before.ResourceVersion {
		t.Errorf("status rewritten after restart: %+v", after.Status)
	}
}

func TestOperatorRestartReplacesTokenMintedFromOtherCredential(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	cred := h.createCredential(testClientSecret)
	h.createTenant()
	h.reconcile()

	// The credential is rotated while no operator runs.
	h.entra.SetAppSecrets(testClientID, entraemu.Secret{Value: testClientSecret}, entraemu.Secret{Value: "rotated-value"})
	cred.Data[v1alpha1.DefaultClientSecretKey] = []byte("rotated-value")
	if err := k8s.Update(h.ctx, cred); err != nil {
		t.Fatal(err)
	}
	restarted := h.newReconciler(h.r.Authorities)
	if _, err := restarted.Reconcile(h.ctx, reqFor(h.ns)); err != nil {
		t.Fatal(err)
	}
	if n := h.entra.Requests(testTenantID); n != 2 {
		t.Errorf("token requests = %d, want 2: a token from the old credential is not reused", n)
	}
}

func TestCredentialsNotFound(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name   string
		data   map[string][]byte // nil: no Secret at all
		key    string
		inText string
	}{
		{name: "Secret missing", inText: "was not found"},
		{name: "key missing", data: map[string][]byte{"other": []byte("x")}, inText: `no non-empty key "client-secret"`},
		{name: "custom key missing", data: map[string][]byte{"client-secret": []byte("x")}, key: "secret", inText: `no non-empty key "secret"`},
		{name: "value only whitespace", data: map[string][]byte{"client-secret": []byte(" \n")}, inText: "no non-empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.data != nil {
				createCredentialIn(t, h.ns, credentialName, tt.data)
			}
			h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.ClientSecretRef.Key = tt.key })
			h.reconcile()

			dt := h.tenant()
			expectCondition(t, dt, "Ready", metav1.ConditionFalse, "CredentialsNotFound")
			expectCondition(t, dt, "Stalled", metav1.ConditionTrue, "CredentialsNotFound")
			if msg := condition(dt, "Stalled").Message; !strings.Contains(msg, tt.inText) {
				t.Errorf("message %q does not contain %q", msg, tt.inText)
			}
			if n := h.entra.TotalRequests(); n != 0 {
				t.Errorf("token requests = %d, want 0", n)
			}
			if h.tokenSecret("contoso-token") != nil {
				t.Error("a token Secret was created without credentials")
			}
		})
	}
}

func TestEntraFailuresMapToContractReasons(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name       string
		setup      func(h *harness, dt *v1alpha1.DefenderTenant)
		credential string
		reason     string
		needsHuman bool
		minRequeue time.Duration
	}{
		{name: "InvalidClientSecret for a wrong secret (AADSTS7000215)", credential: "wrong-secret", reason: "InvalidClientSecret", needsHuman: true},
		{name: "ClientSecretExpired (AADSTS7000222)", reason: "ClientSecretExpired", needsHuman: true, setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.SetAppSecrets(testClientID, entraemu.Secret{Value: testClientSecret, ExpiresAt: h.clock.Now().Add(-time.Hour)})
		}},
		{name: "ConsentRequired when the app has no service principal in the tenant (AADSTS7000229)", reason: "ConsentRequired", needsHuman: true, setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.Revoke(testTenantID, testClientID)
		}},
		{name: "ConsentRequired for an unknown application (AADSTS700016)", reason: "ConsentRequired", needsHuman: true, setup: func(_ *harness, dt *v1alpha1.DefenderTenant) {
			dt.Spec.ClientID = "11111111-2222-3333-4444-555555555555"
		}},
		{name: "ConsentRequired when consent was not given (AADSTS65001)", reason: "ConsentRequired", needsHuman: true, setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.InjectFailures(testTenantID, entraemu.Failure{Status: 400, Error: "invalid_grant", Code: 65001, Description: "The user or administrator has not consented to use the application."})
		}},
		{name: "ConsentRequired when the resource has no service principal (AADSTS500011)", reason: "ConsentRequired", needsHuman: true, setup: func(h *harness, dt *v1alpha1.DefenderTenant) {
			h.r.AllowedResources = entra.NewAllowList(append([]string{"https://api.unprovisioned.example.com"}, entra.DefaultAllowedResources...))
			dt.Spec.Resource = "https://api.unprovisioned.example.com"
		}},
		{name: "TenantNotFound for an unknown tenant (AADSTS90002)", reason: "TenantNotFound", needsHuman: true, setup: func(_ *harness, dt *v1alpha1.DefenderTenant) {
			dt.Spec.TenantID = otherTenantID
		}},
		{name: "Throttled honours Retry-After (HTTP 429)", reason: "Throttled", minRequeue: 2 * time.Minute, setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.InjectFailures(testTenantID, entraemu.Throttled(2*time.Minute))
		}},
		{name: "TokenEndpointUnavailable for a 5xx", reason: "TokenEndpointUnavailable", setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.InjectFailures(testTenantID, entraemu.BadGateway())
		}},
		{name: "TokenEndpointUnavailable when nothing listens", reason: "TokenEndpointUnavailable", setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			closed := httptest.NewServer(http.NotFoundHandler())
			closed.Close()
			h.r.Authorities = entra.EveryCloud(closed.URL)
		}},
		{name: "InvalidToken when the access token is not a JWT", reason: "InvalidToken", needsHuman: true, setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.InjectFailures(testTenantID, entraemu.Failure{Status: 200, ContentType: "application/json; charset=utf-8",
				Body: `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"not-a-jwt"}`})
		}},
		{name: "InvalidToken when the token is for another tenant", reason: "InvalidToken", needsHuman: true, setup: func(h *harness, _ *v1alpha1.DefenderTenant) {
			h.entra.AddTenant(otherTenantID)
			h.entra.Grant(otherTenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
			tok, err := (&entra.Client{}).RequestToken(context.Background(), entra.Request{AuthorityHost: h.r.Authorities.Host(v1alpha1.CloudPublic), TenantID: otherTenantID, ClientID: testClientID, Credential: entra.ClientSecret(testClientSecret), Resource: defenderAPI})
			if err != nil {
				h.t.Fatal(err)
			}
			h.entra.InjectFailures(testTenantID, entraemu.Failure{Status: 200, ContentType: "application/json; charset=utf-8",
				Body: fmt.Sprintf(`{"token_type":"Bearer","expires_in":3599,"access_token":%q}`, tok.AccessToken)})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			credential := tt.credential
			if credential == "" {
				credential = testClientSecret
			}
			h.createCredential(credential)
			dt := newTenant(h.ns, tenantName)
			if tt.setup != nil {
				tt.setup(h, dt)
			}
			if err := k8s.Create(h.ctx, dt); err != nil {
				t.Fatal(err)
			}
			res := h.reconcile()

			got := h.tenant()
			expectCondition(t, got, "Ready", metav1.ConditionFalse, tt.reason)
			progress, other := "Reconciling", "Stalled"
			if tt.needsHuman {
				progress, other = other, progress
			}
			expectCondition(t, got, progress, metav1.ConditionTrue, tt.reason)
			expectCondition(t, got, other, "", "")
			if got.Status.FailedAttempts != 1 {
				t.Errorf("failedAttempts = %d, want 1", got.Status.FailedAttempts)
			}
			if h.tokenSecret("contoso-token") != nil {
				t.Error("a token Secret was published although minting failed")
			}
			if res.RequeueAfter < tt.minRequeue || res.RequeueAfter <= 0 {
				t.Errorf("RequeueAfter = %s, want at least %s", res.RequeueAfter, tt.minRequeue)
			}
			if tt.needsHuman && res.RequeueAfter < stalledBackoffBase {
				t.Errorf("RequeueAfter = %s: a needs-a-human failure must retry slowly", res.RequeueAfter)
			}
			msg := condition(got, "Ready").Message
			if msg == "" || strings.Contains(msg, credential) {
				t.Errorf("message %q is empty or contains the client secret", msg)
			}
			expectEvents(t, h.recorder, "Warning "+tt.reason)
		})
	}
}

func TestMissingRolesIsNeverPublished(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name    string
		granted []string
		missing []string
	}{
		{"token without a roles claim (consented, no permission granted)", nil, []string{"AdvancedHunting.Read.All", "Incident.Read.All"}},
		{"token with only some roles", []string{"Incident.Read.All"}, []string{"AdvancedHunting.Read.All"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.entra.Revoke(testTenantID, testClientID)
			h.entra.Grant(testTenantID, testClientID, defenderAPI, tt.granted...)
			h.createCredential(testClientSecret)
			h.createTenant()
			h.reconcile()

			dt := h.tenant()
			expectCondition(t, dt, "Ready", metav1.ConditionFalse, "MissingRoles")
			expectCondition(t, dt, "Stalled", metav1.ConditionTrue, "MissingRoles")
			if !slices.Equal(dt.Status.MissingRoles, tt.missing) || !slices.Equal(dt.Status.GrantedRoles, tt.granted) {
				t.Errorf("missingRoles = %v, grantedRoles = %v; want %v, %v", dt.Status.MissingRoles, dt.Status.GrantedRoles, tt.missing, tt.granted)
			}
			if h.tokenSecret("contoso-token") != nil {
				t.Error("a token lacking required roles was published")
			}

			// Consent is fixed in Entra ID; the slow retry picks it up.
			h.entra.Grant(testTenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
			h.clock.Step(stalledBackoffCap)
			h.reconcile()
			dt = h.tenant()
			expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
			if len(dt.Status.MissingRoles) != 0 || dt.Status.FailedAttempts != 0 {
				t.Errorf("after consent: missingRoles = %v, failedAttempts = %d", dt.Status.MissingRoles, dt.Status.FailedAttempts)
			}
		})
	}
}

func TestSecretConflictLeavesForeignSecretUntouched(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name   string
		owners []metav1.OwnerReference
	}{
		{name: "Secret with no owner"},
		{name: "Secret owned by another DefenderTenant", owners: []metav1.OwnerReference{{
			APIVersion: v1alpha1.GroupVersion.String(), Kind: "DefenderTenant", Name: tenantName, UID: "00000000-0000-0000-0000-000000000001", Controller: ptrTo(true),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.createCredential(testClientSecret)
			foreign := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "contoso-token", Namespace: h.ns, OwnerReferences: tt.owners},
				Data:       map[string][]byte{"access_token": []byte("someone else's")},
			}
			if err := k8s.Create(h.ctx, foreign); err != nil {
				t.Fatal(err)
			}
			h.createTenant()
			h.reconcile()

			dt := h.tenant()
			expectCondition(t, dt, "Ready", metav1.ConditionFalse, "SecretConflict")
			expectCondition(t, dt, "Stalled", metav1.ConditionTrue, "SecretConflict")
			after := h.tokenSecret("contoso-token")
			if after.ResourceVersion != foreign.ResourceVersion || string(after.Data["access_token"]) != "someone else's" {
				t.Error("the foreign Secret was modified")
			}
			if n := h.entra.TotalRequests(); n != 0 {
				t.Errorf("token requests = %d, want 0 while the token cannot be published", n)
			}
		})
	}
}

func TestResourceNotAllowedMakesNoTokenRequest(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = "https://management.azure.com" })
	h.reconcile()

	dt := h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionFalse, "ResourceNotAllowed")
	expectCondition(t, dt, "Stalled", metav1.ConditionTrue, "ResourceNotAllowed")
	if n := h.entra.TotalRequests(); n != 0 {
		t.Errorf("token requests = %d, want 0", n)
	}
}

// Microsoft is moving the Defender XDR incidents and advanced hunting APIs to the
// Graph security API: a tenant may ask for a Graph token with the default allow-list.
func TestMicrosoftGraphTokenWithSecurityRoles(t *testing.T) {
	requireControlPlane(t)
	const graph = "https://graph.microsoft.com"
	h := newHarness(t)
	h.entra.Grant(testTenantID, testClientID, graph, "SecurityIncident.Read.All", "ThreatHunting.Read.All")
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) {
		dt.Spec.Resource = graph
		dt.Spec.RequiredRoles = []string{"SecurityIncident.Read.All", "ThreatHunting.Read.All"}
	})
	h.reconcile()

	dt := h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
	if got := dt.Status.GrantedRoles; !slices.Equal(got, []string{"SecurityIncident.Read.All", "ThreatHunting.Read.All"}) {
		t.Errorf("grantedRoles = %v, want the Graph security roles", got)
	}
	if !strings.Contains(dt.Status.AdminConsentURL, "scope="+url.QueryEscape(graph+"/.default")) {
		t.Errorf("adminConsentURL = %q, want the Graph scope", dt.Status.AdminConsentURL)
	}
}

// Signatures are not verified, so a token that claims a far-future exp must not
// stop refreshes: Entra issues app-only tokens for 60 to 90 minutes.
func TestTokenValidForMoreThanADayIsNeverKept(t *testing.T) {
	requireControlPlane(t)
	t.Run("minted, it is InvalidToken and not published", func(t *testing.T) {
		h := newHarness(t)
		h.entra.SetLifetime(testTenantID, 48*time.Hour)
		h.publishToken()
		expectCondition(t, h.tenant(), "Stalled", metav1.ConditionTrue, v1alpha1.ReasonInvalidToken)
		if h.tokenSecret("contoso-token") != nil {
			t.Error("a token valid for 48 hours was published")
		}
	})
	t.Run("planted in the token Secret, it is replaced", func(t *testing.T) {
		h := newHarness(t)
		h.publishToken()
		h.entra.SetLifetime(testTenantID, 48*time.Hour)
		long, err := h.r.Entra.RequestToken(h.ctx, entra.Request{AuthorityHost: h.r.Authorities.Host(v1alpha1.CloudPublic), TenantID: testTenantID,
			ClientID: testClientID, Credential: entra.ClientSecret(testClientSecret), Resource: defenderAPI})
		if err != nil {
			t.Fatal(err)
		}
		h.entra.SetLifetime(testTenantID, 0)
		planted := h.tokenSecret("contoso-token")
		planted.Data[v1alpha1.TokenSecretKeyAccessToken] = []byte(long.AccessToken)
		if err := k8s.Update(h.ctx, planted); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		if exp := claimsOf(t, h.tokenSecret("contoso-token")).ExpiresAt; exp.After(h.clock.Now().Add(2 * time.Hour)) {
			t.Errorf("the published token expires at %s: the planted 48-hour token was kept", exp)
		}
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	})
}

// Without a redirect_uri, an app with no registered reply address shows the admin
// AADSTS500113 after consenting; --admin-consent-redirect-uri adds one.
func TestAdminConsentURLCarriesTheRedirectURI(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.r.AdminConsentRedirectURI = "https://portal.azure.com"
	h.createCredential(testClientSecret)
	h.createTenant()
	h.reconcile()

	consent, err := url.Parse(h.tenant().Status.AdminConsentURL)
	if err != nil {
		t.Fatal(err)
	}
	if got := consent.Query().Get("redirect_uri"); got != "https://portal.azure.com" {
		t.Errorf("adminConsentURL redirect_uri = %q, want https://portal.azure.com (URL %s)", got, consent)
	}
}

func TestAllowedResourceWithTrailingSlashIsAccepted(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.createCredential(testClientSecret)
	h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = defenderAPI + "/" })
	h.reconcile()
	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
}

func TestFailedRefreshKeepsTokenUntilItExpires(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	published := h.tokenSecret("contoso-token")
	expiry := h.tenant().Status.ExpiresAt.Time

	outage := make([]entraemu.Failure, 40)
	for i := range outage {
		outage[i] = entraemu.ServerError()
	}
	h.entra.InjectFailures(testTenantID, outage...)
	h.clock.SetTime(h.tenant().Status.NextRefreshTime.Time)
	res := h.reconcile()

	dt := h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
	expectCondition(t, dt, "Reconciling", metav1.ConditionTrue, "TokenEndpointUnavailable")
	if s := h.tokenSecret("contoso-token"); s == nil || s.ResourceVersion != published.ResourceVersion {
		t.Fatal("the published token Secret changed after a failed refresh")
	}
	if res.RequeueAfter != minRefreshInterval {
		t.Errorf("RequeueAfter = %s, want 1m: with a valid token published, refreshing stays at most once a minute", res.RequeueAfter)
	}

	// The endpoint stays down past the token's expiry.
	for h.clock.Now().Before(expiry) {
		h.clock.Step(res.RequeueAfter)
		res = h.reconcile()
	}
	dt = h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionFalse, "TokenExpired")
	expectCondition(t, dt, "Reconciling", metav1.ConditionTrue, "TokenEndpointUnavailable")
	if s := h.tokenSecret("contoso-token"); s == nil || string(s.Data["access_token"]) != string(published.Data["access_token"]) {
		t.Error("the expired token Secret was deleted or overwritten by a failed refresh")
	}
	if !h.clock.Now().Add(-transientBackoffCap - transientBackoffCap/10).Before(expiry) {
		t.Error("Ready did not turn to TokenExpired within one backoff step of expiry")
	}
	expectEvents(t, h.recorder, "Warning TokenEndpointUnavailable", "Warning TokenExpired")

	// Recovery: one backoff step later a token is published again.
	for h.tenant().Status.FailedAttempts > 0 && h.entra.Requests(testTenantID) < 60 {
		h.clock.Step(res.RequeueAfter)
		res = h.reconcile()
	}
	dt = h.tenant()
	expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
	expectCondition(t, dt, "Reconciling", "", "")
}

func TestBackoffBetweenFailedRequests(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	res := h.startFailing(entraemu.ServerError(), entraemu.ServerError(), entraemu.ServerError())
	if !withinBackoff(res.RequeueAfter, 5*time.Second) {
		t.Fatalf("first RequeueAfter = %s, want 5s plus jitter", res.RequeueAfter)
	}
	h.reconcile() // an unrelated event during the backoff
	if n := h.entra.Requests(testTenantID); n != 1 {
		t.Fatalf("token requests during backoff = %d, want 1", n)
	}
	h.clock.Step(res.RequeueAfter)
	if res = h.reconcile(); !withinBackoff(res.RequeueAfter, 10*time.Second) {
		t.Errorf("second RequeueAfter = %s, want 10s plus jitter", res.RequeueAfter)
	}
	if got := h.tenant().Status.FailedAttempts; got != 2 {
		t.Errorf("failedAttempts = %d, want 2", got)
	}
}

func TestCredentialRotationMintsPromptly(t *testing.T) {
	requireControlPlane(t)
	t.Run("fixing a wrong secret skips the backoff", func(t *testing.T) {
		h := newHarness(t)
		cred := h.createCredential("wrong-secret")
		h.createTenant()
		h.reconcile()
		expectCondition(t, h.tenant(), "Stalled", metav1.ConditionTrue, "InvalidClientSecret")

		cred.Data[v1alpha1.DefaultClientSecretKey] = []byte(testClientSecret)
		if err := k8s.Update(h.ctx, cred); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
		expectCondition(t, h.tenant(), "Stalled", "", "")
	})
	t.Run("a rotated secret replaces a fresh token", func(t *testing.T) {
		h := newHarness(t)
		cred := h.createCredential(testClientSecret)
		h.createTenant()
		h.reconcile()
		h.entra.SetAppSecrets(testClientID, entraemu.Secret{Value: "new-secret-value"})
		cred.Data[v1alpha1.DefaultClientSecretKey] = []byte("new-secret-value")
		if err := k8s.Update(h.ctx, cred); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		if n := h.entra.Requests(testTenantID); n != 2 {
			t.Errorf("token requests = %d, want 2", n)
		}
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
	})
}

func TestSpecChangeMintsNewToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Resource = "https://api.securitycenter.microsoft.com" })
	h.reconcile()

	if n := h.entra.Requests(testTenantID); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
	dt := h.tenant()
	if dt.Status.ObservedGeneration != dt.Generation || dt.Generation != 2 {
		t.Errorf("observedGeneration = %d, generation = %d", dt.Status.ObservedGeneration, dt.Generation)
	}
	if !strings.Contains(dt.Status.AdminConsentURL, "api.securitycenter.microsoft.com") {
		t.Errorf("adminConsentURL %q does not follow the new resource", dt.Status.AdminConsentURL)
	}
}

func TestHandEditedTokenSecretIsRestored(t *testing.T) {
	requireControlPlane(t)
	t.Run("metadata and extra keys restored without a new token", func(t *testing.T) {
		h := newHarness(t)
		h.publishToken()
		s := h.tokenSecret("contoso-token")
		want := s.DeepCopy().Data
		s.Data["expires_at"] = []byte("2099-01-01T00:00:00Z")
		s.Data["extra"] = []byte("x")
		delete(s.Labels, "defender.tenantcreds.io/tenant")
		s.Labels["team"] = "blue"
		if err := k8s.Update(h.ctx, s); err != nil {
			t.Fatal(err)
		}
		h.reconcile()

		restored := h.tokenSecret("contoso-token")
		if len(restored.Data) != len(want) || string(restored.Data["expires_at"]) != string(want["expires_at"]) {
			t.Errorf("data not restored: %v", keysOf(restored.Data))
		}
		if restored.Labels["defender.tenantcreds.io/tenant"] != tenantName || restored.Labels["team"] != "blue" {
			t.Errorf("labels = %v: want ours restored and others kept", restored.Labels)
		}
		if n := h.entra.Requests(testTenantID); n != 1 {
			t.Errorf("token requests = %d, want 1", n)
		}
	})
	t.Run("an overwritten token is replaced by a new one", func(t *testing.T) {
		h := newHarness(t)
		h.publishToken()
		s := h.tokenSecret("contoso-token")
		s.Data["access_token"] = []byte("garbage")
		if err := k8s.Update(h.ctx, s); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		claimsOf(t, h.tokenSecret("contoso-token"))
		if n := h.entra.Requests(testTenantID); n != 2 {
			t.Errorf("token requests = %d, want 2", n)
		}
	})
}

func TestDeletedTokenSecretIsRecreated(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	if err := k8s.Delete(h.ctx, h.tokenSecret("contoso-token")); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if s := h.tokenSecret("contoso-token"); s == nil {
		t.Fatal("token Secret was not recreated")
	} else {
		claimsOf(t, s)
	}
	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, "TokenReady")
}

func TestSuspendMakesNoRequestsAndLeavesSecretAlone(t *testing.T) {
	requireControlPlane(t)
	t.Run("suspended from the start", func(t *testing.T) {
		h := newHarness(t)
		h.createCredential(testClientSecret)
		h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Suspend = true })
		h.reconcile()
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionFalse, "Suspended")
		if n := h.entra.TotalRequests(); n != 0 {
			t.Errorf("token requests = %d, want 0", n)
		}
	})
	t.Run("suspended with a published token", func(t *testing.T) {
		h := newHarness(t)
		h.publishToken()
		published := h.tokenSecret("contoso-token")
		h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Suspend = true })
		h.clock.Step(50 * time.Minute) // past the refresh time
		h.reconcile()
		if n := h.entra.Requests(testTenantID); n != 1 {
			t.Errorf("token requests = %d, want 1", n)
		}
		if s := h.tokenSecret("contoso-token"); s.ResourceVersion != published.ResourceVersion {
			t.Error("token Secret changed while suspended")
		}
		dt := h.tenant()
		expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
		if dt.Status.NextRefreshTime != nil {
			t.Errorf("nextRefreshTime = %s while suspended", dt.Status.NextRefreshTime)
		}
	})
}

func TestTokenSecretRenameMovesTheToken(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.TokenSecretName = "contoso-defender" })
	h.reconcile()

	if h.tokenSecret("contoso-defender") == nil {
		t.Fatal("token not published under the new name")
	}
	if h.tokenSecret("contoso-token") != nil {
		t.Error("the Secret under the old name was left behind")
	}
	if got := h.tenant().Status.TokenSecretName; got != "contoso-defender" {
		t.Errorf("status.tokenSecretName = %q", got)
	}
}

func TestSecretsNeverReachStatusOrEvents(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	token := string(h.tokenSecret("contoso-token").Data["access_token"])
	signature := token[strings.LastIndex(token, ".")+1:]

	dump := fmt.Sprintf("%+v", h.tenant().Status)
	for len(h.recorder.Events) > 0 {
		dump += <-h.recorder.Events
	}
	for name, secret := range map[string]string{"client secret": testClientSecret, "token": token, "token signature": signature} {
		if strings.Contains(dump, secret) {
			t.Errorf("the %s appears in status or events", name)
		}
	}
}

func reqFor(ns string) ctrl.Request {
	return ctrl.Request{NamespacedName: keyOf(ns, tenantName)}
}

func keysOf(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// withinBackoff accepts a backoff step plus the up-to-10% jitter (rounded to seconds)
// that a random object UID adds; the exact values are table-tested in TestRetryDelay.
func withinBackoff(got, step time.Duration) bool {
	return got >= step && got <= step+step/10+time.Second/2
}

func ptrTo[T any](v T) *T { return &v }

// expectEvents drains the recorder and compares the "Type Reason" of each Event, in
// order. ResourceRetiring is left out: most tests' tenants use the retiring default
// resource, and TestRetiringResource covers that Event.
func expectEvents(t *testing.T, rec *events.FakeRecorder, want ...string) {
	t.Helper()
	var got []string
	for len(rec.Events) > 0 {
		fields := strings.SplitN(<-rec.Events, " ", 3)
		if fields[1] != ReasonResourceRetiring {
			got = append(got, fields[0]+" "+fields[1])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestCloudPicksConsentHostAndDefaultResource(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		cloud           v1alpha1.Cloud
		consentHost     string
		defaultResource string
	}{
		{v1alpha1.CloudPublic, "https://login.microsoftonline.com/", "https://api.security.microsoft.com"},
		{v1alpha1.CloudUSGov, "https://login.microsoftonline.com/", "https://api-gcc.security.microsoft.us"},
		{v1alpha1.CloudUSGovHigh, "https://login.microsoftonline.us/", "https://api-gov.security.microsoft.us"},
		{v1alpha1.CloudDoD, "https://login.microsoftonline.us/", "https://api-gov.security.microsoft.us"},
	}
	for _, tt := range tests {
		t.Run(string(tt.cloud), func(t *testing.T) {
			h := newHarness(t)
			h.entra.Grant(testTenantID, testClientID, tt.defaultResource, "Incident.Read.All", "AdvancedHunting.Read.All")
			h.createCredential(testClientSecret)
			h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Cloud = tt.cloud })
			h.reconcile()

			dt := h.tenant()
			expectCondition(t, dt, "Ready", metav1.ConditionTrue, "TokenReady")
			escaped := strings.NewReplacer(":", "%3A", "/", "%2F").Replace(tt.defaultResource + "/.default")
			if !strings.HasPrefix(dt.Status.AdminConsentURL, tt.consentHost+testTenantID+"/v2.0/adminconsent?") ||
				!strings.HasSuffix(dt.Status.AdminConsentURL, "&scope="+escaped) {
				t.Errorf("adminConsentURL = %q, want the %s sign-in host and scope %s", dt.Status.AdminConsentURL, tt.cloud, tt.defaultResource)
			}
		})
	}
}
