//go:build e2e

package e2e

// The operator deletes no token Secret when its DefenderTenant goes: it makes the
// tenant the Secret's controller owner and leaves the rest to Kubernetes' garbage
// collector, which runs in kube-controller-manager. These tests run a real one, built
// by hack/envtest-binaries.sh with kube-apiserver, in a sandbox of their own, so that
// "the token Secret goes when its DefenderTenant goes" is tested as a cluster does
// it: for background and foreground deletion, and for a tenant deleted while the
// operator is rewriting its Secret.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

const (
	gcNamespace = "partner"
	// gcTimeout bounds how long the garbage collector may take to remove a token
	// Secret. It acts within a second on an idle machine; the margin is for a loaded one.
	gcTimeout = 30 * time.Second
)

// gcSandbox is a sandbox running kube-controller-manager's garbage collector and an
// operator, with the credential Secret of the sandbox app in gcNamespace.
type gcSandbox struct {
	*sandbox
	op      *operator
	secrets kubernetes.Interface
	events  *secretEvents
}

func newGCSandbox(t *testing.T) *gcSandbox {
	t.Helper()
	s := newSandbox(t, "default")
	s.createNamespace(t, gcNamespace)
	createCredential(t, s.admin, gcNamespace, credentialSecret, sandboxClientSecret)

	// Started after newSandbox installed the CRD, so that the garbage collector's
	// first discovery already lists DefenderTenants.
	kcm, err := s.cluster.StartControllerManager(s.dir, localcluster.GarbageCollector)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kcm.Stop(); err != nil {
			t.Errorf("stopping kube-controller-manager: %v", err)
		}
		if t.Failed() {
			t.Logf("kube-controller-manager log (last lines):\n%s", controllerManagerLogTail(kcm.Log))
		}
	})
	ready := time.Now()
	if err := s.cluster.WaitForGarbageCollector(context.Background(), gcNamespace, gcTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("the garbage collector collected its first object %s after kube-controller-manager was healthy", time.Since(ready).Round(time.Millisecond))

	cs, err := kubernetes.NewForConfig(s.cluster.Admin)
	if err != nil {
		t.Fatal(err)
	}
	return &gcSandbox{sandbox: s, op: s.startOperator(t, "operator"), secrets: cs, events: watchTokenSecrets(t, cs)}
}

// controllerManagerLogTail is the end of kube-controller-manager's log without the
// line it writes at start for each controller it does not run.
func controllerManagerLogTail(path string) string {
	data, _ := os.ReadFile(path)
	lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(string(data)), "\n"), func(line string) bool {
		return strings.Contains(line, "controller is disabled")
	})
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// readyTenant creates a tenant whose credential Secret is credential, waits for it
// to be Ready and returns it with its token Secret.
func (g *gcSandbox) readyTenant(t *testing.T, name, id, credential string) (*v1alpha1.DefenderTenant, *corev1.Secret) {
	t.Helper()
	g.addConsentedTenant(id)
	tenant := newTenant(gcNamespace, name, id, grantedRoles...)
	tenant.Spec.ClientSecretRef.Name = credential
	if err := g.admin.Create(context.Background(), tenant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, name+" Ready", func() error { return readyError(g.admin, gcNamespace, name) }, g.op)
	if err := g.admin.Get(context.Background(), client.ObjectKeyFromObject(tenant), tenant); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := g.admin.Get(context.Background(), client.ObjectKey{Namespace: gcNamespace, Name: tenant.Status.TokenSecretName}, secret); err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(secret, tenant) {
		t.Fatalf("token Secret %s is not controlled by DefenderTenant %s: ownerReferences %s", secret.Name, name, mustJSON(secret.OwnerReferences))
	}
	return tenant, secret
}

// deleteTenant deletes a tenant as `kubectl delete` does, with the given
// propagation; nil is the default, background for a custom resource.
func (g *gcSandbox) deleteTenant(t *testing.T, tenant *v1alpha1.DefenderTenant, propagation *metav1.DeletionPropagation) {
	t.Helper()
	opts := []client.DeleteOption{client.Preconditions{UID: &tenant.UID}}
	if propagation != nil {
		opts = append(opts, client.PropagationPolicy(*propagation))
	}
	if err := g.admin.Delete(context.Background(), tenant, opts...); err != nil {
		t.Fatal(err)
	}
}

// waitForTenantAndSecretGone waits until neither the tenant nor any token Secret
// of it exists, and fails at once if the tenant is gone while a token Secret of it
// is still there in foreground deletion, which must remove the Secret first.
func (g *gcSandbox) waitForTenantAndSecretGone(t *testing.T, tenant *v1alpha1.DefenderTenant, foreground bool) {
	t.Helper()
	waitFor(t, gcTimeout, "DefenderTenant "+tenant.Name+" and its token Secret are deleted", func() error {
		// The tenant first: a Secret seen after it is gone was there after it went.
		err := g.admin.Get(context.Background(), client.ObjectKeyFromObject(tenant), &v1alpha1.DefenderTenant{})
		tenantGone := apierrors.IsNotFound(err)
		if err != nil && !tenantGone {
			return err
		}
		left := g.tokenSecretsOf(t, tenant.Name)
		switch {
		case tenantGone && len(left) > 0 && foreground:
			t.Fatalf("foreground deletion removed DefenderTenant %s before its token Secret %s", tenant.Name, left[0])
		case len(left) > 0:
			return fmt.Errorf("token Secret %s is still there", strings.Join(left, ", "))
		case !tenantGone:
			return fmt.Errorf("DefenderTenant %s is still there", tenant.Name)
		}
		return nil
	}, g.op)
}

// tokenSecretsOf returns the Secrets the operator labelled as published for the
// named tenant: whatever name and UID they have, any of them left behind is an orphan.
func (g *gcSandbox) tokenSecretsOf(t *testing.T, tenant string) []string {
	t.Helper()
	list := &corev1.SecretList{}
	if err := g.admin.List(context.Background(), list, client.InNamespace(gcNamespace),
		client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: tenant}); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(list.Items))
	for _, s := range list.Items {
		names = append(names, s.Name+" (uid "+string(s.UID)+")")
	}
	return names
}

func TestGarbageCollectorDeletesTheTokenSecretWithItsTenant(t *testing.T) {
	g := newGCSandbox(t)

	deleted := []string{"background", "foreground"}
	t.Run("background deletion", func(t *testing.T) {
		tenant, secret := g.readyTenant(t, "background", tenantID(1), credentialSecret)
		g.deleteTenant(t, tenant, nil)
		g.waitForTenantAndSecretGone(t, tenant, false)
		t.Logf("token Secret %s (uid %s) was collected with its tenant", secret.Name, secret.UID)
	})

	t.Run("foreground deletion removes the Secret before the tenant", func(t *testing.T) {
		tenant, _ := g.readyTenant(t, "foreground", tenantID(2), credentialSecret)
		g.deleteTenant(t, tenant, ptr.To(metav1.DeletePropagationForeground))
		g.waitForTenantAndSecretGone(t, tenant, true)
	})

	t.Run("deleted while its token Secret is rewritten", func(t *testing.T) {
		deleted = append(deleted, g.deletedWhileRewritten(t)...)
	})

	t.Run("no deleted tenant's Secret comes back and the operator does not keep failing", func(t *testing.T) {
		g.assertStaysGone(t, deleted)
	})
}

// rewrite makes the operator mint a new token for a Ready tenant and write it to
// its token Secret.
type rewrite struct {
	name    string
	trigger func(t *testing.T, g *gcSandbox, tenant *v1alpha1.DefenderTenant, credential string)
}

var rewrites = []rewrite{
	// The operator mints again and creates the Secret anew.
	{"token Secret deleted", func(t *testing.T, g *gcSandbox, tenant *v1alpha1.DefenderTenant, _ string) {
		t.Helper()
		if err := g.secrets.CoreV1().Secrets(gcNamespace).Delete(context.Background(), tenant.Status.TokenSecretName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}},
	// A rotated client secret is an input of the token: the operator mints with it and
	// updates the Secret in place.
	{"client secret rotated", func(t *testing.T, g *gcSandbox, tenant *v1alpha1.DefenderTenant, credential string) {
		t.Helper()
		rotated := "rotated-for-" + tenant.Name
		g.emu.AddApp(sandboxClientID, entraemu.Secret{Value: rotated})
		patch := []byte(`{"stringData":{"` + v1alpha1.DefaultClientSecretKey + `":"` + rotated + `"}}`)
		if _, err := g.secrets.CoreV1().Secrets(gcNamespace).Patch(context.Background(), credential, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}},
}

// deletedWhileRewritten deletes tenants while the operator is minting the token it
// is about to write to their Secret, so that its write lands after the deletion:
// a Secret it creates then belongs to an owner that is gone, one it updates may be
// gone already. Either way, the garbage collector must leave no token Secret, and the
// operator must neither write it again nor keep failing.
// It returns the names of the tenants it deleted.
func (g *gcSandbox) deletedWhileRewritten(t *testing.T) []string {
	var names []string
	round := 0
	for _, rw := range rewrites {
		for _, propagation := range []metav1.DeletionPropagation{metav1.DeletePropagationBackground, metav1.DeletePropagationForeground} {
			round++
			name := fmt.Sprintf("rewritten-%d", round)
			names = append(names, name)
			t.Run(rw.name+", "+string(propagation), func(t *testing.T) {
				id := tenantID(100 + round)
				credential := "credential-" + name
				createCredential(t, g.admin, gcNamespace, credential, sandboxClientSecret)
				tenant, _ := g.readyTenant(t, name, id, credential)

				// Entra ID holds the new token until the deletion has landed and the
				// garbage collector has acted on it.
				hold := make(chan struct{})
				release := sync.OnceFunc(func() { close(hold) })
				t.Cleanup(release)
				g.emu.InjectFailures(id, entraemu.Held(hold))
				before := g.emu.Requests(id)
				rw.trigger(t, g, tenant, credential)
				waitFor(t, 10*time.Second, "the operator asks Entra ID for "+name+"'s new token", func() error {
					if g.emu.Requests(id) == before {
						return fmt.Errorf("no new token request for %s", name)
					}
					return nil
				}, g.op)
				g.deleteTenant(t, tenant, &propagation)
				deleted := time.Now()
				g.waitForTenantAndSecretGone(t, tenant, propagation == metav1.DeletePropagationForeground)
				// Then Entra ID answers and the operator writes: with the Secret
				// collected already, an update finds nothing and a create is collected
				// again.
				release()
				g.waitForIdleOperator(t)
				g.waitForTenantAndSecretGone(t, tenant, false)
				t.Logf("token Secret events after the deletion: %s", g.events.since(deleted, name))
			})
		}
	}
	for _, name := range names {
		if errs := tenantErrors(g.op, name); len(errs) > 0 {
			t.Logf("%s: the operator logged %d error(s) about it, e.g. %s", name, len(errs), errs[0])
		}
	}
	return names
}

// assertStaysGone waits for the operator to finish what it was doing, has it
// reconcile every named (deleted) tenant once more and waits for that to finish
// too, then checks that meanwhile it wrote no token Secret of them, that none is
// left, and that it reported no reconcile error. A retry or a late event of such a
// tenant would only repeat that reconcile: the tenant is gone either way.
func (g *gcSandbox) assertStaysGone(t *testing.T, tenants []string) {
	t.Helper()
	g.waitForIdleOperator(t)
	quiet := time.Now()
	errorsBefore := g.op.metric(t, "controller_runtime_reconcile_errors_total", `controller="defendertenant"`)
	reconcilesBefore := g.op.metric(t, "controller_runtime_reconcile_total", `controller="defendertenant"`)
	logErrorsBefore := map[string]int{}
	for _, name := range tenants {
		logErrorsBefore[name] = len(tenantErrors(g.op, name))
	}
	for _, name := range tenants {
		g.requeueDeletedTenant(t, name)
	}
	// Every tenant of this sandbox is deleted: each reconcile counted is one of them.
	waitFor(t, gcTimeout, "the operator reconciles each deleted tenant once more", func() error {
		if n := g.op.metric(t, "controller_runtime_reconcile_total", `controller="defendertenant"`) - reconcilesBefore; n < float64(len(tenants)) {
			return fmt.Errorf("%v reconciles since the operator was idle, want at least %d", n, len(tenants))
		}
		return nil
	}, g.op)
	g.waitForIdleOperator(t)
	for _, name := range tenants {
		if writes := g.events.writesSince(quiet, name); len(writes) > 0 {
			t.Errorf("the operator wrote a token Secret of deleted DefenderTenant %s again: %s", name, strings.Join(writes, "; "))
		}
		if left := g.tokenSecretsOf(t, name); len(left) > 0 {
			t.Errorf("token Secret %s of deleted DefenderTenant %s is left", strings.Join(left, ", "), name)
		}
		if errs := tenantErrors(g.op, name); len(errs) != logErrorsBefore[name] {
			t.Errorf("the operator kept logging errors about deleted DefenderTenant %s:\n%s", name, strings.Join(errs[logErrorsBefore[name]:], "\n"))
		}
	}
	if after := g.op.metric(t, "controller_runtime_reconcile_errors_total", `controller="defendertenant"`); after != errorsBefore {
		t.Errorf("the operator failed %v more reconciles of its deleted tenants", after-errorsBefore)
	}
	select {
	case <-g.op.Done():
		t.Fatalf("the operator exited: %v", g.op.Err())
	default:
	}
}

// requeueDeletedTenant makes the operator reconcile a deleted tenant: a Secret
// that names the tenant as its controller, which the garbage collector deletes at
// once as its owner is gone, queues the tenant when it goes. It carries none of
// the operator's labels, so it is no token Secret to the checks.
func (g *gcSandbox) requeueDeletedTenant(t *testing.T, name string) {
	t.Helper()
	orphan := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Namespace: gcNamespace,
		Name:      name + "-orphan",
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: v1alpha1.GroupVersion.String(), Kind: "DefenderTenant",
			Name: name, UID: uuid.NewUUID(), Controller: ptr.To(true),
		}},
	}}
	if err := g.admin.Create(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	waitFor(t, gcTimeout, "the garbage collector deletes "+orphan.Name, func() error {
		err := g.admin.Get(context.Background(), client.ObjectKeyFromObject(orphan), &corev1.Secret{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return fmt.Errorf("secret %s is still there", orphan.Name)
		}
		return err
	}, g.op)
}

// waitForIdleOperator waits until the operator's DefenderTenant controller has no
// reconcile running or queued.
func (g *gcSandbox) waitForIdleOperator(t *testing.T) {
	t.Helper()
	g.op.waitForIdle(t)
}

// tenantErrors are the operator's error log lines that name the tenant.
func tenantErrors(op *operator, name string) []string {
	return slices.DeleteFunc(op.logLines(`"name":"`+name+`"`), func(line string) bool {
		return !strings.Contains(line, `"level":"error"`)
	})
}

// secretEvents records the watch events of the token Secrets of gcNamespace.
type secretEvents struct {
	mu  sync.Mutex
	got []secretEvent
}

type secretEvent struct {
	at     time.Time
	kind   watch.EventType
	tenant string
	name   string
	uid    types.UID
}

func (e secretEvent) String() string {
	return fmt.Sprintf("%s %s (uid %s)", e.kind, e.name, e.uid)
}

// watchTokenSecrets records the events of the Secrets the operator labels as
// published, until the test ends.
func watchTokenSecrets(t *testing.T, cs kubernetes.Interface) *secretEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wi, err := cs.CoreV1().Secrets(gcNamespace).Watch(ctx, metav1.ListOptions{
		LabelSelector: v1alpha1.LabelManagedBy + "=" + v1alpha1.ManagedByValue,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e := &secretEvents{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range wi.ResultChan() {
			if s, ok := ev.Object.(*corev1.Secret); ok {
				e.mu.Lock()
				e.got = append(e.got, secretEvent{at: time.Now(), kind: ev.Type, tenant: s.Labels[v1alpha1.LabelTenant], name: s.Name, uid: s.UID})
				e.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { wi.Stop(); cancel(); <-done })
	return e
}

// since describes the events of the tenant's token Secrets seen after t, for the
// test log.
func (e *secretEvents) since(t time.Time, tenant string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		if ev.tenant == tenant && ev.at.After(t) {
			out = append(out, fmt.Sprintf("+%s %s", ev.at.Sub(t).Round(time.Millisecond), ev))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// writesSince are the creations and updates of the tenant's token Secrets seen after t.
func (e *secretEvents) writesSince(t time.Time, tenant string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		if ev.tenant == tenant && ev.at.After(t) && (ev.kind == watch.Added || ev.kind == watch.Modified) {
			out = append(out, ev.String())
		}
	}
	return out
}
