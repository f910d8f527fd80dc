package kubectldefender

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// waitsForConsent reports whether only the customer's admin can make the tenant
// Ready: the app is not consented in the tenant, or a required role is not granted.
func waitsForConsent(tenant *v1alpha1.DefenderTenant) bool {
	switch readyReason(tenant) {
	case v1alpha1.ReasonConsentRequired, v1alpha1.ReasonMissingRoles:
		return true
	}
	return false
}

type consentOptions struct {
	*rootOptions
	allNamespaces bool
	app           string
	output        string
}

func newConsentCommand(root *rootOptions) *cobra.Command {
	o := &consentOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "consent",
		Short: "The tenants that wait for a customer admin (ConsentRequired, MissingRoles), with the consent URL to send",
		Long: `consent lists the DefenderTenants whose Ready reason is ConsentRequired or
MissingRoles: only an admin of the customer's tenant can fix them, by opening the
admin consent URL. After they consented, kubectl defender refresh asks for a token
at once instead of waiting out the backoff.`,
		Example: `  kubectl defender consent -A
  kubectl defender consent -A -o csv > consent.csv
  kubectl defender consent --app ClusterDefenderApp/partner -o markdown`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list the DefenderTenants of every namespace")
	cmd.Flags().StringVar(&o.app, "app", "", "only the tenants of this app: DefenderApp/NAME or ClusterDefenderApp/NAME")
	cmd.Flags().StringVarP(&o.output, "output", "o", formatTable, "output format: table, csv, markdown or json")
	return cmd
}

func (o *consentOptions) run(ctx context.Context) error {
	if err := outputFormat(o.output, formatTable, formatCSV, formatMarkdown, formatJSON); err != nil {
		return err
	}
	sel, err := o.selectTenants(ctx, o.allNamespaces, o.app)
	if err != nil {
		return err
	}
	tenants := sel.tenants
	waiting := tenants[:0]
	for i := range tenants {
		if waitsForConsent(&tenants[i]) {
			waiting = append(waiting, tenants[i])
		}
	}
	switch o.output {
	case formatJSON:
		return printObjects(o.streams.Out, formatJSON, waiting, false)
	case formatCSV:
		return printConsentCSV(o.streams.Out, waiting)
	case formatMarkdown:
		return printConsentMarkdown(o.streams.Out, waiting)
	}
	if len(waiting) == 0 {
		_, err := fmt.Fprintf(o.streams.ErrOut, "No DefenderTenants wait for consent %s.\n", sel.scope.where())
		return err
	}
	return printConsentTable(o.streams.Out, waiting, o.allNamespaces)
}

// consentRow is what a customer's admin needs, in the order of every format. The
// app is shown because the link asks consent for whatever app the tenant names:
// a DefenderApp of a namespace someone else edits may be no app of the partner's.
func consentRow(tenant *v1alpha1.DefenderTenant) []string {
	return []string{
		tenant.Namespace,
		tenant.Name,
		appName(tenant),
		tenant.Spec.TenantID,
		readyReason(tenant),
		strings.Join(tenant.Status.MissingRoles, ","),
		tenant.Status.AdminConsentURL,
	}
}

var consentHeader = []string{"namespace", "name", "app", "tenantID", "reason", "missingRoles", "adminConsentURL"}

func printConsentTable(out io.Writer, tenants []v1alpha1.DefenderTenant, withNamespace bool) error {
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name"},
		{Name: "App", Type: "string"},
		{Name: "Tenant ID", Type: "string"},
		{Name: "Reason", Type: "string"},
		{Name: "Missing Roles", Type: "string"},
		{Name: "Consent URL", Type: "string"},
	}}
	for i := range tenants {
		row := consentRow(&tenants[i])
		table.Rows = append(table.Rows, metav1.TableRow{
			Cells:  []any{row[1], row[2], row[3], row[4], orNone(row[5]), orNone(row[6])},
			Object: runtime.RawExtension{Object: &tenants[i]},
		})
	}
	return printers.NewTablePrinter(printers.PrintOptions{WithNamespace: withNamespace}).PrintObj(table, out)
}

// printConsentCSV writes RFC 4180 CSV (encoding/csv quotes what needs it), with a
// header row, for a spreadsheet or a mail merge.
func printConsentCSV(out io.Writer, tenants []v1alpha1.DefenderTenant) error {
	w := csv.NewWriter(out)
	if err := w.Write(consentHeader); err != nil {
		return err
	}
	for i := range tenants {
		row := consentRow(&tenants[i])
		for j := range row {
			row[j] = inertInSpreadsheets(row[j])
		}
		if err := w.Write(row); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}

// printConsentMarkdown writes a GitHub-flavoured Markdown table, for a ticket or
// a mail.
func printConsentMarkdown(out io.Writer, tenants []v1alpha1.DefenderTenant) error {
	var b strings.Builder
	b.WriteString("| Namespace | Name | App | Tenant ID | Reason | Missing roles | Consent URL |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for i := range tenants {
		b.WriteString("|")
		for _, cell := range consentRow(&tenants[i]) {
			b.WriteString(" " + markdownCell(cell) + " |")
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// markdownCell keeps a value inside its table cell and plain text: a pipe would
// end the cell and a line break the row; brackets, parentheses and angle brackets
// could make a link or HTML of a role name that whoever edits a namespace chose;
// a backslash is escaped first so that the other escapes stay one.
var markdownCell = strings.NewReplacer(`\`, `\\`, "|", `\|`, "[", `\[`, "]", `\]`, "(", `\(`, ")", `\)`, "<", `\<`, ">", `\>`,
	"\r\n", " ", "\n", " ", "\r", " ").Replace

// inertInSpreadsheets keeps a CSV cell from being read as a formula by a
// spreadsheet (OWASP's CSV injection advice): a cell starting with =, +, -, @, a
// tab or a carriage return gets a leading apostrophe. Role names come from specs
// that whoever edits a namespace writes.
func inertInSpreadsheets(cell string) string {
	if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
		return "'" + cell
	}
	return cell
}
