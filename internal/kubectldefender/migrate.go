package kubectldefender

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// twinSuffix names a tenant's Graph twin: <name>-graph.
const twinSuffix = "-graph"

type migrateOptions struct {
	*rootOptions
	to                string
	allNamespaces     bool
	app               string
	twin              bool
	apply             bool
	dropUnmappedRoles bool
}

func newMigrateCommand(root *rootOptions) *cobra.Command {
	o := &migrateOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "migrate --to graph [--twin] [--apply]",
		Short: "Move the tenants on a retiring Defender API to Microsoft Graph",
		Long: `migrate finds the DefenderTenants whose effective resource (spec.resource, or the
cloud's default when it is empty) is a retiring Defender API, and changes each to
the Microsoft Graph resource of its cloud, with its required roles mapped to the
Graph security roles (docs/migrating-to-graph.md has the map and its sources).

A role without a Graph equivalent is never dropped silently: such a tenant is
listed and left as it is, unless --drop-unmapped-roles migrates it without those
roles.

With --twin, each tenant stays as it is and a copy named <name>-graph is created
beside it, on Graph, with its own token Secret (<name>-graph-token, or the
tenant's tokenSecretName with -graph appended), so that workloads move one by one.

Nothing changes without --apply: migrate prints what it would do. After the
change each customer's admin consents again, to the app's Graph permissions:
kubectl defender consent lists the links.`,
		Example: `  kubectl defender migrate --to graph -A
  kubectl defender migrate --to graph -n customers --twin --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.to, "to", "", "what to migrate to; graph is the only target")
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "the DefenderTenants of every namespace")
	cmd.Flags().StringVar(&o.app, "app", "", "only the tenants of this app: DefenderApp/NAME or ClusterDefenderApp/NAME")
	cmd.Flags().BoolVar(&o.twin, "twin", false, "create <name>-graph beside each tenant instead of changing it")
	cmd.Flags().BoolVar(&o.apply, "apply", false, "make the changes; without it migrate only prints them")
	cmd.Flags().BoolVar(&o.dropUnmappedRoles, "drop-unmapped-roles", false, "migrate tenants whose required roles include roles without a Graph equivalent, without those roles")
	return cmd
}

// migration is what migrate does with one tenant.
type migration struct {
	tenant *v1alpha1.DefenderTenant
	// from is the effective resource, to the cloud's Graph resource.
	from, to string
	// defaulted: spec.resource was empty, so from was the cloud's default.
	defaulted bool
	roles     []string
	unmapped  []string
	// twin is the tenant to create with --twin.
	twin *v1alpha1.DefenderTenant
	// skip says why the tenant is left as it is.
	skip string
}

func (o *migrateOptions) run(ctx context.Context) error {
	if o.to != "graph" {
		return fmt.Errorf("--to %q: graph is the only target (--to graph)", o.to)
	}
	sel, err := o.selectTenants(ctx, o.allNamespaces, o.app)
	if err != nil {
		return err
	}
	c, tenants := sel.client, sel.tenants
	apps := newApps(c)
	var plan []migration
	for i := range tenants {
		if m, ok := o.plan(ctx, c, apps, &tenants[i]); ok {
			plan = append(plan, m)
		}
	}
	if len(plan) == 0 {
		_, err := fmt.Fprintf(o.streams.ErrOut, "No DefenderTenants on a retiring resource %s.\n", sel.scope.where())
		return err
	}

	out := o.streams.Out
	migrated, skipped := 0, 0
	for i := range plan {
		m := &plan[i]
		key := client.ObjectKeyFromObject(m.tenant).String()
		if m.skip != "" {
			skipped++
			if _, err := fmt.Fprintf(out, "%s: not migrated: %s\n", key, m.skip); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprint(out, m.describe(key)); err != nil {
			return err
		}
		if !o.apply {
			continue
		}
		if err := o.applyOne(ctx, c, m); err != nil {
			return fmt.Errorf("migrating DefenderTenant %s: %w", key, err)
		}
		migrated++
	}
	if !o.apply {
		_, err := fmt.Fprintf(out, "\nDry run: nothing changed. Run again with --apply to migrate %d tenants.\n", len(plan)-skipped)
		return err
	}
	if migrated > 0 {
		if _, err := fmt.Fprintf(out, "\nMigrated %d tenants. Each customer's admin must now consent to the app's Graph permissions: kubectl defender consent lists the links.\n", migrated); err != nil {
			return err
		}
	}
	if skipped > 0 {
		return fmt.Errorf("%d tenants not migrated (see above)", skipped)
	}
	return nil
}

// plan decides what to do with tenant; ok is false for a tenant not on a
// retiring resource.
func (o *migrateOptions) plan(ctx context.Context, c client.Reader, apps *apps, tenant *v1alpha1.DefenderTenant) (migration, bool) {
	t := apps.target(ctx, tenant)
	if _, retiring := t.retiresAt(tenant); !retiring {
		return migration{}, false
	}
	m := migration{tenant: tenant, from: t.resource, defaulted: tenant.Spec.Resource == ""}
	if !t.known {
		m.skip = fmt.Sprintf("its app's cloud, and so its Graph resource, is unknown: %v", t.err)
		return m, true
	}
	m.to = entra.GraphResource(t.cloud)
	m.roles, m.unmapped = entra.GraphRoles(tenant.Spec.RequiredRoles)
	if len(m.unmapped) > 0 && !o.dropUnmappedRoles {
		m.skip = "roles without a Microsoft Graph equivalent: " + strings.Join(m.unmapped, ", ") + " (--drop-unmapped-roles migrates it without them)"
		return m, true
	}
	if o.twin {
		m.twin, m.skip = o.twinOf(ctx, c, tenant, &m)
	}
	return m, true
}

// twinOf is the Graph copy of tenant, or why there is none.
func (o *migrateOptions) twinOf(ctx context.Context, c client.Reader, tenant *v1alpha1.DefenderTenant, m *migration) (*v1alpha1.DefenderTenant, string) {
	name := tenant.Name + twinSuffix
	// The operator labels the token Secret with the tenant's name, and a label
	// value is at most 63 characters.
	if problems := validation.IsValidLabelValue(name); len(problems) > 0 {
		return nil, fmt.Sprintf("its twin's name %s is not a valid label value: %s", name, strings.Join(problems, "; "))
	}
	twin := &v1alpha1.DefenderTenant{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tenant.Namespace, Labels: maps.Clone(tenant.Labels)},
		Spec:       *tenant.Spec.DeepCopy(),
	}
	twin.Spec.Resource, twin.Spec.RequiredRoles = m.to, m.roles
	if tenant.Spec.TokenSecretName != "" {
		twin.Spec.TokenSecretName = tenant.Spec.TokenSecretName + twinSuffix
		if problems := validation.IsDNS1123Subdomain(twin.Spec.TokenSecretName); len(problems) > 0 {
			return nil, fmt.Sprintf("its twin's token Secret name %s is not valid: %s", twin.Spec.TokenSecretName, strings.Join(problems, "; "))
		}
	}
	err := c.Get(ctx, client.ObjectKeyFromObject(twin), &v1alpha1.DefenderTenant{})
	switch {
	case err == nil:
		return nil, fmt.Sprintf("its twin %s/%s exists already", twin.Namespace, twin.Name)
	case !apierrors.IsNotFound(err):
		return nil, fmt.Sprintf("reading its twin %s/%s: %v", twin.Namespace, twin.Name, err)
	}
	return twin, ""
}

// describe is the change in a few lines, the same with and without --apply.
func (m *migration) describe(key string) string {
	var b strings.Builder
	from := m.from
	if m.defaulted {
		from += " (the cloud's default)"
	}
	if m.twin != nil {
		fmt.Fprintf(&b, "%s: twin %s/%s on %s, token Secret %s\n", key, m.twin.Namespace, m.twin.Name, m.to, m.twin.TokenSecretNameOrDefault())
	} else {
		fmt.Fprintf(&b, "%s: resource %s -> %s\n", key, from, m.to)
	}
	if len(m.tenant.Spec.RequiredRoles) > 0 {
		fmt.Fprintf(&b, "  requiredRoles: %s -> %s\n", strings.Join(m.tenant.Spec.RequiredRoles, ", "), orDash(strings.Join(m.roles, ", ")))
	}
	if len(m.unmapped) > 0 {
		fmt.Fprintf(&b, "  dropped, without a Microsoft Graph equivalent: %s\n", strings.Join(m.unmapped, ", "))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// applyOne makes the change: a twin is created; a tenant is patched, and only if
// nobody changed it since it was read (a conflict is an error to run again on).
func (o *migrateOptions) applyOne(ctx context.Context, c client.Client, m *migration) error {
	if m.twin != nil {
		return c.Create(ctx, m.twin, client.FieldOwner(FieldManager))
	}
	changed := m.tenant.DeepCopy()
	changed.Spec.Resource, changed.Spec.RequiredRoles = m.to, m.roles
	err := c.Patch(ctx, changed, client.MergeFromWithOptions(m.tenant, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager))
	if apierrors.IsConflict(err) {
		return errors.New("it changed while migrate ran: run migrate again")
	}
	return err
}
