package kubectldefender

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// listChunk is how many tenants one list request returns: a fleet of thousands is
// read in pages, as kubectl get does, instead of in one large response.
const listChunk = 500

// appFilter is --app KIND/NAME: the tenants whose spec.appRef names that app.
type appFilter struct {
	kind v1alpha1.AppKind
	name string
}

// parseAppFilter reads KIND/NAME, where KIND is DefenderApp or ClusterDefenderApp
// (any case, or the short names dapp and cdapp); a NAME alone is a DefenderApp, as
// in spec.appRef.
func parseAppFilter(value string) (*appFilter, error) {
	if value == "" {
		return nil, nil
	}
	kind, name, found := strings.Cut(value, "/")
	if !found {
		kind, name = string(v1alpha1.AppKindDefenderApp), value
	}
	f := &appFilter{name: name}
	switch strings.ToLower(kind) {
	case "defenderapp", "defenderapps", "dapp":
		f.kind = v1alpha1.AppKindDefenderApp
	case "clusterdefenderapp", "clusterdefenderapps", "cdapp":
		f.kind = v1alpha1.AppKindClusterDefenderApp
	default:
		return nil, fmt.Errorf("--app %q: the kind must be DefenderApp or ClusterDefenderApp, as in --app ClusterDefenderApp/partner", value)
	}
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("--app %q: want KIND/NAME, as in --app ClusterDefenderApp/partner", value)
	}
	return f, nil
}

func (f *appFilter) matches(tenant *v1alpha1.DefenderTenant) bool {
	if f == nil {
		return true
	}
	ref := tenant.Spec.AppRef
	return ref != nil && ref.KindOrDefault() == f.kind && ref.Name == f.name
}

// listTenants lists the tenants of s that f matches, sorted by namespace and name.
func listTenants(ctx context.Context, c client.Reader, s scope, f *appFilter) ([]v1alpha1.DefenderTenant, error) {
	var tenants []v1alpha1.DefenderTenant
	opts := append(s.listOptions(), client.Limit(listChunk))
	for {
		var page v1alpha1.DefenderTenantList
		if err := c.List(ctx, &page, opts...); err != nil {
			return nil, fmt.Errorf("listing DefenderTenants %s: %w", s.where(), err)
		}
		for i := range page.Items {
			if f.matches(&page.Items[i]) {
				tenants = append(tenants, page.Items[i])
			}
		}
		if page.Continue == "" {
			break
		}
		opts = append(s.listOptions(), client.Limit(listChunk), client.Continue(page.Continue))
	}
	sortTenants(tenants)
	return tenants, nil
}

// selection is what a fleet command works on: the tenants of one namespace, or of
// every namespace with -A, that --app names, and the client that read them.
type selection struct {
	client  client.Client
	scope   scope
	tenants []v1alpha1.DefenderTenant
}

// selectTenants reads the tenants of the scope that --app names, checking the
// flags before anything reaches the API server.
func (o *rootOptions) selectTenants(ctx context.Context, allNamespaces bool, app string) (selection, error) {
	filter, err := parseAppFilter(app)
	if err != nil {
		return selection{}, err
	}
	s, err := o.scope(allNamespaces)
	if err != nil {
		return selection{}, err
	}
	c, err := o.client()
	if err != nil {
		return selection{}, err
	}
	tenants, err := listTenants(ctx, c, s, filter)
	if err != nil {
		return selection{}, err
	}
	return selection{client: c, scope: s, tenants: tenants}, nil
}

// getTenant reads one tenant by name, with a one-line error when it does not exist.
func getTenant(ctx context.Context, c client.Reader, namespace, name string) (*v1alpha1.DefenderTenant, error) {
	var tenant v1alpha1.DefenderTenant
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &tenant); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("DefenderTenant %q not found in namespace %q", name, namespace)
		}
		return nil, fmt.Errorf("reading DefenderTenant %s/%s: %w", namespace, name, err)
	}
	return &tenant, nil
}

func sortTenants(tenants []v1alpha1.DefenderTenant) {
	slices.SortFunc(tenants, func(a, b v1alpha1.DefenderTenant) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// readyCondition is the tenant's Ready condition, nil before the operator wrote one.
func readyCondition(tenant *v1alpha1.DefenderTenant) *metav1.Condition {
	return meta.FindStatusCondition(tenant.Status.Conditions, v1alpha1.ConditionReady)
}

func readyStatus(tenant *v1alpha1.DefenderTenant) string {
	if c := readyCondition(tenant); c != nil {
		return string(c.Status)
	}
	return string(metav1.ConditionUnknown)
}

func readyReason(tenant *v1alpha1.DefenderTenant) string {
	if c := readyCondition(tenant); c != nil {
		return c.Reason
	}
	return ""
}

func isReady(tenant *v1alpha1.DefenderTenant) bool {
	return meta.IsStatusConditionTrue(tenant.Status.Conditions, v1alpha1.ConditionReady)
}

// appName is how the tenant's app reads in a table: KIND/NAME, or "inline" for
// the inline clientID and clientSecretRef.
func appName(tenant *v1alpha1.DefenderTenant) string {
	if ref := tenant.Spec.AppRef; ref != nil {
		return string(ref.KindOrDefault()) + "/" + ref.Name
	}
	return "inline"
}

// target is the cloud and effective resource a tenant's token is for.
type target struct {
	cloud v1alpha1.Cloud
	// resource is spec.resource, or the cloud's default when that is empty.
	resource string
	// known is false when the cloud is the app's and the app could not be read,
	// so that the default resource is unknown; err says why.
	known bool
	err   error
}

// apps reads the apps tenants use, each once, to know their cloud.
type apps struct {
	reader  client.Reader
	results map[v1alpha1.AppReference]appResult
}

type appResult struct {
	spec *v1alpha1.AppSpec
	err  error
}

func newApps(reader client.Reader) *apps {
	return &apps{reader: reader, results: map[v1alpha1.AppReference]appResult{}}
}

// app reads the app tenant refers to. DefenderApps of the same name in two
// namespaces are two apps: their cache key carries the namespace.
func (a *apps) app(ctx context.Context, tenant *v1alpha1.DefenderTenant) (*v1alpha1.AppSpec, error) {
	ref := tenant.Spec.AppRef
	kind := ref.KindOrDefault()
	key := v1alpha1.AppReference{Kind: kind, Name: ref.Name}
	if kind == v1alpha1.AppKindDefenderApp {
		key.Name = tenant.Namespace + "/" + ref.Name
	}
	if r, ok := a.results[key]; ok {
		return r.spec, r.err
	}
	var r appResult
	switch kind {
	case v1alpha1.AppKindClusterDefenderApp:
		var app v1alpha1.ClusterDefenderApp
		if err := a.reader.Get(ctx, client.ObjectKey{Name: ref.Name}, &app); err != nil {
			r.err = fmt.Errorf("reading ClusterDefenderApp %q: %w", ref.Name, err)
		} else {
			r.spec = &app.Spec.AppSpec
		}
	default:
		var app v1alpha1.DefenderApp
		if err := a.reader.Get(ctx, client.ObjectKey{Namespace: tenant.Namespace, Name: ref.Name}, &app); err != nil {
			r.err = fmt.Errorf("reading DefenderApp %s/%s: %w", tenant.Namespace, ref.Name, err)
		} else {
			r.spec = &app.Spec.AppSpec
		}
	}
	a.results[key] = r
	return r.spec, r.err
}

// target is the tenant's cloud (its own, or its app's) and effective resource.
func (a *apps) target(ctx context.Context, tenant *v1alpha1.DefenderTenant) target {
	t := target{cloud: tenant.CloudOrDefault(), resource: tenant.Spec.Resource, known: true}
	if tenant.UsesApp() {
		spec, err := a.app(ctx, tenant)
		if err != nil {
			t.cloud, t.known, t.err = "", tenant.Spec.Resource != "", err
		} else {
			t.cloud = spec.CloudOrDefault()
		}
	}
	if t.resource == "" && t.known {
		t.resource = entra.DefaultResource(t.cloud)
	}
	return t
}

// retiresAt is when the tenant's effective resource stops working. When the
// resource is unknown (its app cannot be read), the operator's
// status.resourceRetiresAt says.
func (t target) retiresAt(tenant *v1alpha1.DefenderTenant) (time.Time, bool) {
	if t.known {
		return entra.RetiresAt(t.resource)
	}
	if at := tenant.Status.ResourceRetiresAt; at != nil {
		return at.UTC(), true
	}
	return time.Time{}, false
}

// printObjects prints tenants as kubectl get -o json|yaml does: one object as
// itself, several as a List, without managedFields.
func printObjects(out io.Writer, format string, tenants []v1alpha1.DefenderTenant, single bool) error {
	var printer printers.ResourcePrinter
	switch format {
	case formatJSON:
		printer = &printers.JSONPrinter{}
	case formatYAML:
		printer = &printers.YAMLPrinter{}
	default:
		return fmt.Errorf("unknown output format %q", format)
	}
	gvk := v1alpha1.GroupVersion.WithKind("DefenderTenant")
	items := make([]unstructured.Unstructured, 0, len(tenants))
	for i := range tenants {
		tenant := tenants[i].DeepCopy()
		tenant.ManagedFields = nil
		content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tenant)
		if err != nil {
			return err
		}
		item := unstructured.Unstructured{Object: content}
		item.SetGroupVersionKind(gvk)
		items = append(items, item)
	}
	if single && len(items) == 1 {
		return printer.PrintObj(&items[0], out)
	}
	list := &unstructured.UnstructuredList{Object: map[string]any{}, Items: items}
	list.SetAPIVersion("v1")
	list.SetKind("List")
	list.SetResourceVersion("")
	return printer.PrintObj(list, out)
}

// Output formats of -o.
const (
	formatTable    = "table"
	formatWide     = "wide"
	formatJSON     = "json"
	formatYAML     = "yaml"
	formatCSV      = "csv"
	formatMarkdown = "markdown"
)

// outputFormat checks -o against the formats a command offers.
func outputFormat(value string, allowed ...string) error {
	if slices.Contains(allowed, value) {
		return nil
	}
	return fmt.Errorf("--output %q is not supported: use one of %s", value, strings.Join(allowed, ", "))
}
