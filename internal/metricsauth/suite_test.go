package metricsauth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
	rbacclient "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// scrapers is the namespace of the tests' ServiceAccounts.
const scrapers = "scrapers"

var (
	admin *rest.Config // system:masters
	core  coreclient.CoreV1Interface
	rbac  rbacclient.RbacV1Interface
	authz authzclient.AuthorizationV1Interface
	// metricsReader is config/rbac/metrics_reader_role.yaml, as installed: the tests
	// grant exactly what the project tells users to bind to their scraper.
	metricsReader *rbacv1.ClusterRole
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds kube-apiserver and etcd once.")
		return 1
	}
	// envtest's kube-apiserver enforces RBAC and signs ServiceAccount tokens, so
	// TokenReviews and SubjectAccessReviews get real answers.
	env := &envtest.Environment{}
	var err error
	if admin, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting the test control plane:", err)
		_ = env.Stop() // envtest leaves a half-started etcd or kube-apiserver running otherwise
		return 1
	}
	defer func() { _ = env.Stop() }()
	if err := setUp(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func setUp() error {
	var err error
	if core, err = coreclient.NewForConfig(admin); err != nil {
		return err
	}
	if rbac, err = rbacclient.NewForConfig(admin); err != nil {
		return err
	}
	if authz, err = authzclient.NewForConfig(admin); err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scrapers}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "metrics_reader_role.yaml"))
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		return fmt.Errorf("config/rbac/metrics_reader_role.yaml: %w", err)
	}
	metricsReader, err = rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	return err
}

// harness serves a handler behind a filter of its own, with its own caches, fake
// clock and counts of the reviews the filter asked the API server for.
type harness struct {
	t     *testing.T
	clock *clocktesting.FakeClock
	url   string

	tokenReviews, accessReviews atomic.Int32
	served                      atomic.Int32 // requests that reached the handler

	log    syncBuffer
	tokens []string // every token sent, which the log must never contain
}

// newHarness builds the filter as the operator does, authenticating to the API
// server as identity (the operator's ServiceAccount, here admin unless a test
// needs less). Responses of the API server can be replaced with respond, for
// tests of what a proxy might answer.
func newHarness(t *testing.T, identity *rest.Config, respond func(*http.Request) *http.Response) *harness {
	t.Helper()
	h := &harness{t: t, clock: clocktesting.NewFakeClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))}
	httpClient, err := rest.HTTPClientFor(identity)
	if err != nil {
		t.Fatal(err)
	}
	httpClient.Transport = &counter{h: h, next: httpClient.Transport, respond: respond}
	filter, err := newFilter(identity, httpClient, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	log := funcr.New(func(prefix, args string) { h.log.WriteString(prefix + " " + args + "\n") }, funcr.Options{Verbosity: 10})
	handler, err := filter(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.served.Add(1)
		if r.Header.Get("Authorization") != "" {
			t.Error("the handler behind the filter got the Authorization header")
		}
		_, _ = io.WriteString(w, "up 1\n")
	}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	h.url = srv.URL
	t.Cleanup(func() {
		for _, token := range h.tokens {
			if strings.Contains(h.log.String(), token) {
				t.Error("the filter logged a token")
			}
		}
	})
	return h
}

// do sends a request with "Authorization: <authorization>" unless it is empty, and
// returns the status and body.
func (h *harness) do(method, path, authorization string) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
		if f := strings.Fields(authorization); len(f) > 1 {
			h.tokens = append(h.tokens, f[len(f)-1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// get scrapes /metrics with a bearer token and checks the status.
func (h *harness) get(token string, want int) string {
	h.t.Helper()
	status, body := h.do(http.MethodGet, "/metrics", "Bearer "+token)
	if status != want {
		h.t.Fatalf("GET /metrics: %d %q, want %d", status, body, want)
	}
	return body
}

// reviews checks how many TokenReviews and SubjectAccessReviews the filter has
// created so far.
func (h *harness) reviews(tokenReviews, accessReviews int32) {
	h.t.Helper()
	if got := h.tokenReviews.Load(); got != tokenReviews {
		h.t.Errorf("%d TokenReviews, want %d", got, tokenReviews)
	}
	if got := h.accessReviews.Load(); got != accessReviews {
		h.t.Errorf("%d SubjectAccessReviews, want %d", got, accessReviews)
	}
}

type counter struct {
	h       *harness
	next    http.RoundTripper
	respond func(*http.Request) *http.Response
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/tokenreviews"):
		c.h.tokenReviews.Add(1)
	case strings.HasSuffix(r.URL.Path, "/subjectaccessreviews"):
		c.h.accessReviews.Add(1)
	}
	if c.respond != nil {
		if resp := c.respond(r); resp != nil {
			return resp, nil
		}
	}
	return c.next.RoundTrip(r)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serviceAccount creates a ServiceAccount and returns its user name and a token
// the API server issued for it.
func serviceAccount(t *testing.T) (sa *corev1.ServiceAccount, user, token string) {
	t.Helper()
	ctx := context.Background()
	sa, err := core.ServiceAccounts(scrapers).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{GenerateName: "scraper-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := core.ServiceAccounts(scrapers).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sa, "system:serviceaccount:" + scrapers + ":" + sa.Name, tr.Status.Token
}

// identityOf is a client configuration that authenticates as sa.
func identityOf(t *testing.T, sa *corev1.ServiceAccount) *rest.Config {
	t.Helper()
	tr, err := core.ServiceAccounts(sa.Namespace).CreateToken(context.Background(), sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: admin.Host, TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData}, BearerToken: tr.Status.Token}
}

// bind binds role to sa and waits until the API server's authorizer sees it, so
// that a test's next step does not race RBAC's informers. The returned function
// removes the binding, and waits for that too.
func bind(t *testing.T, sa *corev1.ServiceAccount, role *rbacv1.ClusterRole) (unbind func()) {
	t.Helper()
	ctx := context.Background()
	b, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: sa.Name + "-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: sa.Namespace, Name: sa.Name}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rule := role.Rules[0]
	waitForAccess(t, sa, rule, true)
	return func() {
		t.Helper()
		if err := rbac.ClusterRoleBindings().Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForAccess(t, sa, rule, false)
	}
}

func waitForAccess(t *testing.T, sa *corev1.ServiceAccount, rule rbacv1.PolicyRule, allowed bool) {
	t.Helper()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace, "system:authenticated"},
	}}
	if len(rule.NonResourceURLs) > 0 {
		review.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: rule.NonResourceURLs[0], Verb: rule.Verbs[0]}
	} else {
		review.Spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Group: rule.APIGroups[0], Resource: rule.Resources[0], Verb: rule.Verbs[0]}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := authz.SubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed == allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RBAC still says allowed=%t for %s after 10s", got.Status.Allowed, review.Spec.User)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
