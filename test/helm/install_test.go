package helm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

// notServed are the kinds whose CRDs (cert-manager's, the Prometheus Operator's)
// the test API server does not have: TestChartInstallsWhatConfigInstalls checks
// their content instead.
var notServed = []string{"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}

// install is one `helm install` of the chart into the test API server.
type install struct {
	release  Release
	valueSet string
	// What the release's ServiceAccount must and must not be allowed.
	allowed, denied []authorizationv1.ResourceAttributes
	// Where the admission policy must refuse a Secret the operator would never write.
	policyNamespace string
}

func secretsIn(ns, verb string) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "secrets"}
}

func tokensIn(ns string) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "serviceaccounts", Subresource: "token"}
}

func leasesIn(ns string) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases"}
}

// TestChartInstallsOnTheAPIServer applies what the chart renders, with the default,
// namespaced and every-value value sets, to a real kube-apiserver with server-side
// apply, which refuses unknown fields and invalid objects. Each release's
// ServiceAccount then has exactly the permissions its scope promises, and its
// admission policy refuses that ServiceAccount a Secret the operator never writes.
// The three releases share one API server, as they share the CRDs: their other
// objects must not collide.
func TestChartInstallsOnTheAPIServer(t *testing.T) {
	cluster, err := localcluster.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	admin, err := client.New(cluster.Admin, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("UnknownFieldsAreRefused", func(t *testing.T) {
		r := render(t, Release{Name: "refused", Namespace: "refused"}, "default")
		createNamespaces(t, admin, r.Objects, "")
		for _, u := range r.Objects {
			if u.GetKind() != kindDeployment {
				continue
			}
			u = u.DeepCopy()
			if err := unstructured.SetNestedField(u.Object, "1", "spec", "template", "spec", "replica"); err != nil {
				t.Fatal(err)
			}
			if err := apply(admin, u); err == nil || !strings.Contains(err.Error(), "replica") {
				t.Errorf("applying a Deployment with an unknown field: %v, want an error naming it", err)
			}
		}
	})

	for _, in := range []install{{
		release:  Release{Name: canonicalRelease, Namespace: defaultNamespace},
		valueSet: "default",
		allowed: []authorizationv1.ResourceAttributes{
			secretsIn("", "list"), secretsIn("partner", "create"), tokensIn(defaultNamespace), leasesIn(defaultNamespace),
		},
		denied:          []authorizationv1.ResourceAttributes{tokensIn("partner"), leasesIn("partner")},
		policyNamespace: "partner",
	}, {
		release:  Release{Name: "team", Namespace: "team-operator"},
		valueSet: "namespacedTwoNamespaces",
		allowed: []authorizationv1.ResourceAttributes{
			secretsIn(namespacedNamespace, "list"), secretsIn(namespacedNamespace, "create"), secretsIn("team-b", "watch"),
			leasesIn("team-operator"),
		},
		// It serves no ClusterDefenderApps, so it mints no ServiceAccount tokens.
		denied: []authorizationv1.ResourceAttributes{
			secretsIn("", "list"), secretsIn("partner", "get"), secretsIn("team-operator", "get"),
			tokensIn("team-operator"), tokensIn(namespacedNamespace),
		},
		policyNamespace: "team-b",
	}, {
		release:  Release{Name: "everything", Namespace: "dto-system"},
		valueSet: "everyValue",
		allowed:  []authorizationv1.ResourceAttributes{secretsIn("", "list"), tokensIn("partner-apps"), leasesIn("dto-system")},
		denied:   []authorizationv1.ResourceAttributes{tokensIn("dto-system"), tokensIn("partner")},
		// Its admission policy is the same template as the others'; one per scope is enough.
	}} {
		t.Run(in.valueSet, func(t *testing.T) {
			r := render(t, in.release, in.valueSet)
			createNamespaces(t, admin, r.All(), in.policyNamespace)
			for _, u := range r.All() {
				if slices.Contains(notServed, u.GetKind()) {
					continue
				}
				if err := apply(admin, u); err != nil {
					t.Errorf("applying %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
				}
			}
			if t.Failed() {
				return
			}
			user := serviceAccountUser(t, r)
			for _, attrs := range in.allowed {
				if !mayDo(t, admin, user, attrs) {
					t.Errorf("%s may not %s", user, describe(attrs))
				}
			}
			for _, attrs := range in.denied {
				if mayDo(t, admin, user, attrs) {
					t.Errorf("%s may %s", user, describe(attrs))
				}
			}
			if in.policyNamespace != "" {
				checkPolicyRefuses(t, cluster.Admin, user, in.policyNamespace)
			}
		})
	}
}

// createNamespaces creates the namespaces the objects go into, as
// `helm install --create-namespace` creates the release's and as the user creates
// the watched ones, and a namespace "partner" that no release serves, and more.
func createNamespaces(t *testing.T, c client.Client, objects []*unstructured.Unstructured, more string) {
	t.Helper()
	names := []string{"partner"}
	if more != "" && more != "partner" {
		names = append(names, more)
	}
	for _, u := range objects {
		if ns := u.GetNamespace(); ns != "" && !slices.Contains(names, ns) {
			names = append(names, ns)
		}
	}
	for _, ns := range names {
		err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

func apply(c client.Client, u *unstructured.Unstructured) error {
	return c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
		client.FieldOwner("helm"), client.ForceOwnership)
}

// serviceAccountUser is the user name of the rendered Deployment's ServiceAccount.
func serviceAccountUser(t *testing.T, r *Rendered) string {
	t.Helper()
	for _, u := range r.Objects {
		if u.GetKind() == kindDeployment {
			sa, _, _ := unstructured.NestedString(u.Object, "spec", "template", "spec", "serviceAccountName")
			return "system:serviceaccount:" + u.GetNamespace() + ":" + sa
		}
	}
	t.Fatal("the chart renders no Deployment")
	return ""
}

func mayDo(t *testing.T, c client.Client, user string, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	if err := c.Create(context.Background(), review); err != nil {
		t.Fatal(err)
	}
	return review.Status.Allowed
}

func describe(a authorizationv1.ResourceAttributes) string {
	resource := a.Resource
	if a.Subresource != "" {
		resource += "/" + a.Subresource
	}
	where := "in every namespace"
	if a.Namespace != "" {
		where = "in " + a.Namespace
	}
	return fmt.Sprintf("%s %s %s", a.Verb, resource, where)
}

// checkPolicyRefuses creates, as the operator's ServiceAccount, an Opaque Secret
// without the operator's label, which its RBAC allows: the release's admission
// policy must refuse it. The API server takes a moment to start enforcing a new
// policy, so a Secret created before then is deleted and the create retried.
func checkPolicyRefuses(t *testing.T, adminConfig *rest.Config, user, ns string) {
	t.Helper()
	cfg := rest.CopyConfig(adminConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	operator, err := client.New(cfg, client.Options{Scheme: runtime.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(adminConfig, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		secret := &unstructured.Unstructured{}
		secret.SetAPIVersion("v1")
		secret.SetKind("Secret")
		secret.SetNamespace(ns)
		secret.SetName("not-a-token-secret")
		secret.Object["type"] = "Opaque"
		err := operator.Create(context.Background(), secret)
		switch {
		case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "may write only Secrets labelled"):
			return
		case err != nil:
			t.Fatalf("creating an unlabelled Secret in %s as %s: %v, want the admission policy's refusal", ns, user, err)
		}
		if err := admin.Delete(context.Background(), secret); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s could still create an unlabelled Secret in %s 30s after the admission policy was installed", user, ns)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
