package metricsauth

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRequestsWithoutATokenTheAPIServerAcceptsAreUnauthorized(t *testing.T) {
	t.Parallel()
	h := newHarness(t, admin, nil)
	for _, authorization := range []string{
		"",
		"Bearer",
		"Bearer ",
		"Basic c2NyYXBlcjpwYXNzd29yZA==",
		"Bearer not-a-token",
		"bearer not-a-token",
		"Bearer not-a-token", // cached: no second TokenReview
	} {
		status, body := h.do(http.MethodGet, "/metrics", authorization)
		if status != http.StatusUnauthorized || strings.TrimSpace(body) != "Unauthorized" {
			t.Errorf("Authorization %q: %d %q, want 401 Unauthorized", authorization, status, body)
		}
	}
	if n := h.served.Load(); n != 0 {
		t.Errorf("the handler served %d unauthenticated requests", n)
	}
	h.reviews(1, 0)
}

func TestServiceAccountWithoutTheMetricsReaderRoleIsForbidden(t *testing.T) {
	t.Parallel()
	h := newHarness(t, admin, nil)
	_, user, token := serviceAccount(t)
	body := h.get(token, http.StatusForbidden)
	for _, want := range []string{user, "get", "/metrics"} {
		if !strings.Contains(body, want) {
			t.Errorf("the 403 body %q does not name %q", body, want)
		}
	}
	if n := h.served.Load(); n != 0 {
		t.Errorf("the handler served %d forbidden requests", n)
	}
	h.reviews(1, 1)
}

func TestMetricsReaderMayGetMetricsAndNothingElse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, admin, nil)
	sa, _, token := serviceAccount(t)
	bind(t, sa, metricsReader)

	if body := h.get(token, http.StatusOK); body != "up 1\n" {
		t.Errorf("GET /metrics: %q, want the handler's answer", body)
	}
	if n := h.served.Load(); n != 1 {
		t.Errorf("the handler served %d requests, want 1", n)
	}
	// The role allows get on /metrics: the filter must ask about the verb and path
	// of the request, not a fixed one.
	for _, r := range []struct{ method, path, named string }{
		{http.MethodPost, "/metrics", "post /metrics"},
		{http.MethodGet, "/debug/pprof/", "get /debug/pprof/"},
	} {
		status, body := h.do(r.method, r.path, "Bearer "+token)
		if status != http.StatusForbidden || !strings.Contains(body, r.named) {
			t.Errorf("%s %s: %d %q, want 403 naming %q", r.method, r.path, status, body, r.named)
		}
	}
	h.reviews(1, 3)
}

func TestAuthenticationIsCachedForAMinuteAndAllowForFiveMinutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, admin, nil)
	sa, _, token := serviceAccount(t)
	unbind := bind(t, sa, metricsReader)

	h.get(token, http.StatusOK)
	h.reviews(1, 1)
	h.get(token, http.StatusOK)
	h.reviews(1, 1)
	h.clock.Step(59 * time.Second)
	h.get(token, http.StatusOK)
	h.reviews(1, 1)
	h.clock.Step(2 * time.Second) // 1m01s
	h.get(token, http.StatusOK)
	h.reviews(2, 1)

	// Revoked, but the allow decision stands for five minutes, as with controller-runtime's filter.
	unbind()
	h.clock.Step(3*time.Minute + 58*time.Second) // 4m59s
	h.get(token, http.StatusOK)
	h.reviews(3, 1)
	h.clock.Step(2 * time.Second) // 5m01s
	h.get(token, http.StatusForbidden)
	h.reviews(3, 2)
}

func TestDenialIsRecheckedAfterThirtySeconds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, admin, nil)
	sa, _, token := serviceAccount(t)

	h.get(token, http.StatusForbidden)
	h.reviews(1, 1)
	bind(t, sa, metricsReader)
	h.get(token, http.StatusForbidden)
	h.reviews(1, 1)
	h.clock.Step(29 * time.Second)
	h.get(token, http.StatusForbidden)
	h.reviews(1, 1)
	h.clock.Step(2 * time.Second) // 31s: the new binding takes effect
	h.get(token, http.StatusOK)
	h.reviews(1, 2)
}

// The operator's ServiceAccount lacks the rights of config/rbac/metrics_auth_role.yaml
// (or the API server fails): scrapes fail with 500, and the next scrape asks again.
func TestReviewErrorsAreInternalErrorsAndAreNotCached(t *testing.T) {
	t.Parallel()
	_, _, token := serviceAccount(t)
	operator, _, _ := serviceAccount(t)

	h := newHarness(t, identityOf(t, operator), nil)
	for i := range 2 {
		status, body := h.do(http.MethodGet, "/metrics", "Bearer "+token)
		if status != http.StatusInternalServerError || strings.TrimSpace(body) != "Authentication failed" {
			t.Errorf("without create on tokenreviews: %d %q, want 500 Authentication failed", status, body)
		}
		h.reviews(int32(i+1), 0)
	}
	if !strings.Contains(h.log.String(), "tokenreviews.authentication.k8s.io is forbidden") {
		t.Errorf("the log does not say why authentication failed:\n%s", h.log.String())
	}

	reviewer := createClusterRole(t, rbacv1.PolicyRule{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}})
	bind(t, operator, reviewer)
	h = newHarness(t, identityOf(t, operator), nil)
	for i := range 2 {
		status, body := h.do(http.MethodGet, "/metrics", "Bearer "+token)
		if status != http.StatusInternalServerError || strings.TrimSpace(body) != "Authorization failed" {
			t.Errorf("without create on subjectaccessreviews: %d %q, want 500 Authorization failed", status, body)
		}
		h.reviews(1, int32(i+1))
	}
	if !strings.Contains(h.log.String(), "subjectaccessreviews.authorization.k8s.io is forbidden") {
		t.Errorf("the log does not say why authorization failed:\n%s", h.log.String())
	}
}

// A proxy in front of the API server may quote the request, and so the token, in
// its error page; client-go puts such a page into its error.
func TestTokenQuotedInAnErrorIsNotLogged(t *testing.T) {
	t.Parallel()
	_, _, token := serviceAccount(t)
	echo := func(r *http.Request) *http.Response {
		body, _ := io.ReadAll(r.Body)
		return &http.Response{
			StatusCode: http.StatusBadGateway,
			Header:     http.Header{"Content-Type": {"text/plain"}},
			Body:       io.NopCloser(bytes.NewReader(append([]byte("bad gateway for "), body...))),
			Request:    r,
		}
	}
	h := newHarness(t, admin, echo)
	status, body := h.do(http.MethodGet, "/metrics", "Bearer "+token)
	if status != http.StatusInternalServerError || strings.Contains(body, token) {
		t.Errorf("%d %q, want 500 without the token", status, body)
	}
	// Proof that the error did quote it, or this test would prove nothing.
	if !strings.Contains(h.log.String(), "[redacted]") {
		t.Errorf("the logged error does not have the token redacted:\n%s", h.log.String())
	}
	// newHarness's cleanup fails the test if the token is in the log.
}

func createClusterRole(t *testing.T, rules ...rbacv1.PolicyRule) *rbacv1.ClusterRole {
	t.Helper()
	role, err := rbac.ClusterRoles().Create(context.Background(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "metricsauth-test-"},
		Rules:      rules,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return role
}
