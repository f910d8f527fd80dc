package kubectldefender

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

type statusOptions struct {
	*rootOptions
	allNamespaces bool
	app           string
	output        string
}

func newStatusCommand(root *rootOptions) *cobra.Command {
	o := &statusOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "One row per DefenderTenant: Ready, reason, missing roles, expiry and resource; then counts by reason",
		Example: `  kubectl defender status -A
  kubectl defender status -n customers --app ClusterDefenderApp/partner -o wide
  kubectl defender status contoso -o yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list the DefenderTenants of every namespace")
	cmd.Flags().StringVar(&o.app, "app", "", "only the tenants of this app: DefenderApp/NAME or ClusterDefenderApp/NAME")
	cmd.Flags().StringVarP(&o.output, "output", "o", formatTable, "output format: table, wide, json or yaml")
	return cmd
}

func (o *statusOptions) run(ctx context.Context, args []string) error {
	if err := outputFormat(o.output, formatTable, formatWide, formatJSON, formatYAML); err != nil {
		return err
	}
	filter, err := parseAppFilter(o.app)
	if err != nil {
		return err
	}
	if len(args) == 1 && o.allNamespaces {
		return fmt.Errorf("a DefenderTenant NAME cannot be combined with --all-namespaces: name its namespace with -n")
	}
	s, err := o.scope(o.allNamespaces)
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	var tenants []v1alpha1.DefenderTenant
	if len(args) == 1 {
		tenant, err := getTenant(ctx, c, s.namespace, args[0])
		if err != nil {
			return err
		}
		if filter.matches(tenant) {
			tenants = append(tenants, *tenant)
		}
	} else if tenants, err = listTenants(ctx, c, s, filter); err != nil {
		return err
	}
	if o.output == formatJSON || o.output == formatYAML {
		return printObjects(o.streams.Out, o.output, tenants, len(args) == 1)
	}
	if len(tenants) == 0 {
		_, err := fmt.Fprintf(o.streams.ErrOut, "No DefenderTenants found %s.\n", s.where())
		return err
	}
	return printStatus(ctx, o.streams.Out, tenants, newApps(c), o.allNamespaces, o.output == formatWide)
}

// statusColumns are the table's columns; priority 1 ones show with -o wide only.
var statusColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name"},
	{Name: "Tenant ID", Type: "string"},
	{Name: "App", Type: "string"},
	{Name: "Ready", Type: "string"},
	{Name: "Reason", Type: "string"},
	{Name: "Missing Roles", Type: "string"},
	{Name: "Expires", Type: "string"},
	{Name: "Resource", Type: "string"},
	{Name: "Cloud", Type: "string", Priority: 1},
	{Name: "Granted Roles", Type: "string", Priority: 1},
	{Name: "Next Refresh", Type: "string", Priority: 1},
	{Name: "Last Failure", Type: "string", Priority: 1},
}

func printStatus(ctx context.Context, out io.Writer, tenants []v1alpha1.DefenderTenant, apps *apps, withNamespace, wide bool) error {
	table := &metav1.Table{ColumnDefinitions: statusColumns}
	counts := map[string]int{}
	retiring := map[time.Time]int{}
	for i := range tenants {
		tenant := &tenants[i]
		t := apps.target(ctx, tenant)
		resource := t.resource
		if !t.known {
			resource = "(the app's default)"
		}
		if at, ok := t.retiresAt(tenant); ok {
			resource += " (retires " + at.Format(time.DateOnly) + ")"
			retiring[at]++
		}
		reason := readyReason(tenant)
		counts[cmp.Or(reason, "(none yet)")]++
		table.Rows = append(table.Rows, metav1.TableRow{
			Cells: []any{
				tenant.Name,
				tenant.Spec.TenantID,
				appName(tenant),
				readyStatus(tenant),
				orNone(reason),
				orNone(strings.Join(tenant.Status.MissingRoles, ",")),
				orNone(formatTime(tenant.Status.ExpiresAt)),
				resource,
				orNone(string(t.cloud)),
				orNone(strings.Join(tenant.Status.GrantedRoles, ",")),
				orNone(formatTime(tenant.Status.NextRefreshTime)),
				orNone(lastFailure(tenant)),
			},
			Object: runtime.RawExtension{Object: tenant},
		})
	}
	printer := printers.NewTablePrinter(printers.PrintOptions{Wide: wide, WithNamespace: withNamespace})
	if err := printer.PrintObj(table, out); err != nil {
		return err
	}

	summary := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Reason", Type: "string"},
		{Name: "Tenants", Type: "integer"},
	}}
	reasons := make([]string, 0, len(counts))
	for reason := range counts {
		reasons = append(reasons, reason)
	}
	slices.Sort(reasons)
	for _, reason := range reasons {
		summary.Rows = append(summary.Rows, metav1.TableRow{Cells: []any{reason, int64(counts[reason])}})
	}
	if _, err := fmt.Fprintln(out); err != nil {
		return err
	}
	if err := printers.NewTablePrinter(printers.PrintOptions{}).PrintObj(summary, out); err != nil {
		return err
	}
	dates := make([]time.Time, 0, len(retiring))
	for at := range retiring {
		dates = append(dates, at)
	}
	slices.SortFunc(dates, time.Time.Compare)
	for _, at := range dates {
		if _, err := fmt.Fprintf(out, "\n%d of %d tenants use a resource that stops working on %s: see kubectl defender migrate --to graph\n",
			retiring[at], len(tenants), at.Format(time.DateOnly)); err != nil {
			return err
		}
	}
	return nil
}

// orNone leaves a cell empty, as kubectl's table printer does for a nil cell.
func orNone(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func formatTime(t *metav1.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// lastFailure is the last failure's code (an AADSTS code, HTTP status or
// "network") and when it happened.
func lastFailure(tenant *v1alpha1.DefenderTenant) string {
	f := tenant.Status.LastFailure
	if f == nil {
		return ""
	}
	return cmp.Or(f.Code, f.Reason) + " at " + f.Time.UTC().Format(time.RFC3339)
}
