//go:build e2e

package e2e

// Privilege boundaries: what the operator's own identity may read in a
// namespace-scoped install, and what a user who may only edit DefenderTenants can
// get the operator to do for her.

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// namespacedInstallNamespace is where config/namespaced installs the operator and
// where it serves DefenderTenants.
const namespacedInstallNamespace = "defender-tenants"

// TestNamespacedInstallCannotReadSecretsInOtherNamespaces installs config/namespaced
// (its Role, RoleBinding and ServiceAccount, no ClusterRole for Secrets) and runs the
// manager as that ServiceAccount with the rendered Deployment's arguments, which
// restrict it to its namespace. A DefenderTenant there becomes Ready; the
// ServiceAccount can neither get a Secret of another namespace nor list Secrets
// cluster-wide; the operator leaves a DefenderTenant in another namespace alone;
// and it never hits a permission it lacks, which a cluster-wide informer would.
func TestNamespacedInstallCannotReadSecretsInOtherNamespaces(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, "namespaced")
	ns := s.operatorNamespace
	if ns != namespacedInstallNamespace {
		t.Fatalf("config/namespaced deploys the manager into %q, want %q", ns, namespacedInstallNamespace)
	}
	if !slices.Contains(s.deploymentArgs, "--watch-namespaces="+ns) {
		t.Fatalf("the rendered Deployment does not restrict the manager to %s: args %q", ns, s.deploymentArgs)
	}
	ctx := context.Background()
	const other = "other-team"
	s.createNamespace(t, other)
	createCredential(t, s.admin, other, credentialSecret, sandboxClientSecret)
	createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	op := s.startOperator(t, "operator")

	// The one elsewhere first: an operator that watched every namespace would take
	// it in before the one here.
	s.addConsentedTenant(tenantID(1))
	s.createTenant(t, other, "elsewhere", tenantID(1))
	s.addConsentedTenant(tenantID(0))
	s.createTenant(t, ns, "contoso", tenantID(0))
	waitFor(t, 30*time.Second, "the DefenderTenant in "+ns+" is Ready", func() error { return readyError(s.admin, ns, "contoso") }, op)
	secret := &corev1.Secret{}
	if err := s.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "contoso-token"}, secret); err != nil {
		t.Fatal(err)
	}
	if err := checkTokenSecret(secret, s.signingKeys(t), tenantID(0)); err != nil {
		t.Error(err)
	}

	sa, err := kubernetes.NewForConfig(s.operatorConfig)
	if err != nil {
		t.Fatal(err)
	}
	// What it needs works, so the denials below are about scope, not a broken token.
	if _, err := sa.CoreV1().Secrets(ns).Get(ctx, credentialSecret, metav1.GetOptions{}); err != nil {
		t.Errorf("the ServiceAccount cannot get the credential Secret in its own namespace: %v", err)
	}
	if _, err := sa.CoreV1().Secrets(other).Get(ctx, credentialSecret, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("GET Secret %s/%s as the ServiceAccount: %v, want Forbidden", other, credentialSecret, err)
	}
	if _, err := sa.CoreV1().Secrets(other).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("LIST Secrets in %s as the ServiceAccount: %v, want Forbidden", other, err)
	}
	if _, err := sa.CoreV1().Secrets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("LIST Secrets cluster-wide as the ServiceAccount: %v, want Forbidden", err)
	}

	// An operator that watched every namespace got the one elsewhere from the same
	// informer before the one here, which it has served: once it is idle, it has
	// finished with both.
	op.waitForIdle(t)
	elsewhere := &v1alpha1.DefenderTenant{}
	if err := s.admin.Get(ctx, client.ObjectKey{Namespace: other, Name: "elsewhere"}, elsewhere); err != nil {
		t.Fatal(err)
	}
	if len(elsewhere.Status.Conditions) > 0 || elsewhere.Status.ObservedGeneration != 0 {
		t.Errorf("the operator wrote the status of a DefenderTenant outside %s: %s", ns, mustJSON(elsewhere.Status))
	}
	expectNothingServedIn(t, s, op, other, tenantID(1))
}

// expectNothingServedIn: a namespaced operator requested no token for the tenant of
// a namespace it does not watch, published no token Secret there, and was denied
// nothing it tried (it never tried to reach beyond its namespaces).
func expectNothingServedIn(t *testing.T, s *sandbox, op *operator, other, tenant string) {
	t.Helper()
	if got := s.emu.Requests(tenant); got != 0 {
		t.Errorf("%d token requests for the DefenderTenant in %s, want 0", got, other)
	}
	if leaked := tokenSecrets(t, s.admin, other); len(leaked) > 0 {
		t.Errorf("token Secrets published in %s: %v", other, slices.Sorted(maps.Keys(leaked)))
	}
	if denials := op.logLines("forbidden"); len(denials) > 0 {
		t.Errorf("the namespaced install was denied something it tried:\n%s", strings.Join(denials, "\n"))
	}
}

// TestTenantEditorObtainsNoSecretThroughTheOperator binds the rendered
// defendertenant-editor-role to a user, alice, in one namespace, and checks that
// what she can have the operator do gives her nothing she could not read before:
// her DefenderTenant becomes Ready but she cannot read its token Secret or the
// credential; she cannot reference a Secret of another namespace; requiring roles
// the tenant did not consent yields no token; and she cannot get the operator to
// overwrite a Secret she cannot read. It runs in TestMain's world, against the
// cluster-wide operator and the emulator of cmd/entra-emulator/demo.yaml.
func TestTenantEditorObtainsNoSecretThroughTheOperator(t *testing.T) {
	t.Parallel()
	e := newEditorWorld(t)
	t.Run("TenantServedButItsSecretsOutOfReach", e.tenantServedButItsSecretsOutOfReach)
	t.Run("NoSecretOfAnotherNamespace", e.noSecretOfAnotherNamespace)
	t.Run("UnconsentedRolesYieldNoToken", e.unconsentedRolesYieldNoToken)
	t.Run("NoOverwriteOfASecretSheCannotRead", e.noOverwriteOfASecretSheCannotRead)
}

// editorWorld is alice's namespace, with the credential her tenants reference, a
// Secret that is not hers, and the victim namespace next door.
type editorWorld struct {
	ns, victimNS string
	alice        client.Client
	warnings     *warningRecorder // what the API server told alice
	contoso      v1alpha1.DefenderTenantSpec
}

func newEditorWorld(t *testing.T) *editorWorld {
	t.Helper()
	ctx := context.Background()
	// Unique names, so that the test can run again (-count) in the same world.
	run := editorRuns.Add(1)
	ns, victimNS := fmt.Sprintf("alice-team-%d", run), fmt.Sprintf("victim-team-%d", run)
	for _, name := range []string{ns, victimNS} {
		if err := w.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	// The platform team puts the app's credential where alice's tenants reference it.
	createCredential(t, w.admin, ns, credentialSecret, w.clientSecret)
	createCredential(t, w.admin, victimNS, "victim-app", w.clientSecret)
	precious := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "precious", Labels: map[string]string{"owner": "someone-else"}},
		StringData: map[string]string{"password": "not-for-alice"},
	}
	if err := w.admin.Create(ctx, precious); err != nil {
		t.Fatal(err)
	}

	editorRole := renderedClusterRole(t, "defendertenant-editor-role")
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-edits-defendertenants"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: editorRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}},
	}
	if err := w.admin.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	adminConfig, err := clientcmd.BuildConfigFromFlags("", w.adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	aliceConfig := rest.CopyConfig(adminConfig)
	aliceConfig.Impersonate = rest.ImpersonationConfig{UserName: "alice"}
	warnings := &warningRecorder{}
	aliceConfig.WarningHandler = warnings
	alice, err := newClient(aliceConfig)
	if err != nil {
		t.Fatal(err)
	}
	// RBAC takes effect as soon as the binding is in the API server's cache.
	waitFor(t, 10*time.Second, "alice may list DefenderTenants in "+ns, func() error {
		return alice.List(ctx, &v1alpha1.DefenderTenantList{}, client.InNamespace(ns))
	})

	// The tenant, app and resource that the sample contoso uses, consented with every role.
	return &editorWorld{ns: ns, victimNS: victimNS, alice: alice, warnings: warnings, contoso: getTenant(t, "contoso").Spec}
}

// tenant is a DefenderTenant of alice's for contoso's tenant and app.
func (e *editorWorld) tenant(name string, roles ...string) *v1alpha1.DefenderTenant {
	return &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec: v1alpha1.DefenderTenantSpec{
			TenantID:        e.contoso.TenantID,
			ClientID:        e.contoso.ClientID,
			ClientSecretRef: v1alpha1.ClientSecretReference{Name: credentialSecret},
			Resource:        e.contoso.Resource,
			RequiredRoles:   roles,
		},
	}
}

func (e *editorWorld) tenantServedButItsSecretsOutOfReach(t *testing.T) {
	ctx := context.Background()
	if err := e.alice.Create(ctx, e.tenant("ours", e.contoso.RequiredRoles...)); err != nil {
		t.Fatalf("alice cannot create a DefenderTenant: %v", err)
	}
	eventually(t, "alice's tenant is Ready", func() error { return readyError(w.admin, e.ns, "ours") })
	for _, key := range []client.ObjectKey{
		{Namespace: e.ns, Name: "ours-token"},
		{Namespace: e.ns, Name: credentialSecret},
		{Namespace: e.victimNS, Name: "victim-app"},
	} {
		if err := e.alice.Get(ctx, key, &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("alice GET Secret %s: %v, want Forbidden", key, err)
		}
	}
	if err := e.alice.List(ctx, &corev1.SecretList{}, client.InNamespace(e.ns)); !apierrors.IsForbidden(err) {
		t.Errorf("alice LIST Secrets in %s: %v, want Forbidden", e.ns, err)
	}
	// What she can read of her tenant carries no token either.
	ours := &v1alpha1.DefenderTenant{}
	if err := e.alice.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "ours"}, ours); err != nil {
		t.Fatal(err)
	}
	if text := mustJSON(ours); jwtPattern.MatchString(text) || strings.Contains(text, w.clientSecret) {
		t.Error("the DefenderTenant alice can read contains a token or the client secret")
	}
}

func (e *editorWorld) noSecretOfAnotherNamespace(t *testing.T) {
	ctx := context.Background()
	crossNS := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "DefenderTenant",
		"metadata":   map[string]any{"namespace": e.ns, "name": "cross-ns"},
		"spec": map[string]any{
			"tenantID":        e.contoso.TenantID,
			"clientID":        e.contoso.ClientID,
			"clientSecretRef": map[string]any{"name": "victim-app", "namespace": e.victimNS},
		},
	}}
	// kubectl create and apply validate strictly by default since 1.27: rejected.
	err := e.alice.Create(ctx, crossNS.DeepCopy(), client.FieldValidation(metav1.FieldValidationStrict))
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), `unknown field "spec.clientSecretRef.namespace"`) {
		t.Fatalf("creating a DefenderTenant with clientSecretRef.namespace, strict field validation: %v, want BadRequest for the unknown field", err)
	}
	// Clients that do not ask for strict validation get a warning, and the field
	// is pruned: the reference is to a Secret of the tenant's own namespace.
	e.warnings.reset()
	if err := e.alice.Create(ctx, crossNS.DeepCopy()); err != nil {
		t.Fatalf("creating a DefenderTenant with clientSecretRef.namespace, default field validation: %v", err)
	}
	if got := e.warnings.all(); !slices.ContainsFunc(got, func(w string) bool { return strings.Contains(w, `unknown field "spec.clientSecretRef.namespace"`) }) {
		t.Errorf("warnings %q, want one about the unknown field spec.clientSecretRef.namespace", got)
	}
	stored := &unstructured.Unstructured{}
	stored.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("DefenderTenant"))
	if err := e.alice.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "cross-ns"}, stored); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(stored.Object, "spec", "clientSecretRef", "namespace"); found {
		t.Error("the API server stored spec.clientSecretRef.namespace")
	}
	eventually(t, "cross-ns is Stalled with CredentialsNotFound", func() error {
		return conditionError(w.admin, e.ns, "cross-ns", metav1.ConditionFalse, v1alpha1.ReasonCredentialsNotFound)
	})
	assertNoSecret(t, e.ns, "cross-ns-token")
	if got := tokenSecrets(t, w.admin, e.victimNS); len(got) > 0 {
		t.Errorf("token Secrets appeared in %s: %v", e.victimNS, slices.Sorted(maps.Keys(got)))
	}
}

func (e *editorWorld) unconsentedRolesYieldNoToken(t *testing.T) {
	ctx := context.Background()
	const extra = "Machine.Isolate"
	if err := e.alice.Create(ctx, e.tenant("greedy", append(slices.Clone(e.contoso.RequiredRoles), extra)...)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "greedy is Stalled with MissingRoles", func() error {
		return conditionError(w.admin, e.ns, "greedy", metav1.ConditionFalse, v1alpha1.ReasonMissingRoles)
	})
	greedy := &v1alpha1.DefenderTenant{}
	if err := w.admin.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "greedy"}, greedy); err != nil {
		t.Fatal(err)
	}
	if got := greedy.Status.MissingRoles; !slices.Equal(got, []string{extra}) {
		t.Errorf("status.missingRoles = %q, want [%s]", got, extra)
	}
	assertNoSecret(t, e.ns, "greedy-token")
	for name, secret := range tokenSecrets(t, w.admin, e.ns) {
		if roles := unverifiedRoles(t, string(secret.Data[v1alpha1.TokenSecretKeyAccessToken])); slices.Contains(roles, extra) {
			t.Errorf("Secret %s holds a token with %s", name, extra)
		}
	}
}

func (e *editorWorld) noOverwriteOfASecretSheCannotRead(t *testing.T) {
	ctx := context.Background()
	for _, target := range []string{"precious", credentialSecret} {
		before := &corev1.Secret{}
		if err := w.admin.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: target}, before); err != nil {
			t.Fatal(err)
		}
		name := "grab-" + target
		grab := e.tenant(name, e.contoso.RequiredRoles...)
		grab.Spec.TokenSecretName = target
		if err := e.alice.Create(ctx, grab); err != nil {
			t.Fatal(err)
		}
		eventually(t, name+" is Stalled with SecretConflict", func() error {
			return conditionError(w.admin, e.ns, name, metav1.ConditionFalse, v1alpha1.ReasonSecretConflict)
		})
		after := &corev1.Secret{}
		if err := w.admin.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: target}, after); err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion || !reflect.DeepEqual(after.Data, before.Data) ||
			!reflect.DeepEqual(after.Labels, before.Labels) || !reflect.DeepEqual(after.Annotations, before.Annotations) ||
			len(after.OwnerReferences) != len(before.OwnerReferences) {
			t.Errorf("Secret %s was modified: before %s, after %s", target, mustJSON(before.ObjectMeta), mustJSON(after.ObjectMeta))
		}
	}
	// The credential is intact: alice's first tenant is still served.
	eventually(t, "alice's first tenant is still Ready", func() error { return readyError(w.admin, e.ns, "ours") })
}

var editorRuns atomic.Int32

// renderedClusterRole returns the name under which config/default installs the
// ClusterRole that config/rbac names base.
func renderedClusterRole(t *testing.T, base string) string {
	t.Helper()
	r, err := renderOverlay("default")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range r.objects {
		if u.GetKind() == "ClusterRole" && strings.HasSuffix(u.GetName(), base) {
			role := &rbacv1.ClusterRole{}
			if err := w.admin.Get(context.Background(), client.ObjectKey{Name: u.GetName()}, role); err != nil {
				t.Fatalf("ClusterRole %s, rendered from config/default, is not installed: %v", u.GetName(), err)
			}
			return u.GetName()
		}
	}
	t.Fatalf("config/default renders no ClusterRole %s", base)
	return ""
}

func assertNoSecret(t *testing.T, ns, name string) {
	t.Helper()
	err := w.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("Secret %s/%s: %v, want NotFound", ns, name, err)
	}
}

// unverifiedRoles reads the roles claim of a JWT without checking its signature.
func unverifiedRoles(t *testing.T, raw string) []string {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("a token Secret holds no JWT: %v", err)
	}
	var c tokenClaims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c.Roles
}

// warningRecorder keeps the warnings the API server sends.
type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (r *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warnings = append(r.warnings, text)
}

func (r *warningRecorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warnings = nil
}

func (r *warningRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.warnings)
}
